"""Stock rebalancing: which units to move between locations today, and the rules a transfer plan must obey.

One mixed-integer model per partition (all SKUs at once, HiGHS through `scipy.optimize.milp`) plus a rule-based
greedy engine for comparison; `positions`, `plan_objective` and `plan_violations` are shared by both and by the checks.

The objective, in USD, is the same for every engine (`plan_objective`):
    transfer cost + margin x expected units short over each store's protection period + overstock penalty
Expected units short at stock level s is E[(X - s)+] for X ~ Normal(mean, sigma) of demand over the store's lead time
plus review period (sigma from the forecast's p10/p90), linearised between a few breakpoints per SKU-location so that
the model stays linear; the optimiser and the evaluator use the same breakpoints, so "optimiser <= greedy" is exact.
Overstock penalty: `overstock_penalty_pct` of unit cost per unit above `overstock_cover_days` of mean demand.

Constraints: lanes must exist; lane capacity per day and location capacity are shared by all SKUs of the model
(exact inside a partition; `lane_capacity_share` / `receiver_capacity_share` split them between partitions);
whole case packs (integer case variables) and a minimum quantity (on/off binaries where it exceeds one case);
a daily budget in USD. Solver: the exact MIP up to `mip_max_arcs` candidate arcs, above that the LP relaxation
rounded down to case packs then repaired upward; both report the gap to the LP relaxation (a bound on the optimum).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from .asof import PlanningInputs

PLAN_COLUMNS = ["sku_id", "from_location", "to_location", "units", "ship_date", "arrival_date", "cost",
                "shortage_units_avoided", "overstock_units_relieved", "reason", "engine"]
POSITION_COLUMNS = ["sku_id", "location_id", "kind", "on_hand", "in_transit", "position", "protection_days",
                    "demand_mean", "demand_sigma", "daily_demand", "protection_stock", "overstock_level", "need",
                    "surplus", "overstock_units", "receive_room", "case_pack", "unit_cost", "price", "margin",
                    "expected_shortage_units"]
VIOLATION_COLUMNS = ["rule", "sku_id", "from_location", "to_location", "detail"]
REASONS = ("WAREHOUSE_REPLENISH", "RELIEVE_OVERSTOCK", "COVER_SHORTAGE", "REBALANCE")
ENGINES = ("optimizer", "greedy")
Z_10_90 = 1.2815515655446004  # standard normal quantile of 0.9: p90 - p10 = 2 * Z * sigma


@dataclass(frozen=True)
class RebalancingSettings:
    """Knobs of the rebalancing engine (the Dagster Config mirrors these fields)."""

    service_level: float = 0.95  # probability of no stockout over lead time + review that protection stock covers
    review_period_days: int = 7  # days until the next planning opportunity that can fix a store's stock
    default_lead_time_days: int = 1  # a store's replenishment lead time when it has no inbound lane
    warehouse_reserve_share: float = 0.2  # share of a warehouse's on-hand units never sent by transfers
    overstock_cover_days: int = 28  # stock above this many days of mean demand counts as overstock
    overstock_penalty_pct: float = 10.0  # % of unit cost charged per overstock unit (capital, markdown risk)
    daily_budget_usd: float | None = None  # cap on the plan's transfer cost (None = unlimited)
    min_transfer_units: int = 1  # a transfer moves at least this many units (on top of whole case packs)
    lane_capacity_share: float = 1.0  # share of each lane's daily capacity this partition may use
    receiver_capacity_share: float = 1.0  # share of each location's capacity_units this partition may fill
    min_variance_to_mean: float = 0.5  # daily demand variance is at least this times its mean (Poisson = 1)
    breakpoints: int = 4  # linear pieces of the expected-shortage curve between stock and protection stock
    solver: str = "auto"  # "mip" (branch and bound), "lp_round" (LP relaxation, rounded and repaired), or "auto"
    mip_max_arcs: int = 5_000  # "auto" uses the MIP up to this many candidate arcs, lp_round above
    mip_rel_gap: float = 1e-4  # HiGHS stops when the relative MIP gap is below this
    time_limit_seconds: float = 20.0  # HiGHS time limit per solve (the MIP then returns its best plan so far)
    measure_relaxation: bool = True  # also solve the LP relaxation to report the integrality gap


# ---------------------------------------------------------------------------------------------------------------
# positions: need and surplus per SKU-location
# ---------------------------------------------------------------------------------------------------------------

def _empty_plan() -> pd.DataFrame:
    return pd.DataFrame({
        "sku_id": pd.Series(dtype=object), "from_location": pd.Series(dtype=object),
        "to_location": pd.Series(dtype=object), "units": pd.Series(dtype="int64"),
        "ship_date": pd.Series(dtype="datetime64[ns]"), "arrival_date": pd.Series(dtype="datetime64[ns]"),
        "cost": pd.Series(dtype="float64"), "shortage_units_avoided": pd.Series(dtype="float64"),
        "overstock_units_relieved": pd.Series(dtype="float64"), "reason": pd.Series(dtype=object),
        "engine": pd.Series(dtype=object),
    })


def expected_shortage(stock, mean, sigma):
    """E[(X - stock)+] for X ~ Normal(mean, sigma), elementwise; sigma = 0 gives max(mean - stock, 0)."""
    from scipy.special import ndtr

    stock, mean, sigma = (np.asarray(a, dtype="float64") for a in (stock, mean, sigma))
    safe = np.where(sigma > 0, sigma, 1.0)
    z = (stock - mean) / safe
    loss = safe * (np.exp(-0.5 * z * z) / np.sqrt(2 * np.pi) - z * (1 - ndtr(z)))
    return np.where(sigma > 0, np.maximum(loss, 0.0), np.maximum(mean - stock, 0.0))


def _inbound_lead_time(lanes: pd.DataFrame, settings: RebalancingSettings) -> pd.Series:
    if lanes is None or lanes.empty:
        return pd.Series(dtype="int64")
    return lanes.groupby("to_location")["lead_time_days"].min().astype("int64")


def positions(inputs: PlanningInputs, forecast: pd.DataFrame, settings: RebalancingSettings | None = None,
              prices: pd.DataFrame | None = None) -> pd.DataFrame:
    """Stock position, protection stock, need and surplus per SKU-location (stores and warehouses).

    Stores: protection stock = demand over (inbound lead time + review period) at the service level (normal
    approximation, sigma from p10/p90), need = protection - (on_hand + in_transit), surplus = what can leave today
    while the position stays at or above protection (never more than on hand). Warehouses do not sell: surplus =
    on_hand minus `warehouse_reserve_share` of it, and they receive nothing.
    """
    s = settings or RebalancingSettings()
    cat = inputs.catalog.set_index("sku_id")
    locs = inputs.locations.set_index("location_id")
    snap = inputs.inventory_snapshot[["sku_id", "location_id", "on_hand", "in_transit"]]
    fc = forecast if forecast is not None else pd.DataFrame(columns=["sku_id", "location_id", "horizon_day", "mean"])
    fc = fc[fc["sku_id"].isin(cat.index)]
    keys = pd.concat([snap[["sku_id", "location_id"]], fc[["sku_id", "location_id"]].drop_duplicates()],
                     ignore_index=True).drop_duplicates()
    pos = keys.merge(snap, on=["sku_id", "location_id"], how="left")
    pos[["on_hand", "in_transit"]] = pos[["on_hand", "in_transit"]].fillna(0.0).astype("float64")
    pos["kind"] = pos["location_id"].map(locs["kind"]).fillna("store")
    store = (pos["kind"] == "store").to_numpy()

    lead = pos["location_id"].map(_inbound_lead_time(inputs.lanes, s)).fillna(s.default_lead_time_days)
    horizon = int(fc["horizon_day"].max()) if len(fc) else inputs.horizon_days
    pos["protection_days"] = np.minimum(lead.to_numpy() + s.review_period_days, max(horizon, 1)).astype("int64")

    # demand over each store's protection period: sum of daily means, variances summed (days independent)
    if len(fc):
        f = fc[["sku_id", "location_id", "horizon_day", "mean"]].copy()
        if {"p10", "p90"} <= set(fc.columns):
            sd = (fc["p90"] - fc["p10"]).to_numpy(dtype="float64") / (2 * Z_10_90)
            f["var"] = np.where(np.isfinite(sd), sd ** 2, fc["mean"].to_numpy(dtype="float64"))
        else:
            f["var"] = fc["mean"].astype("float64")  # Poisson: variance = mean
        # a quantile band of integers (p10 = p90 = 0) understates the risk of slow movers: floor the variance
        f["var"] = np.maximum(f["var"], s.min_variance_to_mean * f["mean"].clip(lower=0))
        f = f.merge(pos[["sku_id", "location_id", "protection_days"]], on=["sku_id", "location_id"])
        f["in_period"] = f["horizon_day"] <= f["protection_days"]
        f["mean_p"] = f["mean"].where(f["in_period"], 0.0)
        f["var_p"] = f["var"].where(f["in_period"], 0.0)
        agg = f.groupby(["sku_id", "location_id"], sort=False).agg(
            demand_mean=("mean_p", "sum"), var=("var_p", "sum"), daily_demand=("mean", "mean"))
        pos = pos.merge(agg, left_on=["sku_id", "location_id"], right_index=True, how="left")
    else:
        pos[["demand_mean", "var", "daily_demand"]] = np.nan
    pos[["demand_mean", "var", "daily_demand"]] = pos[["demand_mean", "var", "daily_demand"]].fillna(0.0)
    pos.loc[~store, ["demand_mean", "var", "daily_demand"]] = 0.0
    pos["demand_sigma"] = np.sqrt(pos["var"].clip(lower=0))
    pos = pos.drop(columns="var")

    on_hand, in_transit = pos["on_hand"].to_numpy(), pos["in_transit"].to_numpy()
    position = on_hand + in_transit
    pos["position"] = position
    from scipy.special import ndtri

    z = float(ndtri(s.service_level))
    prot_store = np.ceil(np.maximum(pos["demand_mean"] + z * pos["demand_sigma"], 0.0) - 1e-9)
    prot_wh = np.ceil(on_hand * s.warehouse_reserve_share - 1e-9)
    protection = np.where(store, prot_store, prot_wh)
    pos["protection_stock"] = protection
    over = np.maximum(protection, np.ceil(pos["daily_demand"].to_numpy() * s.overstock_cover_days))
    pos["overstock_level"] = np.where(store, over, np.inf)
    pos["need"] = np.where(store, np.maximum(np.ceil(protection - position - 1e-9), 0.0), 0.0)
    surplus_store = np.minimum(on_hand, position - protection)
    surplus = np.floor(np.maximum(np.where(store, surplus_store, on_hand - protection), 0.0) + 1e-9)
    pos["surplus"] = surplus
    pos["overstock_units"] = np.where(store, np.maximum(position - over, 0.0), 0.0)
    # a SKU-location that can send does not also receive the same SKU; receivers stop at the overstock level
    pos["receive_room"] = np.where(store & (surplus <= 0), np.floor(np.maximum(over - position, 0.0) + 1e-9), 0.0)

    pos["case_pack"] = pos["sku_id"].map(cat["case_pack"]).fillna(1).astype("int64").clip(lower=1)
    pos["unit_cost"] = pos["sku_id"].map(cat["unit_cost"]).astype("float64")
    price = pos["sku_id"].map(cat["base_price"]).astype("float64")
    if prices is not None and len(prices):
        rec = prices.drop_duplicates(["sku_id", "location_id"])[["sku_id", "location_id", "recommended_price"]]
        rp = pos[["sku_id", "location_id"]].merge(rec, how="left")["recommended_price"].to_numpy(dtype="float64")
        price = pd.Series(rp, index=pos.index).fillna(price)
    pos["price"] = price
    pos["margin"] = np.maximum(pos["price"] - pos["unit_cost"], 0.0)
    pos["expected_shortage_units"] = np.where(store, expected_shortage(position, pos["demand_mean"],
                                                                       pos["demand_sigma"]), 0.0)
    return pos[POSITION_COLUMNS].sort_values(["sku_id", "location_id"]).reset_index(drop=True)


# ---------------------------------------------------------------------------------------------------------------
# the objective: a convex piecewise-linear cost of the final position per SKU-location
# ---------------------------------------------------------------------------------------------------------------

@dataclass
class _CostCurves:
    """Breakpoints b (n, m) sorted per row, cost f(b), and the start column of each row (b[:, start] = position)."""

    b: np.ndarray
    f: np.ndarray
    start: np.ndarray

    def cost(self, level: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        """Piecewise-linear cost at `level` (clipped to the breakpoint range), for all rows or `rows`."""
        b, f = (self.b, self.f) if rows is None else (self.b[rows], self.f[rows])
        w = np.diff(b, axis=1)
        slope = np.divide(np.diff(f, axis=1), w, out=np.zeros_like(w), where=w > 0)
        x = np.clip(level, b[:, 0], b[:, -1])[:, None]
        return f[:, 0] + (slope * np.clip(x - b[:, :-1], 0.0, w)).sum(axis=1)


def _cost_curves(pos: pd.DataFrame, settings: RebalancingSettings) -> _CostCurves:
    """Cost (USD) of ending at each stock level: margin x expected units short + overstock penalty.

    Breakpoints: `breakpoints` equal steps between the position and the protection stock (the stretch a sender
    may give up or a receiver may fill), the overstock level, and the furthest level a transfer can reach.
    """
    k = max(int(settings.breakpoints), 1)
    s0 = pos["position"].to_numpy(dtype="float64")
    prot = pos["protection_stock"].to_numpy(dtype="float64")
    over = np.minimum(pos["overstock_level"].to_numpy(dtype="float64"), 1e15)
    lo = np.minimum(s0, np.where(pos["surplus"].to_numpy() > 0, s0 - pos["surplus"].to_numpy(), s0))
    hi = s0 + pos["receive_room"].to_numpy(dtype="float64")
    a, c = np.minimum(s0, prot), np.maximum(s0, prot)
    grid = a[:, None] + (c - a)[:, None] * np.linspace(0.0, 1.0, k + 1)[None, :]
    b = np.column_stack([grid, s0, lo, hi, np.clip(over, lo, hi)])
    b = np.sort(np.clip(b, lo[:, None], hi[:, None]), axis=1)
    store = (pos["kind"] == "store").to_numpy()
    margin = pos["margin"].to_numpy(dtype="float64")
    h = pos["unit_cost"].to_numpy(dtype="float64") * settings.overstock_penalty_pct / 100.0
    mu, sd = pos["demand_mean"].to_numpy(dtype="float64"), pos["demand_sigma"].to_numpy(dtype="float64")
    f = (margin[:, None] * expected_shortage(b, mu[:, None], sd[:, None])
         + h[:, None] * np.maximum(b - over[:, None], 0.0))
    f = np.where(store[:, None], f, 0.0)  # warehouses carry no shortage or overstock cost
    start = (b < s0[:, None] - 1e-9).sum(axis=1)
    return _CostCurves(b=b, f=f, start=start)


def _net_flows(plan: pd.DataFrame, pos: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Units received and sent per row of `pos`."""
    idx = pd.MultiIndex.from_frame(pos[["sku_id", "location_id"]])
    if plan is None or plan.empty:
        z = np.zeros(len(pos))
        return z, z.copy()
    u = plan["units"].to_numpy(dtype="float64")
    to = idx.get_indexer(pd.MultiIndex.from_arrays([plan["sku_id"], plan["to_location"]]))
    fr = idx.get_indexer(pd.MultiIndex.from_arrays([plan["sku_id"], plan["from_location"]]))
    inflow = np.bincount(to[to >= 0], weights=u[to >= 0], minlength=len(pos))
    outflow = np.bincount(fr[fr >= 0], weights=u[fr >= 0], minlength=len(pos))
    return inflow, outflow


