"""Guardrails: no input yields a changed price outside the hard bounds; conflicts, promo lock and min days hold."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from retail_dagster.core.guardrails import (
    GuardrailSettings, apply_guardrails, guardrail_violations, on_allowed_ending, price_bounds, snap_to_endings,
)

price = st.floats(0.05, 500, allow_nan=False, allow_infinity=False)
endings = st.sampled_from([(0.99, 0.49), (0.99,), (0.95, 0.45, 0.0), ()])


def _frame(**cols) -> pd.DataFrame:
    n = max(len(v) if isinstance(v, (list, np.ndarray)) else 1 for v in cols.values())
    base = dict(sku_id=[f"S{i}" for i in range(n)], location_id="L1", category="c", unit_cost=3.0, msrp=7.0,
                map_price=np.nan, current_price=5.0, wished_price=5.0)
    base.update(cols)
    return pd.DataFrame({k: (v if isinstance(v, (list, np.ndarray)) else [v] * n) for k, v in base.items()})


def _catalog(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[["sku_id", "category", "unit_cost", "msrp", "map_price"]]


row = st.tuples(price, st.one_of(price, st.just(np.nan), st.floats(-10, 0)), st.floats(0, 400), price,
                st.one_of(st.just(np.nan), price), st.booleans(), st.one_of(st.just(np.nan), st.integers(0, 30)))


@settings(max_examples=60, deadline=None)
@given(rows=st.lists(row, min_size=1, max_size=40), pct=st.floats(0, 60), margin=st.floats(-20, 80), ends=endings)
def test_no_input_yields_a_changed_price_outside_the_hard_bounds(rows, pct, margin, ends):
    cur, wish, cost, msrp, map_price, promo, days = (np.array(c) for c in zip(*rows))
    g = GuardrailSettings(max_daily_change_pct=pct, margin_floor_pct=margin, price_endings=ends)
    f = _frame(current_price=cur, wished_price=wish, unit_cost=cost, msrp=msrp, map_price=map_price,
               promo_active=promo.astype(bool), days_since_change=days)
    out = apply_guardrails(f, g)
    rec = out["recommended_price"].to_numpy()
    changed = np.abs(rec - cur) >= 0.005
    c = changed
    assert (out["lower_bound"][c] <= rec[c]).all() and (rec[c] <= out["upper_bound"][c]).all()
    assert (rec[c] >= cost[c] * (1 + margin / 100)).all() and (rec[c] <= msrp[c]).all()
    assert (np.abs(rec[c] / cur[c] - 1) <= pct / 100 + 1e-12).all()
    assert (np.isnan(map_price[c]) | (rec[c] >= map_price[c])).all()
    assert on_allowed_ending(rec[c], ends).all()
    assert not (promo[c]).any() and not (days[c] < 7).any() and not out["conflict"][c].any()
    assert (rec[~changed] == cur[~changed]).all()  # a hold is the current price exactly, even off-ending
    assert (np.sign(rec[c] - cur[c]) == np.sign(wish[c] - cur[c])).all()  # never against the wish's direction
    conflict = out["conflict"].to_numpy()
    assert (rec[conflict] == cur[conflict]).all()
    assert out["reason"][conflict].str.contains("HELD_BY_GUARDRAIL;RULE_CONFLICT").all()
    wish_moves = np.isfinite(wish) & (np.abs(wish - cur) >= 0.005)  # NaN = no wish = hold
    assert (out["clamped"].to_numpy() == (wish_moves & ~(np.abs(rec - wish) < 0.005))).all()
    assert guardrail_violations(out, _catalog(f), g).empty


@settings(max_examples=200, deadline=None)
@given(p=st.floats(-5, 600), lo=price, width=st.floats(0, 50), ends=endings)
def test_snap_to_endings_never_leaves_the_bounds(p, lo, width, ends):
    hi = lo + width
    got = snap_to_endings([p], [lo], [hi], ends)[0]
    if np.isnan(got):
        # nothing fits: every allowed ending value near the interval is outside it
        cents = [round(e * 100) for e in ends] or list(range(100))
        values = [(k * 100 + c) / 100 for k in range(int(lo) - 1, int(hi) + 2) for c in cents]
        assert not any(lo <= v <= hi for v in values)
    else:
        assert lo <= got <= hi and on_allowed_ending([got], ends)[0]
    held = snap_to_endings([p], [lo], [hi], ends, fallback=[-1.0])[0]
    assert held == (-1.0 if np.isnan(got) else got)


def test_snap_picks_the_nearest_ending_inside_the_bounds():
    got = snap_to_endings([5.30, 5.80, 5.0, 10.2], [4.0, 4.0, 5.0, 10.0], [6.0, 6.0, 5.45, 10.5])
    assert got[:2].tolist() == [5.49, 5.99] and np.isnan(got[2]) and got[3] == 10.49


@pytest.mark.parametrize("cols, conflict_reason", [
    (dict(current_price=6.9, unit_cost=6.8, msrp=7.0), "margin_floor>msrp_ceiling"),  # floor 7.82 above the ceiling
    (dict(current_price=5.0, map_price=6.0), "map_floor>max_daily_change_up"),  # MAP above the max move up
    (dict(current_price=9.0, msrp=7.0), "max_daily_change_down>msrp_ceiling"),  # far above MSRP
])
def test_conflicting_rules_hold_the_price_with_a_reason(cols, conflict_reason):
    out = apply_guardrails(_frame(wished_price=5.49, **cols).assign(reason="PROFIT_OPTIMUM"), GuardrailSettings())
    row = out.iloc[0]
    assert row["conflict"] and row["conflict_reason"] == conflict_reason
    assert row["recommended_price"] == row["current_price"]
    assert row["reason"] == "PROFIT_OPTIMUM;HELD_BY_GUARDRAIL;RULE_CONFLICT"
    assert row["clamp_rule"] == "rule_conflict" and row["clamped"]


def test_promo_lock_holds_and_says_so():
    f = _frame(wished_price=[5.49, 5.0], promo_active=True)
    out = apply_guardrails(f, GuardrailSettings())
    assert (out["recommended_price"] == 5.0).all()
    assert out["reason"].tolist() == ["PROMO_LOCK", "PROMO_LOCK"]
    assert out["clamp_rule"].tolist() == ["promo_lock", ""]
    unlocked = apply_guardrails(f, GuardrailSettings(promo_lock=False))
    assert unlocked["recommended_price"].tolist() == [5.49, 5.0]


def test_min_days_between_changes():
    f = _frame(wished_price=5.49, days_since_change=[0, 6, 7, np.nan])
    out = apply_guardrails(f, GuardrailSettings(min_days_between_changes=7))
    assert out["recommended_price"].tolist() == [5.0, 5.0, 5.49, 5.49]
    assert out["reason"].tolist()[:2] == ["MIN_DAYS_BETWEEN_CHANGES"] * 2
    assert out["clamp_rule"].tolist() == ["min_days_between_changes"] * 2 + ["", ""]


def test_a_raise_never_comes_out_as_a_cut():
    # wish +30% on 2.17: the ceiling is 2.387 and the only ending in [1.953, 2.387] is 1.99, below the current price
    out = apply_guardrails(_frame(current_price=2.17, wished_price=2.82, unit_cost=1.0), GuardrailSettings()).iloc[0]
    assert out["recommended_price"] == 2.17 and out["reason"] == "HELD_BY_GUARDRAIL"
    assert out["clamp_rule"] == "max_daily_change_up"


def test_wish_is_clipped_to_the_binding_rule_and_snapped():
    f = _frame(wished_price=[9.0, 1.0, 5.31], unit_cost=[3.0, 4.2, 3.0], msrp=[5.3, 7.0, 7.0])
    out = apply_guardrails(f, GuardrailSettings())
    # row 0: the ceiling 5.30 leaves only 4.99, a cut against a raise wish: held
    assert out["recommended_price"].tolist() == [5.0, 4.99, 5.49]
    assert out["clamp_rule"].tolist() == ["msrp_ceiling", "margin_floor", "price_endings"]
    assert out["clamped"].all()


def test_holding_an_off_ending_price_outside_todays_bounds_is_compliant():
    recs = _frame(current_price=7.77, unit_cost=7.5, msrp=7.0).assign(recommended_price=7.77)
    assert guardrail_violations(recs, _catalog(recs), GuardrailSettings()).empty
    bad = recs.assign(recommended_price=0.0)
    assert guardrail_violations(bad, _catalog(bad), GuardrailSettings())["rule"].tolist()[0] == "price_positive"


def test_violations_name_every_broken_rule():
    recs = _frame(current_price=5.0, recommended_price=[7.49, 5.25, 5.49, 5.49], sku_id=["A", "B", "C", "D"],
                  msrp=[7.0, 7.0, 7.0, 7.0], days_since_change=[30, 30, 30, 2])
    promos = pd.DataFrame({"sku_id": ["C"], "location_id": ["L1"], "start_date": [pd.Timestamp("2026-01-01")],
                           "end_date": [pd.Timestamp("2026-01-10")], "discount_pct": [20.0]})
    v = guardrail_violations(recs, _catalog(recs), GuardrailSettings(), promos, "2026-01-05")
    got = set(zip(v["sku_id"], v["rule"]))
    assert got == {("A", "max_daily_change_up"), ("A", "msrp_ceiling"), ("B", "price_endings"),
                   ("C", "promo_lock"), ("D", "min_days_between_changes")}
    unknown = guardrail_violations(recs.assign(sku_id="ZZZ"), _catalog(recs), GuardrailSettings())
    assert (unknown["rule"] == "unknown_sku").sum() == 4


def test_category_overrides_apply_per_row():
    g = GuardrailSettings(category_overrides={"fresh": {"max_daily_change_pct": 30, "price_endings": (0.95,)}})
    f = _frame(category=["fresh", "dry"], wished_price=3.5, unit_cost=1.0)
    b = price_bounds(f, g)
    assert b["lower_bound"].tolist() == pytest.approx([3.5, 4.5])
    out = apply_guardrails(f, g)
    assert out["recommended_price"].tolist() == [3.95, 4.99]
    assert g.for_category("fresh").max_daily_change_pct == 30


def test_settings_errors_name_the_problem():
    with pytest.raises(ValueError, match="unknown field"):
        GuardrailSettings(category_overrides={"x": {"max_change": 5}})
    with pytest.raises(ValueError, match="price_endings"):
        GuardrailSettings(price_endings=(99,))
    with pytest.raises(ValueError, match="missing column"):
        apply_guardrails(pd.DataFrame({"current_price": [1.0]}), GuardrailSettings())
