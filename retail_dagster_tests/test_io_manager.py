"""ParquetIOManager: the documented file layout, round trips locally and on S3 (moto), atomic writes, range loads."""

from __future__ import annotations

import io
import os

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from retail_dagster.core.fingerprint import fingerprints, frame_fingerprint
from retail_dagster.resources import io_manager as iom
from retail_dagster.resources.io_manager import ParquetIOManager, asset_path
# Until conftest.py imports them, the S3 fixtures come from here.

by_group = dg.MultiPartitionsDefinition({
    "date": dg.DailyPartitionsDefinition(start_date="2026-03-01", end_date="2026-03-05"),
    "sku_group": dg.StaticPartitionsDefinition(["grocery", "household"]),
})
by_day = dg.DailyPartitionsDefinition(start_date="2026-03-01", end_date="2026-03-05")


def _frame(date: str, group: str) -> pd.DataFrame:
    n = 5
    return pd.DataFrame({
        "sku_id": [f"{group[:3]}-{i}" for i in range(n)],
        "location_id": ["S1"] * n,
        "target_date": pd.date_range(date, periods=n),
        "p50": np.linspace(1.5, 3.5, n),
        "units": np.arange(n, dtype="int64"),
    })


@dg.asset(partitions_def=by_group)
def demand_forecast(context) -> pd.DataFrame:
    dims = context.partition_key.keys_by_dimension
    return _frame(dims["date"], dims["sku_group"])


@dg.asset(partitions_def=by_group)
def price_recommendations(demand_forecast: pd.DataFrame) -> pd.DataFrame:
    return demand_forecast.assign(recommended_price=demand_forecast["p50"] * 2)


KEY = dg.MultiPartitionKey({"date": "2026-03-02", "sku_group": "grocery"})


@pytest.mark.parametrize("key, expected", [
    (KEY, "base/demand_forecast/2026-03-02/grocery.parquet"),
    ("2026-03-02|grocery", "base/demand_forecast/2026-03-02/grocery.parquet"),
    ({"sku_group": "grocery", "date": "2026-03-02"}, "base/demand_forecast/2026-03-02/grocery.parquet"),
    ("2026-03-02", "base/demand_forecast/2026-03-02.parquet"),
    (None, "base/demand_forecast.parquet"),
])
def test_asset_path_layout(key, expected):
    assert asset_path("base", "demand_forecast", key) == expected
    assert asset_path("s3://bucket/out/", "demand_forecast", key) == "s3://bucket/out/" + expected[len("base/"):]


@pytest.mark.parametrize("bad", ["..", "a/b", ""])
def test_asset_path_refuses_escaping_keys(bad):
    with pytest.raises(ValueError, match="cannot be used as a file name"):
        asset_path("base", "demand_forecast", bad)


def _no_temp_files(root) -> bool:
    return not [f for _, _, files in os.walk(root) for f in files if f.startswith(iom.TMP_PREFIX)]


def test_local_materialize_writes_documented_layout_and_reads_back(tmp_path):
    io = ParquetIOManager(base_path=str(tmp_path))
    result = dg.materialize([demand_forecast, price_recommendations], partition_key=KEY,
                            resources={"io_manager": io})
    assert result.success
    path = tmp_path / "demand_forecast" / "2026-03-02" / "grocery.parquet"
    assert path.is_file()
    stored = pd.read_parquet(path)
    expected = _frame("2026-03-02", "grocery")
    pd.testing.assert_frame_equal(stored, expected)
    # downstream got the same frame through load_input (same partition)
    prices = pd.read_parquet(tmp_path / "price_recommendations" / "2026-03-02" / "grocery.parquet")
    np.testing.assert_allclose(prices["recommended_price"], expected["p50"] * 2)
    meta = result.asset_materializations_for_node("demand_forecast")[0].metadata
    assert meta["path"].value == str(path)
    assert meta["rows"].value == len(expected)
    assert meta["bytes"].value == path.stat().st_size
    assert _no_temp_files(tmp_path)


