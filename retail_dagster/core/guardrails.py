"""Price guardrails: the one definition of the hard pricing rules, used by the engine, the LLM step and the checks.

Rules (global values, overridable per category): a price may move at most `max_daily_change_pct` from the current
price, must keep `margin_floor_pct` over unit cost, must not exceed the MSRP nor go below the MAP price (where
set), must end in an allowed cents ending, may not change while a promotion runs (promo lock) nor sooner than
`min_days_between_changes` after the last regular price change.

Holding the current price is always compliant: it is the safe action when rules conflict (e.g. a margin floor
above the MSRP) or when no allowed ending fits inside the bounds, even if the current price itself is off-ending or
outside today's bounds. So the checks verify *changed* prices against every rule and *held* prices only against
price > 0. A price counts as changed when it differs from the current price by half a cent or more.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any, Mapping

import numpy as np
import pandas as pd

# reason codes (';'-joined when several apply)
OVERSTOCK_MARKDOWN = "OVERSTOCK_MARKDOWN"
SHORT_COVER_RAISE = "SHORT_COVER_RAISE"
PROFIT_OPTIMUM = "PROFIT_OPTIMUM"
HELD_BY_GUARDRAIL = "HELD_BY_GUARDRAIL"
PROMO_LOCK = "PROMO_LOCK"
NO_CHANGE = "NO_CHANGE"
RULE_CONFLICT = "RULE_CONFLICT"
MIN_DAYS_BETWEEN_CHANGES = "MIN_DAYS_BETWEEN_CHANGES"
REASON_CODES = (OVERSTOCK_MARKDOWN, SHORT_COVER_RAISE, PROFIT_OPTIMUM, HELD_BY_GUARDRAIL, PROMO_LOCK, NO_CHANGE,
                RULE_CONFLICT, MIN_DAYS_BETWEEN_CHANGES)

# rule names (clamp_rule, conflict_reason, guardrail_violations.rule)
MAX_DECREASE = "max_daily_change_down"
MAX_INCREASE = "max_daily_change_up"
MARGIN_FLOOR = "margin_floor"
MAP_FLOOR = "map_floor"
MSRP_CEILING = "msrp_ceiling"
PRICE_ENDINGS = "price_endings"
PROMO_LOCK_RULE = "promo_lock"
MIN_DAYS_RULE = "min_days_between_changes"
CONFLICT_RULE = "rule_conflict"
PRICE_POSITIVE = "price_positive"
UNKNOWN_SKU = "unknown_sku"

CHANGE_TOLERANCE_USD = 0.005  # |new - current| below half a cent is a hold
_EPS = 1e-9  # float slack when re-checking bounds that were computed from the same numbers
_LOWER_RULES = np.array([MAX_DECREASE, MARGIN_FLOOR, MAP_FLOOR, "min_price"], dtype=object)
_UPPER_RULES = np.array([MAX_INCREASE, MSRP_CEILING], dtype=object)


@dataclass(frozen=True)
class GuardrailSettings:
    """Hard pricing rules. `category_overrides` maps a category to {field: value} for any field below."""

    max_daily_change_pct: float = 10.0  # max move from the current price in one decision, percent
    margin_floor_pct: float = 15.0  # price >= unit_cost * (1 + pct/100)
    msrp_ceiling: bool = True  # price <= msrp
    map_floor: bool = True  # price >= map_price where set
    price_endings: tuple[float, ...] = (0.99, 0.49)  # allowed cents endings; () = any whole cent
    min_days_between_changes: int = 7  # since the last regular price change of the SKU-location
    promo_lock: bool = True  # no change while a promotion runs on the planning day
    omnibus_lookback_days: int = 30  # EU Omnibus: lowest price of the prior N days is recorded for markdowns
    min_price: float = 0.01  # absolute floor, USD
    category_overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "price_endings", tuple(float(e) for e in self.price_endings))
        _validate_values(self)
        names = {f.name for f in fields(self)} - {"category_overrides"}
        for cat, over in dict(self.category_overrides).items():
            bad = sorted(set(over) - names)
            if bad:
                raise ValueError(f"GuardrailSettings.category_overrides['{cat}']: unknown field(s) {bad}; "
                                 f"allowed: {sorted(names)}")
            _validate_values(replace(self, category_overrides={}, **over))

    def for_category(self, category: str) -> "GuardrailSettings":
        """The settings that apply to one category (global values with its overrides)."""
        over = dict(self.category_overrides).get(category)
        return replace(self, category_overrides={}, **over) if over else self

    def per_row(self, name: str, categories: pd.Series | np.ndarray | None, n: int) -> np.ndarray:
        """A numeric setting as one value per row (vectorized; loops only over the override categories)."""
        out = np.full(n, float(getattr(self, name)))
        if categories is None or not self.category_overrides:
            return out
        cats = np.asarray(categories, dtype=object)
        for cat, over in dict(self.category_overrides).items():
            if name in over:
                out[cats == cat] = float(over[name])
        return out

    def endings_groups(self, categories, n: int) -> list[tuple[tuple[float, ...], np.ndarray]]:
        """(endings, row mask) pairs covering every row once."""
        cats = np.asarray(categories, dtype=object) if categories is not None else None
        groups: dict[tuple[float, ...], np.ndarray] = {}
        rest = np.ones(n, dtype=bool)
        if cats is not None:
            for cat, over in dict(self.category_overrides).items():
                if "price_endings" in over:
                    m = cats == cat
                    e = tuple(float(x) for x in over["price_endings"])
                    groups[e] = groups.get(e, np.zeros(n, dtype=bool)) | m
                    rest &= ~m
        groups[self.price_endings] = groups.get(self.price_endings, np.zeros(n, dtype=bool)) | rest
        return [(e, m) for e, m in groups.items() if m.any()]


def price_changed(current, recommended) -> np.ndarray:
    """Per row: the recommended price differs from the current one by half a cent or more (the one definition of a
    price change: the checks, the metadata, the LLM re-check and the pilot's world all use it)."""
    return np.abs(np.asarray(recommended, dtype=float) - np.asarray(current, dtype=float)) >= CHANGE_TOLERANCE_USD


def _validate_values(s: GuardrailSettings) -> None:
    problems = []
    if not 0 <= s.max_daily_change_pct < 100:
        problems.append(f"max_daily_change_pct={s.max_daily_change_pct} must be in [0, 100)")
    if s.margin_floor_pct < -100:
        problems.append(f"margin_floor_pct={s.margin_floor_pct} must be >= -100")
    if any(not 0 <= e < 1 for e in s.price_endings):
        problems.append(f"price_endings={s.price_endings} must be cents endings in [0, 1), e.g. (0.99, 0.49)")
    if s.min_days_between_changes < 0 or s.omnibus_lookback_days < 0:
        problems.append("min_days_between_changes and omnibus_lookback_days must be >= 0")
    if s.min_price <= 0:
        problems.append(f"min_price={s.min_price} must be > 0")
    if problems:
        raise ValueError("invalid GuardrailSettings: " + "; ".join(problems))


def _col(frame: pd.DataFrame, name: str, default) -> np.ndarray:
    if name in frame.columns:
        return frame[name].to_numpy()
    return np.full(len(frame), default)


def _float(frame: pd.DataFrame, name: str, default=np.nan) -> np.ndarray:
    return np.asarray(_col(frame, name, default), dtype=float)


def _require(frame: pd.DataFrame, cols: list[str], where: str) -> None:
    missing = [c for c in cols if c not in frame.columns]
    if missing:
        raise ValueError(f"{where}: missing column(s) {missing}; columns present: {list(frame.columns)}")


def price_bounds(frame: pd.DataFrame, settings: GuardrailSettings) -> pd.DataFrame:
    """Hard price bounds per row.

    Needs current_price, unit_cost, msrp; uses map_price and category when present. Adds lower_bound,
    upper_bound, lower_rule / upper_rule (the binding rules), conflict (bool: lower > upper, or no valid current
    price) and conflict_reason ("<lower rule> > <upper rule>", or "" when fine).
    """
    _require(frame, ["current_price", "unit_cost", "msrp"], "price_bounds")
    n = len(frame)
    cats = frame["category"].to_numpy() if "category" in frame.columns else None
    cur = _float(frame, "current_price")
    pct = settings.per_row("max_daily_change_pct", cats, n) / 100.0
    margin = settings.per_row("margin_floor_pct", cats, n) / 100.0
    use_msrp = settings.per_row("msrp_ceiling", cats, n) > 0
    use_map = settings.per_row("map_floor", cats, n) > 0
    min_price = settings.per_row("min_price", cats, n)
    cost = _float(frame, "unit_cost")
    msrp = _float(frame, "msrp")
    map_price = _float(frame, "map_price")

    lowers = np.vstack([
        cur * (1 - pct),
        cost * (1 + margin),
        np.where(use_map & np.isfinite(map_price), map_price, -np.inf),
        min_price,
    ])
    uppers = np.vstack([cur * (1 + pct), np.where(use_msrp & np.isfinite(msrp), msrp, np.inf)])
    lowers = np.where(np.isnan(lowers), -np.inf, lowers)  # a missing cost or map removes that rule, not the row
    uppers = np.where(np.isnan(uppers), np.inf, uppers)
    li = np.argmax(lowers, axis=0)
    ui = np.argmin(uppers, axis=0)
    lower = lowers[li, np.arange(n)]
    upper = uppers[ui, np.arange(n)]
    bad_current = ~np.isfinite(cur) | (cur <= 0)
    conflict = (lower > upper) | bad_current
    lower_rule = _LOWER_RULES[li]
    upper_rule = _UPPER_RULES[ui]
    reason = np.where(conflict, lower_rule + ">" + upper_rule, "")
    reason = np.where(bad_current, "no_valid_current_price", reason)

    out = frame.copy()
    out["lower_bound"] = lower
    out["upper_bound"] = upper
    out["lower_rule"] = lower_rule
    out["upper_rule"] = upper_rule
    out["conflict"] = conflict
    out["conflict_reason"] = reason.astype(object)
    return out


def _snap_one(p: np.ndarray, lower: np.ndarray, upper: np.ndarray, endings: tuple[float, ...]) -> np.ndarray:
    """Nearest price to p (clipped into the bounds) on an allowed ending inside [lower, upper]; NaN if none."""
    with np.errstate(invalid="ignore"):
        q = np.clip(p, lower, upper)
    base = np.floor(q)
    if endings:
        cents = np.round(np.asarray(endings) * 100)
        # every ending within a dollar either side of q: the nearest in-bound ending is among them (endings
        # repeat every dollar and the bounds are an interval containing q)
        cand = ((base[:, None, None] + np.array([-1.0, 0.0, 1.0])[None, :, None]) * 100
                + cents[None, None, :]).reshape(len(q), -1) / 100.0
    else:  # any whole cent
        cand = np.stack([np.floor(q * 100) / 100, np.ceil(q * 100) / 100], axis=1)
    ok = (cand >= lower[:, None]) & (cand <= upper[:, None]) & (cand > 0)
    dist = np.where(ok, np.abs(cand - q[:, None]), np.inf)
    # ties go to the lower price (the candidate order is ascending within each dollar)
    j = np.argmin(dist, axis=1)
    best = cand[np.arange(len(q)), j]
    return np.where(np.isfinite(dist[np.arange(len(q)), j]), best, np.nan)


def snap_to_endings(prices, lower, upper, endings=(0.99, 0.49), fallback=None) -> np.ndarray:
    """Snap prices to the nearest allowed cents ending inside [lower, upper] (vectorized).

    The result never leaves [lower, upper]. Where no allowed ending fits in the bounds (or the bounds are empty),
    returns `fallback` (e.g. the current price: "hold") when given, else NaN.
    """
    p = np.atleast_1d(np.asarray(prices, dtype=float))
    lo = np.broadcast_to(np.asarray(lower, dtype=float), p.shape).ravel()
    hi = np.broadcast_to(np.asarray(upper, dtype=float), p.shape).ravel()
    flat = p.ravel()
    out = np.full(flat.shape, np.nan)
    valid = np.isfinite(flat) & ~np.isnan(lo) & ~np.isnan(hi) & (lo <= hi)
    if valid.any():
        out[valid] = _snap_one(flat[valid], lo[valid], hi[valid], tuple(endings or ()))
    out = out.reshape(p.shape)
    if fallback is not None:
        fb = np.broadcast_to(np.asarray(fallback, dtype=float), p.shape)
        out = np.where(np.isnan(out), fb, out)
    return out


def snap_rows(prices: np.ndarray, lower: np.ndarray, upper: np.ndarray, settings: GuardrailSettings,
              categories) -> np.ndarray:
    """snap_to_endings with per-category endings; prices may be (n,) or (n, k). NaN where nothing fits."""
    n = len(lower)
    out = np.full(prices.shape, np.nan)
    two_d = prices.ndim == 2
    for endings, m in settings.endings_groups(categories, n):
        lo, hi = lower[m], upper[m]
        if two_d:
            lo, hi = lo[:, None], hi[:, None]
        out[m] = snap_to_endings(prices[m], lo, hi, endings)
    return out


def on_allowed_ending(prices, endings) -> np.ndarray:
    """True where the price's cents are one of the allowed endings (any whole cent when endings is empty)."""
    p = np.asarray(prices, dtype=float)
    cents = np.round(p * 100)
    if not endings:
        return np.abs(p * 100 - cents) < 1e-6
    frac = np.mod(cents, 100)
    allowed = np.round(np.asarray(endings) * 100)
    return np.isin(frac, allowed) & (np.abs(p * 100 - cents) < 1e-6)


def hold_rules(frame: pd.DataFrame, settings: GuardrailSettings) -> tuple[np.ndarray, np.ndarray]:
    """(promo_locked, too_soon) per row from the optional promo_active / days_since_change columns."""
    n = len(frame)
    cats = frame["category"].to_numpy() if "category" in frame.columns else None
    lock_on = settings.per_row("promo_lock", cats, n) > 0
    promo = np.asarray(_col(frame, "promo_active", False), dtype=bool)
    days = _float(frame, "days_since_change", np.inf)
    min_days = settings.per_row("min_days_between_changes", cats, n)
    too_soon = np.nan_to_num(days, nan=np.inf) < min_days
    return lock_on & promo, too_soon


def join_reasons(*parts: np.ndarray) -> np.ndarray:
    """Element-wise ';'-join of string arrays, skipping empty strings."""
    out = np.array(parts[0], dtype=object)
    for p in parts[1:]:
        p = np.asarray(p, dtype=object)
        both = (out != "") & (p != "")
        out = np.where(both, out + ";" + p, np.where(out != "", out, p))
    return out


def apply_guardrails(frame: pd.DataFrame, settings: GuardrailSettings) -> pd.DataFrame:
    """Turn a wished price into a compliant recommended price, row by row (vectorized).

    Needs current_price, wished_price, unit_cost, msrp; uses map_price, category, promo_active,
    days_since_change and reason (the wish's own reason codes) when present. Adds the price_bounds columns and
    recommended_price, clamped (a rule changed the wish), clamp_rule, reason. Order of precedence: promo lock,
    rule conflict, min days between changes (each holds the current price), then clipping into the bounds and
    snapping onto an allowed ending (holding when none fits).
    """
    _require(frame, ["current_price", "wished_price", "unit_cost", "msrp"], "apply_guardrails")
    out = price_bounds(frame, settings)
    cats = out["category"].to_numpy() if "category" in out.columns else None
    cur = _float(out, "current_price")
    wish = _float(out, "wished_price")
    lower, upper = out["lower_bound"].to_numpy(), out["upper_bound"].to_numpy()
    conflict = out["conflict"].to_numpy()
    locked, too_soon = hold_rules(out, settings)

    wish_is_hold = ~np.isfinite(wish) | (np.abs(wish - cur) < CHANGE_TOLERANCE_USD)
    with np.errstate(invalid="ignore"):
        clipped = np.clip(wish, lower, upper)
    snapped = snap_rows(np.where(np.isfinite(clipped), clipped, cur), lower, upper, settings, cats)
    # the nearest allowed ending may lie on the other side of the current price (a raise that would come out as a
    # cut): a rule then stops the wish, so hold
    with np.errstate(invalid="ignore"):
        opposite = (snapped - cur) * (wish - cur) < 0
    no_fit = (np.isnan(snapped) | opposite) & ~conflict
    hold = wish_is_hold | locked | conflict | too_soon | no_fit
    rec = np.where(hold, cur, snapped)
    rec = np.where(np.abs(rec - cur) < CHANGE_TOLERANCE_USD, cur, rec)  # a sub-cent move is a hold
    wish_differs = ~wish_is_hold & (np.abs(rec - wish) >= CHANGE_TOLERANCE_USD)

    with np.errstate(invalid="ignore"):
        below, above = wish < lower, wish > upper
    bound_rule = np.where(below, out["lower_rule"].to_numpy(), np.where(above, out["upper_rule"].to_numpy(), ""))
    rule = np.select(
        [locked, conflict, too_soon, bound_rule != "", no_fit],
        [PROMO_LOCK_RULE, CONFLICT_RULE, MIN_DAYS_RULE, bound_rule, PRICE_ENDINGS],
        default=PRICE_ENDINGS,
    ).astype(object)
    clamped = wish_differs
    clamp_rule = np.where(clamped, rule, "").astype(object)

    guard_reason = join_reasons(
        np.where(locked, PROMO_LOCK, ""),
        np.where(conflict, HELD_BY_GUARDRAIL + ";" + RULE_CONFLICT, ""),
        np.where(too_soon & ~wish_is_hold, MIN_DAYS_BETWEEN_CHANGES, ""),
        np.where(no_fit & ~wish_is_hold & ~locked & ~too_soon, HELD_BY_GUARDRAIL, ""),
    )
    changed = np.abs(rec - cur) >= CHANGE_TOLERANCE_USD
    wish_reason = np.asarray(_col(out, "reason", ""), dtype=object)
    wish_reason = np.where(pd.isna(wish_reason), "", wish_reason)
    # a wish's own reason (e.g. OVERSTOCK_MARKDOWN) is kept when the price moves, or when a rule held it (so the
    # audit shows what was wanted); a plain hold without any rule involved is NO_CHANGE
    keep_wish = changed | (guard_reason != "")
    reason = join_reasons(np.where(keep_wish & (wish_reason != NO_CHANGE), wish_reason, ""), guard_reason)
    reason = np.where(reason == "", NO_CHANGE, reason)

    out["recommended_price"] = rec
    out["clamped"] = clamped
    out["clamp_rule"] = clamp_rule
    out["reason"] = reason.astype(object)
    out["promo_active"] = locked | np.asarray(_col(out, "promo_active", False), dtype=bool)
    return out


def guardrail_violations(recs: pd.DataFrame, catalog: pd.DataFrame, settings: GuardrailSettings,
                         promotions: pd.DataFrame | None = None, date=None) -> pd.DataFrame:
    """Rows of `recs` that break a hard rule (empty when all is fine), one row per (recommendation, rule).

    Re-derives every bound from the catalog and the settings rather than trusting the bounds stored in `recs`.
    Needs sku_id, current_price, recommended_price; the promo lock is checked from `promotions` active on `date`
    when both are given, else from a promo_active column; min days from a days_since_change column when present.
    Columns: sku_id, location_id, current_price, recommended_price, rule, detail.
    """
    _require(recs, ["sku_id", "current_price", "recommended_price"], "guardrail_violations")
    cols = ["sku_id", "location_id", "current_price", "recommended_price", "rule", "detail"]
    if recs.empty:
        return pd.DataFrame(columns=cols)
    cat_cols = [c for c in ["sku_id", "category", "unit_cost", "msrp", "map_price"] if c in catalog.columns]
    base = recs.drop(columns=[c for c in cat_cols if c != "sku_id" and c in recs.columns])
    base = base.merge(catalog[cat_cols].drop_duplicates("sku_id"), on="sku_id", how="left", validate="m:1",
                      indicator=True)
    if "location_id" not in base.columns:
        base["location_id"] = ""
    if promotions is not None and date is not None:
        d = pd.Timestamp(date)
        act = promotions[(promotions["start_date"] <= d) & (promotions["end_date"] >= d)]
        key = pd.MultiIndex.from_frame(act[["sku_id", "location_id"]])
        base["promo_active"] = pd.MultiIndex.from_frame(base[["sku_id", "location_id"]]).isin(key)
    b = price_bounds(base, settings)
    n = len(b)
    cats = b["category"].to_numpy() if "category" in b.columns else None
    cur, rec = _float(b, "current_price"), _float(b, "recommended_price")
    changed = ~(np.abs(rec - cur) < CHANGE_TOLERANCE_USD)  # NaN counts as changed (and as non-positive)
    locked, too_soon = hold_rules(b, settings)
    pct = settings.per_row("max_daily_change_pct", cats, n) / 100.0
    margin = settings.per_row("margin_floor_pct", cats, n) / 100.0
    cost, msrp, mapp = _float(b, "unit_cost"), _float(b, "msrp"), _float(b, "map_price")
    use_msrp = settings.per_row("msrp_ceiling", cats, n) > 0
    use_map = settings.per_row("map_floor", cats, n) > 0
    ending_ok = np.ones(n, dtype=bool)
    for endings, m in settings.endings_groups(cats, n):
        ending_ok[m] = on_allowed_ending(rec[m], endings)
    with np.errstate(invalid="ignore"):
        checks = [
            (UNKNOWN_SKU, (b["_merge"] == "left_only").to_numpy(), "sku_id not in catalog"),
            (PRICE_POSITIVE, ~(np.isfinite(rec) & (rec > 0)), "recommended price must be a number > 0"),
            (MAX_DECREASE, changed & (rec < cur * (1 - pct) - _EPS), "decrease larger than max_daily_change_pct"),
            (MAX_INCREASE, changed & (rec > cur * (1 + pct) + _EPS), "increase larger than max_daily_change_pct"),
            (MARGIN_FLOOR, changed & (rec < cost * (1 + margin) - _EPS), "below unit_cost * (1 + margin_floor)"),
            (MSRP_CEILING, changed & use_msrp & (rec > msrp + _EPS), "above msrp"),
            (MAP_FLOOR, changed & use_map & np.isfinite(mapp) & (rec < mapp - _EPS), "below map_price"),
            (PRICE_ENDINGS, changed & np.isfinite(rec) & ~ending_ok, "cents ending not allowed"),
            (PROMO_LOCK_RULE, changed & locked, "changed while a promotion runs"),
            (MIN_DAYS_RULE, changed & too_soon, "changed sooner than min_days_between_changes"),
            (CONFLICT_RULE, changed & b["conflict"].to_numpy(), "changed although the rules conflict (must hold)"),
        ]
    parts = []
    for rule, mask, detail in checks:
        if mask.any():
            part = b.loc[mask, ["sku_id", "location_id", "current_price", "recommended_price"]].copy()
            part["rule"] = rule
            part["detail"] = detail
            parts.append(part)
    if not parts:
        return pd.DataFrame(columns=cols)
    return pd.concat(parts, ignore_index=True)[cols]
