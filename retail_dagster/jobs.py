"""Jobs: the daily pipeline over every asset (and its checks), one run per date x sku_group partition."""

from __future__ import annotations

import dagster as dg

from .partitions import daily_by_group

DAILY_PIPELINE = "daily_pipeline"

daily_pipeline_job = dg.define_asset_job(
    DAILY_PIPELINE,
    selection=dg.AssetSelection.all(include_sources=False),
    partitions_def=daily_by_group,
    description="The whole daily loop for one day and SKU group: ingest -> demand_forecast -> "
                "price_recommendations -> transfer_plan, with the blocking guardrail checks in between.",
    tags={"pipeline": "daily"},
)
