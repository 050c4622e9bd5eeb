"""LLM cost assets: per partition, what each agent's LLM step cost (tokens, USD, USD per SKU), and a daily roll-up.
Built from the agent registry, so a new agent's costs appear without touching this module."""

import dagster as dg
import pandas as pd

from ..agents.registry import registered
from ..core.costs import AGENT_COST_COLUMNS, daily_rollup
from ..display import md_table, readable
from ..partitions import DATE_DIM, daily_by_group, split_partition
from .common import USAGE_METADATA_KEY

COSTS_GROUP = "costs"


def _latest_usage(instance, asset: str, partition: str) -> list[dict]:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[partition]), limit=1).records
    if not records:
        return []
    meta = records[0].asset_materialization.metadata
    value = meta.get(USAGE_METADATA_KEY)
    return list(value.value) if value is not None else []


def _cost_metadata(frame: pd.DataFrame, names: tuple[str, ...]) -> dict:
    meta = {"usd_total": dg.MetadataValue.float(readable(frame["usd"].sum())),
            "calls": dg.MetadataValue.int(int(frame["calls"].sum())),
            "fallbacks": dg.MetadataValue.int(int(frame["fallbacks"].sum())),
            "table": md_table(frame)}
    for agent in names:
        rows = frame[frame["agent"] == agent]
        meta[f"usd_per_sku_{agent}"] = dg.MetadataValue.float(readable(rows["usd_per_sku"].sum()))
    return meta


def cost_assets(agents=None) -> list[dg.AssetsDefinition]:
    """agent_costs (per partition) and agent_costs_daily (per day) over the registered agents."""
    agent_assets = {a.name: a.asset_name for a in registered(agents)}
    names = tuple(agent_assets)

    @dg.asset(
        partitions_def=daily_by_group,
        deps=list(agent_assets.values()),
        group_name=COSTS_GROUP,
        owners=["team:retail-data"],
        tags={"layer": "costs"},
        backfill_policy=dg.BackfillPolicy.multi_run(1),
    )
    def agent_costs(context: dg.AssetExecutionContext) -> dg.Output:
        """Per agent and model: LLM calls, input/output tokens, USD, USD per SKU and per SKU-location, latency
        p50/p95, fallbacks, for this day and SKU group (read from the agents' latest materializations of the
        partition). Agents on their local engine show a zero row with model 'local'."""
        date, group = split_partition(context)
        partition = str(context.partition_key)
        rows = []
        for asset in agent_assets.values():
            rows += _latest_usage(context.instance, asset, partition)
        frame = pd.DataFrame(rows, columns=AGENT_COST_COLUMNS)
        missing = [a for a in names if a not in set(frame["agent"])]
        if missing:
            context.log.warning(f"no usage recorded for {missing} in {partition}")
        frame.insert(0, "date", date)
        frame.insert(1, "sku_group", group)
        return dg.Output(frame, metadata=_cost_metadata(frame, names))

    @dg.asset(
        partitions_def=daily_by_group.get_partitions_def_for_dimension(DATE_DIM),
        ins={"agent_costs": dg.AssetIn(partition_mapping=dg.MultiToSingleDimensionPartitionMapping(
            partition_dimension_name=DATE_DIM))},
        group_name=COSTS_GROUP,
        owners=["team:retail-data"],
        tags={"layer": "costs"},
        backfill_policy=dg.BackfillPolicy.multi_run(1),
    )
    def agent_costs_daily(context: dg.AssetExecutionContext, agent_costs: pd.DataFrame) -> dg.Output:
        """The day's LLM costs across every SKU group, per agent and model (USD per SKU recomputed from the sums)."""
        extra = [c for c in ("partition_date", "partition_sku_group", "date", "sku_group") if c in agent_costs.columns]
        frames = [g.drop(columns=extra) for _, g in agent_costs.groupby("sku_group")] if len(agent_costs) else []
        rolled = daily_rollup(frames)
        return dg.Output(rolled, metadata={"groups": dg.MetadataValue.int(len(frames)),
                                           **_cost_metadata(rolled, names)})

    return [agent_costs, agent_costs_daily]