def plan_objective(plan: pd.DataFrame, pos: pd.DataFrame, settings: RebalancingSettings | None = None) -> dict:
    """The engines' common objective (USD): transfer cost + expected lost margin + overstock penalty after the plan."""
    s = settings or RebalancingSettings()
    curves = _cost_curves(pos, s)
    inflow, outflow = _net_flows(plan, pos)
    s0 = pos["position"].to_numpy(dtype="float64")
    before = curves.cost(s0)
    after = curves.cost(s0 + inflow - outflow)
    transfer = float(plan["cost"].sum()) if plan is not None and len(plan) else 0.0
    return {"transfer_cost_usd": transfer, "stock_cost_before_usd": float(before.sum()),
            "stock_cost_after_usd": float(after.sum()), "objective_usd": transfer + float(after.sum()),
            "saving_usd": float(before.sum() - after.sum()) - transfer}


# ---------------------------------------------------------------------------------------------------------------
# candidate arcs and shared constraints
# ---------------------------------------------------------------------------------------------------------------

def _location_room(pos: pd.DataFrame, locations: pd.DataFrame, settings: RebalancingSettings) -> pd.Series:
    """Units each location may still take in (finite capacities only), shared by all of the partition's SKUs.

    Capacity is for all SKU groups while a partition sees only its own stock: each partition may fill
    `receiver_capacity_share` of the capacity minus its own stock (documented approximation).
    """
    if "capacity_units" not in locations:
        return pd.Series(dtype="float64")
    cap = locations.set_index("location_id")["capacity_units"].astype("float64").dropna()
    stock = pos.groupby("location_id")["position"].sum()
    room = cap * settings.receiver_capacity_share - stock.reindex(cap.index).fillna(0.0)
    return np.floor(room.clip(lower=0.0))


