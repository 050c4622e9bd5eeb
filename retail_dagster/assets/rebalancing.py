"""Rebalancing asset: the day's stock-transfer plan between stores and warehouses."""

import dagster as dg
import pandas as pd

from ..agents.rebalancing import RebalancingAgent
from ..checks import TRANSFER_CHECKS, _md_table, transfer_check_results
from ..partitions import daily_by_group
from ..resources.audit import AuditSink
from .common import blocking_checks_passed, check_outcomes, engine_counts, num, start_audit, usage_metadata, write_audit
from .ingest import partial_inputs

REBALANCING_GROUP = "rebalancing"


def plan_summary(plan: pd.DataFrame, info: dict) -> dict:
    meta = {
        "transfers": dg.MetadataValue.int(len(plan)),
        "units_moved": dg.MetadataValue.int(int(plan["units"].sum()) if len(plan) else 0),
        "transfer_cost_usd": num(float(plan["cost"].sum()) if len(plan) else 0.0),
        "shortage_units_avoided": num(float(plan["shortage_units_avoided"].sum()) if len(plan) else 0.0),
        "overstock_units_relieved": num(float(plan["overstock_units_relieved"].sum()) if len(plan) else 0.0),
        "engines": engine_counts(plan),
        "solver": dg.MetadataValue.text(f"{info.get('solver', info.get('engine', ''))}: {info.get('solver_status', '')}"),
        "largest_moves": _md_table(plan.nlargest(10, "units")[
            ["sku_id", "from_location", "to_location", "units", "cost", "shortage_units_avoided", "reason"]]
            if len(plan) else plan),
    }
    for key in ("saving_usd", "objective_usd", "objective_without_plan_usd", "gap_vs_relaxation_pct", "mip_gap",
                "seconds"):
        if isinstance(info.get(key), (int, float)):
            meta[key] = num(float(info[key]))
    if not len(plan):
        meta["empty_plan_reason"] = dg.MetadataValue.text(str(info.get("why_empty", "no transfer improves the objective")))
    return meta


@dg.asset(
    partitions_def=daily_by_group,
    check_specs=TRANSFER_CHECKS,
    group_name=REBALANCING_GROUP,
    owners=["team:supply-chain"],
    tags={"agent": "rebalancing"},
    backfill_policy=dg.BackfillPolicy.multi_run(1),
    pool="bedrock",
)
def transfer_plan(context: dg.AssetExecutionContext, rebalancing_agent: RebalancingAgent, audit: AuditSink,
                  demand_forecast: pd.DataFrame, price_recommendations: pd.DataFrame, inventory_snapshot,
                  catalog_slice, store_network, transfer_lanes):
    """Transfers to ship today: senders keep their protection stock, receivers get what cuts shortage most per $.

    Need and surplus come from stock on hand and in transit against the forecast quantiles over lead time +
    review period; one mixed-integer model per partition (HiGHS) minimises transfer cost + lost margin from
    shortages + overstock holding cost, with lane capacities, case packs, minimum quantities and a budget.
    """
    inputs = partial_inputs(context, inventory_snapshot, catalog_slice, store_network, transfer_lanes)
    start_audit(context, audit, "transfer_plan", inputs)
    plan, info, pos, usage = rebalancing_agent.plan(inputs, demand_forecast, price_recommendations)
    violations, share = rebalancing_agent.validate(plan, pos, inputs)
    results = list(transfer_check_results(violations, share, rebalancing_agent.max_share_moved))
    bedrock = rebalancing_agent.bedrock
    model = bedrock.model_for("rebalancing") if bedrock is not None and \
        bedrock.engine_for("rebalancing") == "bedrock" else f"local_{rebalancing_agent.solver_engine}"
    write_audit(context, audit, "transfer_plan", inputs, plan,
                engine=",".join(sorted(plan["engine"].astype(str).unique())) if len(plan) else "local",
                model=model, usage=usage, checks=check_outcomes(results),
                extra={"solver": {k: v for k, v in info.items() if k != "settings"}},
                used_inputs=["inventory_snapshot", "catalog_slice", "store_network", "transfer_lanes"])
    meta = plan_summary(plan, info)
    n_sku_locations = int(demand_forecast[["sku_id", "location_id"]].drop_duplicates().shape[0])
    meta.update(usage_metadata("rebalancing", usage, inputs.catalog["sku_id"].nunique(), n_sku_locations))
    meta.update(blocking_checks_passed(results, TRANSFER_CHECKS))
    yield dg.Output(plan, metadata=meta)
    yield from results
