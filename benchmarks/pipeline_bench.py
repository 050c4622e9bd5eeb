"""Whole daily run through Dagster for every SKU group on generated data: wall time, peak RSS, per-asset time.

    python benchmarks/pipeline_bench.py --skus 10000 --stores 10 [--warehouses 2 --days 730]

Generates the data set (unless already in --workdir), runs the daily job once to train and cache the forecast
models (`cold_wall_seconds`), then times the daily run with cached models, the normal daily case. Each SKU group
runs as its own process (`retail-dagster run --groups G`), as each partition is its own run in a deployment;
peak RSS is the largest of those processes. The last line is JSON with skus, stores, wall_seconds, peak_rss_gb,
per_asset_seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections import defaultdict


def run_groups(groups: list[str], date: str, env: dict) -> tuple[float, dict, bool]:
    """Run each group in its own process, one after the other; (wall seconds, per-step seconds, success)."""
    t0 = time.perf_counter()
    per_step: dict[str, float] = defaultdict(float)
    ok = True
    for group in groups:
        proc = subprocess.run([sys.executable, "-m", "retail_dagster.cli", "run", "--date", date, "--groups", group,
                               "--json"], env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            ok = False
            print(proc.stdout[-3000:], proc.stderr[-3000:])
            continue
        summary = json.loads(proc.stdout.strip().splitlines()[-1])
        for step, sec in summary["groups"][group]["step_seconds"].items():
            per_step[step] += sec
        print(f"  {group}: {summary['groups'][group]['seconds']:.1f}s")
    return time.perf_counter() - t0, dict(per_step), ok


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
    env = dict(os.environ)
    env.update(RETAIL_DAGSTER_SOURCE="demo", RETAIL_DAGSTER_DATA=data, RETAIL_DAGSTER_OUT=os.path.join(work, "out"),
               RETAIL_DAGSTER_MODEL_CACHE=os.path.join(work, "models"),
               RETAIL_DAGSTER_DEMO_SKUS=str(args.skus), RETAIL_DAGSTER_DEMO_STORES=str(args.stores),
               RETAIL_DAGSTER_DEMO_WAREHOUSES=str(args.warehouses), RETAIL_DAGSTER_DEMO_DAYS=str(args.days),
               RETAIL_DAGSTER_DEMO_SEED=str(args.seed))
    env.pop("DAGSTER_HOME", None)
    os.environ.update(env)
    from retail_dagster.cli import latest_plannable_date
    from retail_dagster.partitions import partition_setup
    from retail_dagster.resources.data_source import ensure_demo_data

    t0 = time.perf_counter()
    ensure_demo_data(data, args.skus, args.stores, args.warehouses, args.days, args.seed)
    gen_seconds = time.perf_counter() - t0
    groups = list(partition_setup()[1])
    date = latest_plannable_date()
    print(f"data: {args.skus} SKUs x {args.stores} stores + {args.warehouses} warehouses, {args.days} days, "
          f"{len(groups)} groups (generated in {gen_seconds:.1f}s) in {work}; planning {date}")
    cold = None
    if not args.skip_cold:
        print("cold run (trains and caches the models):")
        cold, _, ok = run_groups(groups, date, env)
        print(f"cold run: {cold:.1f}s success={ok}")
    print("daily run with cached models:")
    wall, per_step, ok = run_groups(groups, date, env)
    rss_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024 ** 2
    print(f"daily run: {wall:.1f}s for {len(groups)} groups, success={ok}, peak RSS of a run {rss_gb:.2f} GB")
    for step, sec in sorted(per_step.items(), key=lambda kv: -kv[1]):
        print(f"  {step:<28} {sec:8.1f}s")
    print(json.dumps({"skus": args.skus, "stores": args.stores, "wall_seconds": round(wall, 2),
                      "cold_wall_seconds": round(cold, 2) if cold is not None else None,
                      "data_seconds": round(gen_seconds, 2), "peak_rss_gb": round(rss_gb, 3),
                      "per_asset_seconds": {k: round(v, 2) for k, v in per_step.items()}, "success": ok}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
