"""Demand sensing assets: the 14-day quantile forecast per SKU-location, and its realized accuracy over time."""

import dagster as dg
import pandas as pd

from ..agents.demand import DemandSensingAgent
from ..checks import DEMAND_CHECKS, _md_table, forecast_check_results
from ..core.plots import forecast_band_png, png_markdown
from ..partitions import daily_by_group
from ..resources.data_source import DataSourceResource
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
        "forecast_units_14d": dg.MetadataValue.float(float(forecast["mean"].sum())),
        "model_mix": dg.MetadataValue.json(info.get("model_mix", {})),
        "model_anchor": dg.MetadataValue.text(str(info.get("anchor"))),
        "trained_now": dg.MetadataValue.bool(bool(info.get("trained_now"))),
        "train_seconds": dg.MetadataValue.float(float(info.get("train_seconds") or 0.0)),
        "predict_seconds": dg.MetadataValue.float(float(info.get("predict_seconds") or 0.0)),
        "biggest_movers": _md_table(movers[["sku_id", "location_id", "last_28d_per_14d", "forecast_14d", "change"]]),
    }
    ch = info.get("check_holdout", {})
    if ch.get("engine_wape") is not None:
        meta["holdout_wape"] = dg.MetadataValue.float(float(ch["engine_wape"]))
    if ch.get("seasonal_naive_wape") is not None:
        meta["holdout_wape_seasonal_naive"] = dg.MetadataValue.float(float(ch["seasonal_naive_wape"]))
    if len(top):
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
                    data_source: DataSourceResource, sales_history, inventory_history, inventory_snapshot,
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
    forecast, info = demand_agent.forecast(inputs, data_source.identity())
    context.log.info(f"forecast {info['series']} series; model anchor {info['anchor']} "
                     f"({'trained now' if info['trained_now'] else 'cached'})")
    for result in forecast_check_results(forecast, inputs, info["expected_series"], info["check_holdout"],
                                         demand_agent.spike_factor):
        yield result
    yield dg.Output(forecast, metadata=forecast_summary(forecast, inputs, info))