def _lane_table(lanes: pd.DataFrame | None, settings: RebalancingSettings) -> pd.DataFrame:
    cols = ["from_location", "to_location", "cost_per_unit", "lead_time_days"]
    if lanes is None or lanes.empty or not set(cols) <= set(lanes.columns):
        return pd.DataFrame({c: pd.Series(dtype="float64" if c == "cost_per_unit" else object)
                             for c in cols + ["capacity_units", "lane_cap"]})
    ln = lanes.copy()
    if "capacity_units" not in ln:
        ln["capacity_units"] = np.nan
    ln = ln[ln["from_location"] != ln["to_location"]].drop_duplicates(["from_location", "to_location"])
    ln["lane_cap"] = np.floor(ln["capacity_units"].astype("float64") * settings.lane_capacity_share)
    return ln.reset_index(drop=True)


def _candidate_arcs(pos: pd.DataFrame, lanes: pd.DataFrame, settings: RebalancingSettings,
                    curves: _CostCurves | None, room: pd.Series) -> pd.DataFrame:
    """(SKU, sender, receiver) triples a transfer could use, with per-arc bounds in case packs.

    When `curves` is given, arcs whose unit cost exceeds the best value a unit could ever create there are
    dropped: they can never carry flow in an optimal plan (every constraint is a <= with positive weights).
    """
    ln = _lane_table(lanes, settings)
    p = pos.reset_index(drop=True)
    p["row"] = np.arange(len(p))
    send = p[p["surplus"] >= p["case_pack"]]
    recv = p[p["receive_room"] >= p["case_pack"]]
    arcs = send[["sku_id", "location_id", "row", "surplus", "case_pack"]].rename(
        columns={"location_id": "from_location", "row": "from_row"})
    arcs = arcs.merge(ln[["from_location", "to_location", "cost_per_unit", "lead_time_days", "lane_cap"]],
                      on="from_location")
    arcs = arcs.merge(recv[["sku_id", "location_id", "row", "receive_room"]].rename(
        columns={"location_id": "to_location", "row": "to_row"}), on=["sku_id", "to_location"])
    if arcs.empty:
        return arcs
    pack = arcs["case_pack"].to_numpy(dtype="float64")
    ub = np.minimum(arcs["surplus"].to_numpy(), arcs["receive_room"].to_numpy())
    ub = np.minimum(ub, np.nan_to_num(arcs["lane_cap"].to_numpy(dtype="float64"), nan=np.inf))
    ub = np.minimum(ub, arcs["to_location"].map(room).fillna(np.inf).to_numpy(dtype="float64"))
    cost = arcs["cost_per_unit"].to_numpy(dtype="float64")
    if settings.daily_budget_usd is not None:
        ub = np.minimum(ub, np.where(cost > 0, settings.daily_budget_usd / np.maximum(cost, 1e-12), np.inf))
    arcs["ub_cases"] = np.floor(ub / pack + 1e-9)
    arcs["min_cases"] = np.maximum(np.ceil(settings.min_transfer_units / pack - 1e-9), 1.0)
    keep = arcs["ub_cases"] >= arcs["min_cases"]
    if curves is not None:
        w = np.diff(curves.b, axis=1)
        slope = np.divide(np.diff(curves.f, axis=1), w, out=np.zeros_like(w), where=w > 0)
        cols = np.arange(w.shape[1])[None, :]
        # receiver: best marginal value of its first unit; sender: best credit of its first unit out
        rv = -np.where(cols >= curves.start[:, None], slope, np.inf).min(axis=1)
        sv = -np.where(cols < curves.start[:, None], -slope, np.inf).min(axis=1)
        best = rv[arcs["to_row"].to_numpy()] + sv[arcs["from_row"].to_numpy()]
        keep &= cost < best - 1e-12
    return arcs[keep].reset_index(drop=True)


