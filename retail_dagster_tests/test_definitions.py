"""Definitions load; jobs resolve; one partition materializes in process with no leakage in the ingest assets."""

from __future__ import annotations

import os

import dagster as dg
import pandas as pd

from retail_dagster.assets import ingest
from retail_dagster.partitions import daily_by_group, partition_key, partition_setup
from retail_dagster.resources.data_source import DataSourceResource
from retail_dagster.resources.io_manager import ParquetIOManager


def test_definitions_load_and_jobs_resolve():
    from retail_dagster.definitions import defs

    job = defs.resolve_job_def("daily_pipeline")
    assert job.partitions_def == daily_by_group
    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert set(ingest.INGEST_OUTPUTS) <= keys


def test_partitions_start_with_history_and_include_today():
    start, groups = partition_setup()
    assert groups == ("apparel", "beverages", "electronics", "grocery", "household")
    date_dim = daily_by_group.get_partitions_def_for_dimension("date")
    today = pd.Timestamp.now(tz="UTC").strftime("%Y-%m-%d")
    assert date_dim.has_partition_key(today)
    keys = daily_by_group.get_partition_keys()
    assert f"{start}|grocery" in keys and str(partition_key("2026-03-01", "grocery")) == "2026-03-01|grocery"


def test_one_partition_materializes_without_leakage(demo_path, tmp_path):
    date = "2025-12-01"
    result = dg.materialize(
        [ingest.ingest_planning_inputs],
        partition_key=partition_key(date, "grocery"),
        resources={"data_source": DataSourceResource(kind="files", path=demo_path),
                   "io_manager": ParquetIOManager(base_path=str(tmp_path))},
    )
    assert result.success
    sales = pd.read_parquet(tmp_path / "sales_history" / date / "grocery.parquet")
    inv = pd.read_parquet(tmp_path / "inventory_snapshot" / date / "grocery.parquet")
    assert len(sales) > 0 and sales["date"].max() < pd.Timestamp(date)
    assert inv["date"].unique().tolist() == [pd.Timestamp(date) - pd.Timedelta(days=1)]
    catalog = pd.read_parquet(tmp_path / "catalog_slice" / date / "grocery.parquet")
    assert set(catalog["sku_group"]) == {"grocery"}
    assert set(sales["sku_id"]) <= set(catalog["sku_id"])


def test_invalid_input_fails_run_and_writes_nothing(demo_path, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    catalog = pd.read_parquet(os.path.join(demo_path, "catalog.parquet"))
    grocery = set(catalog.loc[catalog["sku_group"] == "grocery", "sku_id"])
    for f in os.listdir(demo_path):
        if f.endswith(".parquet"):
            frame = pd.read_parquet(os.path.join(demo_path, f))
            if f == "sales.parquet":  # bad rows in the partition's own group: each partition validates its slice
                frame.loc[frame.index[frame["sku_id"].isin(grocery)][:4], "price"] = -1.0
            frame.to_parquet(bad / f, index=False)
    out = tmp_path / "out"
    result = dg.materialize(
        [ingest.ingest_planning_inputs],
        partition_key=partition_key("2025-12-01", "grocery"),
        resources={"data_source": DataSourceResource(kind="files", path=str(bad)),
                   "io_manager": ParquetIOManager(base_path=str(out))},
        raise_on_error=False,
    )
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    msg = str(failure.step_failure_data.error)
    assert "sales" in msg and "price" in msg and "4 rows" in msg
    assert not out.exists() or not any(out.rglob("*.parquet"))