def test_s3_materialize_writes_documented_keys_and_reads_back(moto_server, s3_client, s3_bucket):
    io = ParquetIOManager(base_path=f"s3://{s3_bucket}/out", endpoint_url=moto_server)
    result = dg.materialize([demand_forecast, price_recommendations], partition_key=KEY,
                            resources={"io_manager": io})
    assert result.success
    keys = {o["Key"] for o in s3_client.list_objects_v2(Bucket=s3_bucket)["Contents"]}
    assert keys == {"out/demand_forecast/2026-03-02/grocery.parquet",
                    "out/price_recommendations/2026-03-02/grocery.parquet",
                    "out/_published/2026-03-02/grocery.json"}  # the day's manifest: which run made each file
    # written with the same server-side encryption header as the audit trail
    assert {s3_client.head_object(Bucket=s3_bucket, Key=k).get("ServerSideEncryption") for k in keys} == {"AES256"}
    # read back through the IO manager itself
    ctx = dg.build_input_context(asset_key=dg.AssetKey("demand_forecast"), partition_key=KEY,
                                 asset_partitions_def=by_group)
    loaded = io.load_input(ctx)
    expected = _frame("2026-03-02", "grocery")
    pd.testing.assert_frame_equal(loaded, expected)
    assert frame_fingerprint(loaded) == frame_fingerprint(expected)
    meta = result.asset_materializations_for_node("demand_forecast")[0].metadata
    assert meta["path"].value == f"s3://{s3_bucket}/out/demand_forecast/2026-03-02/grocery.parquet"


def test_single_dimension_and_unpartitioned_and_json(tmp_path):
    io = ParquetIOManager(base_path=str(tmp_path))
    frame = _frame("2026-03-03", "grocery")
    out = dg.build_output_context(asset_key="daily_totals", partition_key="2026-03-03", asset_partitions_def=by_day)
    io.handle_output(out, frame)
    assert (tmp_path / "daily_totals" / "2026-03-03.parquet").is_file()
    back = io.load_input(dg.build_input_context(asset_key="daily_totals", partition_key="2026-03-03",
                                                asset_partitions_def=by_day))
    pd.testing.assert_frame_equal(back, frame)

    io.handle_output(dg.build_output_context(asset_key="agent_settings"), {"max_daily_change_pct": 10, "b": [1, 2]})
    assert (tmp_path / "agent_settings.json").is_file()
    settings_back = io.load_input(dg.build_input_context(asset_key="agent_settings"))
    assert settings_back == {"max_daily_change_pct": 10, "b": [1, 2]}
    with pytest.raises(TypeError, match="stores pandas DataFrames"):
        io.handle_output(dg.build_output_context(asset_key="weird"), object())


def test_range_input_concatenates_partitions_with_partition_columns(tmp_path):
    io = ParquetIOManager(base_path=str(tmp_path))
    for day in ("2026-03-01", "2026-03-02", "2026-03-03"):
        io.handle_output(dg.build_output_context(asset_key="daily_totals", partition_key=day,
                                                 asset_partitions_def=by_day), _frame(day, "grocery"))
    ctx = dg.build_input_context(asset_key="daily_totals", asset_partitions_def=by_day,
                                 asset_partition_key_range=dg.PartitionKeyRange("2026-03-01", "2026-03-03"))
    combined = io.load_input(ctx)
    assert len(combined) == 15
    assert combined["partition"].tolist() == ["2026-03-01"] * 5 + ["2026-03-02"] * 5 + ["2026-03-03"] * 5
    assert combined.drop(columns="partition").columns.tolist() == _frame("2026-03-01", "x").columns.tolist()