# ---------------------------------------------------------------------------------------------------------------
# engines
# ---------------------------------------------------------------------------------------------------------------

def _solve_optimizer(arcs: pd.DataFrame, curves: _CostCurves, room: pd.Series, settings: RebalancingSettings,
                     info: dict) -> np.ndarray:
    """One MIP over every SKU of the partition; returns units per arc.

    Variables: cases per arc (integer), fill of each receiver's and sender's cost-curve segment (continuous),
    and an on/off binary per arc only where the minimum quantity exceeds one case. Shared constraints: lane
    capacity per day (units, across SKUs), location capacity, and the budget (USD).
    """
    import scipy.sparse as sp
    from scipy.optimize import Bounds, LinearConstraint, milp

    n_a = len(arcs)
    pack = arcs["case_pack"].to_numpy(dtype="float64")
    unit_cost = arcs["cost_per_unit"].to_numpy(dtype="float64")
    w = np.diff(curves.b, axis=1)
    slope = np.divide(np.diff(curves.f, axis=1), w, out=np.zeros_like(w), where=w > 0)
    cols = np.arange(w.shape[1])[None, :]

    # segments of the rows that take part: receivers fill upward from the position, senders empty downward
    to_rows, from_rows = arcs["to_row"].to_numpy(), arcs["from_row"].to_numpy()
    r_rows, r_of_arc = np.unique(to_rows, return_inverse=True)
    s_rows, s_of_arc = np.unique(from_rows, return_inverse=True)
    rmask = (cols >= curves.start[:, None]) & (w > 0)
    smask = (cols < curves.start[:, None]) & (w > 0)
    r_seg_row, r_seg_col = np.nonzero(rmask[r_rows])
    s_seg_row, s_seg_col = np.nonzero(smask[s_rows])
    r_w = w[r_rows][r_seg_row, r_seg_col]
    r_c = slope[r_rows][r_seg_row, r_seg_col]  # cost per unit received (negative = value)
    s_w = w[s_rows][s_seg_row, s_seg_col]
    s_c = -slope[s_rows][s_seg_row, s_seg_col]  # cost per unit sent (negative = overstock relief)
    nb_mask = arcs["min_cases"].to_numpy() > 1
    bin_arcs = np.flatnonzero(nb_mask)
    n_r, n_s, n_b = len(r_w), len(s_w), len(bin_arcs)
    n = n_a + n_r + n_s + n_b
    o_r, o_s, o_b = n_a, n_a + n_r, n_a + n_r + n_s

    c = np.concatenate([unit_cost * pack, r_c, s_c, np.zeros(n_b)])
    ub_cases = arcs["ub_cases"].to_numpy(dtype="float64")
    lb = np.zeros(n)
    ub = np.concatenate([ub_cases, r_w, s_w, np.ones(n_b)])

    rows, colsx, vals, lo_c, hi_c = [], [], [], [], []
    nrow = 0

    def add(r, cc, v, lo, hi):
        nonlocal nrow
        rows.append(np.asarray(r) + nrow)
        colsx.append(np.asarray(cc))
        vals.append(np.asarray(v, dtype="float64"))
        lo_c.append(np.asarray(lo, dtype="float64"))
        hi_c.append(np.asarray(hi, dtype="float64"))
        nrow += len(lo)

    # balance: units received = fill of the receiver's segments; units sent = fill of the sender's segments
    add(np.concatenate([r_of_arc, r_seg_row]), np.concatenate([np.arange(n_a), o_r + np.arange(n_r)]),
        np.concatenate([-pack, np.ones(n_r)]), np.zeros(len(r_rows)), np.zeros(len(r_rows)))
    add(np.concatenate([s_of_arc, s_seg_row]), np.concatenate([np.arange(n_a), o_s + np.arange(n_s)]),
        np.concatenate([-pack, np.ones(n_s)]), np.zeros(len(s_rows)), np.zeros(len(s_rows)))
    # lane capacity per day, shared by the partition's SKUs
    lane_cap = arcs["lane_cap"].to_numpy(dtype="float64")
    capped = np.flatnonzero(np.isfinite(lane_cap))
    if len(capped):
        lane_key = arcs["from_location"].to_numpy()[capped] + "\x1f" + arcs["to_location"].to_numpy()[capped]
        lanes_u, lane_of = np.unique(lane_key, return_inverse=True)
        cap_u = np.zeros(len(lanes_u))
        cap_u[lane_of] = lane_cap[capped]
        add(lane_of, capped, pack[capped], np.full(len(lanes_u), -np.inf), cap_u)
    # receiving location capacity, shared by the partition's SKUs
    loc_room = arcs["to_location"].map(room).to_numpy(dtype="float64")
    roomed = np.flatnonzero(np.isfinite(loc_room))
    if len(roomed):
        locs_u, loc_of = np.unique(arcs["to_location"].to_numpy()[roomed], return_inverse=True)
        room_u = np.zeros(len(locs_u))
        room_u[loc_of] = loc_room[roomed]
        add(loc_of, roomed, pack[roomed], np.full(len(locs_u), -np.inf), room_u)
    if settings.daily_budget_usd is not None:
        add(np.zeros(n_a, dtype=int), np.arange(n_a), unit_cost * pack, [-np.inf], [settings.daily_budget_usd])
    if n_b:
        # minimum quantity: cases = 0, or min_cases <= cases <= ub (on/off binary)
        m = arcs["min_cases"].to_numpy(dtype="float64")[bin_arcs]
        k = np.arange(n_b)
        add(np.concatenate([k, k]), np.concatenate([bin_arcs, o_b + k]), np.concatenate([np.ones(n_b), -m]),
            np.zeros(n_b), np.full(n_b, np.inf))
        add(np.concatenate([k, k]), np.concatenate([bin_arcs, o_b + k]),
            np.concatenate([np.ones(n_b), -ub_cases[bin_arcs]]), np.full(n_b, -np.inf), np.zeros(n_b))

    A = sp.csr_array((np.concatenate(vals), (np.concatenate(rows), np.concatenate(colsx))), shape=(nrow, n))
    cons = LinearConstraint(A, np.concatenate(lo_c), np.concatenate(hi_c))
    integrality = np.concatenate([np.ones(n_a), np.zeros(n_r + n_s), np.ones(n_b)])
    opts = {"time_limit": settings.time_limit_seconds, "mip_rel_gap": settings.mip_rel_gap}
    info.update(variables=int(n), integer_variables=int(n_a + n_b), constraints=int(nrow), binaries=int(n_b))

    solver = settings.solver
    if solver == "auto":
        solver = "mip" if n_a <= settings.mip_max_arcs else "lp_round"
    info["solver"] = solver
    relax = None
    if settings.measure_relaxation or solver == "lp_round":
        t0 = time.perf_counter()
        relax = milp(c, integrality=np.zeros(n), bounds=Bounds(lb, ub), constraints=cons,
                     options={"time_limit": settings.time_limit_seconds})
        info["relaxation_seconds"] = round(time.perf_counter() - t0, 3)
        info["relaxation_status"] = relax.message
        if relax.x is not None:
            info["relaxation_saving_usd"] = float(-relax.fun)

    if solver == "lp_round":
        if relax is None or relax.x is None:
            info["solver_status"] = f"LP relaxation failed: {getattr(relax, 'message', '')}"
            return np.zeros(n_a)
        info["solver_status"] = "LP relaxation rounded down to case packs, then repaired upward"
        return _round_and_repair(relax.x[:n_a], arcs, curves, room, settings, info)

    t0 = time.perf_counter()
    res = milp(c, integrality=integrality, bounds=Bounds(lb, ub), constraints=cons, options=opts)
    info["mip_seconds"] = round(time.perf_counter() - t0, 3)
    info["solver_status"] = res.message
    info["mip_gap"] = None if getattr(res, "mip_gap", None) is None else float(res.mip_gap)
    info["mip_dual_bound_saving_usd"] = (None if getattr(res, "mip_dual_bound", None) is None
                                         else float(-res.mip_dual_bound))
    if res.x is None:
        if relax is not None and relax.x is not None:  # no incumbent in time: fall back to the rounded relaxation
            info["solver_status"] += "; fell back to the rounded LP relaxation"
            return _round_and_repair(relax.x[:n_a], arcs, curves, room, settings, info)
        return np.zeros(n_a)
    return np.round(res.x[:n_a]) * pack


