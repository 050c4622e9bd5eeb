"""The input data source resource: the embedded demo, a folder / S3 prefix of tables, or the Kaggle M5 files.

Tables are read and validated once per process and cached; a ContractError stops the run before anything
downstream is written.
"""

from __future__ import annotations

import os
from typing import Optional

import dagster as dg
import pandas as pd
from pydantic import Field

from ..core.contracts import validate_tables
from ..core.demo import DemoSize
from ..core.forecasting import ForecastSettings, training_span_days
from ..core.loading import find_table_files, load_tables

# days of history handed to the agents: what training reads before its anchor (core.forecasting.training_span_days:
# the level model's year of origins, its 112-day trailing means and the 14-day horizon, 490 days by default) plus
# the week a model serves and slack, so every day of a retraining week trains the same model
HISTORY_DAYS = training_span_days(ForecastSettings()) + 10


def ensure_demo_data(path: str, n_skus: int = DemoSize.n_skus, n_stores: int = DemoSize.n_stores,
                     n_warehouses: int = DemoSize.n_warehouses, n_days: int = DemoSize.n_days,
                     seed: int = DemoSize.seed, end_date: str | None = None) -> str:
    """Generate the demo set into `path` unless a set made with the same parameters is already there. Runs that
    start together on a fresh machine (a deployment's first day: one run per SKU group) take turns on a lock file:
    the first generates, the others wait and find the set made."""
    import fcntl

    end_date = end_date or DemoSize.end_date
    stamp = f"skus={n_skus} stores={n_stores} warehouses={n_warehouses} days={n_days} seed={seed} end={end_date}"
    stamp_file = os.path.join(path, "DEMO_PARAMS")

    def made() -> bool:
        return os.path.exists(stamp_file) and open(stamp_file).read().strip() == stamp

    if made():
        return path
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, ".generating.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or when this process dies
        if made():
            return path
        from ..core.demo import write_demo_streaming

        write_demo_streaming(path, n_skus=n_skus, n_stores=n_stores, n_warehouses=n_warehouses, n_days=n_days,
                             seed=seed, end_date=end_date)
        tmp = stamp_file + ".tmp"
        with open(tmp, "w") as fh:
            fh.write(stamp + "\n")
        os.replace(tmp, stamp_file)
    return path


class DataSourceResource(dg.ConfigurableResource):
    """Where the input tables come from. `demo` generates (once) and reads the embedded demo data set."""

    kind: str = Field(default="demo", description="demo | files | m5")
    path: str = Field(default="data/demo", description="folder or s3://bucket/prefix holding the tables")
    endpoint_url: Optional[str] = Field(default=None, description="S3 endpoint (moto/MinIO); None = AWS default")
    demo_skus: int = Field(default=DemoSize.n_skus, description="demo: number of SKUs")
    demo_stores: int = Field(default=DemoSize.n_stores, description="demo: number of stores")
    demo_warehouses: int = Field(default=DemoSize.n_warehouses, description="demo: number of warehouses")
    demo_days: int = Field(default=DemoSize.n_days, description="demo: days of history")
    demo_seed: int = Field(default=DemoSize.seed, description="demo: random seed")
    demo_end_date: Optional[str] = Field(default=None, description="demo: last observed day (default fixed)")
    history_days: int = Field(
        default=HISTORY_DAYS,
        description="days of sales/inventory/traffic history handed to the agents: what the forecast's training "
                    "reads before its anchor (the level model's year of origins, 112 d of trailing means, the 14 d "
                    "horizon) plus a week, so any day of a retraining week trains the same model")

    max_staleness_days: int = Field(
        default=0, description="freshness: sales and inventory may end this many days before the day before the "
                               "planning day (0 = they must reach D-1); env RETAIL_DAGSTER_MAX_STALENESS_DAYS")

    def _key(self) -> tuple:
        # the per-process table cache must not outlive the files: stamp it with their mtimes (local) or ETags (S3)
        stamp = ()
        if self.kind in ("files", "m5") and not self.path.startswith("s3://") and os.path.isdir(self.path):
            stamp = tuple(sorted((f, os.path.getmtime(os.path.join(self.path, f)), os.path.getsize(os.path.join(
                self.path, f))) for f in os.listdir(self.path)))
        elif self.kind == "files" and self.path.startswith("s3://"):
            stamp = self._s3_stamp()
        return (self.kind, os.path.abspath(self.path) if "://" not in self.path else self.path, self.demo_skus,
                self.demo_stores, self.demo_warehouses, self.demo_days, self.demo_seed, self.demo_end_date, stamp)

    def _s3_stamp(self) -> tuple:
        from ..core.storage import split_s3

        bucket, prefix = split_s3(self.path)
        pages = self._s3_client().get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=(prefix + "/") if prefix else "")
        return tuple(sorted((o["Key"], o.get("ETag", ""), o.get("Size", 0)) for p in pages
                            for o in p.get("Contents", [])))

    def identity(self) -> str:
        """A stable description of the data set (kind, path, demo parameters): keys caches such as trained models."""
        return "|".join(map(str, self._key()[:8]))

    def _s3_client(self):
        if not self.path.startswith("s3://"):
            return None
        from ..core.storage import make_s3_client

        return make_s3_client(self.endpoint_url)

    def load(self, sku_group: Optional[str] = None, since=None, until=None) -> dict[str, pd.DataFrame]:
        """Input tables, validated: all of them, or with `sku_group` only that group's rows of the SKU-keyed fact
        tables, with `since` only rows dated from then on and with `until` only rows dated before it (what a
        partition needs: Parquet files are read with those filters, so far less time and memory on a large
        catalog). Read anew on each call: a run reads its partition once, and a process-wide cache of the tables
        held them (1.7 GB of a 10,000 x 10 group) through every later step of the run."""
        if self.kind == "demo":
            ensure_demo_data(self.path, self.demo_skus, self.demo_stores, self.demo_warehouses, self.demo_days,
                             self.demo_seed, self.demo_end_date)
            return load_tables(self.path, sku_group=sku_group, since=since, until=until)
        if self.kind == "files":
            return load_tables(self.path, s3_client=self._s3_client(), sku_group=sku_group, since=since,
                               until=until)
        if self.kind == "m5":
            from ..core.m5 import load_m5

            tables = validate_tables(load_m5(self.path))
            if sku_group is not None:
                from ..core.loading import SKU_KEYED

                skus = set(tables["catalog"].loc[tables["catalog"]["sku_group"] == sku_group, "sku_id"])
                tables = {t: (f[f["sku_id"].isin(skus)] if t in SKU_KEYED else f) for t, f in tables.items()}
            return tables
        raise ValueError(f"unknown data source kind '{self.kind}': use demo, files or m5")

    def available(self) -> list[str]:
        return sorted(find_table_files(self.path, self._s3_client()))
