"""Assembles the one `Definitions` object: assets, checks, jobs, schedules, sensors and resources."""

from __future__ import annotations

import dagster as dg

from . import settings
from .agents.demand import DemandSensingAgent
from .agents.pricing import PricingAgent
from .agents.rebalancing import RebalancingAgent
from .assets import demand, ingest, pricing, rebalancing
from .jobs import daily_pipeline_job
from .schedules import daily_planning_schedule
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
        "demand_agent": DemandSensingAgent(model_cache_dir=settings.model_cache_path()),
        "pricing_agent": PricingAgent(),
        "rebalancing_agent": RebalancingAgent(),
    }


defs = dg.Definitions(
    assets=dg.load_assets_from_modules([ingest, demand, pricing, rebalancing]),
    asset_checks=[],
    jobs=[daily_pipeline_job],
    schedules=[daily_planning_schedule],
    resources=build_resources(),
)
