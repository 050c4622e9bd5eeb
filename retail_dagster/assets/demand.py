"""Demand sensing assets: the 14-day quantile forecast per SKU-location, and its realized accuracy over time."""

import json

import dagster as dg
import pandas as pd

from .. import settings
from ..agents.demand import DemandSensingAgent
from ..checks import DEMAND_CHECKS, _md_table, forecast_check_results
from ..core.plausibility import describe_outliers
from ..core.plots import forecast_band_png, png_markdown
from ..partitions import daily_by_group
from ..core.metrics import score_forecasts
from ..partitions import partition_key, split_partition
from ..resources.audit import AuditSink
from ..resources.data_source import DataSourceResource
from ..resources.io_manager import ParquetIOManager
from .common import blocking_checks_passed, check_outcomes, engine_counts, num, start_audit, usage_metadata, write_audit
from .ingest import inputs_from_assets

DEMAND_GROUP = "demand"


def forecast_summary(forecast: pd.DataFrame, inputs, info: dict) -> dict:
    """UI metadata: rows, series, model mix, holdout accuracy, biggest movers, a plot of bands vs history."""
    per_series = forecast.groupby(["sku_id", "location_id"], as_index=False)["mean"].sum().rename(
        columns={"mean": "forecast_14d"})
    recent = inputs.sales[inputs.sales["date"] >= inputs.date - pd.Timedelta(days=28)]
    last = recent.groupby(["sku_id", "location_id"], as_index=False)["units"].sum()
    last["last_28d_per_14d"] = last["units"] / 2
    movers = per_series.merge(last[["sku_id", "location_id", "last_28d_per_14d"]], how="left").fillna(0)
    movers["change"] = movers["forecast_14d"] - movers["last_28d_per_14d"]
    movers = movers.reindex(movers["change"].abs().sort_values(ascending=False).index)
    top = per_series.nlargest(3, "forecast_14d")
    meta = {
        "rows": dg.MetadataValue.int(len(forecast)),
        "series": dg.MetadataValue.int(int(len(per_series))),
        "forecast_units_14d": num(float(forecast["mean"].sum())),
        "engines": engine_counts(forecast),
        "model_mix": dg.MetadataValue.json(info.get("model_mix", {})),
        "model_anchor": dg.MetadataValue.text(str(info.get("anchor"))),
        "trained_now": dg.MetadataValue.bool(bool(info.get("trained_now"))),
        "train_seconds": num(float(info.get("train_seconds") or 0.0)),
        "predict_seconds": num(float(info.get("predict_seconds") or 0.0)),
        "implausible_sales_capped": dg.MetadataValue.int(int(len(info.get("outliers", [])))),
        "data_note": dg.MetadataValue.text(info.get("data_note") or "ordinary history"),
        "biggest_movers": _md_table(movers[["sku_id", "location_id", "last_28d_per_14d", "forecast_14d", "change"]]),
    }
    ch = info.get("check_holdout", {})
    if ch.get("engine_wape") is not None:
        meta["holdout_wape"] = num(float(ch["engine_wape"]))
    if ch.get("seasonal_naive_wape") is not None:
        meta["holdout_wape_seasonal_naive"] = num(float(ch["seasonal_naive_wape"]))
    if len(top) and settings.metadata_charts():
        png = forecast_band_png(inputs.sales, forecast, list(zip(top["sku_id"], top["location_id"])))
        meta["forecast_bands"] = dg.MetadataValue.md(png_markdown(png))
    return meta


@dg.asset(
    partitions_def=daily_by_group,
    check_specs=DEMAND_CHECKS,
    group_name=DEMAND_GROUP,
    owners=["team:demand-planning"],
    tags={"agent": "demand_sensing"},
    backfill_policy=dg.BackfillPolicy.multi_run(1),
    pool="bedrock",
)
def demand_forecast(context: dg.AssetExecutionContext, demand_agent: DemandSensingAgent,
                    data_source: DataSourceResource, audit: AuditSink, sales_history, inventory_history, inventory_snapshot,
                    catalog_slice, promotions_calendar, events_calendar, weather_calendar, store_traffic,
                    store_network, transfer_lanes):
    """Daily demand forecast for the 14 days from the planning day, per active SKU-location, with p10/p50/p90.

    A global LightGBM (Tweedie) model per SKU group with calendar, price, promotion, event, weather and traffic
    features, statsforecast models for intermittent series, a category x location profile for new series;
    negative-binomial quantiles calibrated on a holdout. Models retrain on a weekly grid and are cached.
    """
    inputs = inputs_from_assets(context, sales_history, inventory_history, inventory_snapshot, catalog_slice,
                                promotions_calendar, events_calendar, weather_calendar, store_traffic,
                                store_network, transfer_lanes)
    start_audit(context, audit, "demand_forecast", inputs)
    forecast, info, usage = demand_agent.forecast(inputs, data_source.identity())
    context.log.info(f"forecast {info['series']} series; model anchor {info['anchor']} "
                     f"({'trained now' if info['trained_now'] else 'cached'})")
    outliers = info["outliers"]
    if info.get("data_note"):
        context.log.warning(f"{inputs.sku_group}: {info['data_note']}")
    if len(outliers):
        context.log.warning(f"{describe_outliers(outliers)}; "
                            + ("capped before training" if info["outliers_capped"] else "NOT capped (cap_outliers off)"))
    results = list(forecast_check_results(forecast, inputs, info["expected_series"], info["check_holdout"],
                                          demand_agent.spike_factor, ceiling=info["series_ceiling"],
                                          block_factor=demand_agent.history_block_factor, outliers=outliers))
    n_series = int(info["series"])
    write_audit(context, audit, "demand_forecast", inputs, forecast_decisions(forecast),
                engine=",".join(sorted(forecast["engine"].astype(str).unique())) if len(forecast) else "local",
                model=json.dumps(info.get("model_mix", {})), usage=usage, checks=check_outcomes(results),
                extra={"model_anchor": info.get("anchor"), "trained_through": info.get("trained_through"),
                       "training_fingerprint": info.get("training_fingerprint"),
                       "data_note": info.get("data_note", ""),
                       "implausible_sales": outliers.astype({"date": str}).to_dict("records")[:50]
                       if len(outliers) else []})
    meta = forecast_summary(forecast, inputs, info)
    meta.update(usage_metadata("demand", usage, inputs.catalog["sku_id"].nunique(), n_series))
    meta.update(blocking_checks_passed(results, DEMAND_CHECKS))
    yield dg.Output(forecast, metadata=meta)
    yield from results