def test_missing_partition_error_names_the_path(tmp_path):
    io = ParquetIOManager(base_path=str(tmp_path))
    ctx = dg.build_input_context(asset_key="demand_forecast", partition_key=KEY, asset_partitions_def=by_group)
    with pytest.raises(FileNotFoundError, match=r"demand_forecast/2026-03-02/grocery\.parquet"):
        io.load_input(ctx)


def test_crash_during_write_keeps_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    io = ParquetIOManager(base_path=str(tmp_path))
    out = dg.build_output_context(asset_key="demand_forecast", partition_key=KEY, asset_partitions_def=by_group)
    old = _frame("2026-03-02", "grocery")
    io.handle_output(out, old)
    path = tmp_path / "demand_forecast" / "2026-03-02" / "grocery.parquet"
    before = path.read_bytes()

    def boom(fd):
        raise OSError("disk on fire")

    monkeypatch.setattr(iom.os, "fsync", boom)  # fails after the temp file was written, before the rename
    with pytest.raises(OSError, match="disk on fire"):
        io.handle_output(out, old.assign(p50=0.0))
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert _no_temp_files(tmp_path)
    assert sorted(os.listdir(path.parent)) == ["grocery.parquet"]


def test_fingerprint_deterministic_and_storage_independent(tmp_path):
    frame = _frame("2026-03-02", "grocery")
    fp = frame_fingerprint(frame)
    assert len(fp) == 64
    frame.to_parquet(tmp_path / "f.parquet", index=False)
    assert frame_fingerprint(pd.read_parquet(tmp_path / "f.parquet")) == fp      # Parquet round trip
    assert frame_fingerprint(frame.set_index("sku_id", drop=False)) == fp        # index is ignored
    assert frame_fingerprint(frame.assign(p50=frame["p50"] + 1e-9)) != fp       # any value counts
    assert frame_fingerprint(frame.astype({"units": "float64"})) != fp          # dtype counts
    assert frame_fingerprint(frame.rename(columns={"p50": "p90"})) != fp        # names count
    assert fingerprints({"a": frame, "b": None}) == {"a": fp}


def _reference_digest(frame: pd.DataFrame) -> str:
    """The documented layout, written plainly: schema, row count, then per column its value bytes (floats with
    -0.0 as 0.0 and one NaN) or its distinct values' text, first appearance first, and one int32 code per row."""
    import hashlib

    digest = hashlib.sha256("\x1f".join(f"{c}\x1e{t}" for c, t in zip(frame.columns, frame.dtypes.astype(str)))
                            .encode())
    digest.update(f"\x1d{len(frame)}\x1d".encode())
    for c in frame.columns:
        values = frame[c].to_numpy()
        digest.update(b"\x1c")
        if values.dtype.kind == "f":
            clean = np.where(np.isnan(values), np.nan, values + 0.0).astype(values.dtype.newbyteorder("<"))
            digest.update(clean.tobytes())
        elif values.dtype.kind in "biumM":
            digest.update(values.astype(values.dtype.newbyteorder("<")).tobytes())
        else:
            cells = [str(v) if isinstance(v, (dict, list)) else v for v in values]
            codes, uniques = pd.factorize(pd.Series(cells, dtype=object))
            digest.update(f"{len(uniques)}\x1e".encode())
            digest.update("\x1f".join(repr(u) for u in uniques).encode())
            digest.update(codes.astype("<i4").tobytes())
    return digest.hexdigest()


