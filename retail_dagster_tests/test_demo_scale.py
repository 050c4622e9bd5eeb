"""The demo generator at scale: streaming to Parquet == in memory, block independence, sorted files, atomic writes."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from retail_dagster.core import demo as demo_mod
from retail_dagster.core.contracts import validate_tables
from retail_dagster.core.demo import generate_demo, write_demo_streaming
from retail_dagster.core.loading import load_tables

# 3 blocks of 10 SKUs (the last one partial), 2 warehouses, new SKUs to exercise the launch masks
PARAMS = dict(n_skus=25, n_stores=3, n_warehouses=2, n_days=100, seed=5, new_sku_share=0.1, block_skus=10)
FACTS = ("sales", "inventory", "promotions", "truth/demand")
ROW_KEYS = {"sales": ["sku_id", "date", "location_id"], "inventory": ["sku_id", "date", "location_id"],
            "truth/demand": ["sku_id", "date", "location_id"], "promotions": ["sku_id", "location_id", "start_date"]}


@pytest.fixture(scope="module")
def small():
    return generate_demo(**PARAMS)


@pytest.fixture(scope="module")
def streamed(small, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("streamed"))
    rows = write_demo_streaming(out, **PARAMS)
    return out, rows


def _memory_tables(data) -> dict[str, pd.DataFrame]:
    return {**data.tables, **{f"truth/{k}": v for k, v in data.truth.items()}}


def _read(out: str, name: str) -> pd.DataFrame:
    frame = pd.read_parquet(os.path.join(out, *name.split("/")) + ".parquet")
    for c in frame.columns:  # dictionary columns come back as categoricals
        if isinstance(frame[c].dtype, pd.CategoricalDtype):
            frame[c] = frame[c].astype(str).astype(object)
    return frame


def _by_sku(data, table: str, skus) -> pd.DataFrame:
    frame = _memory_tables(data)[table]
    keys = ROW_KEYS.get(table, ["sku_id"])
    return frame[frame["sku_id"].isin(skus)].sort_values(keys).reset_index(drop=True)


def test_streaming_equals_in_memory(small, streamed):
    out, rows = streamed
    memory = _memory_tables(small)
    assert set(rows) == set(memory)
    for name, expected in memory.items():
        got = _read(out, name)
        assert rows[name] == len(expected) == len(got), name
        if name in ROW_KEYS:  # row order is part of the contract only through the sort keys
            got = got.sort_values(ROW_KEYS[name]).reset_index(drop=True)
            expected = expected.sort_values(ROW_KEYS[name]).reset_index(drop=True)
        pd.testing.assert_frame_equal(got, expected.reset_index(drop=True), obj=name)
    assert not [f for _, _, fs in os.walk(out) for f in fs if f.endswith(".tmp")]


def test_streamed_files_load_and_validate_like_memory(small, streamed):
    """The same rows; the files hold them clustered by SKU group (test_file_dtypes_and_group_clustered_row_groups),
    so the whole tables are compared in key order, and each group's rows in the order memory gives them."""
    loaded = load_tables(streamed[0])
    memory = validate_tables(small.tables)
    for name in ("sales", "inventory", "promotions", "catalog"):
        keys = ROW_KEYS.get(name, ["sku_id"])
        pd.testing.assert_frame_equal(loaded[name].sort_values(keys).reset_index(drop=True),
                                      memory[name].sort_values(keys).reset_index(drop=True), obj=name)
    catalog = memory["catalog"]
    for group in sorted(catalog["sku_group"].unique()):
        by_group = load_tables(streamed[0], sku_group=group)
        skus = set(catalog.loc[catalog["sku_group"] == group, "sku_id"])
        for name in ("sales", "inventory", "promotions"):
            expected = memory[name][memory[name]["sku_id"].isin(skus)].reset_index(drop=True)
            pd.testing.assert_frame_equal(by_group[name], expected, obj=f"{group} {name}")


