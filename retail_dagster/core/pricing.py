"""Dynamic pricing engine: a guardrail-compliant price ladder per SKU-location, scored by expected 14-day margin.

Expected units at price p = (forecast at the current price) * (p / current) ** elasticity, capped by the stock on
hand plus in transit. The objective is gross margin (+ revenue_weight * revenue) minus a holding cost on stock far
beyond the target cover (the markdown bias for overstock); short cover raises the price by itself, since units
lost to a higher price are units the stock could not serve anyway. A change must pay under every elasticity within
`robust_z` standard errors (max-min uplift over holding), so a noisy elasticity holds rather than gambles.
Everything is a 2-D array (SKU-location x candidate); there is no loop over SKU-locations.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from . import ids
from .asof import PlanningInputs
from .elasticity import ElasticitySettings, estimate_elasticities
from .guardrails import (
    CHANGE_TOLERANCE_USD, HELD_BY_GUARDRAIL, MIN_DAYS_BETWEEN_CHANGES, NO_CHANGE, OVERSTOCK_MARKDOWN,
    PROFIT_OPTIMUM, PROMO_LOCK, RULE_CONFLICT, SHORT_COVER_RAISE, GuardrailSettings, join_reasons, snap_rows,
    apply_guardrails, hold_rules, price_bounds,
)

RECOMMENDATION_COLUMNS = [
    "sku_id", "location_id", "current_price", "recommended_price", "change_pct", "elasticity", "elasticity_se",
    "expected_units", "expected_margin_current", "expected_margin_recommended", "expected_margin", "days_of_cover",
    "reason", "engine", "clamped", "clamp_rule", "lowest_price_30d", "lower_bound", "upper_bound",
    "forecast_units_current", "stock_units", "unit_cost", "promo_active", "days_since_change", "conflict_reason",
]
CANDIDATE_COLUMNS = ["sku_id", "location_id", "candidate_price", "expected_units", "expected_margin",
                     "is_engine_choice"]
FORECAST_COLUMNS = ["sku_id", "location_id", "target_date", "horizon_day", "mean"]


@dataclass(frozen=True)
class PricingSettings:
    """Settings of the pricing engine (the guardrails are hard rules; the rest shapes the objective)."""

    guardrails: GuardrailSettings = field(default_factory=GuardrailSettings)
    n_candidates: int = 21  # ladder points between the bounds (snapped to endings), plus holding the price
    revenue_weight: float = 0.0  # objective = margin + revenue_weight * revenue
    target_cover_days: float = 28.0  # stock beyond this many days of demand at horizon end is excess
    overstock_cover_days: float = 56.0  # markdown bias (and OVERSTOCK_MARKDOWN) only above this cover
    overstock_cost_pct: float = 20.0  # cost of one excess unit at horizon end, % of unit cost (holding, risk)
    short_cover_days: float = 14.0  # a raise with cover below this is SHORT_COVER_RAISE
    robust_z: float = 1.0  # a change must pay for every elasticity in estimate +- z * se
    min_uplift_pct: float = 1.0  # ... and beat holding by this % of the holding objective
    min_uplift_usd: float = 0.5  # ... and by at least this many USD over the horizon
    history_days: int = 90  # sales history used for the current regular price and the last change
    default_elasticity: float = -1.5  # for a SKU missing from the elasticity table
    default_elasticity_se: float = 1.0
    elasticity: ElasticitySettings = field(default_factory=ElasticitySettings)


def price_history(sales: pd.DataFrame, date, history_days: int = 90, omnibus_days: int = 30) -> pd.DataFrame:
    """Per SKU-location from sales before `date`: current_price (last non-promotional price), days_since_change
    (since the last regular price change; NaN when none seen in the window), lowest_price_30d (lowest selling price
    of the prior `omnibus_days`, promotions included: the EU Omnibus reference for a markdown).

    Works on a (SKU-location x day) price grid (sales have one row per key and day), so no sort and no group-by:
    the change date is the first regular observation after the last regular day whose price differed from the
    current one, so A -> B -> A counts as a change back to A.
    """
    d = pd.Timestamp(date)
    cols = ["sku_id", "location_id", "current_price", "days_since_change", "lowest_price_30d"]
    width = max(history_days, omnibus_days)
    dates = sales["date"].to_numpy()
    m = (dates < d.to_datetime64()) & (dates >= (d - pd.Timedelta(days=width)).to_datetime64())
    if not m.any():
        return pd.DataFrame(columns=cols)
    sku, sku_u = ids.factorize(sales["sku_id"].to_numpy()[m])
    loc, loc_u = ids.factorize(sales["location_id"].to_numpy()[m])
    key, uniq_key = pd.factorize(sku.astype(np.int64) * len(loc_u) + loc)
    n_key = len(uniq_key)
    col = ((dates[m] - d.to_datetime64()) // np.timedelta64(1, "D")).astype(np.int64) + width  # 0..width-1
    price = sales["price"].to_numpy(dtype=float)[m]
    promo = sales["on_promotion"].to_numpy().astype(bool)[m]

    grid = np.full((n_key, width), np.nan)
    grid[key, col] = price
    regular = np.full((n_key, width), np.nan)
    reg = ~promo & (col >= width - history_days)
    regular[key[reg], col[reg]] = price[reg]
    rows = np.arange(n_key)
    seen = ~np.isnan(regular)
    has = seen.any(axis=1)
    last = width - 1 - np.argmax(seen[:, ::-1], axis=1)
    current = np.where(has, regular[rows, last], np.nan)
    differs = seen & (np.abs(regular - current[:, None]) >= CHANGE_TOLERANCE_USD)
    changed = differs.any(axis=1)
    last_other = width - 1 - np.argmax(differs[:, ::-1], axis=1)
    after = seen & (np.arange(width)[None, :] > last_other[:, None])
    change_col = np.argmax(after, axis=1)  # first regular day of the current run
    recent = grid[:, width - omnibus_days:] if omnibus_days > 0 else grid[:, :0]
    lowest = np.where(np.isnan(recent), np.inf, recent).min(axis=1, initial=np.inf)
    return pd.DataFrame({
        "sku_id": sku_u[uniq_key // len(loc_u)], "location_id": loc_u[uniq_key % len(loc_u)],
        "current_price": current,
        "days_since_change": np.where(changed, width - change_col, np.nan),
        "lowest_price_30d": np.where(np.isfinite(lowest), lowest, np.nan),
    })


def _key_join(left: pd.DataFrame, right: pd.DataFrame, cols: list[str]) -> pd.DataFrame:
    right = right.drop_duplicates(["sku_id", "location_id"])
    return left.merge(right[["sku_id", "location_id"] + cols], on=["sku_id", "location_id"], how="left")


def pricing_context(inputs: PlanningInputs, forecast: pd.DataFrame, settings: PricingSettings,
                    elasticities: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per SKU-location in the forecast with everything the engine and the guardrails need."""
    missing = [c for c in FORECAST_COLUMNS if c not in forecast.columns]
    if missing:
        raise ValueError(f"forecast frame lacks column(s) {missing}; columns present: {list(forecast.columns)}")
    f = forecast[(forecast["horizon_day"] >= 1) & (forecast["horizon_day"] <= inputs.horizon_days)]
    sku, sku_u = pd.factorize(f["sku_id"])
    loc, loc_u = pd.factorize(f["location_id"])
    key = sku.astype(np.int64) * len(loc_u) + loc
    uniq, inv = np.unique(key, return_inverse=True)
    total = np.bincount(inv, np.nan_to_num(f["mean"].to_numpy(dtype=float)), len(uniq))
    ctx = pd.DataFrame({"sku_id": sku_u[uniq // len(loc_u)], "location_id": loc_u[uniq % len(loc_u)],
                        "forecast_units_current": np.maximum(total, 0.0)})

    cat_cols = [c for c in ["sku_id", "category", "unit_cost", "base_price", "msrp", "map_price"]
                if c in inputs.catalog.columns]
    ctx = ctx.merge(inputs.catalog[cat_cols], on="sku_id", how="left", validate="m:1")
    unknown = ctx["unit_cost"].isna() & ctx["msrp"].isna()
    if unknown.any():
        raise ValueError(f"forecast has {int(unknown.sum())} SKU-location row(s) whose sku_id is not in the "
                         f"catalog of group '{inputs.sku_group}', e.g. {ctx.loc[unknown, 'sku_id'].head(3).tolist()}")

    g = settings.guardrails
    hist = price_history(inputs.sales, inputs.date, settings.history_days, g.omnibus_lookback_days)
    ctx = _key_join(ctx, hist, ["current_price", "days_since_change", "lowest_price_30d"])
    # no regular price seen in the window: the catalog's base price is the best guess of the shelf price
    ctx["current_price"] = ctx["current_price"].fillna(ctx["base_price"])

    snap = inputs.inventory_snapshot
    if snap is not None and len(snap):
        st = snap.assign(stock_units=snap["on_hand"] + snap["in_transit"])
        ctx = _key_join(ctx, st, ["stock_units"])
    else:
        ctx["stock_units"] = np.nan  # unknown stock: no cap

    promos = inputs.promotions
    if promos is not None and len(promos):
        act = promos[(promos["start_date"] <= inputs.date) & (promos["end_date"] >= inputs.date)]
        key_idx = pd.MultiIndex.from_frame(act[["sku_id", "location_id"]])
        ctx["promo_active"] = pd.MultiIndex.from_frame(ctx[["sku_id", "location_id"]]).isin(key_idx)
    else:
        ctx["promo_active"] = False

    if elasticities is None:
        elasticities = estimate_elasticities(inputs.sales, inputs.catalog, None, inputs.events,
                                             settings.elasticity, locations=inputs.locations)
    el = elasticities[["sku_id", "elasticity", "elasticity_se"]].drop_duplicates("sku_id")
    ctx = ctx.merge(el, on="sku_id", how="left")
    ctx["elasticity"] = ctx["elasticity"].fillna(settings.default_elasticity)
    ctx["elasticity_se"] = ctx["elasticity_se"].fillna(settings.default_elasticity_se)

    daily = ctx["forecast_units_current"] / inputs.horizon_days
    with np.errstate(divide="ignore", invalid="ignore"):
        ctx["days_of_cover"] = np.where(daily > 0, ctx["stock_units"] / daily,
                                        np.where(ctx["stock_units"] > 0, np.inf, 0.0))
    return ctx


def _objective(prices: np.ndarray, ctx: dict, elasticity: np.ndarray, settings: PricingSettings,
               horizon_days: int, log_ratio: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(objective, units, margin) for an (n, k) array of prices at one elasticity per row."""
    cur, fc, stock, cost, cover = ctx["cur"], ctx["fc"], ctx["stock"], ctx["cost"], ctx["cover"]
    if log_ratio is None:
        log_ratio = np.log(prices / cur[:, None])
    demand = fc[:, None] * np.exp(elasticity[:, None] * log_ratio)
    units = np.minimum(demand, stock[:, None])
    margin = units * (prices - cost[:, None])
    obj = margin + settings.revenue_weight * units * prices
    # markdown bias: stock left at the horizon's end beyond the target cover costs holding and obsolescence
    over = (cover > settings.overstock_cover_days)[:, None]
    if over.any():
        rate_after = demand / horizon_days
        excess = np.maximum(np.nan_to_num(stock[:, None] - units - settings.target_cover_days * rate_after, nan=0.0),
                            0.0)
        obj = obj - np.where(over, settings.overstock_cost_pct / 100.0 * cost[:, None] * excess, 0.0)
    return obj, units, margin


def _engine(ctx: pd.DataFrame, inputs_horizon: int, settings: PricingSettings):
    """Bounds, the compliant ladder, the engine's choice and its unconstrained wish (all vectorized)."""
    g = settings.guardrails
    b = price_bounds(ctx, g)
    n = len(b)
    cats = b["category"].to_numpy() if "category" in b.columns else None
    cur = b["current_price"].to_numpy(dtype=float)
    lower, upper = b["lower_bound"].to_numpy(), b["upper_bound"].to_numpy()
    locked, too_soon = hold_rules(b, g)
    held = locked | too_soon | b["conflict"].to_numpy()

    k = max(int(settings.n_candidates), 2)
    t = np.linspace(0.0, 1.0, k)[None, :]
    with np.errstate(invalid="ignore"):
        grid = lower[:, None] + t * (upper - lower)[:, None]
    ladder = snap_rows(grid, lower, upper, g, cats)
    ladder = np.where(np.isnan(ladder) | held[:, None], cur[:, None], ladder)
    prices = np.concatenate([cur[:, None], ladder], axis=1)  # column 0: hold

    stock = b["stock_units"].to_numpy(dtype=float)
    ctx_arr = {"cur": cur, "fc": b["forecast_units_current"].to_numpy(dtype=float),
               "stock": np.where(np.isnan(stock), np.inf, stock), "cost": b["unit_cost"].to_numpy(dtype=float),
               "cover": b["days_of_cover"].to_numpy(dtype=float)}
    e = b["elasticity"].to_numpy(dtype=float)
    se = np.nan_to_num(b["elasticity_se"].to_numpy(dtype=float), nan=settings.default_elasticity_se)
    z = settings.robust_z
    scenarios = [e] if z <= 0 else [e - z * se, e, np.minimum(e + z * se, -0.05)]

    def worst_uplift(p):
        log_ratio = np.log(p / cur[:, None])
        worst = None
        for es in scenarios:
            obj, _, _ = _objective(p, ctx_arr, es, settings, inputs_horizon, log_ratio)
            hold_obj, _, _ = _objective(cur[:, None], ctx_arr, es, settings, inputs_horizon)
            up = obj - hold_obj
            worst = up if worst is None else np.minimum(worst, up)
        return worst, hold_obj[:, 0]

    up, hold_obj = worst_uplift(prices)
    up[:, 0] = 0.0
    j = np.argmax(up, axis=1)
    best = up[np.arange(n), j]
    need = np.maximum(settings.min_uplift_pct / 100.0 * np.abs(hold_obj), settings.min_uplift_usd)
    choice = np.where(best > need, prices[np.arange(n), j], cur)

    # the engine's unconstrained wish (only price > 0), to tell which rule cut it
    wide = cur[:, None] * np.exp(np.linspace(np.log(0.5), np.log(2.0), 25))[None, :]
    wide = np.concatenate([prices, wide], axis=1)
    wup, _ = worst_uplift(wide)
    wj = np.argmax(wup, axis=1)
    wbest = wup[np.arange(n), wj]
    wish = np.where(wbest > need, wide[np.arange(n), wj], cur)
    return b, prices, choice, wish, ctx_arr, e


def _engine_reason(choice: np.ndarray, cur: np.ndarray, cover: np.ndarray, settings: PricingSettings) -> np.ndarray:
    up = choice > cur + CHANGE_TOLERANCE_USD / 2
    down = choice < cur - CHANGE_TOLERANCE_USD / 2
    with np.errstate(invalid="ignore"):
        return np.select(
            [down & (cover > settings.overstock_cover_days), up & (cover < settings.short_cover_days), up | down],
            [OVERSTOCK_MARKDOWN, SHORT_COVER_RAISE, PROFIT_OPTIMUM], default="").astype(object)


def recommend_prices(inputs: PlanningInputs, forecast: pd.DataFrame, settings: PricingSettings = PricingSettings(),
                     elasticities: pd.DataFrame | None = None) -> pd.DataFrame:
    """Recommended price per SKU-location in `forecast`, inside the guardrails.

    `forecast`: sku_id, location_id, target_date, horizon_day (1..H), mean (demand at the current price).
    `elasticities`: sku_id, elasticity, elasticity_se (estimated from inputs.sales when None).
    Columns: RECOMMENDATION_COLUMNS (sku_id, location_id, current_price, recommended_price, change_pct, elasticity,
    elasticity_se, expected_units, expected_margin_current, expected_margin_recommended, expected_margin,
    days_of_cover, reason, engine, clamped, clamp_rule, lowest_price_30d, lower_bound, upper_bound, plus context).
    """
    ctx = pricing_context(inputs, forecast, settings, elasticities)
    if ctx.empty:
        return pd.DataFrame(columns=RECOMMENDATION_COLUMNS)
    b, _, choice, wish, arr, e = _engine(ctx, inputs.horizon_days, settings)
    cur = arr["cur"]
    # first pass: the wish through the guardrails tells whether and by which rule it was cut
    first = apply_guardrails(b.drop(columns=["reason"], errors="ignore").assign(wished_price=wish),
                             settings.guardrails)
    # second pass: the engine's (compliant) ladder choice through the same single guardrail path
    final = apply_guardrails(b.drop(columns=["reason"], errors="ignore").assign(wished_price=choice),
                             settings.guardrails)
    rec = final["recommended_price"].to_numpy()
    changed = np.abs(rec - cur) >= CHANGE_TOLERANCE_USD
    locked, too_soon = hold_rules(b, settings.guardrails)
    conflict = b["conflict"].to_numpy()
    wish_moves = np.abs(wish - cur) >= CHANGE_TOLERANCE_USD
    clamped = first["clamped"].to_numpy() | final["clamped"].to_numpy()
    clamp_rule = np.where(first["clamped"].to_numpy(), first["clamp_rule"].to_numpy(),
                          final["clamp_rule"].to_numpy()).astype(object)
    guard = np.select(
        [locked, conflict, too_soon & wish_moves, wish_moves & ~changed],
        [PROMO_LOCK, HELD_BY_GUARDRAIL + ";" + RULE_CONFLICT, MIN_DAYS_BETWEEN_CHANGES, HELD_BY_GUARDRAIL],
        default="").astype(object)
    reason = join_reasons(_engine_reason(rec, cur, arr["cover"], settings), guard)
    reason = np.where(reason == "", NO_CHANGE, reason)

    _, units_rec, margin_rec = _objective(rec[:, None], arr, e, settings, inputs.horizon_days)
    _, _, margin_cur = _objective(cur[:, None], arr, e, settings, inputs.horizon_days)
    out = b.assign(
        recommended_price=rec,
        change_pct=np.round((rec / cur - 1) * 100, 4),
        expected_units=units_rec[:, 0],
        expected_margin_current=margin_cur[:, 0],
        expected_margin_recommended=margin_rec[:, 0],
        expected_margin=margin_rec[:, 0],
        reason=reason, engine="local", clamped=clamped, clamp_rule=clamp_rule,
        promo_active=locked | b["promo_active"].to_numpy().astype(bool),
    )
    return out[RECOMMENDATION_COLUMNS].reset_index(drop=True)


def price_candidates(inputs: PlanningInputs, forecast: pd.DataFrame, settings: PricingSettings = PricingSettings(),
                     elasticities: pd.DataFrame | None = None) -> pd.DataFrame:
    """The guardrail-compliant prices an LLM may choose from, one row per (SKU-location, distinct candidate).

    Columns: sku_id, location_id, candidate_price, expected_units, expected_margin (14 days, at the point
    elasticity, capped by stock), is_engine_choice. Holding the current price is always a candidate.
    """
    ctx = pricing_context(inputs, forecast, settings, elasticities)
    if ctx.empty:
        return pd.DataFrame(columns=CANDIDATE_COLUMNS)
    b, prices, choice, _, arr, e = _engine(ctx, inputs.horizon_days, settings)
    _, units, margin = _objective(prices, arr, e, settings, inputs.horizon_days)
    n, k = prices.shape
    long = pd.DataFrame({
        "row": np.repeat(np.arange(n), k), "candidate_price": np.round(prices.ravel(), 2),
        "expected_units": units.ravel(), "expected_margin": margin.ravel(),
    }).drop_duplicates(["row", "candidate_price"])
    row = long["row"].to_numpy()
    long.insert(0, "location_id", b["location_id"].to_numpy()[row])
    long.insert(0, "sku_id", b["sku_id"].to_numpy()[row])
    long["is_engine_choice"] = np.abs(long["candidate_price"].to_numpy() - choice[row]) < CHANGE_TOLERANCE_USD
    return long.drop(columns="row").sort_values(["sku_id", "location_id", "candidate_price"],
                                                ignore_index=True)[CANDIDATE_COLUMNS]
