"""Asset checks: names kept as constants, specs declared on the assets (partition-scoped), results built here.

Each `*_results` function takes the asset's frame (and what it needs to judge it) and returns AssetCheckResults;
the rules themselves live in core (guardrails, rebalancing) so the agent and the checks share one definition.
"""

import dagster as dg
import numpy as np
import pandas as pd

from .core.asof import PlanningInputs

# ---- demand_forecast ----------------------------------------------------------------------------------------
FORECAST_COVERAGE = "forecast_covers_active_series"
FORECAST_QUANTILES = "forecast_values_valid"
FORECAST_SPIKES = "forecast_spike_guard"
FORECAST_VS_NAIVE = "forecast_beats_seasonal_naive"

DEMAND_CHECKS = [
    dg.AssetCheckSpec(FORECAST_COVERAGE, asset="demand_forecast", blocking=True,
                      description="Every active SKU-location has a forecast for each of the 14 target days."),
    dg.AssetCheckSpec(FORECAST_QUANTILES, asset="demand_forecast", blocking=True,
                      description="Forecasts are finite, non-negative and ordered p10 <= p50 <= p90."),
    dg.AssetCheckSpec(FORECAST_SPIKES, asset="demand_forecast", blocking=False,
                      description="Warns when p50 is far above anything seen in history with no promotion or "
                                  "event to explain it."),
    dg.AssetCheckSpec(FORECAST_VS_NAIVE, asset="demand_forecast", blocking=False,
                      description="Warns when the model's holdout WAPE is worse than SeasonalNaive(7) on the same "
                                  "holdout."),
]


def _md_table(frame: pd.DataFrame, max_rows: int = 10) -> dg.MetadataValue:
    if frame.empty:
        return dg.MetadataValue.md("_none_")
    head = frame.head(max_rows)
    lines = ["| " + " | ".join(map(str, head.columns)) + " |", "|" + "---|" * len(head.columns)]
    for row in head.itertuples(index=False):
        cells = [f"{v:.4g}" if isinstance(v, (float, np.floating)) else
                 (f"{v:%Y-%m-%d}" if isinstance(v, pd.Timestamp) else str(v)) for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    if len(frame) > max_rows:
        lines.append(f"\n_{len(frame) - max_rows} more rows_")
    return dg.MetadataValue.md("\n".join(lines))


def forecast_check_results(forecast: pd.DataFrame, inputs: PlanningInputs, expected_series: pd.DataFrame,
                           holdout: dict, spike_factor: float = 3.0):
    """The four demand_forecast checks."""
    targets = inputs.target_dates
    expected = expected_series.assign(_k=1).merge(pd.DataFrame({"target_date": targets, "_k": 1}), on="_k")
    have = forecast[["sku_id", "location_id", "target_date"]].drop_duplicates()
    missing = expected.drop(columns="_k").merge(have, how="left", indicator=True)
    missing = missing[missing["_merge"] == "left_only"].drop(columns="_merge")
    yield dg.AssetCheckResult(
        check_name=FORECAST_COVERAGE, passed=missing.empty,
        metadata={"expected_rows": len(expected), "missing_rows": len(missing),
                  "missing_examples": _md_table(missing)})

    q = forecast[["p10", "p50", "p90"]].to_numpy(dtype=float)
    bad = ~np.isfinite(q).all(axis=1) | (q < 0).any(axis=1) | (q[:, 0] > q[:, 1] + 1e-9) | (q[:, 1] > q[:, 2] + 1e-9)
    yield dg.AssetCheckResult(
        check_name=FORECAST_QUANTILES, passed=not bad.any(),
        metadata={"bad_rows": int(bad.sum()), "examples": _md_table(forecast.loc[bad])})

    hist_max = inputs.sales.groupby(["sku_id", "location_id"])["units"].max().rename("history_max").reset_index()
    f = forecast.merge(hist_max, on=["sku_id", "location_id"], how="left")
    explained = pd.Series(False, index=f.index)
    if len(inputs.promotions):
        promo = inputs.promotions
        p = f[["sku_id", "location_id", "target_date"]].reset_index().merge(promo, on=["sku_id", "location_id"])
        p = p[(p["target_date"] >= p["start_date"]) & (p["target_date"] <= p["end_date"])]
        explained.loc[p["index"].unique()] = True
    if len(inputs.events):
        explained |= f["target_date"].isin(inputs.events["date"])
    spike = (f["p50"] > spike_factor * f["history_max"].fillna(np.inf).clip(lower=1.0)) & ~explained
    yield dg.AssetCheckResult(
        check_name=FORECAST_SPIKES, passed=not spike.any(), severity=dg.AssetCheckSeverity.WARN,
        metadata={"spikes": int(spike.sum()), "factor": spike_factor,
                  "examples": _md_table(f.loc[spike, ["sku_id", "location_id", "target_date", "p50", "history_max"]])})

    engine_wape, naive_wape = holdout.get("engine_wape"), holdout.get("seasonal_naive_wape")
    known = engine_wape is not None and naive_wape is not None
    yield dg.AssetCheckResult(
        check_name=FORECAST_VS_NAIVE, passed=bool(not known or engine_wape <= naive_wape),
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"engine_holdout_wape": float(engine_wape) if engine_wape is not None else float("nan"),
                  "seasonal_naive_holdout_wape": float(naive_wape) if naive_wape is not None else float("nan"),
                  "note": "holdout = the 14 days before the model's training anchor" if known else
                          "no holdout available (too little history)"})