def _round_and_repair(x: np.ndarray, arcs: pd.DataFrame, curves: _CostCurves, room: pd.Series,
                      settings: RebalancingSettings, info: dict, max_rounds: int = 6) -> np.ndarray:
    """Whole case packs from the LP relaxation: round every arc down (keeps all <= constraints), drop arcs under
    the minimum, then add back one case at a time where it lowers the objective and every shared limit allows.

    Each repair round takes at most one extra case per receiver and per sender (so the gain computed for it is
    exact), and admits them best gain first within lane capacity, location capacity and budget.
    """
    pack = arcs["case_pack"].to_numpy(dtype="float64")
    cost = arcs["cost_per_unit"].to_numpy(dtype="float64")
    ub = arcs["ub_cases"].to_numpy(dtype="float64")
    min_cases = arcs["min_cases"].to_numpy(dtype="float64")
    cases = np.floor(x + 1e-6)
    cases[cases < min_cases] = 0.0
    fr, to = arcs["from_row"].to_numpy(), arcs["to_row"].to_numpy()
    n = len(curves.b)
    lane_key, _ = pd.factorize(arcs["from_location"] + "\x1f" + arcs["to_location"])
    lane_cap = pd.Series(arcs["lane_cap"].to_numpy(dtype="float64")).groupby(lane_key).first().fillna(np.inf)
    loc_key, loc_names = pd.factorize(arcs["to_location"])
    loc_cap = pd.Series(loc_names).map(room).fillna(np.inf).to_numpy(dtype="float64")
    s0 = curves.b[np.arange(n), curves.start]
    candidates = np.flatnonzero(x > cases + 1e-6)  # arcs the relaxation wanted more of
    added = 0
    for _ in range(max_rounds):
        u = cases * pack
        inflow = np.bincount(to, weights=u, minlength=n)
        outflow = np.bincount(fr, weights=u, minlength=n)
        c = candidates[cases[candidates] < ub[candidates]]
        if not len(c):
            break
        step = np.where(cases[c] == 0, min_cases[c], 1.0) * pack[c]
        r, s = to[c], fr[c]
        lr, ls = s0[r] + inflow[r], s0[s] - outflow[s]
        ok = (lr + step <= curves.b[r, -1] + 1e-9) & (ls - step >= curves.b[s, 0] - 1e-9)
        gain = (curves.cost(lr + step, r) - curves.cost(lr, r) + curves.cost(ls - step, s) - curves.cost(ls, s)
                + cost[c] * step)
        ok &= gain < -1e-9
        c, step, gain = c[ok], step[ok], gain[ok]
        if not len(c):
            break
        # under a budget, the best use of the dollars left is the largest gain per dollar
        key = gain / np.maximum(cost[c] * step, 1e-9) if settings.daily_budget_usd is not None else gain
        order = np.argsort(key, kind="stable")
        c, step = c[order], step[order]
        first = ~pd.Series(to[c]).duplicated().to_numpy() & ~pd.Series(fr[c]).duplicated().to_numpy()
        c, step = c[first], step[first]
        # shared limits in gain order: lane capacity, location capacity, budget
        lane_used = np.bincount(lane_key, weights=cases * pack, minlength=len(lane_cap))
        loc_used = np.bincount(loc_key, weights=cases * pack, minlength=len(loc_cap))
        take = np.ones(len(c), dtype=bool)
        for key, left in ((lane_key, lane_cap.to_numpy() - lane_used), (loc_key, loc_cap - loc_used)):
            k = key[c]
            cum = pd.Series(np.where(take, step, 0.0)).groupby(k).cumsum().to_numpy()
            take &= cum <= left[k] + 1e-9
        if settings.daily_budget_usd is not None:
            spent = float((cases * pack * cost).sum())
            take &= np.cumsum(np.where(take, step * cost[c], 0.0)) <= settings.daily_budget_usd - spent + 1e-9
        if not take.any():
            break
        cases[c[take]] += step[take] / pack[c[take]]
        added += int(take.sum())
    info["repair_cases_added"] = added
    return cases * pack


