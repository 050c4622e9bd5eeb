"""Benchmark the rebalancing engines: plan the day after the demo's last observed day, then replay 14 true days.

Run by hand:  python benchmarks/rebalancing_bench.py --skus 10000 --stores 10
The planning step is timed (positions + model + solve); the forecast is built without the truth (recent in-stock
average demand with Poisson quantiles) unless --forecast truth is given. Last line: one JSON object.

Replay (stores only, same for every plan): existing in-transit units arrive on D+1, transfers leave the sender on
D and arrive at arrival_date before that day's sales, sales = min(true demand, stock), no other replenishment.
Overstock at the end = stock above 28 days of the store's mean true expected demand over the 14 days.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import pandas as pd
from scipy.stats import poisson


from retail_dagster.core.asof import planning_inputs
from retail_dagster.core.demo import generate_demo
from retail_dagster.core.rebalancing import (RebalancingSettings, plan_objective, plan_transfers,
                                             plan_violations, positions)

HORIZON = 14
OVERSTOCK_COVER_DAYS = 28


def recent_average_forecast(inputs, window_days: int = 28) -> pd.DataFrame:
    """Flat forecast from the last `window_days` of sales, averaged over in-stock days, Poisson quantiles."""
    d = inputs.date
    sales = inputs.sales[inputs.sales["date"] >= d - pd.Timedelta(days=window_days)]
    sales = sales[sales["location_id"].isin(inputs.locations.loc[inputs.locations["kind"] == "store", "location_id"])]
    # a day that sold out (or sold nothing with nothing on hand) says little about demand: weight in-stock days
    rate = sales.groupby(["sku_id", "location_id"])["units"].agg(["sum", "count"])
    rate = (rate["sum"] / rate["count"].clip(lower=1)).rename("mean").reset_index()
    days = pd.DataFrame({"horizon_day": np.arange(1, HORIZON + 1),
                         "target_date": pd.date_range(d, periods=HORIZON, freq="D")})
    fc = rate.merge(days, how="cross")
    m = fc["mean"].to_numpy()
    fc["p10"] = poisson.ppf(0.1, m)
    fc["p50"] = poisson.ppf(0.5, m)
    fc["p90"] = poisson.ppf(0.9, m)
    fc["model"] = "recent_average"
    return fc[["sku_id", "location_id", "target_date", "horizon_day", "mean", "p10", "p50", "p90", "model"]]


def truth_forecast(truth_demand: pd.DataFrame, d: pd.Timestamp) -> pd.DataFrame:
    """Oracle forecast (expected demand) for comparison only."""
    tr = truth_demand[(truth_demand["date"] >= d) & (truth_demand["date"] < d + pd.Timedelta(days=HORIZON))]
    m = tr["expected_demand"].to_numpy()
    return pd.DataFrame({"sku_id": tr["sku_id"], "location_id": tr["location_id"], "target_date": tr["date"],
                         "horizon_day": (tr["date"] - d).dt.days + 1, "mean": m, "p10": poisson.ppf(0.1, m),
                         "p50": poisson.ppf(0.5, m), "p90": poisson.ppf(0.9, m), "model": "truth"})


def simulate(inputs, truth_demand: pd.DataFrame, catalog: pd.DataFrame, plan: pd.DataFrame | None) -> dict:
    """Replay 14 true days at the stores with (or without) a plan; units and margin."""
    d = inputs.date
    tr = truth_demand[(truth_demand["date"] >= d) & (truth_demand["date"] < d + pd.Timedelta(days=HORIZON))]
    series = tr[["sku_id", "location_id"]].drop_duplicates().reset_index(drop=True)
    idx = pd.MultiIndex.from_frame(series)
    n = len(series)
    t = (tr["date"] - d).dt.days.to_numpy()
    s = idx.get_indexer(pd.MultiIndex.from_frame(tr[["sku_id", "location_id"]]))
    demand = np.zeros((HORIZON, n))
    demand[t, s] = tr["demand"].to_numpy()
    expected = np.zeros((HORIZON, n))
    expected[t, s] = tr["expected_demand"].to_numpy()
    unit_margin = np.zeros((HORIZON, n))
    cost = series["sku_id"].map(catalog.set_index("sku_id")["unit_cost"]).to_numpy()
    unit_margin[t, s] = tr["price"].to_numpy() - cost[s]

    snap = inputs.inventory_snapshot
    si = idx.get_indexer(pd.MultiIndex.from_frame(snap[["sku_id", "location_id"]]))
    ok = si >= 0
    stock = np.zeros(n)
    stock[si[ok]] = snap["on_hand"].to_numpy()[ok]
    arrivals = np.zeros((HORIZON + 1, n))
    arrivals[1, si[ok]] += snap["in_transit"].to_numpy()[ok]
    if plan is not None and len(plan):
        fr = idx.get_indexer(pd.MultiIndex.from_frame(plan[["sku_id", "from_location"]]))
        to = idx.get_indexer(pd.MultiIndex.from_frame(plan[["sku_id", "to_location"]]))
        u = plan["units"].to_numpy(dtype="float64")
        np.add.at(stock, fr[fr >= 0], -u[fr >= 0])  # warehouses are not series: their units just leave
        lead = (plan["arrival_date"] - d).dt.days.to_numpy()
        keep = (to >= 0) & (lead <= HORIZON)
        np.add.at(arrivals, (lead[keep], to[keep]), u[keep])
    sold = np.zeros((HORIZON, n))
    for day in range(HORIZON):  # a loop over days, vectorized over every series
        stock += arrivals[day]
        sold[day] = np.minimum(demand[day], np.maximum(stock, 0.0))
        stock -= sold[day]
    cover = expected.mean(axis=0) * OVERSTOCK_COVER_DAYS
    return {"stockout_units": float((demand - sold).sum()), "sold_units": float(sold.sum()),
            "margin_usd": float((sold * unit_margin).sum()),
            "overstock_units": float(np.maximum(stock - cover, 0.0).sum())}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skus", type=int, default=1000)
    ap.add_argument("--stores", type=int, default=10)
    ap.add_argument("--warehouses", type=int, default=2)
    ap.add_argument("--days", type=int, default=150, help="observed history days of the demo")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--forecast", choices=["recent", "truth", "model"], default="recent",
                    help="recent average (default), oracle truth, or core.forecasting.forecast_for_date")
    ap.add_argument("--budget", type=float, default=None, help="daily transfer budget in USD")
    ap.add_argument("--min-units", type=int, default=1)
    ap.add_argument("--solver", choices=["auto", "mip", "lp_round"], default="auto")
    ap.add_argument("--no-relaxation", action="store_true", help="skip the LP relaxation used for the gap")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    demo = generate_demo(n_skus=args.skus, n_stores=args.stores, n_warehouses=args.warehouses,
                         n_days=args.days, seed=args.seed)
    tables, truth = demo.tables, demo.truth
    d = tables["sales"]["date"].max() + pd.Timedelta(days=1)
    inputs = planning_inputs(tables, d)
    print(f"demo generated in {time.perf_counter() - t0:.1f}s; planning {d:%Y-%m-%d}: {args.skus} SKUs x "
          f"{args.stores} stores + {args.warehouses} warehouses, {len(inputs.lanes)} lanes")
    if args.forecast == "truth":
        fc = truth_forecast(truth["demand"], d)
    elif args.forecast == "model":
        from retail_dagster.core.forecasting import forecast_for_date  # the project's forecast engine, per group
        groups = sorted(tables["catalog"]["sku_group"].unique())
        fc = pd.concat([forecast_for_date(tables, d, g)[0] for g in groups], ignore_index=True)
    else:
        fc = recent_average_forecast(inputs)
    settings = RebalancingSettings(daily_budget_usd=args.budget, min_transfer_units=args.min_units,
                                   solver=args.solver, measure_relaxation=not args.no_relaxation)

    t1 = time.perf_counter()
    pos = positions(inputs, fc, settings)
    plan, info = plan_transfers(inputs, fc, settings, engine="optimizer", pos=pos)
    seconds = time.perf_counter() - t1
    t2 = time.perf_counter()
    gplan, ginfo = plan_transfers(inputs, fc, settings, engine="greedy", pos=pos)
    greedy_seconds = time.perf_counter() - t2

    for name, p in (("optimizer", plan), ("greedy", gplan)):
        v = plan_violations(p, pos, inputs.lanes, inputs.catalog, settings)
        if len(v):
            print(f"!! {name} plan breaks {len(v)} rules:\n{v.head(10).to_string()}")
    base = simulate(inputs, truth["demand"], inputs.catalog, None)
    with_plan = simulate(inputs, truth["demand"], inputs.catalog, plan)
    with_greedy = simulate(inputs, truth["demand"], inputs.catalog, gplan)
    net = with_plan["margin_usd"] - base["margin_usd"] - float(plan["cost"].sum())
    gnet = with_greedy["margin_usd"] - base["margin_usd"] - float(gplan["cost"].sum())
    obj, gobj = plan_objective(plan, pos, settings), plan_objective(gplan, pos, settings)

    skip = {"settings"}
    print("optimizer info:", {k: v for k, v in info.items() if k not in skip})
    print("greedy info:   ", {k: v for k, v in ginfo.items() if k not in skip})
    print(f"model objective (USD, lower is better): none {obj['stock_cost_before_usd']:.0f}  optimizer "
          f"{obj['objective_usd']:.0f}  greedy {gobj['objective_usd']:.0f}")
    print(f"replay over {HORIZON} true days           without     optimizer     greedy")
    for key in ("stockout_units", "overstock_units", "sold_units", "margin_usd"):
        print(f"  {key:<34}{base[key]:>11.0f}{with_plan[key]:>14.0f}{with_greedy[key]:>11.0f}")
    print(f"  transfers / units / cost: optimizer {len(plan)} / {plan['units'].sum()} / {plan['cost'].sum():.0f} USD;"
          f" greedy {len(gplan)} / {gplan['units'].sum()} / {gplan['cost'].sum():.0f} USD")
    print(f"  net benefit (margin gained - transfer cost): optimizer {net:.0f} USD, greedy {gnet:.0f} USD")
    print(f"planning seconds: optimizer {seconds:.2f} (relaxation {info.get('relaxation_seconds', 0)}s, "
          f"mip {info.get('mip_seconds', 0)}s), greedy {greedy_seconds:.2f}")
    result = {
        "skus": args.skus, "stores": args.stores, "warehouses": args.warehouses, "forecast": args.forecast,
        "solver": args.solver,
        "stockout_units_without": base["stockout_units"], "stockout_units_with": with_plan["stockout_units"],
        "stockout_units_greedy": with_greedy["stockout_units"],
        "overstock_units_without": base["overstock_units"], "overstock_units_with": with_plan["overstock_units"],
        "transfers": int(len(plan)), "units": int(plan["units"].sum()),
        "transfer_cost": round(float(plan["cost"].sum()), 2), "net_benefit": round(net, 2),
        "greedy_transfer_cost": round(float(gplan["cost"].sum()), 2), "greedy_net_benefit": round(gnet, 2),
        "objective_usd": round(obj["objective_usd"], 2), "greedy_objective_usd": round(gobj["objective_usd"], 2),
        "gap_vs_relaxation_pct": info.get("gap_vs_relaxation_pct"), "mip_gap": info.get("mip_gap"),
        "seconds": round(seconds, 2), "greedy_seconds": round(greedy_seconds, 2),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
