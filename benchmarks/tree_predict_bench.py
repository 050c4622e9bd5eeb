"""The compiled LightGBM predictor (core.tree_predict) against LightGBM's own predict, with cached models of a
pipeline_bench work folder: per predict call on the frames the forecast's recursion really passes, the first call
of a process (numba cache cold and warm), and the forecast engine's whole prediction per SKU group.

    python benchmarks/pipeline_bench.py --skus 2000 --stores 10 --workdir /tmp/pbench   # models and ingest outputs
    python benchmarks/tree_predict_bench.py --workdir /tmp/pbench [--groups grocery] [--date 2026-11-25]

Reads the group's planning inputs from the work folder's ingest outputs (out/<asset>/<date>/<group>.parquet, what
the run's demand_forecast step read), caps outliers as the demand agent does, and loads the group's cached model
(models/*/<group>/<anchor>.pkl); writes nothing there. Checks that every prediction and forecast frame is
identical. Run it on one core (`taskset -c 1`): threads are --threads (default 1). Last line: JSON (per group;
totals of the engine's prediction over the groups).
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import json
import os
import pickle
import subprocess
import sys
import tempfile
import time

import numpy as np
import pandas as pd

FIRST_CALL = """
import pickle, sys, time
t0 = time.perf_counter()
from retail_dagster.core.tree_predict import CompiledRegressor
with open(sys.argv[1], "rb") as f:
    est, X = pickle.load(f)
t1 = time.perf_counter()
CompiledRegressor(est).predict(X)
t2 = time.perf_counter()
CompiledRegressor(est).predict(X)
t3 = time.perf_counter()
print(t2 - t1, t3 - t2)
"""


def group_inputs(workdir: str, group: str, date: pd.Timestamp):
    """The group's PlanningInputs as the run's demand_forecast step had them, outliers capped as the agent does."""
    from retail_dagster.assets.ingest import INGEST_OUTPUTS
    from retail_dagster.core.asof import PlanningInputs
    from retail_dagster.core.plausibility import OutlierSettings, cap_outliers, explained_days

    frames = {attr: pd.read_parquet(os.path.join(workdir, "out", name, f"{date:%Y-%m-%d}", f"{group}.parquet"))
              for name, (attr, _) in INGEST_OUTPUTS.items()}
    inputs = PlanningInputs(date=date, sku_group=group, **frames)
    capped, _ = cap_outliers(inputs.sales, OutlierSettings(),
                             explained_days(inputs.sales, inputs.events, inputs.locations))
    return dataclasses.replace(inputs, sales=capped)


def group_model(workdir: str, group: str, date: pd.Timestamp):
    from retail_dagster.core.forecasting import anchor_date

    paths = glob.glob(os.path.join(workdir, "models", "*", group, f"{anchor_date(date):%Y-%m-%d}.pkl"))
    if len(paths) != 1:
        raise SystemExit(f"{workdir}: expected one cached model of {group} for {date:%Y-%m-%d}, found {paths}")
    with open(paths[0], "rb") as f:
        return pickle.load(f)["model"]


def first_call_seconds(est, X, cache_dir: str) -> tuple[float, float]:
    """(first, second) CompiledRegressor.predict call of a fresh process whose numba cache is `cache_dir`; the
    first parses the model, builds its tables and compiles or loads the kernels."""
    with tempfile.NamedTemporaryFile(suffix=".pkl") as f:
        pickle.dump((est, X), f)
        f.flush()
        env = {**os.environ, "NUMBA_CACHE_DIR": cache_dir}
        out = subprocess.run([sys.executable, "-c", FIRST_CALL, f.name], env=env, check=True, capture_output=True,
                             text=True).stdout.split()
    return float(out[0]), float(out[1])


def main() -> dict:
    from retail_dagster.core import tree_predict
    from retail_dagster.core.demo import DEFAULT_END_DATE

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", required=True, help="a pipeline_bench --workdir (out/ and models/ inside)")
    ap.add_argument("--groups", default=None, help="comma-separated SKU groups (default: every cached one)")
    ap.add_argument("--date", default=None, help="planning day (default: the day after the demo's last day)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=3, help="timings per predict call (the median is kept)")
    args = ap.parse_args()
    date = pd.Timestamp(args.date) if args.date else pd.Timestamp(DEFAULT_END_DATE) + pd.Timedelta(days=1)
    cached = glob.glob(os.path.join(args.workdir, "models", "*", "*", "*.pkl"))
    groups = args.groups.split(",") if args.groups else sorted({os.path.basename(os.path.dirname(p)) for p in cached})

    per_group = {}
    first = None
    for group in groups:
        inputs = group_inputs(args.workdir, group, date)
        model = group_model(args.workdir, group, date)
        est = model.fcst.models_["lgbm"]
        est.set_params(n_jobs=args.threads)
        frames = []
        lightgbm_predict = type(est).predict

        def spy(self, X, **kwargs):
            frames.append(X.copy())
            return lightgbm_predict(self, X, **kwargs)

        # the engine's whole prediction, with LightGBM's predict (its feature frames recorded) and with the compiled
        # one, twice each in turn: the first compiled run parses the model (and, first group, loads the kernels)
        engine = {}
        type(est).predict = spy
        for run in ("first", "again"):
            for mode in ("lightgbm", "compiled"):
                tree_predict.ENABLED = mode == "compiled"
                t0 = time.perf_counter()
                frame = model.predict(inputs)
                engine[f"forecast_predict_seconds_{mode}_{run}"] = round(time.perf_counter() - t0, 3)
                if mode == "lightgbm" and run == "first":
                    expected = frame
                    type(est).predict = lightgbm_predict
                else:
                    pd.testing.assert_frame_equal(frame, expected, check_exact=True)

        # per call, on the recorded frames
        def seconds(fn, X):
            times = []
            for _ in range(args.repeat):
                a = time.perf_counter()
                fn(X)
                times.append(time.perf_counter() - a)
            return float(np.median(times))

        compiled = tree_predict.CompiledRegressor(est, args.threads)
        identical = all(np.array_equal(compiled.predict(X), est.predict(X)) for X in frames)
        lgb_s = float(np.mean([seconds(est.predict, X) for X in frames]))
        comp_s = float(np.mean([seconds(compiled.predict, X) for X in frames]))
        per_group[group] = {
            "rows_per_call": len(frames[0]), "calls": len(frames), "identical": bool(identical),
            "lightgbm_seconds_per_call": round(lgb_s, 4), "compiled_seconds_per_call": round(comp_s, 4),
            "speedup": round(lgb_s / comp_s, 2), **engine}
        print(group, per_group[group], flush=True)
        if first is None:  # a fresh process's first call, numba cache empty then filled
            with tempfile.TemporaryDirectory() as cache:
                cold = first_call_seconds(est, frames[0], cache)
                warm = first_call_seconds(est, frames[0], cache)
            first = {"first_call_seconds_cold_cache": round(cold[0], 3),
                     "first_call_seconds_warm_cache": round(warm[0], 3), "second_call_seconds": round(warm[1], 4)}
            print("first call of a process (parse, tables, numba compile or cache load, predict):", first, flush=True)

    total = {k: round(sum(g[k] for g in per_group.values()), 3) for k in engine}
    result = {"groups": per_group, **total, **(first or {}), "threads": args.threads,
              "identical": all(g["identical"] for g in per_group.values())}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