def _solve_greedy(pos: pd.DataFrame, arcs: pd.DataFrame, room: pd.Series, settings: RebalancingSettings
                  ) -> np.ndarray:
    """Rule-based baseline: each short store takes from its cheapest lane first, up to its need in whole cases.

    Rounds over lane rank (a loop over ranks, at most the number of locations); within a round, senders,
    lanes, location capacity and budget are shared in ascending cost order (cumulative sums, vectorized).
    """
    n_a = len(arcs)
    units = np.zeros(n_a)
    if n_a == 0:
        return units
    need_rows = pos["need"].to_numpy(dtype="float64").copy()
    room_rows = pos["receive_room"].to_numpy(dtype="float64").copy()
    surplus_rows = pos["surplus"].to_numpy(dtype="float64").copy()
    pack = arcs["case_pack"].to_numpy(dtype="float64")
    cost = arcs["cost_per_unit"].to_numpy(dtype="float64")
    lane_key = pd.factorize(arcs["from_location"] + "\x1f" + arcs["to_location"])[0]
    lane_left = arcs.groupby(lane_key)["lane_cap"].first().fillna(np.inf).to_numpy(dtype="float64")
    loc_key, loc_names = pd.factorize(arcs["to_location"])
    loc_left = pd.Series(loc_names).map(room).fillna(np.inf).to_numpy(dtype="float64")
    budget_left = np.inf if settings.daily_budget_usd is None else float(settings.daily_budget_usd)
    min_units = max(int(settings.min_transfer_units), 1)
    rank = arcs.assign(_c=cost, _k=np.arange(n_a)).sort_values(["_c", "_k"]).groupby(
        ["sku_id", "to_location"]).cumcount().reindex(np.arange(n_a)).to_numpy()
    fr, to = arcs["from_row"].to_numpy(), arcs["to_row"].to_numpy()

    def clip_shared(order_idx, alloc, key, left):
        a = alloc[order_idx]
        k = key[order_idx]
        cum = pd.Series(a).groupby(k).cumsum().to_numpy()
        before = cum - a
        return np.clip(left[k] - before, 0.0, a)

    for r in range(int(rank.max()) + 1):
        idx = np.flatnonzero((rank == r) & (need_rows[to] > 0))
        if not len(idx):
            continue
        idx = idx[np.argsort(cost[idx], kind="stable")]
        p = pack[idx]
        want = np.minimum(np.ceil(need_rows[to[idx]] / p) * p, np.floor(room_rows[to[idx]] / p) * p)
        alloc = np.zeros(n_a)
        alloc[idx] = want
        # each shared resource in turn; clipping only lowers allocations, so earlier limits stay satisfied
        for key, left in ((fr, surplus_rows), (lane_key, lane_left), (loc_key, loc_left)):
            got = clip_shared(idx, alloc, key, left)
            alloc[idx] = np.floor(got / p + 1e-9) * p
        if np.isfinite(budget_left):
            spend = alloc[idx] * cost[idx]
            before = np.cumsum(spend) - spend
            afford = np.where(cost[idx] > 0, np.clip(budget_left - before, 0.0, None) / np.maximum(cost[idx], 1e-12),
                              np.inf)
            alloc[idx] = np.floor(np.minimum(alloc[idx], afford) / p + 1e-9) * p
            # a later, cheaper-to-fit arc may use what an earlier clipped one left: recompute spend exactly
            spend = alloc[idx] * cost[idx]
            over = np.cumsum(spend) > budget_left + 1e-9
            alloc[idx[over]] = 0.0
        alloc[idx[alloc[idx] < min_units]] = 0.0
        a = alloc[idx]
        units[idx] += a
        need_rows -= np.bincount(to[idx], weights=a, minlength=len(need_rows))
        room_rows -= np.bincount(to[idx], weights=a, minlength=len(room_rows))
        surplus_rows -= np.bincount(fr[idx], weights=a, minlength=len(surplus_rows))
        lane_left -= np.bincount(lane_key[idx], weights=a, minlength=len(lane_left))
        loc_left -= np.bincount(loc_key[idx], weights=a, minlength=len(loc_left))
        budget_left -= float((a * cost[idx]).sum())
    return units


