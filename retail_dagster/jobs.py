"""Jobs: the daily pipeline over every asset (and its checks), one run per date x sku_group partition."""

from __future__ import annotations

import dagster as dg

from .partitions import daily_by_group

DAILY_PIPELINE = "daily_pipeline"

DAILY_COST_ROLLUP = "daily_cost_rollup"

# every asset partitioned by date x sku_group, with their checks
PIPELINE_SELECTION = dg.AssetSelection.all(include_sources=False) - dg.AssetSelection.assets(
    "agent_costs_daily", "closed_loop_pilot")

CLOSED_LOOP_PILOT = "closed_loop_pilot_job"

daily_pipeline_job = dg.define_asset_job(
    DAILY_PIPELINE,
    selection=PIPELINE_SELECTION,
    partitions_def=daily_by_group,
    description="The whole daily loop for one day and SKU group: ingest -> demand_forecast -> "
                "price_recommendations -> transfer_plan, with the blocking guardrail checks in between.",
    tags={"pipeline": "daily"},
)

daily_cost_rollup_job = dg.define_asset_job(
    DAILY_COST_ROLLUP,
    selection=dg.AssetSelection.assets("agent_costs_daily"),
    partitions_def=daily_by_group.get_partitions_def_for_dimension("date"),
    description="Roll the day's LLM costs up across SKU groups, once the groups' runs are done.",
)

closed_loop_pilot_job = dg.define_asset_job(
    CLOSED_LOOP_PILOT,
    selection=dg.AssetSelection.assets("closed_loop_pilot"),
    description="The closed-loop pilot: the agents day after day in a simulated network, against holding prices "
                "and shipping nothing. Set the size in the launchpad's config.",
)
