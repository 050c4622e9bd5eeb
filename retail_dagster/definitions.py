"""Assembles the one `Definitions` object: assets, checks, jobs, schedules, sensors and resources, with one asset
and one resource per registered agent (agents/registry.py)."""

from __future__ import annotations

import os

import dagster as dg

from . import settings
from .agents.registry import registered
from .assets import accuracy, ingest, pilot
from .assets.agents import agent_assets
from .assets.costs import cost_assets
from .jobs import closed_loop_pilot_job, daily_cost_rollup_job, daily_pipeline_job
from .schedules import daily_cost_rollup_schedule, daily_planning_schedule
from .resources.audit import AuditSink
from .resources.bedrock import BedrockResource
from .resources.data_source import DataSourceResource
from .resources.io_manager import ParquetIOManager


def build_resources(agents=None) -> dict:
    """Resources chosen from environment variables (see retail_dagster/settings.py)."""
    size = settings.demo_size_from_env()
    region = os.environ.get("AWS_REGION", os.environ.get("AWS_DEFAULT_REGION", "us-east-1"))
    bedrock = BedrockResource(region_name=region,
                              endpoint_url=os.environ.get("RETAIL_DAGSTER_BEDROCK_ENDPOINT") or None,
                              dry_run=os.environ.get("RETAIL_DAGSTER_LLM_DRY_RUN", "") == "1")
    resources = {
        "bedrock": bedrock,
        "audit": AuditSink(base_path=settings.audit_path(),
                           endpoint_url=os.environ.get("AWS_ENDPOINT_URL_S3") or None),
        "data_source": DataSourceResource(
            kind=settings.source_kind(), path=settings.data_path(), demo_skus=size.n_skus,
            demo_stores=size.n_stores, demo_warehouses=size.n_warehouses, demo_days=size.n_days,
            demo_seed=size.seed, demo_end_date=size.end_date,
            max_staleness_days=int(os.environ.get("RETAIL_DAGSTER_MAX_STALENESS_DAYS", "0"))),
        "io_manager": ParquetIOManager(base_path=settings.out_path()),
    }
    for agent in registered(agents):
        resources[agent.resource_key] = agent.from_settings(bedrock)
    return resources


def build_definitions(agents=None) -> dg.Definitions:
    """The definitions over the registered agents (or `agents`, e.g. with a new one under test)."""
    return dg.Definitions(
        assets=[*dg.load_assets_from_modules([ingest, accuracy, pilot]), *agent_assets(agents),
                *cost_assets(agents)],
        jobs=[daily_pipeline_job, daily_cost_rollup_job, closed_loop_pilot_job],
        schedules=[daily_planning_schedule, daily_cost_rollup_schedule],
        resources=build_resources(agents),
    )


defs = build_definitions()
