"""Rolling-origin backtest of the demand forecast engine against statsforecast baselines (SeasonalNaive, WindowAverage,
AutoETS, StatEnsemble: the mean of AutoETS and WindowAverage, the strongest simple peer on most windows measured, and
SeasonalES: exponential smoothing of each weekday's level, the strongest on the M5 dev set's 14-day totals), scored on
observed sales, which are censored by stock (the engine forecasts demand, so a stocked-out day counts against it);
in-stock-only figures are reported beside. Besides WAPE and bias: MASE and RMSSE per series (the M5 error family),
scaled by the series' in-sample one-step naive error over the year before the cutoff.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pandas as pd

from .asof import HORIZON_DAYS
from .forecasting import ForecastSettings, forecast_for_date
from .metrics import bias, coverage, naive_scales, scaled_errors, wape

BASELINES = ("SeasonalNaive", "WindowAverage", "AutoETS", "StatEnsemble", "SeasonalES")
# StatEnsemble = their mean. With CrostonSBA as a third member it scored worse on the M5 dev set (see the README)
ENSEMBLE_MEMBERS = ("AutoETS", "WindowAverage")
KEY = ["cutoff", "sku_id", "location_id", "target_date"]


def cutoff_dates(sales: pd.DataFrame, horizon: int = HORIZON_DAYS, cutoffs: int = 3,
                 step_days: int = 14) -> list[pd.Timestamp]:
    """Planning dates whose whole horizon has actuals, latest last: last+1-horizon, then step_days apart back."""
    last = pd.Timestamp(sales["date"].max())
    first = last + pd.Timedelta(days=1 - horizon)
    return sorted(first - pd.Timedelta(days=k * step_days) for k in range(cutoffs))


def stat_ensemble(frame: pd.DataFrame) -> np.ndarray:
    """The StatEnsemble baseline from a frame holding its members' forecasts: their mean, each floored at 0."""
    return np.mean([np.maximum(frame[m].to_numpy(float), 0) for m in ENSEMBLE_MEMBERS], axis=0)


