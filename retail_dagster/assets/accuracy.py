"""Realized forecast accuracy over time: each day, the forecasts of the 14 days before scored on the days that have
passed (the demand_forecast asset itself is built from the agent registry: assets/agents.py)."""

import dagster as dg
import pandas as pd

from ..core.asof import HORIZON_DAYS
from ..core.metrics import score_forecasts
from ..display import md_table, num
from ..partitions import daily_by_group, partition_key, split_partition
from ..resources.io_manager import ParquetIOManager

DEMAND_GROUP = "demand"


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
            start_offset=-HORIZON_DAYS, end_offset=-1, allow_nonexistent_upstream_partitions=True)),
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
    for k in range(1, HORIZON_DAYS + 1):
        origin = date - pd.Timedelta(days=k)
        fc = io_manager.load_stored("demand_forecast", partition_key(origin.strftime("%Y-%m-%d"), group))
        if fc is not None:
            past[origin] = fc
    scores = realized_accuracy(past, sales_history, date)
    meta: dict = {"forecasts_scored": dg.MetadataValue.int(len(scores)), "table": md_table(scores, HORIZON_DAYS)}
    full = scores[scores["days_realized"] == HORIZON_DAYS]
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