# ---------------------------------------------------------------------------------------------------------------
# the public entry point
# ---------------------------------------------------------------------------------------------------------------

def _why_empty(pos: pd.DataFrame, lanes: pd.DataFrame, settings: RebalancingSettings, arcs_all: pd.DataFrame) -> str:
    if settings.daily_budget_usd is not None and settings.daily_budget_usd <= 0:
        return "budget 0: the daily transfer budget allows no transfer"
    if lanes.empty:
        return "no lanes: no location can ship to another"
    if not (pos["receive_room"] > 0).any() or not (pos["need"] > 0).any():
        return "no need: every store is at or above its protection stock"
    if not (pos["surplus"] > 0).any():
        return "no surplus: no location holds stock above its protection stock or reserve"
    if arcs_all.empty:
        return ("infeasible: no lane joins a location with at least one case pack of surplus to a store with room "
                "for one (case pack, minimum quantity, lane or location capacity, or budget too tight)")
    return "no transfer pays for itself: transfer cost exceeds the expected margin saved"


def _frame(pos: pd.DataFrame, arcs: pd.DataFrame, units: np.ndarray, date: pd.Timestamp, engine: str
           ) -> pd.DataFrame:
    keep = units > 0
    if not keep.any():
        return _empty_plan()
    a = arcs[keep].reset_index(drop=True)
    u = units[keep]
    plan = pd.DataFrame({
        "sku_id": a["sku_id"].astype(object), "from_location": a["from_location"].astype(object),
        "to_location": a["to_location"].astype(object), "units": np.round(u).astype("int64"),
    })
    d = pd.Timestamp(date).normalize()
    plan["ship_date"] = pd.Series(d, index=plan.index).astype("datetime64[ns]")
    plan["arrival_date"] = (plan["ship_date"] + pd.to_timedelta(a["lead_time_days"].astype("int64"), unit="D")
                            ).astype("datetime64[ns]")
    plan["cost"] = u * a["cost_per_unit"].to_numpy(dtype="float64")
    # expected units short avoided at each receiver and overstock relieved at each sender, shared by units
    n = len(pos)
    s0 = pos["position"].to_numpy(dtype="float64")
    to, fr = a["to_row"].to_numpy(), a["from_row"].to_numpy()
    inflow = np.bincount(to, weights=u, minlength=n)
    outflow = np.bincount(fr, weights=u, minlength=n)
    mu, sd = pos["demand_mean"].to_numpy(dtype="float64"), pos["demand_sigma"].to_numpy(dtype="float64")
    store = (pos["kind"] == "store").to_numpy()
    gain = np.where(store, expected_shortage(s0, mu, sd) - expected_shortage(s0 + inflow, mu, sd), 0.0)
    over = pos["overstock_units"].to_numpy(dtype="float64")
    relieved = np.minimum(outflow, over)
    plan["shortage_units_avoided"] = gain[to] * u / np.maximum(inflow[to], 1e-12)
    plan["overstock_units_relieved"] = relieved[fr] * u / np.maximum(outflow[fr], 1e-12)
    kinds = pos["kind"].to_numpy()[fr]
    plan["reason"] = np.select(
        [kinds == "warehouse", over[fr] > 0, pos["need"].to_numpy()[to] > 0],
        ["WAREHOUSE_REPLENISH", "RELIEVE_OVERSTOCK", "COVER_SHORTAGE"], default="REBALANCE").astype(object)
    plan["engine"] = engine
    return plan[PLAN_COLUMNS].sort_values(["sku_id", "from_location", "to_location"]).reset_index(drop=True)