def forecast_decisions(forecast: pd.DataFrame) -> pd.DataFrame:
    """One audit record per SKU-location: the 14-day totals and the first day's band, model and engine."""
    if forecast.empty:
        return forecast
    keys = ["sku_id", "location_id"]
    f = forecast.sort_values(keys + ["horizon_day"])
    agg = f.groupby(keys, as_index=False).agg(mean_14d=("mean", "sum"), p10_day1=("p10", "first"),
                                              p50_day1=("p50", "first"), p90_day1=("p90", "first"),
                                              model=("model", "first"), engine=("engine", "first"))
    for col in ("llm_adjustment", "llm_reason"):
        if col in f.columns:
            agg[col] = f.groupby(keys)[col].first().to_numpy()
    return agg


def realized_accuracy(past_forecasts: dict[pd.Timestamp, pd.DataFrame], sales: pd.DataFrame,
                      planning_date: pd.Timestamp) -> pd.DataFrame:
    """Score each earlier forecast on its target dates that have passed (before the planning day)."""
    rows = []
    for origin, fc in sorted(past_forecasts.items()):
        fc = fc[fc["target_date"] < planning_date]
        score = score_forecasts(fc, sales[sales["date"] >= origin])
        rows.append({"forecast_date": origin, "days_realized": int((planning_date - origin).days),
                     **{k: (float(v) if v is not None else float("nan")) for k, v in score.items()}})
    return pd.DataFrame(rows, columns=["forecast_date", "days_realized", "wape_daily", "wape_14d", "bias",
                                       "coverage_p10_p90", "n"])


@dg.asset(
    partitions_def=daily_by_group,
    group_name=DEMAND_GROUP,
    owners=["team:demand-planning"],
    tags={"agent": "demand_sensing"},
    # lineage and ordering (asset backfills wait for them): the forecasts of the 14 days before scored here
    deps=[dg.AssetDep("demand_forecast", partition_mapping=dg.MultiPartitionMapping({
        "date": dg.DimensionPartitionMapping("date", dg.TimeWindowPartitionMapping(
            start_offset=-14, end_offset=-1, allow_nonexistent_upstream_partitions=True)),
        "sku_group": dg.DimensionPartitionMapping("sku_group", dg.IdentityPartitionMapping()),
    }))],
    backfill_policy=dg.BackfillPolicy.multi_run(1),
)
def forecast_accuracy(context: dg.AssetExecutionContext, sales_history: pd.DataFrame,
                      io_manager: dg.ResourceParam[ParquetIOManager]) -> dg.Output:
    """Realized accuracy of the forecasts made over the last 14 days, scored on the days that have passed.

    The headline figures (numeric metadata, charted over time in the UI) are those of the forecast made 14 days
    ago, whose whole horizon is now known: WAPE daily, WAPE of the 14-day total, bias and p10-p90 coverage.
    """
    date, group = split_partition(context)
    past = {}
    for k in range(1, 15):
        origin = date - pd.Timedelta(days=k)
        fc = io_manager.load_stored("demand_forecast", partition_key(origin.strftime("%Y-%m-%d"), group))
        if fc is not None:
            past[origin] = fc
    scores = realized_accuracy(past, sales_history, date)
    meta: dict = {"forecasts_scored": dg.MetadataValue.int(len(scores)), "table": _md_table(scores, 14)}
    full = scores[scores["days_realized"] == 14]
    if len(full):
        r = full.iloc[0]
        for key in ("wape_daily", "wape_14d", "bias", "coverage_p10_p90"):
            meta[f"realized_{key}"] = num(float(r[key]))
    elif len(scores):
        r = scores.iloc[0]
        meta["realized_wape_daily"] = num(float(r["wape_daily"]))
        meta["note"] = dg.MetadataValue.text(f"oldest forecast scored covers {int(r['days_realized'])} realized days")
    else:
        meta["note"] = dg.MetadataValue.text("no earlier forecasts stored yet for this group")
    return dg.Output(scores, metadata=meta)
