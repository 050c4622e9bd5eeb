"""Whole daily run through Dagster for every SKU group on generated data: wall time, peak RSS, per-asset time.

    python benchmarks/pipeline_bench.py --skus 10000 --stores 10 [--warehouses 2 --days 730]

Generates the data set (unless already there), runs the daily job once to train and cache the forecast models
(reported as `cold_wall_seconds`), then times the daily run with cached models, the normal daily case. The last
line is JSON with skus, stores, wall_seconds, peak_rss_gb, per_asset_seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from collections import defaultdict


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--skus", type=int, default=10000)
    ap.add_argument("--stores", type=int, default=10)
    ap.add_argument("--warehouses", type=int, default=2)
    ap.add_argument("--days", type=int, default=730)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--workdir", default=None, help="keep data, models and outputs here (default: a temp dir)")
    ap.add_argument("--skip-cold", action="store_true", help="models already cached in --workdir")
    args = ap.parse_args()

    work = args.workdir or tempfile.mkdtemp(prefix="pipeline_bench_")
    data = os.path.join(work, "data")
    os.environ.update(RETAIL_DAGSTER_SOURCE="demo", RETAIL_DAGSTER_DATA=data,
                      RETAIL_DAGSTER_OUT=os.path.join(work, "out"),
                      RETAIL_DAGSTER_MODEL_CACHE=os.path.join(work, "models"),
                      RETAIL_DAGSTER_DEMO_SKUS=str(args.skus), RETAIL_DAGSTER_DEMO_STORES=str(args.stores),
                      RETAIL_DAGSTER_DEMO_WAREHOUSES=str(args.warehouses), RETAIL_DAGSTER_DEMO_DAYS=str(args.days),
                      RETAIL_DAGSTER_DEMO_SEED=str(args.seed))
    os.environ.pop("DAGSTER_HOME", None)
    import dagster as dg

    from retail_dagster.cli import latest_plannable_date, run_pipeline

    from retail_dagster.resources.data_source import ensure_demo_data

    t0 = time.perf_counter()
    ensure_demo_data(data, args.skus, args.stores, args.warehouses, args.days, args.seed)
    gen_seconds = time.perf_counter() - t0
    print(f"data: {args.skus} SKUs x {args.stores} stores + {args.warehouses} warehouses, {args.days} days "
          f"(generate/validate/load {gen_seconds:.1f}s) in {work}")
    date = latest_plannable_date()
    instance = dg.DagsterInstance.ephemeral()
    cold = None
    if not args.skip_cold:
        t0 = time.perf_counter()
        summary = run_pipeline(date, instance=instance)
        cold = time.perf_counter() - t0
        print(f"cold run (train + cache models): {cold:.1f}s success={summary['success']}")
    t0 = time.perf_counter()
    summary = run_pipeline(date, instance=instance)
    wall = time.perf_counter() - t0
    per_asset: dict[str, float] = defaultdict(float)
    for group in summary["groups"].values():
        records = instance.get_records_for_run(group["run_id"]).records
        starts = {}
        for rec in records:
            ev = rec.event_log_entry.dagster_event
            if ev is None or ev.step_key is None:
                continue
            if ev.event_type_value == "STEP_START":
                starts[ev.step_key] = rec.event_log_entry.timestamp
            elif ev.event_type_value in ("STEP_SUCCESS", "STEP_FAILURE") and ev.step_key in starts:
                per_asset[ev.step_key] += rec.event_log_entry.timestamp - starts[ev.step_key]
    rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2
    print(f"daily run with cached models: {wall:.1f}s for {len(summary['groups'])} groups, "
          f"success={summary['success']}, peak RSS {rss_gb:.2f} GB")
    for step, sec in sorted(per_asset.items(), key=lambda kv: -kv[1]):
        print(f"  {step:<28} {sec:8.1f}s")
    print(json.dumps({"skus": args.skus, "stores": args.stores, "wall_seconds": round(wall, 2),
                      "cold_wall_seconds": round(cold, 2) if cold is not None else None,
                      "data_seconds": round(gen_seconds, 2), "peak_rss_gb": round(rss_gb, 3),
                      "per_asset_seconds": {k: round(v, 2) for k, v in per_asset.items()},
                      "success": summary["success"]}))
    return 0 if summary["success"] else 1


if __name__ == "__main__":
    sys.exit(main())
