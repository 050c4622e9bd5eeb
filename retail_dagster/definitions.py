"""Assembles the one `Definitions` object: assets, checks, jobs, schedules, sensors and resources."""

from __future__ import annotations

import dagster as dg

from . import settings
from .assets import ingest
from .jobs import daily_pipeline_job
from .resources.data_source import DataSourceResource
from .resources.io_manager import ParquetIOManager


def build_resources() -> dict:
    """Resources chosen from environment variables (see retail_dagster/settings.py)."""
    size = settings.demo_size_from_env()
    return {
        "data_source": DataSourceResource(
            kind=settings.source_kind(), path=settings.data_path(), demo_skus=size.n_skus,
            demo_stores=size.n_stores, demo_warehouses=size.n_warehouses, demo_days=size.n_days,
            demo_seed=size.seed, demo_end_date=size.end_date),
        "io_manager": ParquetIOManager(base_path=settings.out_path()),
    }


defs = dg.Definitions(
    assets=dg.load_assets_from_modules([ingest]),
    asset_checks=[],
    jobs=[daily_pipeline_job],
    resources=build_resources(),
)
