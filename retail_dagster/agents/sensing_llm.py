"""Demand sensing LLM step: a bounded multiplicative adjustment of the numeric forecast per
SKU-location, from recent actuals vs forecast and the upcoming promotions, events and weather.

Context frame (one row per sku_id, location_id; every column but the keys optional, NaN = unknown):
  recent_actual_per_day    mean units sold per day over the last 7 observed days
  recent_forecast_per_day  mean units the forecast expected for those days
  promo_discount_pct       deepest discount on promotion in the horizon (0-100), 0/NaN = none
  promo_days               days on promotion in the horizon
  event                    names of upcoming events at the location's region (free text, untrusted)
  temp_anomaly_c           mean temperature in the horizon minus the seasonal norm, degrees C
  note                     any other free text (untrusted)
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from retail_dagster.agents.llm import LLMTask, run_llm_step, step_enabled
from retail_dagster.core.costs import empty_usage

AGENT = "demand"
KEYS = ["sku_id", "location_id"]
MIN_ADJ, MAX_ADJ = 0.5, 2.0
CONTEXT_COLUMNS = ["recent_actual_per_day", "recent_forecast_per_day", "promo_discount_pct",
                   "promo_days", "event", "temp_anomaly_c", "note"]
TYPICAL_REASON = "x" * 18  # length of a short reason, for projecting output tokens

# sent column -> context/forecast column
_SENT = {"fc": "fc_per_day", "act7": "recent_actual_per_day", "fc7": "recent_forecast_per_day",
         "promo_pct": "promo_discount_pct", "promo_days": "promo_days", "event": "event",
         "temp_dev": "temp_anomaly_c", "note": "note"}


def _check(answer: dict, item: dict):
    m = float(answer["m"])
    if not (MIN_ADJ <= m <= MAX_ADJ):
        # an answer outside the bounds it was given is not a decision to soften: the row falls back to the engine
        # (counted as a fallback), instead of a clamped value passed off as the model's choice
        return None, f"multiplier {m:g} outside [{MIN_ADJ:g}, {MAX_ADJ:g}]"
    return {"m": m, "r": str(answer.get("r", ""))[:80], "clamped": False}, None


TASK = LLMTask(
    agent=AGENT,
    tool_name="demand_adjustments",
    tool_description="One demand multiplier per row, with a short reason.",
    system_prompt=(
        "You are a retail demand planner reviewing a statistical forecast. For each row return a "
        f"multiplier m in [{MIN_ADJ}, {MAX_ADJ}] applied to the forecast of the next 14 days "
        "(1 = keep), and a reason of at most 6 words."
    ),
    instructions=(
        "Columns: fc forecast units/day next 14 days; act7 actual units/day last 7 days; fc7 what the "
        "forecast expected for those days; promo_pct deepest promo discount % ahead; promo_days days "
        "on promo ahead; event upcoming events; temp_dev temperature vs normal (C); note free text. "
        "Move away from 1 only with evidence (a persistent act7/fc7 gap, a promo or event the "
        "forecast may miss)."
    ),
    columns=list(_SENT),
    item_schema={
        "type": "object",
        "properties": {"i": {"type": "integer"},
                       "m": {"type": "number", "minimum": MIN_ADJ, "maximum": MAX_ADJ},
                       "r": {"type": "string", "maxLength": 80}},
        "required": ["i", "m", "r"],
    },
    # bounds are asked for and checked in _check: an out-of-bound multiplier falls back for its row
    validation_item_schema={
        "type": "object",
        "properties": {"i": {"type": "integer"}, "m": {"type": "number"}, "r": {"type": "string"}},
        "required": ["i", "m"],
    },
    check_item=_check,
    typical_answer=lambda item: {"m": 1.0, "r": TYPICAL_REASON},
)


def sensing_items(forecast: pd.DataFrame, context: pd.DataFrame | None) -> pd.DataFrame:
    """One row per SKU-location: horizon forecast per day joined with the context columns."""
    per_key = forecast.groupby(KEYS, as_index=False, sort=True).agg(fc_per_day=("mean", "mean"))
    if context is not None and len(context):
        ctx = context[[c for c in KEYS + CONTEXT_COLUMNS if c in context.columns]]
        per_key = per_key.merge(ctx.drop_duplicates(KEYS), on=KEYS, how="left")
    for c in CONTEXT_COLUMNS:
        if c not in per_key.columns:
            per_key[c] = np.nan
    for c in ("event", "note"):  # untrusted free text: bounded length
        per_key[c] = per_key[c].where(per_key[c].notna(), None)
        per_key[c] = per_key[c].map(lambda v: str(v)[:80] if v is not None else None)
    return per_key


def sense_demand(forecast: pd.DataFrame, context: pd.DataFrame | None, llm) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Adjusted forecast and usage frame.

    Adds columns llm_adjustment (multiplier applied, 1 on fallback), llm_reason, llm_clamped
    (answer was outside [0.5, 2] and clamped), engine ("bedrock", "local_fallback"; kept, or "local",
    when the step is off); `model` becomes "<model>+<bedrock model id>" on adjusted rows. Quantiles stay
    ordered and non-negative."""
    out = forecast.copy()
    if not step_enabled(llm, AGENT) or out.empty:
        out["llm_adjustment"] = 1.0
        out["llm_reason"] = ""
        out["llm_clamped"] = False
        if "engine" not in out.columns:  # step off: the numeric engine's label stands
            out["engine"] = "local"
        return out, empty_usage()

    keyed = sensing_items(forecast, context)
    sent = keyed.rename(columns={v: k for k, v in _SENT.items()})
    items = sent[list(_SENT)].to_dict("records")
    result = run_llm_step(TASK, items, llm)

    ok = np.array([a is not None for a in result.answers], dtype=bool)
    keyed["llm_adjustment"] = [a["m"] if a is not None else 1.0 for a in result.answers]
    keyed["llm_reason"] = [a["r"] if a is not None else f"fallback: {r}"
                           for a, r in zip(result.answers, result.fallback_reasons)]
    keyed["llm_clamped"] = [bool(a["clamped"]) if a is not None else False for a in result.answers]
    keyed["engine"] = np.where(ok, "bedrock", "local_fallback")

    out = out.drop(columns=[c for c in ("llm_adjustment", "llm_reason", "llm_clamped", "engine")
                            if c in out.columns])
    out = out.merge(keyed[KEYS + ["llm_adjustment", "llm_reason", "llm_clamped", "engine"]],
                    on=KEYS, how="left", validate="many_to_one")
    adj = out["llm_adjustment"].to_numpy(dtype=float)
    for c in ("mean", "p10", "p50", "p90"):
        if c in out.columns:
            out[c] = np.clip(out[c].to_numpy(dtype=float) * adj, 0.0, None)
    if {"p10", "p50", "p90"} <= set(out.columns):
        out["p10"] = np.minimum(out["p10"], out["p50"])
        out["p90"] = np.maximum(out["p90"], out["p50"])
    if "model" in out.columns:
        adjusted = out["engine"].eq("bedrock")
        out.loc[adjusted, "model"] = out.loc[adjusted, "model"].astype(str) + "+" + result.model
    return out, result.usage


