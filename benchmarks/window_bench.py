"""Engine vs the backtest's baselines on many cutoffs, with the baseline forecasts cached on disk per cutoff, so a
change of the engine costs only the engine's time (AutoETS on 600 series x 12 cutoffs is slow and does not change).
Same scoring as `retail-dagster backtest` (core.backtest._scores).

    python benchmarks/window_bench.py m5:dev4 m5:wide12 demo:dev4
    FS='{"intermittent_margin": 0}' python benchmarks/window_bench.py m5:dev4     # ForecastSettings overrides

dev4: the backtest's 4 cutoffs 14 days apart before the data's end; wide12: 12 cutoffs 15 days apart; hold12: the
12 cutoffs before wide12's (M5: 2015-03-07 .. 2015-08-19), a window no setting was tuned on. Env:
RETAIL_DAGSTER_M5 (default ../shared/data/m5_dev), RETAIL_DAGSTER_BENCH_CACHE (default /tmp/retail_dagster_bench).
Prints one line per window (and the engine's p10-p90 coverage by the series' dispersion index: steadier than the
series of a similar mean, like them, lumpier; and its bias by the model that served each series) and a last line of
JSON.
"""

import json
import os
import pickle
import sys
import time

import numpy as np
import pandas as pd

from retail_dagster.core import backtest as bt
from retail_dagster.core.asof import HORIZON_DAYS
from retail_dagster.core.forecasting import ForecastSettings, dispersion_index, forecast_inputs, load_or_train
from retail_dagster.core.metrics import bias