def test_fingerprint_is_the_documented_digest_and_a_window_hashes_its_rows():
    """The digest is the documented byte layout (so the model and elasticity cache keys do not change with the
    implementation), and a window's digest is the filtered frame's."""
    import hashlib

    from retail_dagster.core import fingerprint as fpm

    rng = np.random.default_rng(3)
    n = 1000
    frame = pd.DataFrame({"date": pd.Timestamp("2026-01-01") + pd.to_timedelta(rng.integers(0, 60, n), unit="D"),
                          "sku_id": rng.choice(["A", "B", "C"], n).astype(object),
                          "units": rng.poisson(3, n).astype(float), "flag": rng.random(n) < 0.5,
                          "count": rng.integers(-5, 5, n), "extra": [{"k": i % 3} for i in range(n)]})
    frame.loc[::7, "units"] = np.nan
    frame.loc[::11, "units"] = -0.0
    assert frame_fingerprint(frame) == _reference_digest(frame)
    start, end = pd.Timestamp("2026-01-20"), pd.Timestamp("2026-02-10")
    promos = pd.DataFrame({"start_date": pd.to_datetime(["2026-01-01", "2026-02-05", "2026-03-01"]),
                           "end_date": pd.to_datetime(["2026-01-25", "2026-02-20", "2026-03-05"]), "x": [1, 2, 3]})
    inside = frame[(frame["date"] >= start) & (frame["date"] < end)]
    expected = hashlib.sha256(b"s")
    expected.update(f"\x1ccatalog\x1c{frame_fingerprint(frame[['sku_id']])}".encode())
    expected.update(f"\x1cpromos\x1c{frame_fingerprint(promos.iloc[:2])}".encode())
    expected.update(f"\x1csales\x1c{frame_fingerprint(inside)}".encode())
    tables = {"sales": frame, "promos": promos, "catalog": frame[["sku_id"]], "none": None}
    assert fpm.window_fingerprint(tables, start, end, "s") == expected.hexdigest()


def test_fingerprint_counts_values_not_their_objects_or_bits():
    """Equal strings at different addresses, -0.0 and 0.0, NaNs of different bits hash the same; a str and an
    int that print alike, a moved value, a None in place of a value, do not."""
    rng = np.random.default_rng(5)
    ids = np.array([f"SKU{i:05d}" for i in range(50)], dtype=object)
    values = ids[rng.integers(0, 50, 20_000)]
    fresh = np.array([str(v) + "" if i % 2 else "".join(v) for i, v in enumerate(values)], dtype=object)
    x = rng.random(20_000)
    base = pd.DataFrame({"sku_id": values, "x": x})
    assert frame_fingerprint(pd.DataFrame({"sku_id": fresh, "x": x})) == frame_fingerprint(base)
    signed = x.copy()
    signed[:10] = 0.0
    other_nan = signed.copy()
    other_nan[10:20] = np.frombuffer(np.array([0x7FF8000000000001] * 10, dtype="<u8").tobytes(), dtype="<f8")
    signed[10:20] = np.nan
    negative_zero = signed.copy()
    negative_zero[:10] = -0.0
    fp = frame_fingerprint(pd.DataFrame({"sku_id": values, "x": signed}))
    assert frame_fingerprint(pd.DataFrame({"sku_id": values, "x": negative_zero})) == fp
    assert frame_fingerprint(pd.DataFrame({"sku_id": values, "x": other_nan})) == fp
    mixed = pd.DataFrame({"v": pd.Series(["1", "2"] * 3000, dtype=object)})
    ints = pd.DataFrame({"v": pd.Series([1, "2"] * 3000, dtype=object)})
    assert frame_fingerprint(mixed) != frame_fingerprint(ints)
    swapped = values.copy()
    swapped[[0, 1]] = values[[1, 0]]
    assert values[0] == values[1] or frame_fingerprint(base.assign(sku_id=swapped)) != frame_fingerprint(base)
    missing = values.copy()
    missing[5] = None
    assert frame_fingerprint(base.assign(sku_id=missing)) != frame_fingerprint(base)
    odd = pd.DataFrame({"d": [{"k": i % 3} for i in range(10_000)]})  # unhashable cells: their text
    assert frame_fingerprint(odd) == _reference_digest(odd)
    assert frame_fingerprint(odd) != frame_fingerprint(pd.DataFrame({"d": [{"k": i % 4} for i in range(10_000)]}))