def plan_transfers(inputs: PlanningInputs, forecast: pd.DataFrame, settings: RebalancingSettings | None = None,
                   prices: pd.DataFrame | None = None, engine: str = "optimizer",
                   pos: pd.DataFrame | None = None) -> tuple[pd.DataFrame, dict]:
    """Transfers to ship on the planning day, and an info dict (counts, cost, objective, solver status, gap, why).

    `engine`: "optimizer" (one MIP over the partition) or "greedy" (rule-based). `pos` may pass precomputed
    `positions(...)` to share them between engines.
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    s = settings or RebalancingSettings()
    if s.solver not in ("auto", "mip", "lp_round"):
        raise ValueError(f"settings.solver must be 'auto', 'mip' or 'lp_round', got {s.solver!r}")
    t0 = time.perf_counter()
    if pos is None:
        pos = positions(inputs, forecast, s, prices)
    info: dict = {"engine": engine, "date": f"{pd.Timestamp(inputs.date):%Y-%m-%d}", "sku_group": inputs.sku_group,
                  "settings": asdict(s)}
    lanes = _lane_table(inputs.lanes, s)
    curves = _cost_curves(pos, s)
    room = _location_room(pos, inputs.locations, s)
    budget_zero = s.daily_budget_usd is not None and s.daily_budget_usd <= 0
    # the greedy ignores value: it sends to any short store along any lane (cost order), so it sees every arc
    arcs = (pd.DataFrame() if budget_zero
            else _candidate_arcs(pos, lanes, s, curves if engine == "optimizer" else None, room))
    units = np.zeros(len(arcs))
    if len(arcs):
        info["candidate_arcs"] = int(len(arcs))
        if engine == "optimizer":
            units = _solve_optimizer(arcs, curves, room, s, info)
        else:
            units = _solve_greedy(pos, arcs, room, s)
            info["solver_status"] = "greedy: cheapest lane first"
    plan = _frame(pos, arcs, units, inputs.date, engine)
    obj = plan_objective(plan, pos, s)
    info.update(transfers=int(len(plan)), units=int(plan["units"].sum()), cost=float(plan["cost"].sum()),
                shortage_avoided=float(plan["shortage_units_avoided"].sum()),
                overstock_relieved=float(plan["overstock_units_relieved"].sum()),
                objective_usd=obj["objective_usd"], objective_without_plan_usd=obj["stock_cost_before_usd"],
                saving_usd=obj["saving_usd"])
    if "relaxation_saving_usd" in info and engine == "optimizer":
        rs = info["relaxation_saving_usd"]
        # share of the LP relaxation's saving lost to whole case packs / minimum quantities (an upper bound on
        # the true optimality gap, since the relaxation bounds the integer optimum)
        info["gap_vs_relaxation_pct"] = 0.0 if rs <= 1e-9 else float(100 * max(rs - obj["saving_usd"], 0.0) / rs)
    if plan.empty:
        info["why_empty"] = _why_empty(pos, lanes, s, _candidate_arcs(pos, lanes, s, None, room))
        info.setdefault("solver_status", "not solved: nothing to plan")
    info["seconds"] = round(time.perf_counter() - t0, 3)
    return plan, info


# ---------------------------------------------------------------------------------------------------------------
# rules every plan obeys (used by the asset checks)
# ---------------------------------------------------------------------------------------------------------------

def plan_violations(plan: pd.DataFrame, pos: pd.DataFrame, lanes: pd.DataFrame, catalog: pd.DataFrame,
                    settings: RebalancingSettings | None = None) -> pd.DataFrame:
    """One row per broken rule: conservation, protection stock, whole case packs, minimum, lanes, self, budget."""
    s = settings or RebalancingSettings()
    out = []

    def add(rule, rows: pd.DataFrame, detail):
        if len(rows):
            f = pd.DataFrame({"rule": rule, "sku_id": rows.get("sku_id", pd.Series([None] * len(rows))).to_numpy(),
                              "from_location": rows.get("from_location", pd.Series([None] * len(rows))).to_numpy(),
                              "to_location": rows.get("to_location", pd.Series([None] * len(rows))).to_numpy(),
                              "detail": np.asarray(detail, dtype=object)})
            out.append(f)

    if plan is None or plan.empty:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in VIOLATION_COLUMNS})
    p = plan.reset_index(drop=True)
    units = p["units"].to_numpy(dtype="float64")
    bad = ~np.isfinite(units) | (units <= 0) | (units != np.round(units))
    add("units_positive_integer", p[bad], [f"units={u}" for u in units[bad]])
    pack = p["sku_id"].map(catalog.set_index("sku_id")["case_pack"]).fillna(1).to_numpy(dtype="float64")
    bad = (np.mod(units, pack) != 0) & ~bad
    add("case_pack_multiple", p[bad], [f"units={u:g} not a multiple of case pack {k:g}"
                                       for u, k in zip(units[bad], pack[bad])])
    bad = units < max(s.min_transfer_units, 1)
    add("minimum_quantity", p[bad], [f"units={u:g} < minimum {s.min_transfer_units}" for u in units[bad]])
    bad = (p["from_location"] == p["to_location"]).to_numpy()
    add("self_transfer", p[bad], ["from and to are the same location"] * int(bad.sum()))
    lane_keys = (pd.MultiIndex.from_frame(lanes[["from_location", "to_location"]]) if lanes is not None and len(lanes)
                 else pd.MultiIndex.from_arrays([[], []]))
    bad = ~pd.MultiIndex.from_frame(p[["from_location", "to_location"]]).isin(lane_keys)
    add("lane_exists", p[bad], ["no lane between these locations"] * int(bad.sum()))
    if lanes is not None and "capacity_units" in lanes and len(lanes):
        lu = p.groupby(["from_location", "to_location"], as_index=False)["units"].sum()
        lu = lu.merge(lanes[["from_location", "to_location", "capacity_units"]], how="left")
        cap = np.floor(lu["capacity_units"] * s.lane_capacity_share)
        bad = (lu["units"] > cap).fillna(False).to_numpy()
        add("lane_capacity", lu[bad], [f"{u} units > lane capacity {c:g}/day"
                                       for u, c in zip(lu["units"][bad], cap[bad])])

    # conservation per SKU and sender: units out <= surplus, and the sender keeps its protection stock
    key = ["sku_id", "location_id"]
    out_units = p.groupby(["sku_id", "from_location"], as_index=False)["units"].sum().rename(
        columns={"from_location": "location_id"})
    m = out_units.merge(pos[key + ["surplus", "position", "on_hand", "protection_stock"]], on=key, how="left")
    bad = (m["units"] > m["surplus"].fillna(0) + 1e-9).to_numpy()
    add("conservation", m[bad].rename(columns={"location_id": "from_location"}),
        [f"sends {u} > surplus {sv:g}" for u, sv in zip(m["units"][bad], m["surplus"].fillna(0)[bad])])
    in_units = p.groupby(["sku_id", "to_location"])["units"].sum()
    recv = pd.MultiIndex.from_frame(m[key]).map(in_units.to_dict().get)
    after = m["position"].fillna(0) - m["units"] + pd.Series(recv, index=m.index, dtype="float64").fillna(0)
    bad = (after < m["protection_stock"].fillna(np.inf) - 1e-9).to_numpy() | m["position"].isna().to_numpy()
    add("protection_stock", m[bad].rename(columns={"location_id": "from_location"}),
        [f"position after {a:g} < protection stock {ps:g}"
         for a, ps in zip(after[bad], m["protection_stock"].fillna(np.nan)[bad])])
    bad = (m["units"] > m["on_hand"].fillna(0) + 1e-9).to_numpy()
    add("on_hand", m[bad].rename(columns={"location_id": "from_location"}),
        [f"sends {u} > on hand {oh:g}" for u, oh in zip(m["units"][bad], m["on_hand"].fillna(0)[bad])])
    if s.daily_budget_usd is not None and float(p["cost"].sum()) > s.daily_budget_usd + 1e-6:
        add("budget", pd.DataFrame(index=[0]), [f"plan cost {p['cost'].sum():.2f} > budget {s.daily_budget_usd:.2f}"])
    if not out:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in VIOLATION_COLUMNS})
    return pd.concat(out, ignore_index=True)[VIOLATION_COLUMNS]


def share_of_network_stock_moved(plan: pd.DataFrame, pos: pd.DataFrame) -> float:
    """Units moved by the plan over all units on hand in the network (stores and warehouses)."""
    total = float(pos["on_hand"].sum())
    moved = float(plan["units"].sum()) if plan is not None and len(plan) else 0.0
    return 0.0 if total <= 0 else moved / total
