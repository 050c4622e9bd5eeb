"""Asset checks: names kept as constants, specs declared on the assets (partition-scoped), results built here.

Each `*_results` function takes the asset's frame (and what it needs to judge it) and returns AssetCheckResults;
the rules themselves live in core (guardrails, rebalancing) so the agent and the checks share one definition.
"""

import dagster as dg
import numpy as np
import pandas as pd

from .core.asof import PlanningInputs
from .core.guardrails import GuardrailSettings, price_changed
from .display import md_table, readable
from .partitions import daily_by_group


def check_spec(name: str, asset: str, blocking: bool, description: str) -> dg.AssetCheckSpec:
    """A check on a partitioned asset, itself partitioned the same way: it judges only the run's partition and
    its result is recorded per partition (so the UI shows check status per day and group)."""
    return dg.AssetCheckSpec(name, asset=asset, blocking=blocking, description=description,
                             partitions_def=daily_by_group)


# ---- ingest ----------------------------------------------------------------------------------------------------
INPUTS_CURRENT = "inputs_are_current"

INGEST_CHECKS = [
    check_spec(INPUTS_CURRENT, "inventory_snapshot", True,
               "Sales and inventory reach the day before the planning day (within the configured tolerance), so no "
               "decision is made on a stale stock position. Backfills of past days pass: their data is complete."),
]


def freshness_result(inputs: PlanningInputs, max_staleness_days: int) -> dg.AssetCheckResult:
    """Blocking: the last sales day and the stock snapshot are at most `max_staleness_days` older than D-1."""
    need = inputs.date - pd.Timedelta(days=1 + max_staleness_days)
    last = {"sales": inputs.sales["date"].max() if len(inputs.sales) else None,
            "inventory": inputs.inventory_snapshot["date"].max() if len(inputs.inventory_snapshot) else None}
    stale = {t: d for t, d in last.items() if d is None or pd.isna(d) or d < need}
    days_old = {t: (None if d is None or pd.isna(d) else int((inputs.date - pd.Timedelta(days=1) - d).days))
                for t, d in last.items()}
    description = None
    if stale:
        description = (f"inputs for {inputs.date:%Y-%m-%d} end too early: "
                       + ", ".join(f"{t} through {d:%Y-%m-%d}" if d is not None and not pd.isna(d) else f"no {t}"
                                   for t, d in stale.items())
                       + f"; need data through {need:%Y-%m-%d} (the day before the planning day"
                       + (f", {max_staleness_days} day(s) tolerance" if max_staleness_days else "")
                       + "). Load the missing days, or plan an earlier date.")
    return dg.AssetCheckResult(
        check_name=INPUTS_CURRENT, asset_key="inventory_snapshot", passed=not stale, description=description,
        metadata={"sales_last_date": f"{last['sales']:%Y-%m-%d}" if days_old["sales"] is not None else "none",
                  "inventory_last_date": (f"{last['inventory']:%Y-%m-%d}" if days_old["inventory"] is not None
                                          else "none"),
                  "days_behind": max([d for d in days_old.values() if d is not None], default=-1),
                  "max_staleness_days": int(max_staleness_days)})


# ---- demand_forecast ----------------------------------------------------------------------------------------
FORECAST_COVERAGE = "forecast_covers_active_series"
FORECAST_QUANTILES = "forecast_values_valid"
FORECAST_SPIKES = "forecast_spike_guard"
FORECAST_VS_NAIVE = "forecast_beats_seasonal_naive"
FORECAST_PLAUSIBLE = "forecast_within_series_history"

DEMAND_CHECKS = [
    check_spec(FORECAST_COVERAGE, "demand_forecast", True,
               "Every active SKU-location has a forecast for each of the 14 target days."),
    check_spec(FORECAST_QUANTILES, "demand_forecast", True,
               "Forecasts are finite, non-negative and ordered p10 <= p50 <= p90."),
    check_spec(FORECAST_SPIKES, "demand_forecast", False,
               "Warns when p50 is far above anything seen in history with no promotion or "
               "event to explain it."),
    check_spec(FORECAST_VS_NAIVE, "demand_forecast", False,
               "Warns when the model's holdout WAPE is worse than SeasonalNaive(7) on the same "
               "holdout."),
    check_spec(FORECAST_PLAUSIBLE, "demand_forecast", True,
               "Blocks when a series' p50 is far above anything it has plausibly sold (its history max after "
               "implausible days are capped); names the series."),
]


