"""Rebalancing engine: hand-built plans with a known optimum, infeasible cases, and invariants on random networks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from retail_dagster.core.asof import PlanningInputs, planning_inputs
from retail_dagster.core.rebalancing import (PLAN_COLUMNS, RebalancingSettings, expected_shortage, plan_objective,
                                             plan_transfers, plan_violations, positions,
                                             share_of_network_stock_moved)

D = pd.Timestamp("2026-03-02")
# deterministic demand (sigma = 0): expected units short = max(demand - stock, 0), so optima are easy to state
EXACT = dict(min_variance_to_mean=0.0, service_level=0.5, solver="mip", mip_rel_gap=0.0)


def make_inputs(stock: dict, lanes: list, case_pack: int = 1, capacity: dict | None = None,
                unit_cost: float = 6.0, base_price: float = 10.0) -> PlanningInputs:
    """One or more SKUs; stock = {(sku, loc): on_hand}; lanes = [(from, to, cost, lead, capacity)]."""
    skus = sorted({k[0] for k in stock})
    locs = sorted({k[1] for k in stock})
    catalog = pd.DataFrame({"sku_id": skus, "sku_group": "g", "category": "c", "unit_cost": unit_cost,
                            "base_price": base_price, "msrp": base_price * 1.2, "case_pack": case_pack})
    locations = pd.DataFrame({"location_id": locs, "kind": ["warehouse" if loc.startswith("W") else "store"
                                                            for loc in locs], "region": "r",
                              "capacity_units": [np.nan if capacity is None else capacity.get(loc, np.nan)
                                                 for loc in locs]})
    snap = pd.DataFrame([(D - pd.Timedelta(days=1), s, l, float(q), 0.0) for (s, l), q in stock.items()],
                        columns=["date", "sku_id", "location_id", "on_hand", "in_transit"])
    ln = pd.DataFrame(lanes, columns=["from_location", "to_location", "cost_per_unit", "lead_time_days",
                                      "capacity_units"])
    ln["lead_time_days"] = ln["lead_time_days"].astype("int64")
    ln["capacity_units"] = ln["capacity_units"].astype("float64")
    empty = pd.DataFrame()
    return PlanningInputs(date=D, sku_group="g", catalog=catalog, locations=locations, sales=empty,
                          inventory_snapshot=snap, promotions=empty, events=empty, weather=empty, traffic=empty,
                          lanes=ln)


def flat_forecast(daily: dict, spread: float = 0.0) -> pd.DataFrame:
    """daily = {(sku, store): mean per day}; p10/p90 = mean -/+ spread."""
    rows = [(s, l, D + pd.Timedelta(days=h - 1), h, m, max(m - spread, 0), m, m + spread, "test")
            for (s, l), m in daily.items() for h in range(1, 15)]
    return pd.DataFrame(rows, columns=["sku_id", "location_id", "target_date", "horizon_day", "mean", "p10", "p50",
                                       "p90", "model"])


# A: 1/day with 40 on hand (protection 8, overstock level 28); B: 5/day with 10 (needs 30); C: 1/day with 25.
THREE = dict(stock={("K", "A"): 40, ("K", "B"): 10, ("K", "C"): 25},
             lanes=[("A", "B", 0.10, 1, np.nan), ("C", "B", 0.50, 1, np.nan), ("B", "A", 0.10, 1, np.nan)])
THREE_FC = {("K", "A"): 1.0, ("K", "B"): 5.0, ("K", "C"): 1.0}


def three_store(**kw):
    lanes = kw.pop("lanes", THREE["lanes"])
    inp = make_inputs(THREE["stock"], lanes, case_pack=kw.pop("case_pack", 1))
    return inp, flat_forecast(THREE_FC), RebalancingSettings(**{**EXACT, **kw})


def as_set(plan):
    return set(zip(plan["from_location"], plan["to_location"], plan["units"]))


def test_positions_need_and_surplus_by_hand():
    inp, fc, s = three_store()
    pos = positions(inp, fc, s).set_index("location_id")
    # protection = demand over lead time 1 (inbound lane) or default 1 + review 7 = 8 days
    assert pos.loc["B", "protection_stock"] == 40 and pos.loc["B", "need"] == 30 and pos.loc["B", "surplus"] == 0
    assert pos.loc["A", "surplus"] == 32 and pos.loc["A", "overstock_units"] == 12
    assert pos.loc["C", "surplus"] == 17 and pos.loc["C", "overstock_units"] == 0
    assert pos.loc["A", "receive_room"] == 0  # a sender does not also receive
    assert list(positions(inp, fc, s).columns)[:10] == ["sku_id", "location_id", "kind", "on_hand", "in_transit",
                                                        "position", "protection_days", "demand_mean",
                                                        "demand_sigma", "daily_demand"]


def test_known_optimum_cheapest_lane_covers_the_need():
    inp, fc, s = three_store()
    plan, info = plan_transfers(inp, fc, s)
    assert as_set(plan) == {("A", "B", 30)}
    row = plan.iloc[0]
    assert row["cost"] == pytest.approx(3.0) and row["reason"] == "RELIEVE_OVERSTOCK"
    assert row["arrival_date"] == D + pd.Timedelta(days=1) and row["ship_date"] == D
    assert row["shortage_units_avoided"] == pytest.approx(30) and row["overstock_units_relieved"] == 12
    assert info["mip_gap"] == pytest.approx(0.0, abs=1e-9) and info["transfers"] == 1 and info["units"] == 30
    # 30 units at margin 4 saved, 12 overstock units at 10% of cost 6, minus 3 USD of transport
    assert info["saving_usd"] == pytest.approx(30 * 4 + 12 * 0.6 - 3.0)


def test_known_optimum_case_pack_rounds_to_the_better_multiple():
    inp, fc, s = three_store(case_pack=4)
    plan, info = plan_transfers(inp, fc, s)
    assert as_set(plan) == {("A", "B", 32)}  # 28 leaves 2 units short worth 8 USD; 32 costs 0.2 USD more


def test_known_optimum_lane_capacity_sends_the_rest_on_the_dearer_lane():
    lanes = [("A", "B", 0.10, 1, 20.0), ("C", "B", 0.50, 2, np.nan)]
    inp, fc, s = three_store(lanes=lanes)
    plan, _ = plan_transfers(inp, fc, s)
    assert as_set(plan) == {("A", "B", 20), ("C", "B", 10)}
    assert plan.set_index("from_location").loc["C", "arrival_date"] == D + pd.Timedelta(days=2)


def test_known_optimum_budget_buys_the_cheapest_units():
    inp, fc, s = three_store(daily_budget_usd=1.0)
    plan, info = plan_transfers(inp, fc, s)
    assert as_set(plan) == {("A", "B", 10)} and plan["cost"].sum() <= 1.0 + 1e-9


def test_minimum_quantity_needs_binaries_and_is_respected():
    inp, fc, s = three_store(min_transfer_units=35)
    plan, info = plan_transfers(inp, fc, s)
    # A can only send 32 (< 35) and C 17: no feasible transfer
    assert plan.empty and "infeasible" in info["why_empty"]
    inp, fc, s = three_store(min_transfer_units=20, lanes=[("A", "B", 0.10, 1, 25.0), ("C", "B", 0.50, 1, np.nan)])
    plan, info = plan_transfers(inp, fc, s)
    assert info["binaries"] > 0
    assert (plan["units"] >= 20).all() and plan_violations(plan, positions(inp, fc, s), inp.lanes, inp.catalog,
                                                           s).empty
    # the lane caps A->B at 25; the 5 units still short cannot come from C: 20 is the minimum, C has 17 spare
    assert as_set(plan) == {("A", "B", 25)}


@pytest.mark.parametrize("case, expected", [
    (dict(daily_budget_usd=0.0), "budget 0"),
    (dict(lanes=[]), "no lanes"),
    (dict(case_pack=100), "infeasible"),
])
def test_infeasible_settings_give_an_empty_plan_with_a_reason(case, expected):
    inp, fc, s = three_store(**case)
    for engine in ("optimizer", "greedy"):
        plan, info = plan_transfers(inp, fc, s, engine=engine)
        assert plan.empty and expected in info["why_empty"]
        assert list(plan.columns) == PLAN_COLUMNS
        assert plan["units"].dtype == "int64" and str(plan["ship_date"].dtype) == "datetime64[ns]"
        assert info["transfers"] == 0 and info["cost"] == 0.0


def test_no_need_and_no_surplus_are_explained():
    inp = make_inputs({("K", "A"): 40, ("K", "B"): 50}, [("A", "B", 0.1, 1, np.nan)])
    plan, info = plan_transfers(inp, flat_forecast({("K", "A"): 1.0, ("K", "B"): 1.0}), RebalancingSettings(**EXACT))
    assert plan.empty and "no need" in info["why_empty"]
    inp = make_inputs({("K", "A"): 0, ("K", "B"): 0}, [("A", "B", 0.1, 1, np.nan)])
    plan, info = plan_transfers(inp, flat_forecast({("K", "A"): 1.0, ("K", "B"): 1.0}), RebalancingSettings(**EXACT))
    assert plan.empty and "no surplus" in info["why_empty"]


def test_unprofitable_transfers_are_not_planned_but_greedy_makes_them():
    inp = make_inputs({("K", "A"): 40, ("K", "B"): 10}, [("A", "B", 5.0, 1, np.nan)])
    fc = flat_forecast({("K", "A"): 1.0, ("K", "B"): 5.0})
    s = RebalancingSettings(**EXACT)
    plan, info = plan_transfers(inp, fc, s)
    assert plan.empty and "pays for itself" in info["why_empty"]
    gplan, ginfo = plan_transfers(inp, fc, s, engine="greedy")
    assert len(gplan) == 1 and ginfo["objective_usd"] > info["objective_usd"]


def test_warehouse_keeps_its_reserve_and_replenishes():
    inp = make_inputs({("K", "W1"): 100, ("K", "B"): 0}, [("W1", "B", 0.1, 1, np.nan)])
    fc = flat_forecast({("K", "B"): 20.0})  # wants 160 over 8 days; the warehouse can give 80
    s = RebalancingSettings(**EXACT, warehouse_reserve_share=0.2)
    pos = positions(inp, fc, s).set_index("location_id")
    assert pos.loc["W1", "surplus"] == 80 and pos.loc["W1", "need"] == 0
    plan, _ = plan_transfers(inp, fc, s)
    assert as_set(plan) == {("W1", "B", 80)} and (plan["reason"] == "WAREHOUSE_REPLENISH").all()


def test_location_capacity_limits_what_a_store_takes():
    inp = make_inputs({("K", "A"): 40, ("K", "B"): 10, ("L", "A"): 40, ("L", "B"): 10},
                      [("A", "B", 0.1, 1, np.nan)], capacity={"B": 45.0})
    fc = flat_forecast({("K", "A"): 1.0, ("K", "B"): 5.0, ("L", "A"): 1.0, ("L", "B"): 5.0})
    plan, _ = plan_transfers(inp, fc, RebalancingSettings(**EXACT))
    assert plan["units"].sum() == 25  # 45 capacity - 20 units already there, shared by both SKUs


def test_prices_set_the_value_of_a_unit_short():
    inp = make_inputs({("K", "A"): 40, ("K", "B"): 10}, [("A", "B", 1.0, 1, np.nan)], unit_cost=6.0,
                      base_price=10.0)
    fc = flat_forecast({("K", "A"): 1.0, ("K", "B"): 5.0})
    s = RebalancingSettings(**EXACT, overstock_penalty_pct=0.0)
    plan, _ = plan_transfers(inp, fc, s)
    assert plan["units"].sum() == 30
    cheap = pd.DataFrame({"sku_id": ["K"], "location_id": ["B"], "recommended_price": [6.5]})  # margin 0.5 < 1
    plan, info = plan_transfers(inp, fc, s, prices=cheap)
    assert plan.empty


def test_expected_shortage_matches_a_monte_carlo_estimate():
    rng = np.random.default_rng(0)
    x = rng.normal(20, 4, 400_000)
    for stock in (10.0, 20.0, 27.0):
        assert expected_shortage(stock, 20.0, 4.0) == pytest.approx(np.maximum(x - stock, 0).mean(), rel=0.02)
    assert expected_shortage(5.0, 8.0, 0.0) == 3.0


# ---------------------------------------------------------------------------------------------------------------
# random small networks: invariants for both engines, optimiser never worse than greedy on the same objective
# ---------------------------------------------------------------------------------------------------------------

@st.composite
def networks(draw):
    n_sku = draw(st.integers(1, 3))
    n_store = draw(st.integers(2, 4))
    n_wh = draw(st.integers(0, 1))
    stores = [f"S{i}" for i in range(n_store)]
    locs = stores + [f"W{i}" for i in range(n_wh)]
    skus = [f"K{i}" for i in range(n_sku)]
    stock = {(k, loc): draw(st.integers(0, 60)) for k in skus for loc in locs}
    pairs = [(a, b) for a in locs for b in stores if a != b]
    chosen = draw(st.lists(st.sampled_from(pairs), unique=True, max_size=len(pairs))) if pairs else []
    lanes = [(a, b, draw(st.sampled_from([0.05, 0.2, 0.6, 2.0])), draw(st.integers(0, 3)),
              draw(st.sampled_from([np.nan, np.nan, 5.0, 30.0]))) for a, b in chosen]
    pack = draw(st.sampled_from([1, 1, 2, 6, 12]))
    cap = {s: draw(st.sampled_from([np.nan, 40.0, 150.0])) for s in stores}
    daily = {(k, s): draw(st.sampled_from([0.0, 0.5, 2.0, 6.0])) for k in skus for s in stores}
    spread = draw(st.sampled_from([0.0, 1.0, 3.0]))
    kw = dict(min_transfer_units=draw(st.sampled_from([1, 1, 5, 13])),
              daily_budget_usd=draw(st.sampled_from([None, None, 0.0, 4.0, 25.0])),
              service_level=draw(st.sampled_from([0.5, 0.9, 0.98])),
              warehouse_reserve_share=draw(st.sampled_from([0.0, 0.3])))
    return make_inputs(stock, lanes, case_pack=pack, capacity=cap), flat_forecast(daily, spread), kw


@hsettings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(networks())
def test_random_networks_obey_the_rules_and_optimizer_beats_greedy(net):
    inp, fc, kw = net
    s = RebalancingSettings(solver="mip", mip_rel_gap=0.0, **kw)
    pos = positions(inp, fc, s)
    store = (pos["kind"] == "store") & (pos["surplus"] > 0)
    assert (pos["surplus"] <= pos["on_hand"]).all()
    assert (pos.loc[store, "position"] - pos.loc[store, "surplus"] >= pos.loc[store, "protection_stock"] - 1e-9).all()
    assert not ((pos["surplus"] > 0) & (pos["receive_room"] > 0)).any()
    objectives = {}
    for engine in ("optimizer", "greedy"):
        plan, info = plan_transfers(inp, fc, s, engine=engine, pos=pos)
        assert list(plan.columns) == PLAN_COLUMNS and plan["units"].dtype == "int64"
        v = plan_violations(plan, pos, inp.lanes, inp.catalog, s)
        assert v.empty, v.to_string()
        assert (plan["from_location"] != plan["to_location"]).all()
        if plan.empty:
            assert info["why_empty"]
        assert 0.0 <= share_of_network_stock_moved(plan, pos) <= 1.0
        obj = plan_objective(plan, pos, s)
        assert obj["objective_usd"] == pytest.approx(info["objective_usd"])
        objectives[engine] = obj["objective_usd"]
    assert objectives["optimizer"] <= objectives["greedy"] + 1e-6 * max(1.0, abs(objectives["greedy"]))


@hsettings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(networks())
def test_rounded_relaxation_is_feasible_and_within_the_relaxation_bound(net):
    inp, fc, kw = net
    s = RebalancingSettings(solver="lp_round", **kw)
    pos = positions(inp, fc, s)
    plan, info = plan_transfers(inp, fc, s, pos=pos)
    assert plan_violations(plan, pos, inp.lanes, inp.catalog, s).empty
    if "relaxation_saving_usd" in info:
        assert info["saving_usd"] <= info["relaxation_saving_usd"] + 1e-6
        assert 0.0 <= info["gap_vs_relaxation_pct"] <= 100.0


# ---------------------------------------------------------------------------------------------------------------
# on the demo network
# ---------------------------------------------------------------------------------------------------------------

def test_demo_plan_obeys_the_rules_and_helps(demo):
    tables = demo.tables
    d = tables["sales"]["date"].max() + pd.Timedelta(days=1)
    group = sorted(tables["catalog"]["sku_group"].unique())[0]
    inp = planning_inputs(tables, d, group)
    tr = demo.truth["demand"]
    tr = tr[(tr["date"] >= d) & (tr["date"] < d + pd.Timedelta(days=14)) & tr["sku_id"].isin(inp.catalog["sku_id"])]
    m = tr["expected_demand"].to_numpy()
    fc = pd.DataFrame({"sku_id": tr["sku_id"], "location_id": tr["location_id"], "target_date": tr["date"],
                       "horizon_day": (tr["date"] - d).dt.days + 1, "mean": m, "p10": np.floor(m * 0.6),
                       "p50": np.round(m), "p90": np.ceil(m * 1.5 + 1), "model": "truth"})
    s = RebalancingSettings()
    pos = positions(inp, fc, s)
    plan, info = plan_transfers(inp, fc, s, pos=pos)
    gplan, ginfo = plan_transfers(inp, fc, s, engine="greedy", pos=pos)
    assert plan_violations(plan, pos, inp.lanes, inp.catalog, s).empty
    assert plan_violations(gplan, pos, inp.lanes, inp.catalog, s).empty
    assert len(plan) > 0 and info["shortage_avoided"] > 0 and info["saving_usd"] > 0
    assert set(plan["reason"]) <= {"WAREHOUSE_REPLENISH", "RELIEVE_OVERSTOCK", "COVER_SHORTAGE", "REBALANCE"}
    assert info["objective_usd"] <= ginfo["objective_usd"] + 1e-6
    assert 0 <= info["gap_vs_relaxation_pct"] < 5
    assert 0 < share_of_network_stock_moved(plan, pos) < 1


def test_plan_violations_catch_broken_plans():
    inp, fc, s = three_store(case_pack=4, daily_budget_usd=2.0)
    pos = positions(inp, fc, s)
    bad = pd.DataFrame({"sku_id": ["K", "K", "K"], "from_location": ["A", "C", "B"], "to_location": ["B", "B", "B"],
                        "units": [40, 6, 0], "cost": [4.0, 3.0, 0.0]})
    rules = set(plan_violations(bad, pos, inp.lanes, inp.catalog, s)["rule"])
    assert {"conservation", "protection_stock", "case_pack_multiple", "units_positive_integer", "self_transfer",
            "lane_exists", "budget"} <= rules


def test_unknown_engine_is_rejected():
    inp, fc, s = three_store()
    with pytest.raises(ValueError, match="engine must be one of"):
        plan_transfers(inp, fc, s, engine="magic")


def test_missing_lane_table_is_an_empty_plan_not_an_error():
    inp, fc, s = three_store()
    inp.lanes = pd.DataFrame()
    plan, info = plan_transfers(inp, fc, s)
    assert plan.empty and "no lanes" in info["why_empty"]