CACHE = os.environ.get("RETAIL_DAGSTER_BENCH_CACHE", "/tmp/retail_dagster_bench")
M5 = os.environ.get("RETAIL_DAGSTER_M5",
                    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data", "m5_dev"))
BASELINES = ("SeasonalNaive", "WindowAverage", "AutoETS")


def _cached(path: str, build):
    if os.path.exists(path):
        with open(path, "rb") as fh:
            return pickle.load(fh)
    value = build()
    with open(path, "wb") as fh:
        pickle.dump(value, fh)
    return value


def tables(name: str) -> dict:
    if name == "m5":
        from retail_dagster.core.m5 import load_m5

        return _cached(os.path.join(CACHE, "m5.pkl"), lambda: load_m5(M5))
    from retail_dagster.core.contracts import validate_tables
    from retail_dagster.core.demo import generate_demo

    return _cached(os.path.join(CACHE, "demo.pkl"), lambda: validate_tables(generate_demo().tables))


def demand(name: str) -> pd.DataFrame | None:
    """The demand behind the sales where the data set knows it (the demo's truth), else None."""
    if name == "m5":
        return None
    from retail_dagster.core.demo import generate_demo

    return _cached(os.path.join(CACHE, "demo_demand.pkl"), lambda: generate_demo().truth["demand"])


def cutoffs(t: dict, which: str) -> list[pd.Timestamp]:
    step, n, back = {"dev4": (14, 4, 0), "wide12": (15, 12, 0), "hold12": (15, 12, 180)}[which]
    return [c - pd.Timedelta(days=back) for c in bt.cutoff_dates(t["sales"], HORIZON_DAYS, n, step)]


def baselines(t: dict, name: str, cut: pd.Timestamp, series: pd.DataFrame) -> pd.DataFrame:
    """The baselines' forecasts and each series' naive scale (MASE/RMSSE), cached per data set and cutoff."""
    base = _cached(os.path.join(CACHE, f"base_{name}_{cut:%Y%m%d}.pkl"),
                   lambda: bt._baseline_forecasts(t, cut, series, HORIZON_DAYS, BASELINES)[0])

    def croston():
        bf = bt._baseline_forecasts(t, cut, series, HORIZON_DAYS, ("CrostonSBA",))[0]
        return bf.merge(bt.series_scales(t, cut, series), on=["sku_id", "location_id"], how="left")
    cro = _cached(os.path.join(CACHE, f"cro_{name}_{cut:%Y%m%d}.pkl"), croston)
    ses = _cached(os.path.join(CACHE, f"ses_{name}_{cut:%Y%m%d}.pkl"),
                  lambda: bt._baseline_forecasts(t, cut, series, HORIZON_DAYS, ("SeasonalES",))[0])
    return base.merge(cro, on=["sku_id", "location_id", "target_date"]).merge(
        ses, on=["sku_id", "location_id", "target_date"])


# the dispersion index's cut points: steadier than the series of a similar mean, like them, lumpier
INDEX_BINS = (0.8, 1.25)


def index_bins(t: dict, m: pd.DataFrame, days: int) -> pd.Series:
    """Per row of `m`: the bin of its series' dispersion index (forecasting.dispersion_index over the `days` days of
    sales before the row's cutoff, stocked-out days left out; the engine reads the same days de-priced)."""
    sales, inv = t["sales"], t.get("inventory")
    keys = []
    for cut, rows in m.groupby("cutoff"):
        series = rows[["sku_id", "location_id"]].drop_duplicates().reset_index(drop=True)
        dates = pd.date_range(cut - pd.Timedelta(days=days), periods=days)
        y = np.zeros((len(series), days), dtype=np.float32)
        cens = np.zeros_like(y, dtype=bool)
        pos = pd.MultiIndex.from_frame(series)
        s = sales[(sales["date"] >= dates[0]) & (sales["date"] < cut)]
        r = pos.get_indexer(pd.MultiIndex.from_frame(s[["sku_id", "location_id"]]))
        k = r >= 0
        day = (s["date"].to_numpy()[k] - dates[0].to_datetime64()) // np.timedelta64(1, "D")
        y[r[k], day] = s["units"].to_numpy()[k]
        first = sales[sales["date"] < cut].groupby(["sku_id", "location_id"])["date"].min()
        first = first.reindex(pos)
        first_t = ((first - dates[0]).dt.days.fillna(days).clip(lower=0)).to_numpy(dtype=np.int64)
        if inv is not None and len(inv):
            i = inv[(inv["date"] >= dates[0]) & (inv["date"] < cut) & (inv["on_hand"] <= 0)]
            r = pos.get_indexer(pd.MultiIndex.from_frame(i[["sku_id", "location_id"]]))
            k = r >= 0
            cens[r[k], (i["date"].to_numpy()[k] - dates[0].to_datetime64()) // np.timedelta64(1, "D")] = True
        series["index_bin"] = np.digitize(dispersion_index(y, cens, first_t, days), INDEX_BINS)
        keys.append(series.assign(cutoff=cut))
    key = ["cutoff", "sku_id", "location_id"]
    b = m[key].merge(pd.concat(keys), on=key, how="left")
    return b["index_bin"].to_numpy()


def run(name: str, which: str, settings: ForecastSettings) -> dict:
    t = tables(name)
    rows, cpu = [], 0.0
    for cut in cutoffs(t, which):
        frames = []
        for g in sorted(t["catalog"]["sku_group"].unique()):
            c0 = time.process_time()
            model, _, _ = load_or_train(t, cut, g, settings, None)
            frames.append(model.predict(forecast_inputs(t, cut, g, HORIZON_DAYS)))
            cpu += time.process_time() - c0
        fc = pd.concat(frames, ignore_index=True).assign(cutoff=cut)
        series = fc[["sku_id", "location_id"]].drop_duplicates().reset_index(drop=True)
        rows.append(fc.merge(baselines(t, name, cut, series).assign(cutoff=cut), on=bt.KEY, how="inner"))
    m = pd.concat(rows, ignore_index=True)
    act = t["sales"][["date", "sku_id", "location_id", "units"]].rename(columns={"date": "target_date"})
    m = m.merge(act, on=["sku_id", "location_id", "target_date"], how="left")
    m["units"] = m["units"].fillna(0.0)
    m["in_stock"] = True
    m["StatEnsemble"] = bt.stat_ensemble(m)
    out = {"engine": bt._scores(m, "p50", "p10", "p90", mean="mean") | {"cpu_seconds": round(cpu, 1)}}
    # p10-p90 coverage by the series' dispersion index: a band calibrated only on the whole holdout can cover the
    # steady series too much and the lumpy ones too little
    inside = ((m["units"] >= m["p10"]) & (m["units"] <= m["p90"])).to_numpy()
    b = index_bins(t, m, settings.dispersion_index_days)
    labels = (f"<{INDEX_BINS[0]}", f"{INDEX_BINS[0]}-{INDEX_BINS[1]}", f">{INDEX_BINS[1]}")
    out["engine"]["coverage_by_index"] = {lab: round(float(inside[b == j].mean()), 4) if (b == j).any() else None
                                          for j, lab in enumerate(labels)}
    # the mean's bias by the model that served the series: the whole's bias can hide a low intermittent segment
    # under a high regular one
    by = m.groupby("model")
    biases = {str(k): bias(g["units"], g["mean"]) for k, g in by}
    out["engine"]["bias_by_model"] = {k: round(v, 4) if np.isfinite(v) else None for k, v in biases.items()}
    share = by["units"].sum() / m["units"].sum()
    out["engine"]["units_share_by_model"] = {str(k): round(float(v), 4) for k, v in share.items()}
    for b in bt.BASELINES:
        out[b] = bt._scores(m, b, None, None)
    dem = demand(name)
    if dem is not None:  # the demo's truth: scores against the demand behind the sales (core.backtest)
        out["vs_demand"] = bt._demand_scores(bt.with_demand(m, dem), ["engine", *bt.BASELINES])
    e = out["engine"]
    bd = min(out[b]["wape_daily"] for b in bt.BASELINES)
    b14 = min(out[b]["wape_14d"] for b in bt.BASELINES)
    print(f"{name} {which}: engine day {e['wape_daily']:.4f} 14d {e['wape_14d']:.4f} bias {e['bias']:+.4f} "
          f"cov {e['coverage_p10_p90']:.3f} rmsse {e['rmsse']:.4f} | best baseline day {bd:.4f} 14d {b14:.4f} | "
          f"lead day {100 * (1 - e['wape_daily'] / bd):+.1f}% 14d {100 * (1 - e['wape_14d'] / b14):+.1f}% | "
          f"engine {cpu:.1f} CPU s", flush=True)
    cov = ", ".join(f"{k} {v:.3f}" for k, v in e["coverage_by_index"].items() if v is not None)
    print(f"{name} {which}: engine p10-p90 coverage by dispersion index: {cov}", flush=True)
    bm = ", ".join(f"{k} {v:+.3f} ({e['units_share_by_model'][k]:.1%} of units)"
                   for k, v in e["bias_by_model"].items() if v is not None)
    print(f"{name} {which}: engine bias by serving model: {bm}", flush=True)
    if "vs_demand" in out:
        v = out["vs_demand"]["engine"]
        print(f"{name} {which}: engine vs demand day {v['wape_daily']:.4f} 14d {v['wape_14d']:.4f} "
              f"bias {v['bias']:+.4f} (lost sales {out['vs_demand']['lost_sales_share']:.1%})", flush=True)
    return out


def main() -> None:
    os.makedirs(CACHE, exist_ok=True)
    settings = ForecastSettings(**json.loads(os.environ.get("FS", "{}")))
    results = {spec: run(*spec.split(":"), settings) for spec in (sys.argv[1:] or ["m5:dev4"])}
    print(json.dumps(results, default=float))


if __name__ == "__main__":
    main()