def forecast_check_results(forecast: pd.DataFrame, inputs: PlanningInputs, expected_series: pd.DataFrame,
                           holdout: dict, spike_factor: float = 3.0, ceiling: pd.DataFrame | None = None,
                           block_factor: float = 10.0, outliers: pd.DataFrame | None = None):
    """The demand_forecast checks. `ceiling` (sku_id, location_id, history_max) is what each series has plausibly
    sold (after capping implausible days); without it the raw history max is used."""
    targets = inputs.target_dates
    expected = expected_series.assign(_k=1).merge(pd.DataFrame({"target_date": targets, "_k": 1}), on="_k")
    have = forecast[["sku_id", "location_id", "target_date"]].drop_duplicates()
    missing = expected.drop(columns="_k").merge(have, how="left", indicator=True)
    missing = missing[missing["_merge"] == "left_only"].drop(columns="_merge")
    yield dg.AssetCheckResult(
        check_name=FORECAST_COVERAGE, passed=missing.empty,
        metadata={"expected_rows": len(expected), "missing_rows": len(missing),
                  "missing_examples": md_table(missing)})

    q = forecast[["p10", "p50", "p90"]].to_numpy(dtype=float)
    bad = ~np.isfinite(q).all(axis=1) | (q < 0).any(axis=1) | (q[:, 0] > q[:, 1] + 1e-9) | (q[:, 1] > q[:, 2] + 1e-9)
    yield dg.AssetCheckResult(
        check_name=FORECAST_QUANTILES, passed=not bad.any(),
        metadata={"bad_rows": int(bad.sum()), "examples": md_table(forecast.loc[bad])})

    hist_max = ceiling if ceiling is not None else \
        inputs.sales.groupby(["sku_id", "location_id"])["units"].max().rename("history_max").reset_index()
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
                  "examples": md_table(f.loc[spike, ["sku_id", "location_id", "target_date", "p50", "history_max"]])})

    yield forecast_plausibility_result(f, block_factor, outliers)

    engine_wape, naive_wape = holdout.get("engine_wape"), holdout.get("seasonal_naive_wape")
    known = engine_wape is not None and naive_wape is not None
    yield dg.AssetCheckResult(
        check_name=FORECAST_VS_NAIVE, passed=bool(not known or engine_wape <= naive_wape),
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"engine_holdout_wape": readable(engine_wape) if engine_wape is not None else float("nan"),
                  "seasonal_naive_holdout_wape": readable(naive_wape) if naive_wape is not None else float("nan"),
                  "note": "holdout = the 14 days before the model's training anchor" if known else
                          "no holdout available (too little history)"})


def forecast_plausibility_result(f: pd.DataFrame, block_factor: float,
                                 outliers: pd.DataFrame | None) -> dg.AssetCheckResult:
    """Blocking: p50 above `block_factor` x max(plausible history max, 1) for a series with history. Promotions
    and events do not excuse it: no promotion makes a series sell ten times its best day overnight."""
    limit = block_factor * f["history_max"].clip(lower=1.0)
    bad = f["history_max"].notna() & (f["p50"] > limit)
    worst = (f.loc[bad].assign(ratio=lambda x: x["p50"] / x["history_max"].clip(lower=1.0))
             .sort_values("ratio", ascending=False).drop_duplicates(["sku_id", "location_id"]))
    names = [f"{r.sku_id}@{r.location_id}" for r in worst.itertuples()]
    meta = {"series_blocked": len(names), "factor": float(block_factor),
            "series": ", ".join(names[:20]) + (f" and {len(names) - 20} more" if len(names) > 20 else ""),
            "examples": md_table(worst[["sku_id", "location_id", "target_date", "p50", "history_max"]])}
    if outliers is not None:
        capped = outliers.groupby(["sku_id", "location_id"]).size()
        meta["implausible_sales_rows"] = int(len(outliers))
        meta["implausible_sales_series"] = ", ".join(f"{s}@{loc}" for s, loc in capped.index[:20])
    return dg.AssetCheckResult(check_name=FORECAST_PLAUSIBLE, passed=not bad.any(), metadata=meta,
                               description=(f"p50 above {block_factor:g}x the plausible history max: "
                                            + ", ".join(names[:5])) if names else None)


# ---- transfer_plan ------------------------------------------------------------------------------------------
TRANSFER_CONSERVATION = "transfers_keep_sender_protection"
TRANSFER_UNITS = "transfer_units_valid"
TRANSFER_LANES = "transfers_on_existing_lanes"
TRANSFER_BUDGET = "transfer_plan_within_budget"
TRANSFER_SHARE = "transfer_share_of_network_stock"

# check name -> plan_violations rules it covers
TRANSFER_RULES = {
    TRANSFER_CONSERVATION: ("conservation", "protection_stock", "on_hand"),
    TRANSFER_UNITS: ("units_positive_integer", "case_pack_multiple", "minimum_quantity"),
    TRANSFER_LANES: ("self_transfer", "lane_exists", "lane_capacity"),
    TRANSFER_BUDGET: ("budget",),
}