def test_file_dtypes_and_group_clustered_row_groups(small, streamed):
    out, _ = streamed
    group_of = small.tables["catalog"].set_index("sku_id")["sku_group"]
    for name in ("sales", "inventory", "promotions", "truth/demand"):
        f = pq.ParquetFile(os.path.join(out, *name.split("/")) + ".parquet")
        schema = f.schema_arrow
        assert pa.types.is_dictionary(schema.field("sku_id").type), name
        assert pa.types.is_dictionary(schema.field("location_id").type), name
        date = "date" if name != "promotions" else "start_date"
        assert schema.field(date).type == pa.timestamp("ns"), name
        value = {"inventory": "on_hand", "promotions": "discount_pct"}.get(name, "price")
        assert schema.field(value).type == pa.float64(), name
        assert f.metadata.num_row_groups >= 3, name  # at least one per block
        frame = _read(out, name)
        keys = ROW_KEYS[name]
        if name not in demo_mod.GROUP_CLUSTERED:  # sorted by sku_id: row-group statistics skip by SKU
            assert frame[keys].equals(frame[keys].sort_values(keys)), name
            continue
        # one SKU group per row group, its dictionary holding only the SKUs it uses (what the reader skips by)
        for i in range(f.metadata.num_row_groups):
            ids = f.read_row_group(i, columns=["sku_id"]).column(0).combine_chunks()
            assert set(ids.dictionary.to_pylist()) == set(ids.dictionary.take(ids.indices).to_pylist()), name
            assert group_of[ids.dictionary.to_pylist()].nunique() == 1, (name, i)
        # within a group, rows keep the sorted order
        for _, rows in frame.groupby(frame["sku_id"].map(group_of), sort=False):
            assert rows[keys].reset_index(drop=True).equals(rows[keys].sort_values(keys).reset_index(drop=True)), name
    sales = pd.read_parquet(os.path.join(out, "sales.parquet"), filters=[("sku_id", "in", ["SKU00012"])])
    assert set(sales["sku_id"].astype(str)) == {"SKU00012"} and len(sales) > 0


def test_full_blocks_do_not_depend_on_catalog_size(small):
    """Block b's rows depend on (seed, b, block_skus) and the shared calendars only: the full blocks of a 25-SKU
    set are the first blocks of a 40-SKU set; the partial block is not (its draws are sized by the block)."""
    bigger = generate_demo(**{**PARAMS, "n_skus": 40})
    first = [f"SKU{i:05d}" for i in range(20)]
    for table in (*FACTS, "catalog", "truth/sku"):
        pd.testing.assert_frame_equal(_by_sku(small, table, first), _by_sku(bigger, table, first), obj=table)
    for table in ("events", "weather", "traffic", "lanes"):
        pd.testing.assert_frame_equal(small.tables[table], bigger.tables[table], obj=table)
    partial = [f"SKU{i:05d}" for i in range(20, 25)]
    assert not _by_sku(small, "catalog", partial)["base_price"].equals(
        _by_sku(bigger, "catalog", partial)["base_price"])


def test_blocks_are_independent_streams(small):
    """Different blocks draw from different generators, so no two blocks repeat each other's catalog."""
    cat = small.tables["catalog"]
    assert cat["base_price"].iloc[:10].to_numpy().tolist() != cat["base_price"].iloc[10:20].to_numpy().tolist()
    assert np.unique(small.truth["sku"]["elasticity"]).size == len(cat)


def test_failed_stream_leaves_previous_files(tmp_path, monkeypatch):
    out = str(tmp_path)
    params = dict(PARAMS, n_skus=12, n_days=40)
    write_demo_streaming(out, **params)
    before = pd.read_parquet(os.path.join(out, "sales.parquet"))
    real_block = demo_mod._block

    def failing_block(net, b):
        if b == 1:
            raise RuntimeError("disk full")
        return real_block(net, b)

    monkeypatch.setattr(demo_mod, "_block", failing_block)
    with pytest.raises(RuntimeError, match="disk full"):
        write_demo_streaming(out, **{**params, "seed": 99})
    pd.testing.assert_frame_equal(pd.read_parquet(os.path.join(out, "sales.parquet")), before)
    assert not [f for _, _, fs in os.walk(out) for f in fs if f.endswith(".tmp")]


def test_streaming_refuses_s3():
    with pytest.raises(ValueError, match="local folder"):
        write_demo_streaming("s3://bucket/demo", n_skus=2, n_stores=1, n_days=10)
