"""The elasticity estimator on one SKU group of a `pipeline_bench.py` workdir, as a retraining day runs it twice:
pricing's weekly estimate (default settings, no unpooled fit) and the forecaster's (its training window, 15
iterations at tolerance 0.2). Prints CPU and wall seconds of each and a last line of JSON.

    python benchmarks/elasticity_bench.py --workdir /work/bench/w10k_s8 --group apparel [--save OUT.pkl]
    PYTHONPATH=/path/to/other/checkout python benchmarks/elasticity_bench.py ... --compare OUT.pkl

`--save` pickles both estimates; `--compare` checks them against a saved pair bit for bit (every column), so a
speed-up of the estimator can show that it returns the same numbers as the code it replaces.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import time

import numpy as np
import pandas as pd


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", required=True, help="a pipeline_bench.py --workdir (its data/ folder is read)")
    ap.add_argument("--group", default="apparel")
    ap.add_argument("--date", default="2026-11-25", help="planning date; the estimates are as of its weekly anchor")
    ap.add_argument("--save", default=None)
    ap.add_argument("--compare", default=None)
    args = ap.parse_args()

    import retail_dagster
    from retail_dagster.core.asof import planning_inputs
    from retail_dagster.core.elasticity import ElasticitySettings, estimate_elasticities
    from retail_dagster.core.forecasting import ForecastSettings, _fit_elasticities, anchor_date
    from retail_dagster.core.loading import load_tables

    t0 = time.perf_counter()
    inputs = planning_inputs(load_tables(os.path.join(args.workdir, "data"), sku_group=args.group), args.date,
                             args.group, history_days=460)
    A = anchor_date(inputs.date)
    cut = A - pd.Timedelta(days=ForecastSettings().calibration_days)
    print(f"{retail_dagster.__file__}: group {args.group}, {len(inputs.sales):,} sales rows, anchor {A:%Y-%m-%d} "
          f"(inputs read in {time.perf_counter() - t0:.1f}s)")
    sales, inv, events = inputs.sales, inputs.inventory_history, inputs.events
    runs = {  # pricing's weekly estimate (PricingAgent.elasticities, before its outlier capping) and the forecaster's
        "pricing": lambda: estimate_elasticities(sales[sales["date"] < A], inputs.catalog, inv[inv["date"] < A],
                                                 events[events["date"] < A], ElasticitySettings(),
                                                 locations=inputs.locations, unpooled=False),
        "forecaster": lambda: _fit_elasticities(inputs, cut, ForecastSettings()).to_frame("elasticity"),
    }
    estimate_elasticities(sales.iloc[:5000], inputs.catalog)  # compiles the kernels (once per machine)
    out, seconds = {}, {}
    for name, run in runs.items():
        c0, w0 = time.process_time(), time.perf_counter()
        out[name] = run()
        seconds[name] = {"cpu": round(time.process_time() - c0, 2), "wall": round(time.perf_counter() - w0, 2)}
        print(f"{name}: {seconds[name]['cpu']} s CPU, {seconds[name]['wall']} s wall")
    same = None
    if args.compare:
        with open(args.compare, "rb") as fh:
            ref = pickle.load(fh)
        same = all(np.array_equal(out[n][c].to_numpy(), ref[n][c].to_numpy(),
                                  equal_nan=out[n][c].dtype != object)
                   for n in out for c in out[n].columns)
        print("bit-identical to", args.compare, ":", same)
    if args.save:
        with open(args.save, "wb") as fh:
            pickle.dump(out, fh)
    print(json.dumps({"group": args.group, "sales_rows": len(sales), "seconds": seconds, "identical": same}))
    return 0 if same is not False else 1


if __name__ == "__main__":
    raise SystemExit(main())