TRANSFER_CHECKS = [
    check_spec(TRANSFER_CONSERVATION, "transfer_plan", True,
               "Per SKU and sender, units out <= available surplus; no sender below its "
               "protection stock or its on-hand."),
    check_spec(TRANSFER_UNITS, "transfer_plan", True,
               "Units are positive integers, whole case packs, at least the minimum transfer."),
    check_spec(TRANSFER_LANES, "transfer_plan", True,
               "Every transfer uses an existing lane within its capacity; no self-transfers."),
    check_spec(TRANSFER_BUDGET, "transfer_plan", True,
               "The plan's transfer cost is within the daily budget."),
    check_spec(TRANSFER_SHARE, "transfer_plan", False,
               "Warns when the plan moves an unusually large share of the network's stock."),
]


def transfer_check_results(violations: pd.DataFrame, share_moved: float, max_share: float):
    for check, rules in TRANSFER_RULES.items():
        bad = violations[violations["rule"].isin(rules)] if len(violations) else violations
        yield dg.AssetCheckResult(check_name=check, passed=len(bad) == 0,
                                  metadata={"violations": len(bad), "examples": md_table(bad)})
    yield dg.AssetCheckResult(check_name=TRANSFER_SHARE, passed=bool(share_moved <= max_share),
                              severity=dg.AssetCheckSeverity.WARN,
                              metadata={"share_moved": readable(share_moved), "threshold": float(max_share)})


# ---- price_recommendations ----------------------------------------------------------------------------------
PRICE_GUARDRAILS = "prices_inside_guardrails"
PRICE_COMPLETE = "prices_complete"
PRICE_POSITIVE = "prices_positive"
PRICE_CHANGE_SHARE = "price_change_share"
PRICE_AT_BOUND = "price_changes_at_max_bound"

PRICE_CHECKS = [
    check_spec(PRICE_GUARDRAILS, "price_recommendations", True,
               "Every recommended price is inside all hard guardrails (max change, margin floor, "
               "MSRP, MAP, endings, min days between changes, promotion lock)."),
    check_spec(PRICE_COMPLETE, "price_recommendations", True,
               "Every forecast SKU-location has exactly one recommended price."),
    check_spec(PRICE_POSITIVE, "price_recommendations", True,
               "No recommended price is <= 0 or not finite."),
    check_spec(PRICE_CHANGE_SHARE, "price_recommendations", False,
               "Warns when the share of SKU-locations changing price is above the threshold."),
    check_spec(PRICE_AT_BOUND, "price_recommendations", False,
               "Warns when many changes sit exactly at the max change bound at once."),
]


def price_check_results(recs: pd.DataFrame, forecast: pd.DataFrame, violations: pd.DataFrame,
                        guardrails: GuardrailSettings, catalog: pd.DataFrame, max_changed_share: float,
                        max_at_bound_share: float):
    """The price_recommendations checks; the at-bound warning judges each change against its own category's max
    change (the per-category overrides included)."""
    yield dg.AssetCheckResult(check_name=PRICE_GUARDRAILS, passed=len(violations) == 0,
                              metadata={"violations": len(violations), "examples": md_table(violations)})
    expected = forecast[["sku_id", "location_id"]].drop_duplicates()
    counts = recs.groupby(["sku_id", "location_id"]).size().rename("n").reset_index()
    m = expected.merge(counts, how="left")
    price = recs["recommended_price"].to_numpy(dtype=float)
    missing = int(m["n"].isna().sum()) + int(np.isnan(price).sum())
    dup = int((m["n"] > 1).sum())
    yield dg.AssetCheckResult(check_name=PRICE_COMPLETE, passed=missing == 0 and dup == 0,
                              metadata={"expected": len(expected), "missing": missing, "duplicated": dup})
    bad = ~np.isfinite(price) | (price <= 0)
    yield dg.AssetCheckResult(check_name=PRICE_POSITIVE, passed=not bad.any(),
                              metadata={"bad_prices": int(bad.sum()), "examples": md_table(recs.loc[bad])})
    changed = price_changed(recs["current_price"], recs["recommended_price"])
    share = float(changed.mean()) if len(recs) else 0.0
    yield dg.AssetCheckResult(check_name=PRICE_CHANGE_SHARE, passed=share <= max_changed_share,
                              severity=dg.AssetCheckSeverity.WARN,
                              metadata={"share_changed": readable(share), "threshold": max_changed_share})
    categories = recs[["sku_id"]].merge(catalog[["sku_id", "category"]].drop_duplicates("sku_id"), how="left",
                                        on="sku_id")["category"] if len(recs) else None
    max_change = guardrails.per_row("max_daily_change_pct", categories, len(recs))
    at_bound = changed & (np.abs(recs["change_pct"].to_numpy(dtype=float)) >= max_change - 0.5)
    bound_share = float(at_bound.sum() / max(changed.sum(), 1))
    yield dg.AssetCheckResult(check_name=PRICE_AT_BOUND, passed=bound_share <= max_at_bound_share,
                              severity=dg.AssetCheckSeverity.WARN,
                              metadata={"changes_at_bound": int(at_bound.sum()),
                                        "share_of_changes": readable(bound_share), "threshold": max_at_bound_share})