def test_fingerprint_same_in_another_process():
    import subprocess
    import sys

    code = ("import pandas as pd; from retail_dagster.core.fingerprint import frame_fingerprint;"
            "print(frame_fingerprint(pd.DataFrame({'a': ['x', 'y'], 'b': [1.5, 2.0],"
            " 'd': pd.to_datetime(['2026-03-01', '2026-03-02'])})))")
    here = frame_fingerprint(pd.DataFrame({"a": ["x", "y"], "b": [1.5, 2.0],
                                           "d": pd.to_datetime(["2026-03-01", "2026-03-02"])}))
    env = dict(os.environ, PYTHONHASHSEED="123")
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert other.stdout.strip() == here


def test_frames_written_by_the_process_load_as_the_file_would(tmp_path):
    """The in-process copy of a written frame is served only while it equals what the file gives back."""
    io = ParquetIOManager(base_path=str(tmp_path))
    frame = _frame("2026-03-02", "grocery")
    out = dg.build_output_context(asset_key="sales_history", partition_key=KEY, asset_partitions_def=by_group)
    io.handle_output(out, frame)
    path = tmp_path / "sales_history" / "2026-03-02" / "grocery.parquet"
    ctx = dg.build_input_context(asset_key=dg.AssetKey("sales_history"), partition_key=KEY,
                                 asset_partitions_def=by_group)
    first = io.load_input(ctx)
    pd.testing.assert_frame_equal(first, pd.read_parquet(path))
    assert iom._WRITTEN.get(str(path)) is not None  # served from memory
    # inputs are read-only, from memory or from the file: writing into one fails loudly, so a step can never change
    # what another step is served; replacing a column builds the step's own frame
    from_file = iom._decode(path.read_bytes(), iom.PARQUET)
    for loaded in (first, from_file):
        with pytest.raises(ValueError, match="read-only"):
            loaded.loc[0, "p50"] = -1.0
        with pytest.raises(ValueError, match="read-only"):
            loaded["target_date"].to_numpy()[0] = np.datetime64("2000-01-01")
    first["p50"] = first["p50"] * 2.0
    frame.loc[1, "p50"] = -2.0  # nor does the asset changing its output after yielding it
    pd.testing.assert_frame_equal(io.load_input(ctx), pd.read_parquet(path))
    # the file replaced behind the manager's back (another run): the file wins
    other = _frame("2026-03-02", "grocery").assign(p50=7.0)
    other.to_parquet(path, index=False)
    pd.testing.assert_frame_equal(io.load_input(ctx), other)
    # a frame that would not come back the same from Parquet (its index) is never kept
    odd = _frame("2026-03-02", "grocery").set_index("sku_id")
    io.handle_output(dg.build_output_context(asset_key="odd", partition_key=KEY, asset_partitions_def=by_group), odd)
    assert iom._WRITTEN.get(str(tmp_path / "odd" / "2026-03-02" / "grocery.parquet")) is None
    off = ParquetIOManager(base_path=str(tmp_path / "off"), memory_cache_mb=0)
    off.handle_output(dg.build_output_context(asset_key="x", partition_key=KEY, asset_partitions_def=by_group), frame)
    assert iom._WRITTEN.get(str(tmp_path / "off" / "x" / "2026-03-02" / "grocery.parquet")) is None


