"""Pricing benchmark: elasticity recovery, profit uplift under the true demand model, guardrail compliance, speed.

Generates demo data, estimates elasticities (pooled and unpooled, scored against the generator's truth), builds a
forecast for the day after the last observed day, recommends prices, and scores the 14-day gross profit of the
recommendation against keeping current prices under the TRUE demand model (capped by stock). `seconds` times
`recommend_prices` only (context from sales history, ladder, optimisation, guardrails), with elasticities and the
forecast already computed. The last line is one JSON object.

    python benchmarks/pricing_bench.py --skus 10000 --stores 10
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import pandas as pd

from retail_dagster.core.asof import planning_inputs
from retail_dagster.core.demo import generate_demo
from retail_dagster.core.elasticity import ElasticitySettings, estimate_elasticities
from retail_dagster.core.guardrails import CHANGE_TOLERANCE_USD, guardrail_violations
from retail_dagster.core.pricing import PricingSettings, recommend_prices


def recent_average_forecast(tables: dict, date: pd.Timestamp, horizon: int = 14, window_days: int = 28) -> pd.DataFrame:
    """Truth-free forecast: mean daily units over the last `window_days` on regular-price, in-stock days."""
    s = tables["sales"]
    s = s[(s["date"] < date) & (s["date"] >= date - pd.Timedelta(days=window_days))]
    inv = tables["inventory"]
    inv = inv[(inv["date"] < date) & (inv["date"] >= date - pd.Timedelta(days=window_days))]
    s = s.merge(inv[["date", "sku_id", "location_id", "on_hand"]], on=["date", "sku_id", "location_id"], how="left")
    use = ~s["on_promotion"] & ~(s["on_hand"] <= 0)
    rate = s[use].groupby(["sku_id", "location_id"], sort=False)["units"].mean()
    # series with no usable day: fall back to all of its days
    rate = rate.reindex(s[["sku_id", "location_id"]].drop_duplicates().set_index(["sku_id", "location_id"]).index)
    rate = rate.fillna(s.groupby(["sku_id", "location_id"], sort=False)["units"].mean()).reset_index(name="mean")
    days = pd.date_range(date, periods=horizon, freq="D")
    fc = rate.loc[rate.index.repeat(horizon)].reset_index(drop=True)
    fc["target_date"] = np.tile(days.values, len(rate))
    fc["horizon_day"] = np.tile(np.arange(1, horizon + 1), len(rate))
    for q in ("p10", "p50", "p90"):
        fc[q] = fc["mean"]
    fc["model"] = "recent_average"
    return fc


def true_profit(recs: pd.DataFrame, truth: dict, catalog: pd.DataFrame, date: pd.Timestamp, price_col: str,
                horizon: int = 14) -> np.ndarray:
    """14-day gross profit per row at `price_col` under the generator's demand model, capped by stock."""
    dem = truth["demand"]
    dem = dem[(dem["date"] >= date) & (dem["date"] < date + pd.Timedelta(days=horizon))]
    sku = truth["sku"][["sku_id", "elasticity", "promo_lift"]].merge(catalog[["sku_id", "base_price"]], on="sku_id")
    dem = dem.merge(sku, on="sku_id")
    r = recs[["sku_id", "location_id", price_col, "stock_units", "unit_cost"]].reset_index()
    dem = dem.merge(r, on=["sku_id", "location_id"])
    rate = (dem["base_rate"] * (dem[price_col] / dem["base_price"]) ** dem["elasticity"]
            * np.where(dem["on_promotion"], dem["promo_lift"], 1.0))
    demand = np.bincount(dem["index"].to_numpy(), rate.to_numpy(), len(recs))
    stock = recs["stock_units"].to_numpy(dtype=float)
    units = np.minimum(demand, np.where(np.isnan(stock), np.inf, stock))
    return units * (recs[price_col].to_numpy() - recs["unit_cost"].to_numpy())


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skus", type=int, default=1000)
    ap.add_argument("--stores", type=int, default=10)
    ap.add_argument("--days", type=int, default=120,
                    help="observed history length (10,000 SKUs x 10 stores x 120 days needs ~10 GB of RAM)")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--elasticity-stores", type=int, default=4,
                    help="estimate elasticities from the first N stores only (a SKU's elasticity is chain-wide); "
                         "0 = all")
    ap.add_argument("--robust-z", type=float, default=PricingSettings().robust_z)
    ap.add_argument("--forecast", choices=["recent_average", "engine"], default="recent_average",
                    help="engine = retail_dagster.core.forecasting.forecast_for_date when it exists")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    data = generate_demo(n_skus=args.skus, n_stores=args.stores, n_warehouses=max(1, args.stores // 10),
                         n_days=args.days, seed=args.seed)
    tables, truth = data.tables, data.truth
    date = tables["sales"]["date"].max() + pd.Timedelta(days=1)
    print(f"demo data: {args.skus} SKUs x {args.stores} stores x {args.days} days "
          f"({len(tables['sales']):,} sales rows) in {time.perf_counter() - t0:.1f}s; planning {date:%Y-%m-%d}")

    t1 = time.perf_counter()
    sales, inv = tables["sales"], tables["inventory"]
    if args.elasticity_stores:
        stores = tables["locations"].query("kind == 'store'")["location_id"].head(args.elasticity_stores)
        sales, inv = sales[sales["location_id"].isin(stores)], inv[inv["location_id"].isin(stores)]
    el = estimate_elasticities(sales, tables["catalog"], inv, tables["events"], ElasticitySettings(),
                               locations=tables["locations"])
    el_seconds = time.perf_counter() - t1
    m = el.merge(truth["sku"][["sku_id", "elasticity"]].rename(columns={"elasticity": "true"}), on="sku_id")
    lo, hi = ElasticitySettings().clip
    mae_pooled = float(np.median(np.abs(m["elasticity"] - m["true"])))
    unpooled = m["unpooled_elasticity"].clip(lo, hi)  # same plausible range as the pooled estimate: a fair match
    mae_unpooled = float(np.nanmedian(np.abs(unpooled - m["true"])))
    print(f"elasticities: {len(el)} SKUs from {len(sales):,} rows in {el_seconds:.1f}s; median abs error "
          f"pooled {mae_pooled:.3f}, unpooled {mae_unpooled:.3f} ({int(m['unpooled_elasticity'].isna().sum())} "
          f"SKUs without an own estimate); mean shrinkage weight {el['shrinkage_weight'].mean():.2f}")

    inputs = planning_inputs(tables, date)
    forecast_source = "recent_average"
    fc = None
    if args.forecast == "engine":
        try:
            from retail_dagster.core.forecasting import forecast_for_date  # optional, written in parallel

            fc = forecast_for_date(inputs)
            forecast_source = "engine"
        except Exception as exc:  # noqa: BLE001 - optional dependency: say why and fall back
            print(f"forecast engine unavailable ({type(exc).__name__}: {exc}); using recent average")
    if fc is None:
        fc = recent_average_forecast(tables, date)
    stores = set(tables["locations"].query("kind == 'store'")["location_id"])
    fc = fc[fc["location_id"].isin(stores)]

    settings = PricingSettings(robust_z=args.robust_z)
    t2 = time.perf_counter()
    recs = recommend_prices(inputs, fc, settings, el)
    seconds = time.perf_counter() - t2
    n = len(recs)
    print(f"priced {n:,} SKU-locations in {seconds:.2f}s (recommend_prices only; forecast: {forecast_source})")

    profit_cur = true_profit(recs, truth, tables["catalog"], date, "current_price")
    profit_rec = true_profit(recs, truth, tables["catalog"], date, "recommended_price")
    changed = np.abs(recs["recommended_price"] - recs["current_price"]).to_numpy() >= CHANGE_TOLERANCE_USD
    uplift = float((profit_rec.sum() - profit_cur.sum()) / profit_cur.sum() * 100)
    losing = changed & (profit_rec < profit_cur - 1e-9)
    loss_share = float(losing.sum() / max(changed.sum(), 1) * 100)
    violations = guardrail_violations(recs, tables["catalog"], settings.guardrails, tables["promotions"], date)
    print(f"changed {changed.sum():,} of {n:,} ({changed.mean() * 100:.1f}%): "
          f"up {(recs['change_pct'] > 0).sum():,}, down {(recs['change_pct'] < 0).sum():,}")
    print("reasons:", recs["reason"].value_counts().head(8).to_dict())
    print(f"true 14-day gross profit: current {profit_cur.sum():,.0f} USD, recommended {profit_rec.sum():,.0f} USD "
          f"({uplift:+.2f}%); changed rows losing money: {loss_share:.1f}%; guardrail violations {len(violations)}")
    result = {
        "profit_uplift_pct": round(uplift, 3),
        "loss_share_pct": round(loss_share, 3),
        "elasticity_mae_pooled": round(mae_pooled, 4),
        "elasticity_mae_unpooled": round(mae_unpooled, 4),
        "guardrail_violations": int(len(violations)),
        "seconds": round(seconds, 3),
        "sku_locations": int(n),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