def sensing_context(inputs, recent_forecast: pd.DataFrame | None = None, recent_days: int = 7,
                    norm_days: int = 28) -> pd.DataFrame:
    """The context frame for `sense_demand` from a PlanningInputs slice (only what is known at the
    start of inputs.date). `recent_forecast` (sku_id, location_id, recent_forecast_per_day), when the
    caller kept past forecasts, fills recent_forecast_per_day; otherwise it stays NaN.

    temp_anomaly_c compares the weather forecast for the horizon with the region's last `norm_days`
    observed days (a trailing norm: no climate table is part of the contracts)."""
    d = pd.Timestamp(inputs.date)
    end = d + pd.Timedelta(days=inputs.horizon_days - 1)
    sales = inputs.sales
    recent = sales[(sales["date"] >= d - pd.Timedelta(days=recent_days)) & (sales["date"] < d)]
    ctx = (recent.groupby(KEYS, as_index=False)["units"].sum()
           .assign(recent_actual_per_day=lambda f: f["units"] / recent_days).drop(columns="units"))
    keys = sales[KEYS].drop_duplicates()
    ctx = keys.merge(ctx, on=KEYS, how="left")
    ctx["recent_actual_per_day"] = ctx["recent_actual_per_day"].fillna(0.0)
    if recent_forecast is not None and len(recent_forecast):
        ctx = ctx.merge(recent_forecast[KEYS + ["recent_forecast_per_day"]], on=KEYS, how="left")
    else:
        ctx["recent_forecast_per_day"] = np.nan

    promo = inputs.promotions
    if promo is not None and len(promo):
        p = promo[(promo["start_date"] <= end) & (promo["end_date"] >= d)].copy()
        p["days"] = (p["end_date"].clip(upper=end) - p["start_date"].clip(lower=d)).dt.days + 1
        agg = p.groupby(KEYS, as_index=False).agg(promo_discount_pct=("discount_pct", "max"),
                                                  promo_days=("days", "sum"))
        ctx = ctx.merge(agg, on=KEYS, how="left")
    else:
        ctx["promo_discount_pct"] = np.nan
        ctx["promo_days"] = np.nan
    ctx["promo_discount_pct"] = ctx["promo_discount_pct"].fillna(0.0)
    ctx["promo_days"] = ctx["promo_days"].fillna(0).clip(upper=inputs.horizon_days).astype(int)

    region = inputs.locations[["location_id", "region"]].astype({"region": str})
    ctx = ctx.merge(region, on="location_id", how="left")
    ev = inputs.events
    if ev is not None and len(ev):
        ev = ev[(ev["date"] >= d) & (ev["date"] <= end)]
        regions = pd.DataFrame({"region": region["region"].unique()})
        # 'ALL' events apply to every region
        ev = pd.concat([ev[ev["region"] != "ALL"],
                        ev[ev["region"] == "ALL"].drop(columns="region").merge(regions, how="cross")])
        names = (ev.sort_values("date").drop_duplicates(["region", "event_name"])
                 .groupby("region")["event_name"].agg(lambda s: ", ".join(s.astype(str).head(3))))
        ctx["event"] = ctx["region"].map(names)
    else:
        ctx["event"] = None
    w = inputs.weather
    if w is not None and len(w):
        ahead = w[(w["date"] >= d) & (w["date"] <= end)].groupby("region")["temperature_c"].mean()
        recent = w[(w["date"] < d) & (w["date"] >= d - pd.Timedelta(days=norm_days))]
        norm = recent.groupby("region")["temperature_c"].mean()
        ctx["temp_anomaly_c"] = ctx["region"].map((ahead - norm).round(1))
    else:
        ctx["temp_anomaly_c"] = np.nan
    ctx["note"] = None
    return ctx[KEYS + CONTEXT_COLUMNS].reset_index(drop=True)
