"""The fast input path gives exactly what the plain one gave: storage helper, filtered reads, validation on
dictionary codes, duplicate keys, partition setup without fact tables, planning inputs of a loaded slice."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from retail_dagster.core import storage
from retail_dagster.core.asof import GROUP_ATTR, planning_inputs
from retail_dagster.core.contracts import ContractError, _duplicated, validate_table
from retail_dagster.core.loading import first_sales_date, load_tables, read_groups, read_raw_table

DATE = pd.Timestamp("2026-11-25")


# ---- storage.py ---------------------------------------------------------------------------------------------------
def _exercise_storage(root: str, client=None):
    a, b = storage.join(root, "x/a.bin"), storage.join(root, "x/b.bin")
    assert storage.read_bytes(a, client) is None and not storage.exists(a, client)
    storage.write_bytes(a, b"one", client)
    storage.write_bytes(a, b"two", client)  # replaces
    assert storage.read_bytes(a, client) == b"two" and storage.exists(a, client)
    with pytest.raises(FileExistsError):
        storage.write_bytes(a, b"three", client, create_only=True)
    storage.write_bytes(b, b"new", client, create_only=True)
    storage.write_bytes(storage.join(root, "x/sub/c.bin"), b"c", client)
    assert storage.list_names(storage.join(root, "x"), client) == ["a.bin", "b.bin"]
    assert storage.list_names(storage.join(root, "x"), client, dirs=True) == ["sub"]
    assert storage.list_names(storage.join(root, "nothing"), client) == []
    storage.move(b, storage.join(root, "y/b.bin"), client)
    assert not storage.exists(b, client) and storage.read_bytes(storage.join(root, "y/b.bin"), client) == b"new"


def test_storage_local(tmp_path):
    _exercise_storage(str(tmp_path))
    leftovers = [f for _, _, files in os.walk(tmp_path) for f in files if f.startswith(".tmp-")]
    assert not leftovers


def test_storage_s3(moto_server, s3_client, s3_bucket):
    _exercise_storage(f"s3://{s3_bucket}/root", s3_client)
    assert storage.split_s3(f"s3://{s3_bucket}/root/x/a.bin") == (s3_bucket, "root/x/a.bin")


# ---- duplicate keys on packed codes -------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_duplicated_matches_pandas(seed):
    rng = np.random.default_rng(seed)
    n = 4000
    frame = pd.DataFrame({
        "date": pd.Timestamp("2026-01-01") + pd.to_timedelta(rng.integers(0, 30, n), unit="D"),
        "sku_id": pd.Categorical(rng.choice(["a", "b", "c", None], n)),
        "location_id": rng.choice(["S1", "S2", "W1"], n).astype(object),
        "x": rng.integers(0, 3, n).astype(float),
    })
    frame.loc[rng.integers(0, n, 20), "x"] = np.nan
    for key in (["date", "sku_id", "location_id"], ["sku_id", "x"], ["date"]):
        np.testing.assert_array_equal(_duplicated(frame, key), frame.duplicated(key, keep=False).to_numpy())
    frame.loc[3, "date"] = pd.NaT  # NaT and times of day take the general path
    np.testing.assert_array_equal(_duplicated(frame, ["date", "sku_id"]),
                                  frame.duplicated(["date", "sku_id"], keep=False).to_numpy())


def test_duplicated_on_sorted_files_takes_the_ordered_proof_and_still_finds_duplicates():
    """A file sorted by its key in some column order is proven duplicate-free by its packed order; a repeated key
    anywhere (past the checked prefix too) still falls through to the hashing path and is found."""
    days = pd.date_range("2026-01-01", periods=60)
    skus, locs = [f"SKU{i:03d}" for i in range(40)], ["S1", "S2", "S3", "W1"]
    grid = pd.MultiIndex.from_product([skus, days, locs], names=["sku_id", "date", "location_id"]).to_frame(index=False)
    frame = grid.assign(sku_id=pd.Categorical(grid["sku_id"]), location_id=grid["location_id"].astype(object))
    key = ["date", "sku_id", "location_id"]
    assert not _duplicated(frame, key).any()
    for at in (10, 9000):  # inside and past the 4,096-row prefix
        dup = pd.concat([frame.iloc[:at + 1], frame.iloc[at:]], ignore_index=True)
        np.testing.assert_array_equal(_duplicated(dup, key), dup.duplicated(key, keep=False).to_numpy())
        assert _duplicated(dup, key).sum() == 2


# ---- validation of dictionary (categorical) columns ---------------------------------------------------------------
def test_categorical_ids_validate_to_the_same_frame_and_problems(demo_tables):
    sales = demo_tables["sales"].head(3000).copy()
    as_cat = sales.astype({"sku_id": "category", "location_id": "category"})
    plain, _ = validate_table("sales", sales)
    fast, _ = validate_table("sales", as_cat)
    pd.testing.assert_frame_equal(fast, plain)
    assert fast["sku_id"].dtype == object and isinstance(fast["sku_id"].iloc[0], str)
    bad = as_cat.copy()
    bad.loc[7, "units"] = -2.0
    bad.loc[9, "sku_id"] = np.nan
    keys = {("catalog", "sku_id"): pd.Index(demo_tables["catalog"]["sku_id"])}
    with pytest.raises(ContractError) as fast_err:
        validate_table("sales", bad, "sales.parquet", known_keys=keys)
    plain_bad = bad.astype({"sku_id": object, "location_id": object})
    with pytest.raises(ContractError) as plain_err:
        validate_table("sales", plain_bad, "sales.parquet", known_keys=keys)
    assert str(fast_err.value) == str(plain_err.value)
    assert "column 'units'" in str(fast_err.value) and "'row': 7" in str(fast_err.value)


def test_validated_frame_shares_no_data_with_the_callers(demo_tables):
    sales = demo_tables["sales"].head(2000).reset_index(drop=True)
    before = validate_table("sales", sales)[0].copy()
    sales_changed = sales.copy()
    clean, _ = validate_table("sales", sales_changed)
    sales_changed.loc[0, "units"] = 99.0  # the caller's frame changes after validation
    sales_changed.loc[1, "date"] = pd.Timestamp("2001-01-01")
    pd.testing.assert_frame_equal(clean, before, check_exact=True)
    assert all(len(b.mgr_locs) == 1 for b in clean._mgr.blocks)  # one block per column, as assignment gives


def test_unknown_categorical_ids_are_reported_like_plain_ones(demo_tables):
    sales = demo_tables["sales"].head(3000).copy()
    sales.loc[[4, 8], "sku_id"] = "SKU-UNKNOWN"
    sales.loc[6, "location_id"] = np.nan
    keys = {("catalog", "sku_id"): pd.Index(demo_tables["catalog"]["sku_id"]),
            ("locations", "location_id"): pd.Index(demo_tables["locations"]["location_id"])}
    messages = []
    for frame in (sales, sales.astype({"sku_id": "category", "location_id": "category"})):
        with pytest.raises(ContractError) as err:
            validate_table("sales", frame, "sales.parquet", known_keys=keys)
        messages.append(str(err.value))
    assert messages[0] == messages[1]
    assert "unknown sku_id (not in catalog): ['SKU-UNKNOWN'] (2 rows)" in messages[0]


# ---- filtered reads ------------------------------------------------------------------------------------------------
def _as_dictionary_files(src: str, dst: str) -> str:
    """The same tables with text id columns written as Parquet dictionary columns (as the streaming demo writes)."""
    os.makedirs(dst, exist_ok=True)
    for name in os.listdir(src):
        if name.endswith(".parquet"):
            frame = pd.read_parquet(os.path.join(src, name))
            ids = [c for c in ("sku_id", "location_id", "sku_group", "category", "region") if c in frame.columns]
            frame.astype({c: "category" for c in ids}).to_parquet(os.path.join(dst, name), index=False)
    return dst


@pytest.mark.parametrize("layout", ["plain", "dictionary"])
def test_group_slice_read_equals_the_slice_of_the_whole(demo_path, demo_tables, tmp_path, layout):
    path = demo_path if layout == "plain" else _as_dictionary_files(demo_path, str(tmp_path / "dict"))
    date = demo_tables["sales"]["date"].max() + pd.Timedelta(days=1) - pd.Timedelta(days=30)
    group = sorted(demo_tables["catalog"]["sku_group"].unique())[1]
    since, until = date - pd.Timedelta(days=120), date + pd.Timedelta(days=14)
    sliced = load_tables(path, sku_group=group, since=since, until=until)
    assert sliced["sales"].attrs.get(GROUP_ATTR) == group
    assert sliced["sales"]["date"].between(since, until - pd.Timedelta(days=1)).all()
    fast = planning_inputs(sliced, date, group, history_days=120)
    whole = planning_inputs(load_tables(path), date, group, history_days=120)
    for name in ("sales", "inventory_history", "inventory_snapshot", "promotions", "catalog", "events", "weather",
                 "traffic", "locations", "lanes"):
        got, want = getattr(fast, name), getattr(whole, name)
        pd.testing.assert_frame_equal(got, want, check_exact=True, obj=name)
        assert not got.attrs
    assert fast.notes == whole.notes


def _arrow(frame: pd.DataFrame, dictionary: bool) -> pa.Table:
    """The frame as Arrow, its ids as plain strings or as dictionary columns holding only the values present."""
    table = pa.Table.from_pandas(frame, preserve_index=False)
    for name in ("sku_id", "location_id") if dictionary else ():
        i = table.schema.get_field_index(name)
        table = table.set_column(i, name, table.column(name).combine_chunks().dictionary_encode())
    return table


def _write_sales(frame: pd.DataFrame, file: str, dictionary: bool, row_group_rows: int) -> str:
    pq.write_table(_arrow(frame, dictionary), file, row_group_size=row_group_rows)
    return file


def _sales_layouts(sales: pd.DataFrame, group_of: pd.Series) -> dict[str, pd.DataFrame]:
    """The same rows in orders a user's file may have: shuffled, sorted by SKU (statistics prune), clustered by
    SKU group with ids interleaving the groups (only the dictionary pass prunes)."""
    shuffled = sales.sample(frac=1.0, random_state=3).reset_index(drop=True)
    by_sku = sales.sort_values(["sku_id", "date", "location_id"]).reset_index(drop=True)
    group = sales["sku_id"].map(group_of).fillna("").to_numpy()
    by_group = sales.iloc[np.argsort(group, kind="stable")].reset_index(drop=True)
    return {"shuffled": shuffled, "by_sku": by_sku, "by_group": by_group}


@pytest.mark.parametrize("dictionary", [False, True])
def test_group_read_is_the_group_rows_whatever_the_file_order(demo_tables, tmp_path, dictionary):
    catalog = demo_tables["catalog"]
    group_of = catalog.set_index("sku_id")["sku_group"]
    sales = demo_tables["sales"].copy()
    sales.loc[[5, 900], "sku_id"] = None  # rows without a SKU belong to no group
    since, until = sales["date"].max() - pd.Timedelta(days=60), sales["date"].max() - pd.Timedelta(days=5)
    for layout, frame in _sales_layouts(sales, group_of).items():
        file = _write_sales(frame, str(tmp_path / f"{layout}.parquet"), dictionary, row_group_rows=len(frame) // 7)
        for group in [*sorted(catalog["sku_group"].unique()), "none"]:
            skus = catalog.loc[catalog["sku_group"] == group, "sku_id"].tolist() or ["SKU-NOT-THERE"]
            got = read_raw_table(file, skus=skus, since=since, until=until)
            keep = frame["sku_id"].isin(skus) & (frame["date"] >= since) & (frame["date"] < until)
            want = frame[keep.to_numpy()].reset_index(drop=True)
            got = got.astype({c: object for c in ("sku_id", "location_id") if c in got})
            pd.testing.assert_frame_equal(got, want, check_exact=True, obj=f"{layout} {group}")


def _row_groups_decoded(monkeypatch) -> list[int]:
    """Row groups read with more than their sku_id column (the dictionary pass reads only that one)."""
    decoded = []
    real = pq.ParquetFile.read_row_group

    def spy(self, i, columns=None, *args, **kwargs):
        if columns != ["sku_id"]:
            decoded.append(i)
        return real(self, i, columns, *args, **kwargs)
    monkeypatch.setattr(pq.ParquetFile, "read_row_group", spy)
    return decoded


def test_a_group_clustered_file_is_read_in_its_group_row_groups_only(demo_tables, tmp_path, monkeypatch):
    catalog = demo_tables["catalog"]
    group_of = catalog.set_index("sku_id")["sku_group"]
    frame = _sales_layouts(demo_tables["sales"], group_of)["by_group"]
    # one row group per SKU group, dictionaries holding only the SKUs of their row group (as the demo writes)
    file = str(tmp_path / "sales.parquet")
    with pq.ParquetWriter(file, _arrow(frame, True).schema) as writer:
        for _, rows in frame.groupby(frame["sku_id"].map(group_of), sort=True):
            writer.write_table(_arrow(rows.reset_index(drop=True), True))
    with pq.ParquetFile(file) as pf:
        row_group_of = {}
        for i in range(pf.metadata.num_row_groups):
            row_group_of[group_of[pf.read_row_group(i, columns=["sku_id"]).column(0)[0].as_py()]] = i
    plain_file = _write_sales(frame, str(tmp_path / "plain.parquet"), False, row_group_rows=len(frame) // 5 + 1)
    decoded = _row_groups_decoded(monkeypatch)
    for group, i in row_group_of.items():
        skus = catalog.loc[catalog["sku_group"] == group, "sku_id"].tolist()
        decoded.clear()
        got = read_raw_table(file, skus=skus)
        assert decoded == [i] and len(got) == frame["sku_id"].isin(skus).sum()
        # plain strings interleaving the groups: no statistics rule a row group out, the whole file is read
        decoded.clear()
        assert len(read_raw_table(plain_file, skus=skus)) == len(got) and decoded == []  # pyarrow's own scan


def test_streamed_demo_group_read_decodes_a_fifth_of_the_row_groups(tmp_path, monkeypatch):
    from retail_dagster.core.demo import write_demo_streaming

    write_demo_streaming(str(tmp_path), n_skus=30, n_stores=2, n_warehouses=1, n_days=60, block_skus=10)
    catalog = pd.read_parquet(tmp_path / "catalog.parquet")
    skus = catalog.loc[catalog["sku_group"] == catalog["sku_group"].iloc[0], "sku_id"].astype(str).tolist()
    decoded = _row_groups_decoded(monkeypatch)
    sales = read_raw_table(str(tmp_path / "sales.parquet"), skus=skus)
    assert 0 < len(decoded) == pq.ParquetFile(tmp_path / "sales.parquet").metadata.num_row_groups // 5
    assert set(sales["sku_id"].astype(str)) == set(skus)


def test_bad_rows_of_a_pruned_read_are_named(demo_tables, tmp_path):
    """Pruning changes which row groups are decoded, not what validation reports: file, column, rows."""
    catalog = demo_tables["catalog"]
    group_of = catalog.set_index("sku_id")["sku_group"]
    group = sorted(catalog["sku_group"].unique())[0]
    frame = _sales_layouts(demo_tables["sales"], group_of)["by_group"]
    bad = np.flatnonzero(frame["sku_id"].map(group_of).to_numpy() == group)[[3, 10]]
    frame.loc[bad, "units"] = -1.0
    src = str(tmp_path / "files")
    os.makedirs(src)
    for name, table in demo_tables.items():
        if name == "sales":
            _write_sales(frame, os.path.join(src, "sales.parquet"), True, row_group_rows=len(frame) // 9)
        else:
            table.to_parquet(os.path.join(src, f"{name}.parquet"), index=False)
    with pytest.raises(ContractError) as err:
        load_tables(src, sku_group=group)
    message = str(err.value)
    assert "sales.parquet" in message and "column 'units'" in message and "(2 rows)" in message
    load_tables(src, sku_group=sorted(catalog["sku_group"].unique())[1])  # another group's rows are clean


def test_partition_setup_reads_no_fact_table(demo_path, demo_tables, monkeypatch):
    from retail_dagster.core import loading

    read = []
    real = loading.read_raw_table
    monkeypatch.setattr(loading, "read_raw_table", lambda file, *a, **k: read.append(os.path.basename(file))
                        or real(file, *a, **k))
    assert read_groups(demo_path) == sorted(demo_tables["catalog"]["sku_group"].unique())
    assert first_sales_date(demo_path) == demo_tables["sales"]["date"].min()
    assert read == ["catalog.parquet"]  # the first sales date comes from the Parquet footer's statistics


@pytest.mark.parametrize("seed", [0, 1])
def test_id_factorization_is_pandas_factorization(seed):
    """core.ids gives exactly pd.factorize and MultiIndex.get_indexer: repeated objects, equal strings at other
    addresses, missing values, mixed types, and columns of mostly distinct objects (pandas' own path)."""
    from retail_dagster.core import ids

    rng = np.random.default_rng(seed)
    labels = np.array([f"S{i:03d}" for i in range(40)], dtype=object)
    n = 30_000
    left = labels[rng.integers(0, 40, n)]
    left[::97] = np.array([f"S{i % 40:03d}" for i in range(len(left[::97]))], dtype=object)  # same text, new objects
    left[1::89] = None
    left[2::83] = np.nan
    left[3::79] = 7
    right = labels[rng.integers(0, 5, n)]
    distinct = np.array([f"u{i}" for i in range(n)], dtype=object)
    for values in (left, right, distinct, left[:100], np.array([], dtype=object), rng.integers(0, 9, n)):
        codes, uniques = ids.factorize(values)
        ref_codes, ref_uniques = pd.factorize(values)
        assert np.array_equal(codes, ref_codes)
        assert list(uniques) == list(np.asarray(ref_uniques))
    assert ids.distinct_objects(left) is not None and ids.distinct_objects(distinct) is None
    # rows sorted by id: long runs of one object (the run heads are factorized), None and NaN runs, runs of one row
    runs = np.sort(left[np.array([isinstance(v, str) for v in left])])
    runs[:3] = None
    runs[500:900] = np.nan
    runs[-1] = labels[7]
    for values in (runs, runs[::-1].copy(), np.concatenate([runs, left]), runs[:4096 + 1]):
        codes, uniques = ids.factorize(values)
        ref_codes, ref_uniques = pd.factorize(values)
        assert np.array_equal(codes, ref_codes) and list(uniques) == list(np.asarray(ref_uniques))
        obj_codes, objects = ids.distinct_objects(values)
        assert all(a is b for a, b in zip(objects[obj_codes], values))
    series = pd.DataFrame({"a": labels[[0, 1, 2, 3, 5, 8, 13]], "b": labels[[0, 1, 2, 3, 4, 0, 1]]})
    index = pd.MultiIndex.from_frame(series)
    got = ids.pair_positions(left, right, index)
    ref = index.get_indexer(pd.MultiIndex.from_arrays([left, right]))
    assert np.array_equal(got, ref) and (got >= 0).sum() > 100


def test_max_by_series_is_the_pandas_group_by():
    from retail_dagster.core import ids

    rng = np.random.default_rng(4)
    n = 50_000
    skus = np.array([f"SKU{i:03d}" for i in range(120)], dtype=object)
    frame = pd.DataFrame({"sku_id": skus[rng.integers(0, 120, n)],
                          "location_id": np.array(["S2", "S1", "W1", "S10"], dtype=object)[rng.integers(0, 4, n)],
                          "units": rng.poisson(3, n).astype(float)})
    frame.loc[rng.integers(0, n, 300), "units"] = np.nan
    frame.loc[rng.integers(0, n, 50), "sku_id"] = None
    frame.loc[frame["sku_id"] == "SKU007", "units"] = np.nan  # a series with no value at all
    got = ids.max_by_series(frame, "units")
    ref = frame.groupby(["sku_id", "location_id"], as_index=False)["units"].max()
    pd.testing.assert_frame_equal(got, ref, check_exact=True)


@pytest.mark.parametrize("with_missing", [False, True])
def test_rows_in_is_the_multiindex_isin(with_missing):
    """ids.rows_in (stock-out days left out of the elasticity fit) answers exactly what MultiIndex.isin answers."""
    from retail_dagster.core import ids

    rng = np.random.default_rng(5)
    skus = np.array([f"SKU{i:03d}" for i in range(300)], dtype=object)
    locs = np.array(["S1", "S2", "S10", "W1"], dtype=object)
    days = pd.date_range("2026-01-01", periods=90).to_numpy()

    def frame(n):
        return pd.DataFrame({"date": days[rng.integers(0, 90, n)], "sku_id": skus[rng.integers(0, 300, n)],
                             "location_id": locs[rng.integers(0, 4, n)]})

    left, right = frame(60_000), frame(8_000)
    right.loc[:99, ["date", "sku_id", "location_id"]] = left.loc[:99, ["date", "sku_id", "location_id"]].to_numpy()
    right.loc[100:109, "sku_id"] = "NEW"  # values only one side has
    if with_missing:
        left.loc[rng.integers(0, len(left), 20), "sku_id"] = None
        right.loc[110:114, "sku_id"] = None
    cols = ["date", "sku_id", "location_id"]
    got = ids.rows_in(left, right, cols)
    ref = pd.MultiIndex.from_frame(left[cols]).isin(pd.MultiIndex.from_frame(right[cols]))
    assert got.dtype == bool and np.array_equal(got, ref)
    assert got[:100].all() and 0 < got.sum() < len(left)


def test_history_note_helpers_are_the_pandas_counts():
    """degenerate_history_note's fast counts answer what nunique answered (distinct days; any SKU with more than
    one distinct price, NaN ignored)."""
    from retail_dagster.agents.demand import _any_price_changed, _distinct_days

    rng = np.random.default_rng(6)
    n = 40_000
    dates = pd.Series(pd.Timestamp("2026-01-01") + pd.to_timedelta(rng.integers(0, 300, n) * 2, unit="D"))
    assert _distinct_days(dates) == dates.nunique()
    odd = dates.copy()
    odd.iloc[:5] += pd.Timedelta(hours=3)  # not midnights: the hash count
    odd.iloc[5] = pd.NaT
    assert _distinct_days(odd) == odd.nunique()
    skus = pd.Series(np.array([f"SKU{i:03d}" for i in range(200)], dtype=object)[rng.integers(0, 200, n)])
    flat = skus.map({f"SKU{i:03d}": 1.0 + i for i in range(200)}).astype(float)
    flat[rng.integers(0, n, 500)] = np.nan
    some_of_017 = ((skus == "SKU017") & (np.arange(n) % 2 == 0)).to_numpy()
    for prices, changed in [(flat, False), (flat.where(~some_of_017, 2.5), True)]:
        ref = prices.groupby(skus).nunique().max() > 1
        assert _any_price_changed(skus, prices) == ref == changed
    assert _any_price_changed(skus, pd.Series(np.nan, index=skus.index)) is False