def _dense_history(tables: dict, cutoff: pd.Timestamp, series: pd.DataFrame,
                   history_days: int = 364) -> tuple[np.ndarray, np.ndarray]:
    """(series x history_days) observed units before `cutoff` (0 where no sales row) and each series' first day."""
    s = tables["sales"]
    s = s[(s["date"] < cutoff) & (s["date"] >= cutoff - pd.Timedelta(days=history_days))]
    idx = pd.MultiIndex.from_frame(series[["sku_id", "location_id"]])
    code = idx.get_indexer(pd.MultiIndex.from_arrays([s["sku_id"], s["location_id"]]))
    k = code >= 0
    start = cutoff - pd.Timedelta(days=history_days)
    t = ((s["date"].to_numpy()[k] - start.to_datetime64()) // np.timedelta64(1, "D")).astype(int)
    y = np.zeros((len(series), history_days))
    seen = np.full(len(series), history_days)
    y[code[k], t] = s["units"].to_numpy()[k]
    np.minimum.at(seen, code[k], t)
    return y, seen


def series_scales(tables: dict, cutoff: pd.Timestamp, series: pd.DataFrame, history_days: int = 364) -> pd.DataFrame:
    """MASE and RMSSE scales per series (sku_id, location_id, mae_scale, mse_scale) from the year before `cutoff`."""
    y, _ = _dense_history(tables, cutoff, series, history_days)
    mae, mse = naive_scales(y)
    return series[["sku_id", "location_id"]].assign(mae_scale=mae, mse_scale=mse)


def _baseline_forecasts(tables: dict, cutoff: pd.Timestamp, series: pd.DataFrame, horizon: int,
                        baselines=BASELINES, min_history_days: int = 28,
                        history_days: int = 364) -> tuple[pd.DataFrame, dict]:
    """statsforecast baselines for `series` from observed sales < cutoff (dense days, 0 where no sales row)."""
    from statsforecast import StatsForecast
    from statsforecast.models import (AutoETS, CrostonSBA, SeasonalExponentialSmoothingOptimized, SeasonalNaive,
                                      WindowAverage)

    start = cutoff - pd.Timedelta(days=history_days)
    y, seen = _dense_history(tables, cutoff, series, history_days)
    ok = seen <= history_days - min_history_days
    mask = np.arange(history_days)[None, :] >= seen[:, None]
    mask &= ok[:, None]
    r, c = np.nonzero(mask)
    df = pd.DataFrame({"unique_id": r, "ds": (start + pd.to_timedelta(c, unit="D")).values, "y": y[r, c]})
    seconds = {}
    out = None
    specs = {"SeasonalNaive": (SeasonalNaive(7), [80]), "WindowAverage": (WindowAverage(28), None),
             "AutoETS": (AutoETS(season_length=7), [80]), "CrostonSBA": (CrostonSBA(), None),
             "SeasonalES": (SeasonalExponentialSmoothingOptimized(season_length=7, alias="SeasonalES"), None)}
    fitted = []
    for name in baselines:  # the ensemble's members first, each fitted once
        fitted += [m for m in (ENSEMBLE_MEMBERS if name == "StatEnsemble" else (name,)) if m not in fitted]
    for name in fitted:
        model, level = specs[name]
        models = [model]
        t0 = time.perf_counter()
        sf = StatsForecast(models=models, freq="D", n_jobs=1)
        fc = sf.forecast(df=df, h=horizon, level=level) if level else sf.forecast(df=df, h=horizon)
        fc = fc.reset_index() if "unique_id" not in fc.columns else fc
        seconds[models[0].alias] = time.perf_counter() - t0
        out = fc if out is None else out.merge(fc, on=["unique_id", "ds"], how="outer")
    if "StatEnsemble" in baselines:
        out["StatEnsemble"] = stat_ensemble(out)
        seconds["StatEnsemble"] = sum(seconds[m] for m in ENSEMBLE_MEMBERS)
    ids = out["unique_id"].to_numpy().astype(int)
    out.insert(0, "sku_id", series["sku_id"].to_numpy()[ids])
    out.insert(1, "location_id", series["location_id"].to_numpy()[ids])
    out = out.drop(columns="unique_id").rename(columns={"ds": "target_date"})
    return out, seconds


def _scores(m: pd.DataFrame, point: str, lo: str | None, hi: str | None, mean: str | None = None) -> dict:
    """WAPE of daily rows on `point`; 14-day totals and bias on `mean` (defaults to `point`); MASE on `point` and
    RMSSE on `mean` per cutoff x series when `m` has the scales (mae_scale, mse_scale)."""
    mean = mean or point
    y = m["units"].to_numpy(float)
    f, fm = np.maximum(m[point].to_numpy(float), 0), np.maximum(m[mean].to_numpy(float), 0)
    tot = m.assign(_f=fm).groupby(["cutoff", "sku_id", "location_id"], sort=False)[["units", "_f"]].sum()
    ins = m["in_stock"].to_numpy(bool)
    tot_in = m[ins].assign(_f=fm[ins]).groupby(["cutoff", "sku_id", "location_id"], sort=False)[["units", "_f"]].sum()

    def clean(x):
        return None if x is None or not np.isfinite(x) else round(float(x), 4)

    mase = rmsse = None
    if "mae_scale" in m.columns:
        sid = m.groupby(["cutoff", "sku_id", "location_id"], sort=False).ngroup().to_numpy()
        first = np.unique(sid, return_index=True)[1]
        mase = scaled_errors(y, f, sid, m["mae_scale"].to_numpy()[first], m["mse_scale"].to_numpy()[first])[0]
        rmsse = scaled_errors(y, fm, sid, m["mae_scale"].to_numpy()[first], m["mse_scale"].to_numpy()[first])[1]
    out = {
        "wape_daily": clean(wape(y, f)), "wape_14d": clean(wape(tot["units"], tot["_f"])),
        "bias": clean(bias(y, fm)), "mase": clean(mase), "rmsse": clean(rmsse),
        "coverage_p10_p90": clean(coverage(y, m[lo], m[hi])) if lo else None,
        "wape_daily_in_stock": clean(wape(y[ins], f[ins])),
        "wape_14d_in_stock": clean(wape(tot_in["units"], tot_in["_f"])),
        # on in-stock days sales are the demand, so a demand forecast can be judged without a truth (those are the
        # days demand stayed under the stock: an unbiased demand forecast reads a little high there)
        "bias_in_stock": clean(bias(y[ins], fm[ins])),
        "n": int(len(m)),
    }
    if mean != point:
        out["wape_daily_mean"] = clean(wape(y, fm))
    return out


def by_cutoff(m: pd.DataFrame, methods: dict[str, tuple[str, str]]) -> dict:
    """Each method's WAPE daily / 14-day and bias per cutoff (`methods`: name -> (point, mean) columns of `m`), and
    across the cutoffs the bias's standard error (their standard deviation over sqrt(cutoffs)): a window's bias is
    the mean of a few cutoffs' biases, each of which swings by several percent."""
    out = {}
    for name, (point, mean) in methods.items():
        rows = {}
        for cut, g in m.groupby("cutoff", sort=True):
            r = _scores(g, point, None, None, mean=mean)
            rows[f"{pd.Timestamp(cut):%Y-%m-%d}"] = {k: r[k] for k in ("wape_daily", "wape_14d", "bias")}
        b = np.array([r["bias"] for r in rows.values() if r["bias"] is not None], dtype=float)
        se = float(b.std(ddof=1) / np.sqrt(len(b))) if len(b) > 1 else None
        out[name] = {"cutoffs": rows, "bias_standard_error": None if se is None else round(se, 4)}
    return out


def _leads_by_cutoff(cuts: dict, engine: str, baseline: str, col: str) -> tuple[int, int]:
    """(cutoffs where `engine` beats `baseline` on `col`, cutoffs compared)."""
    e, b = cuts[engine]["cutoffs"], cuts[baseline]["cutoffs"]
    pairs = [(e[c][col], b[c][col]) for c in e if e[c][col] is not None and b.get(c, {}).get(col) is not None]
    return sum(x < y for x, y in pairs), len(pairs)


def with_demand(m: pd.DataFrame, demand: pd.DataFrame) -> pd.DataFrame:
    """`m` (rows by sku_id, location_id, target_date) with column `demand` from `demand` (date, sku_id, location_id,
    demand; the last row of a duplicated day wins), NaN where it is not known."""
    day = ["sku_id", "location_id", "target_date"]
    dem = demand[["date", "sku_id", "location_id", "demand"]].rename(columns={"date": "target_date"})
    dem = dem.astype({"sku_id": str, "location_id": str}).drop_duplicates(day, keep="last")
    return m.merge(dem, on=day, how="left")


def _demand_scores(m: pd.DataFrame, methods: list[str]) -> dict:
    """Each method's daily WAPE (the engine's p50), 14-day WAPE and bias (its mean) against column `demand` (rows
    without a known demand are left out, and counted)."""
    known = m["demand"].notna().to_numpy()
    d = m[known].assign(units=m.loc[known, "demand"].to_numpy(float))
    out = {"rows": int(known.sum()), "rows_without_demand": int((~known).sum()),
           "lost_sales_share": round(float(1 - m.loc[known, "units"].sum() / d["units"].sum()), 4)
           if d["units"].sum() > 0 else None}
    for name in methods:
        point, mean = ("p50", "mean") if name == "engine" else (name, name)
        r = _scores(d, point, None, None, mean=mean)
        out[name] = {k: r[k] for k in ("wape_daily", "wape_14d", "bias")}
    return out


def run_backtest(tables: dict, horizon: int = HORIZON_DAYS, cutoffs: int = 3, step_days: int = 14,
                 baseline_sample: int | None = None, settings: ForecastSettings | None = None,
                 groups: list[str] | None = None, baselines: list[str] | tuple[str, ...] = BASELINES,
                 cache_dir: str | None = None, return_frames: bool = False,
                 demand: pd.DataFrame | None = None) -> dict:
    """Rolling-origin evaluation: for each cutoff D, the engine (as it would run on D, models from the anchor
    before D) and the baselines forecast D..D+horizon-1; all are scored on the same rows against observed sales:
    the series with 28+ days of history (the baselines need it; new series are in `engine_all_series`).

    The engine's daily WAPE is scored on its p50 (the median: the point forecast that minimizes absolute error),
    its 14-day WAPE and bias on its mean (sums of means estimate totals); `wape_daily_mean` scores the mean daily.
    Baselines are scored on their (mean) point forecast throughout.
    `demand` (date, sku_id, location_id, demand): the demand behind the sales, where it is known (the demo world's
    truth). Sales are demand censored by stock, and the engine forecasts demand (stocked-out days are censored in
    its training), so a demand forecast reads high against sales by the lost sales; `vs_demand` holds every
    method's WAPE and bias against the demand itself, on the same rows.
    `baseline_sample`: score everything on a deterministic sample of that many series (baselines, AutoETS above all,
    are slow on very many series); the engine's full-set scores are under `engine_all_series`.
    """
    settings = settings or ForecastSettings(horizon_days=horizon)
    if settings.horizon_days != horizon:
        settings = ForecastSettings(**{**settings.__dict__, "horizon_days": horizon})
    groups = groups or sorted(tables["catalog"]["sku_group"].astype(str).unique())
    sales = tables["sales"]
    inv = tables.get("inventory")
    engine_rows, base_rows = [], []
    engine_seconds = {"train": 0.0, "predict": 0.0, "cpu": 0.0}
    base_seconds = {b: 0.0 for b in baselines}
    dates = cutoff_dates(sales, horizon, cutoffs, step_days)
    for cut in dates:
        frames = []
        for g in groups:
            c0 = time.process_time()  # CPU seconds: what the engine costs, whatever else runs on the machine
            fc, info = forecast_for_date(tables, cut, g, settings, cache_dir=cache_dir)
            engine_seconds["cpu"] += time.process_time() - c0
            engine_seconds["train"] += info["train_seconds"]
            engine_seconds["predict"] += info["predict_seconds"]
            frames.append(fc)
        fc = pd.concat(frames, ignore_index=True)
        fc["cutoff"] = cut
        series = fc[["sku_id", "location_id"]].drop_duplicates().reset_index(drop=True)
        if baseline_sample and len(series) > baseline_sample:
            key = (series["sku_id"] + "|" + series["location_id"]).to_numpy(dtype=str)
            pick = np.sort(np.argsort(pd.util.hash_array(key), kind="stable")[:baseline_sample])
            series = series.iloc[pick].reset_index(drop=True)
        bf, secs = _baseline_forecasts(tables, cut, series, horizon, baselines)
        bf = bf.merge(series_scales(tables, cut, series), on=["sku_id", "location_id"], how="left")
        bf["cutoff"] = cut
        for k, v in secs.items():
            base_seconds[k] += v
        engine_rows.append(fc)
        base_rows.append(bf)
    eng = pd.concat(engine_rows, ignore_index=True)
    base = pd.concat(base_rows, ignore_index=True)

    # actuals: observed sales (0 when a series has no row on a day it was forecast) and whether it was in stock
    act = sales[["date", "sku_id", "location_id", "units"]].rename(columns={"date": "target_date"})
    eng = eng.merge(act, on=["sku_id", "location_id", "target_date"], how="left")
    eng = eng[eng["target_date"] <= sales["date"].max()]
    eng["units"] = eng["units"].fillna(0.0)
    eng["in_stock"] = True
    if inv is not None and len(inv):
        out = inv.loc[inv["on_hand"] <= 0, ["date", "sku_id", "location_id"]].rename(columns={"date": "target_date"})
        out["stockout"] = True
        eng = eng.merge(out, on=["sku_id", "location_id", "target_date"], how="left")
        eng["in_stock"] = eng.pop("stockout").isna()
    both = eng.merge(base, on=KEY, how="inner")
    if demand is not None and len(demand):
        both = with_demand(both, demand)
    result = {
        "actuals": "observed sales (censored by stock); *_in_stock leave out stocked-out days",
        "cutoffs": [f"{d:%Y-%m-%d}" for d in dates], "horizon": horizon, "groups": groups,
        "series_scored": int(both[["sku_id", "location_id"]].drop_duplicates().shape[0]),
        "baseline_sample": baseline_sample,
        "engine": {**_scores(both, "p50", "p10", "p90", mean="mean"),
                   "seconds": round(engine_seconds["train"] + engine_seconds["predict"], 2),
                   "train_seconds": round(engine_seconds["train"], 2),
                   "predict_seconds": round(engine_seconds["predict"], 2),
                   "cpu_seconds": round(engine_seconds["cpu"], 2)},
        "engine_all_series": _scores(eng, "p50", "p10", "p90", mean="mean"),
        "model_mix": {str(k): int(v) for k, v in eng.drop_duplicates(["cutoff", "sku_id", "location_id"])[
            "model"].value_counts().sort_index().items()},
        "baselines": {},
    }
    for b in baselines:
        lo, hi = f"{b}-lo-80", f"{b}-hi-80"
        if b not in both.columns:
            continue
        has = lo in both.columns
        result["baselines"][b] = {**_scores(both, b, lo if has else None, hi if has else None),
                                  "seconds": round(base_seconds[b], 2)}
    result["by_cutoff"] = by_cutoff(both, {"engine": ("p50", "mean"), **{b: (b, b) for b in result["baselines"]}})
    if "demand" in both.columns:
        result["vs_demand"] = _demand_scores(both, ["engine", *result["baselines"]])
    if return_frames:
        result["frames"] = both
    return result


def format_backtest(result: dict) -> str:
    """A readable table of the backtest figures."""
    rows = [("engine", result["engine"])] + list(result["baselines"].items())

    def fmt(x):
        return "   -  " if x is None else f"{x:6.3f}"

    lines = [f"Backtest: cutoffs {', '.join(result['cutoffs'])}, horizon {result['horizon']} days, "
             f"{result['series_scored']} series scored against {result['actuals']}",
             f"{'method':<15}{'WAPE day':>9}{'WAPE 14d':>9}{'bias':>8}{'p10-p90':>9}{'MASE':>8}{'RMSSE':>8}"
             f"{'day i/s':>9}{'14d i/s':>9}{'bias i/s':>9}{'seconds':>9}"]
    for name, r in rows:
        lines.append(f"{name:<15}{fmt(r['wape_daily']):>9}{fmt(r['wape_14d']):>9}{fmt(r['bias']):>8}"
                     f"{fmt(r['coverage_p10_p90']):>9}{fmt(r.get('mase')):>8}{fmt(r.get('rmsse')):>8}"
                     f"{fmt(r['wape_daily_in_stock']):>9}{fmt(r['wape_14d_in_stock']):>9}"
                     f"{fmt(r.get('bias_in_stock')):>9}{r['seconds']:>9.1f}")
    lines.append("(engine daily WAPE and MASE on its p50, 14-day WAPE, bias and RMSSE on its mean; i/s = in-stock "
                 "days only)")
    eng = result["engine"]
    best = {}  # WAPE column -> (value, name) of the best baseline on it
    for col, label in (("wape_daily", "WAPE daily"), ("wape_14d", "WAPE 14-day")):
        vals = [(r[col], n) for n, r in result["baselines"].items() if r.get(col) is not None]
        if vals and eng.get(col) is not None:
            best[col] = min(vals)
            lines.append(f"engine vs best baseline ({best[col][1]}): {label} {eng[col]:.3f} vs {best[col][0]:.3f} "
                         f"({100 * (1 - eng[col] / best[col][0]):+.1f}% better)")
    cuts = result.get("by_cutoff") or {}
    if "engine" in cuts:
        lines.append("engine by cutoff (WAPE day / 14d, bias): " + "; ".join(
            f"{c} {fmt(r['wape_daily']).strip()} / {fmt(r['wape_14d']).strip()}, {fmt(r['bias']).strip()}"
            for c, r in cuts["engine"]["cutoffs"].items()))
        se = cuts["engine"]["bias_standard_error"]
        if se is not None:
            wins = []
            for col, label in (("wape_daily", "daily"), ("wape_14d", "14-day")):
                if col in best and best[col][1] in cuts:
                    k, n = _leads_by_cutoff(cuts, "engine", best[col][1], col)
                    wins.append(f"{label} on {k} of {n} cutoffs against {best[col][1]}")
            lines.append(f"engine bias {eng['bias']:+.3f}, standard error over the cutoffs {se:.3f}; ahead "
                         + ", ".join(wins))
    if eng.get("cpu_seconds") is not None:
        lines.append(f"engine: {eng['seconds']:.1f} s wall (train {eng['train_seconds']:.1f}, predict "
                     f"{eng['predict_seconds']:.1f}), {eng['cpu_seconds']:.1f} s CPU")
    lines.append(f"model mix (series x cutoffs): {result['model_mix']}")
    vd = result.get("vs_demand")
    if vd:
        lines.append(f"against the demand behind the sales (known: {vd['rows']} rows; "
                     f"{100 * (vd['lost_sales_share'] or 0):.1f}% of it lost to stock-outs):")
        lines.append(f"{'method':<15}{'WAPE day':>9}{'WAPE 14d':>9}{'bias':>8}")
        for name in ["engine", *result["baselines"]]:
            r = vd[name]
            lines.append(f"{name:<15}{fmt(r['wape_daily']):>9}{fmt(r['wape_14d']):>9}{fmt(r['bias']):>8}")
    return "\n".join(lines)


def backtest_main(path: str | None = None, m5: str | None = None, horizon: int = HORIZON_DAYS, cutoffs: int = 3,
                  step_days: int = 14, baseline_sample: int | None = None, m5_stores: list[str] | None = None,
                  m5_max_items: int | None = None, settings: ForecastSettings | None = None) -> dict:
    """Load a data set (a folder of tables, the M5 files, or the default demo), run the backtest, print a table
    and, as the last line, the JSON result."""
    if path and m5:
        raise ValueError("give either --path or --m5, not both")
    demand = None
    if path:
        from .loading import load_tables

        tables, source = load_tables(path), path
        truth = os.path.join(path, "truth", "demand.parquet")  # a demo folder (write_demo) keeps its truth
        if os.path.exists(truth):
            demand = pd.read_parquet(truth, columns=["date", "sku_id", "location_id", "demand"])
    elif m5:
        from .m5 import load_m5

        tables, source = load_m5(m5, stores=m5_stores, max_items=m5_max_items), f"m5:{m5}"
    else:
        from .contracts import validate_tables
        from .demo import generate_demo

        demo = generate_demo()
        tables, source, demand = validate_tables(demo.tables), "demo (generate_demo defaults)", demo.truth["demand"]
    if isinstance(tables, tuple):  # a loader returning (tables, report)
        tables = tables[0]
    if settings is None:  # a backtest by hand has the machine to itself: LightGBM on every core (same trees)
        from .loading import run_threads

        settings = ForecastSettings(horizon_days=horizon, num_threads=run_threads())
    result = run_backtest(tables, horizon=horizon, cutoffs=cutoffs, step_days=step_days,
                          baseline_sample=baseline_sample, settings=settings, demand=demand)
    result["source"] = source
    print(format_backtest(result))
    print(json.dumps(result, default=str))
    return result
