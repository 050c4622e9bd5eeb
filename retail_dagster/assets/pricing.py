"""Pricing asset: recommended price per SKU-location for the planning day, inside the price guardrails."""

import dagster as dg
import numpy as np
import pandas as pd

from ..agents.pricing import PricingAgent
from ..checks import PRICE_CHECKS, _md_table, price_check_results
from ..partitions import daily_by_group
from ..resources.audit import AuditSink
from ..resources.data_source import DataSourceResource
from .common import blocking_checks_passed, check_outcomes, engine_counts, num, start_audit, usage_metadata, write_audit
from .ingest import inputs_from_assets

PRICING_GROUP = "pricing"


def price_summary(recs: pd.DataFrame) -> dict:
    """Counts by reason, average change, expected margin uplift, the largest changes."""
    if recs.empty:
        return {"rows": dg.MetadataValue.int(0)}
    reasons = recs["reason"].astype(str).str.split(";").explode().value_counts()
    changed = recs["change_pct"].abs() > 1e-9
    cur, rec = recs["expected_margin_current"].sum(), recs["expected_margin_recommended"].sum()
    largest = recs.reindex(recs["change_pct"].abs().sort_values(ascending=False).index).head(10)
    return {
        "rows": dg.MetadataValue.int(len(recs)),
        "changed": dg.MetadataValue.int(int(changed.sum())),
        "changed_up": dg.MetadataValue.int(int((recs["change_pct"] > 1e-9).sum())),
        "changed_down": dg.MetadataValue.int(int((recs["change_pct"] < -1e-9).sum())),
        "avg_change_pct": num(float(recs.loc[changed, "change_pct"].mean()) if changed.any() else 0.0),
        "expected_margin_current_usd": num(float(cur)),
        "expected_margin_recommended_usd": num(float(rec)),
        "expected_margin_uplift_usd": num(float(rec - cur)),
        "expected_margin_uplift_pct": num(float((rec / cur - 1) * 100) if cur else 0.0),
        "clamped": dg.MetadataValue.int(int(recs["clamped"].astype(bool).sum())),
        "reasons": dg.MetadataValue.json({str(k): int(v) for k, v in reasons.items()}),
        "engines": engine_counts(recs),
        "largest_changes": _md_table(largest[["sku_id", "location_id", "current_price", "recommended_price",
                                              "change_pct", "elasticity", "days_of_cover", "reason"]]),
    }


@dg.asset(
    partitions_def=daily_by_group,
    check_specs=PRICE_CHECKS,
    group_name=PRICING_GROUP,
    owners=["team:pricing"],
    tags={"agent": "pricing"},
    backfill_policy=dg.BackfillPolicy.multi_run(1),
    pool="bedrock",
)
def price_recommendations(context: dg.AssetExecutionContext, pricing_agent: PricingAgent, audit: AuditSink,
                          data_source: DataSourceResource,
                          demand_forecast: pd.DataFrame, sales_history, inventory_history, inventory_snapshot,
                          catalog_slice, promotions_calendar, events_calendar, weather_calendar, store_traffic,
                          store_network, transfer_lanes):
    """Recommended regular price per SKU-location: maximises expected 14-day gross profit from the forecast and a
    hierarchically pooled price elasticity, with stock-aware markdowns and raises, inside the hard guardrails
    (max daily change, margin floor, MSRP, MAP, price endings, min days between changes, promotion lock) and
    with the lowest price of the prior 30 days recorded for every markdown (EU Omnibus)."""
    inputs = inputs_from_assets(context, sales_history, inventory_history, inventory_snapshot, catalog_slice,
                                promotions_calendar, events_calendar, weather_calendar, store_traffic,
                                store_network, transfer_lanes)
    start_audit(context, audit, "price_recommendations", inputs)
    recs, usage = pricing_agent.recommend(inputs, demand_forecast, data_source.identity())
    violations = pricing_agent.violations(recs, inputs)
    results = list(price_check_results(recs, demand_forecast, violations, pricing_agent.max_daily_change_pct,
                                       pricing_agent.max_changed_share, pricing_agent.max_at_bound_share))
    model = pricing_agent.bedrock.model_for("pricing") if pricing_agent.bedrock is not None and \
        pricing_agent.bedrock.engine_for("pricing") == "bedrock" else "elasticity_optimizer"
    write_audit(context, audit, "price_recommendations", inputs, recs,
                engine=",".join(sorted(recs["engine"].astype(str).unique())) if len(recs) else "local",
                model=model, usage=usage, checks=check_outcomes(results),
                extra={"guardrail_settings": pricing_agent.guardrails().__dict__ | {
                    "category_overrides": dict(pricing_agent.category_overrides)}})
    meta = price_summary(recs)
    meta.update(usage_metadata("pricing", usage, inputs.catalog["sku_id"].nunique(), len(recs)))
    meta.update(blocking_checks_passed(results, PRICE_CHECKS))
    yield dg.Output(recs, metadata=meta)
    yield from results