def test_id_columns_are_written_as_dictionaries_and_read_back_as_plain_strings(tmp_path):
    """The fast Parquet path (ids dictionary-encoded from their distinct objects) reads back exactly as the frame,
    as plain str objects for any reader; frames it cannot take (None in an id column, a non-str object, an index)
    are written by pandas as before."""
    rng = np.random.default_rng(9)
    n = 20_000
    ids_ = np.array([f"SKU{i:04d}" for i in range(300)], dtype=object)
    frame = pd.DataFrame({"date": pd.Timestamp("2026-01-01") + pd.to_timedelta(rng.integers(0, 90, n), unit="D"),
                          "sku_id": ids_[rng.integers(0, 300, n)], "note": [f"n{i}" for i in range(n)],
                          "units": rng.poisson(2, n).astype(float), "k": rng.integers(0, 5, n),
                          "flag": rng.random(n) < 0.3})
    assert iom._plain_arrow_table(frame) is not None
    with_none = frame.assign(sku_id=frame["sku_id"].where(rng.random(n) > 0.01, None))
    mixed = frame.assign(sku_id=frame["sku_id"].where(rng.random(n) > 0.01, 7))
    indexed = frame.set_index("k")
    assert iom._plain_arrow_table(with_none) is None and iom._plain_arrow_table(mixed) is None
    assert iom._plain_arrow_table(indexed) is None
    for f in (frame, with_none, indexed):  # (a str/int mix cannot be written as Parquet at all)
        data, ext, rows = iom._encode(f)
        (tmp_path / "f.parquet").write_bytes(data)
        back = pd.read_parquet(tmp_path / "f.parquet")
        pd.testing.assert_frame_equal(back, f.reset_index(drop=True), check_exact=True)  # the index is not stored
        assert rows == len(f) and ext == ".parquet"
    plain = pd.read_parquet(io.BytesIO(iom._encode(frame)[0]))
    assert plain["sku_id"].dtype == object and frame_fingerprint(plain) == frame_fingerprint(frame)


def test_a_frame_handed_over_read_only_is_kept_without_a_copy(tmp_path):
    """A step's output marked read-only (the ingest step's) is kept as it is; any other output is copied, so the
    asset writing into it after yielding it changes nothing the run's later steps are served."""
    io = ParquetIOManager(base_path=str(tmp_path))
    ctx = {}
    for name, frame in (("handed", iom.read_only(_frame("2026-03-02", "grocery"))),
                        ("kept_copy", _frame("2026-03-02", "grocery"))):
        io.handle_output(dg.build_output_context(asset_key=name, partition_key=KEY, asset_partitions_def=by_group),
                         frame)
        ctx[name] = dg.build_input_context(asset_key=dg.AssetKey(name), partition_key=KEY,
                                           asset_partitions_def=by_group)
        loaded = io.load_input(ctx[name])
        pd.testing.assert_frame_equal(loaded, pd.read_parquet(tmp_path / name / "2026-03-02" / "grocery.parquet"),
                                      check_exact=True)
        shares = np.shares_memory(loaded["p50"].to_numpy(), frame["p50"].to_numpy())
        assert shares == (name == "handed")
        with pytest.raises(ValueError, match="read-only"):
            loaded.loc[0, "p50"] = -1.0
    writable = _frame("2026-03-02", "grocery")
    writable.iloc[:, 0].to_numpy().flags.writeable = False  # one read-only column is not a frame handed over
    assert not iom._handed_over(writable) and iom._handed_over(iom.read_only(writable))


@pytest.mark.parametrize("rows", [0, 1, 5000, 40_000])
def test_fingerprint_of_id_columns_sorted_in_runs_categorical_nan_and_empty(rows):
    """The digest is the documented layout whatever the id columns hold: long runs of one object (rows sorted
    by SKU), categoricals, None and NaN, no rows."""
    rng = np.random.default_rng(rows)
    skus = np.array([f"SKU{i:05d}" for i in range(40)], dtype=object)
    sku = np.sort(skus[rng.integers(0, 40, rows)]) if rows else np.array([], dtype=object)
    if rows > 100:
        sku[50:60] = None
        sku[70] = np.nan
    frame = pd.DataFrame({"sku_id": sku, "location_id": skus[rng.integers(0, 3, rows)],
                          "group": pd.Categorical(skus[rng.integers(0, 5, rows)]),
                          "units": np.where(rng.random(rows) < 0.1, np.nan, rng.random(rows))})
    assert frame_fingerprint(frame) == _reference_digest(frame)
