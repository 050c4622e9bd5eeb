"""Benchmark of the demand forecast engine on generated demo data: backtest accuracy vs statsforecast baselines,
full retrain and cached-predict time for every SKU group, peak RSS, and price sensing (the elasticity the forecast
implies between the current price and a 10% lower one, against the demo's true elasticities). Last line: JSON.

    python benchmarks/forecast_bench.py --skus 1000 --stores 10 --days 730 --cutoffs 1 --baseline-sample 1000
    python benchmarks/forecast_bench.py --skus 10000 --stores 10 --cutoffs 0      # timing and memory only
    python benchmarks/forecast_bench.py --cutoffs 0 --price-sensing                # default demo: price response
    python benchmarks/forecast_bench.py --cutoffs 0 --settings '{"early_stopping_rounds": 0}'  # other settings
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import tempfile
import time

import numpy as np
import pandas as pd

from retail_dagster.core.backtest import format_backtest, run_backtest
from retail_dagster.core.contracts import validate_tables
from retail_dagster.core.demo import generate_demo
from retail_dagster.core.forecasting import ForecastSettings, forecast_for_date


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2  # Linux: KiB


def price_sensing(tables: dict, D: pd.Timestamp, groups: list[str], settings: ForecastSettings, cache: str,
                  true_elasticity: pd.DataFrame) -> dict:
    """Implied elasticity log(mean14 at 0.9 p / mean14 at p) / log(0.9) per SKU-location vs the truth."""
    key = ["sku_id", "location_id"]
    rows = []
    for g in groups:
        base, _ = forecast_for_date(tables, D, g, settings, cache)
        s = tables["sales"]
        s = s[(s["date"] < D) & s["sku_id"].isin(base["sku_id"].unique()) & ~s["on_promotion"].astype(bool)]
        price = s.sort_values("date", kind="stable").groupby(key, as_index=False)["price"].last()
        low, _ = forecast_for_date(tables, D, g, settings, cache, prices=price.assign(price=price["price"] * 0.9))
        rows.append(pd.concat({"current": base.groupby(key)["mean"].mean(), "lower": low.groupby(key)["mean"].mean()},
                              axis=1).reset_index())
    r = pd.concat(rows, ignore_index=True)
    r = r[r["current"] > 0].merge(true_elasticity, on="sku_id", how="inner")
    implied = np.log(r["lower"] / r["current"]) / np.log(0.9)
    return {"series": int(len(r)),
            "sign_share": round(float(np.mean(np.sign(implied) == np.sign(r["elasticity"]))), 4),
            "median_abs_error": round(float(np.median(np.abs(implied - r["elasticity"]))), 4),
            "corr": round(float(np.corrcoef(implied, r["elasticity"])[0, 1]), 3)}


def main() -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skus", type=int, default=200)
    ap.add_argument("--stores", type=int, default=6)
    ap.add_argument("--days", type=int, default=730)
    ap.add_argument("--cutoffs", type=int, default=1, help="backtest cutoffs (0: timing and memory only)")
    ap.add_argument("--baseline-sample", type=int, default=1000,
                    help="series the baselines (AutoETS is slow) and all scores use; 0 = all")
    ap.add_argument("--threads", type=int, default=1, help="LightGBM threads")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--settings", default="{}", help="JSON of ForecastSettings fields to override")
    ap.add_argument("--price-sensing", action="store_true",
                    help="forecast every series at its current and a 10%% lower price; vs the true elasticity")
    args = ap.parse_args()

    t0 = time.perf_counter()
    data = generate_demo(n_skus=args.skus, n_stores=args.stores, n_warehouses=max(1, args.stores // 5),
                         n_days=args.days, seed=args.seed)
    tables = validate_tables(data.tables)
    true_elasticity = data.truth["sku"][["sku_id", "elasticity"]]
    del data
    gen_seconds = time.perf_counter() - t0
    settings = ForecastSettings(**{"num_threads": args.threads, **json.loads(args.settings)})
    groups = sorted(tables["catalog"]["sku_group"].unique())
    print(f"data: {args.skus} SKUs x {args.stores} stores x {args.days} days, {len(tables['sales']):,} sales rows "
          f"({gen_seconds:.0f} s to generate and validate)")

    result: dict = {"skus": args.skus, "stores": args.stores, "days": args.days, "cutoffs": args.cutoffs,
                    "threads": args.threads}
    cache = tempfile.mkdtemp(prefix="forecast_bench_")
    try:
        if args.cutoffs > 0:
            bt = run_backtest(tables, horizon=14, cutoffs=args.cutoffs, baseline_sample=args.baseline_sample or None,
                              settings=settings)
            print(format_backtest(bt))
            best = min(bt["baselines"].items(), key=lambda kv: kv[1]["wape_daily"])
            best14 = min(v["wape_14d"] for v in bt["baselines"].values())
            ets = bt["baselines"].get("AutoETS", {})
            result.update(
                wape_daily=bt["engine"]["wape_daily"], wape_14d=bt["engine"]["wape_14d"],
                wape_daily_mean=bt["engine"].get("wape_daily_mean"),
                best_baseline=best[0], best_baseline_wape_daily=best[1]["wape_daily"],
                best_baseline_wape_14d=best14, coverage_p10_p90=bt["engine"]["coverage_p10_p90"],
                bias=bt["engine"]["bias"], series_scored=bt["series_scored"],
                baselines={k: {m: v[m] for m in ("wape_daily", "wape_14d", "coverage_p10_p90", "seconds")}
                           for k, v in bt["baselines"].items()},
                autoets_series_per_second=(round(bt["series_scored"] * args.cutoffs / ets["seconds"], 1)
                                           if ets.get("seconds") else None),
            )
        # production timing on the day after the data: full retrain of every group, then predict from the cache
        D = tables["sales"]["date"].max() + pd.Timedelta(days=1)
        train_s = predict_s = train_cpu = predict_cpu = 0.0
        series = 0
        for g in groups:
            t1, c1 = time.perf_counter(), time.process_time()
            _, info = forecast_for_date(tables, D, g, settings, cache)
            train_s += info["load_or_train_seconds"]
            train_cpu += time.process_time() - c1  # CPU: robust to a shared machine (includes the first predict)
            t2, c2 = time.perf_counter(), time.process_time()
            fc, info = forecast_for_date(tables, D, g, settings, cache)
            assert not info["trained_now"]
            predict_s += time.perf_counter() - t2
            predict_cpu += time.process_time() - c2
            series += info["series"]
            print(f"  {g:<12} series {info['series']:>7,}  train {t2 - t1:7.1f} s  predict (cached) "
                  f"{time.perf_counter() - t2:6.1f} s  mix {info['model_mix']}")
        result.update(series=series, train_seconds=round(train_s, 1), predict_seconds=round(predict_s, 1),
                      train_cpu_seconds=round(train_cpu, 1), predict_cpu_seconds=round(predict_cpu, 1),
                      engine_series_per_second=round(series / max(train_s + predict_s, 1e-9), 1),
                      engine_predict_series_per_second=round(series / max(predict_s, 1e-9), 1))
        if args.price_sensing:
            result["price_sensing"] = price_sensing(tables, D, groups, settings, cache, true_elasticity)
            print(f"price sensing: implied elasticity (14-day mean forecast at -10% price) has the true sign for "
                  f"{result['price_sensing']['sign_share']:.1%} of {result['price_sensing']['series']} SKU-locations, "
                  f"median |implied - true| {result['price_sensing']['median_abs_error']:.3f}")
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    result["peak_rss_gb"] = round(peak_rss_gb(), 2)
    result["series_per_second"] = {"engine_train_and_predict": result.get("engine_series_per_second"),
                                   "engine_predict_cached": result.get("engine_predict_series_per_second"),
                                   "AutoETS": result.get("autoets_series_per_second")}
    print(f"series {result['series']:,}: full retrain {result['train_seconds']} s ({result['train_cpu_seconds']} s "
          f"CPU, with the first predict), predict with cached models "
          f"{result['predict_seconds']} s ({result['predict_cpu_seconds']} s CPU), peak RSS {result['peak_rss_gb']} GB")
    print(json.dumps(result, default=str))
    return result


if __name__ == "__main__":
    main()
