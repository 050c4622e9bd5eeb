"""Whole daily run through Dagster for every SKU group on generated data: wall time, peak RSS, per-asset time.

    python benchmarks/pipeline_bench.py --skus 10000 --stores 10 [--warehouses 2 --days 730 --concurrency 2]

Generates the data set (unless already in --workdir), runs the daily job once to train and cache the forecast models
(`cold_wall_seconds`), then times the daily run with cached models, the normal daily case. Each SKU group runs as
its own process (`python -m retail_dagster.cli run --groups G`), as each partition is its own run in a deployment:
first one after the other (`wall_seconds`; each run's BLAS/OpenMP threads, LightGBM's included, set to the number of
cores), then as a deployment on this machine runs them, at most `--concurrency` runs at once (default: the number of
cores, as the queued run coordinator's max_concurrent_runs), each run's BLAS/OpenMP threads set to cores /
concurrency so runs never oversubscribe the cores (`parallel_wall_seconds`). `--cold-parallel` also times a
retraining day as a deployment runs it: the model cache emptied, then the same concurrent runs train and cache every
group's models again (`cold_parallel_wall_seconds`), then once more in preloaded processes
(`preloaded_cold_parallel_wall_seconds`, below). The preloaded passes run the day's groups through one
`retail-dagster run --workers N`: each group's run is still a process of its own, forked from a server that imported
the code location and the steps' libraries once, as `PreloadedRunLauncher` starts a one-host deployment's runs
(`preloaded_wall_seconds`: one run at a time with every core; `preloaded_parallel_wall_seconds`: `--concurrency` at
once, the cores shared; both include the CLI's start and the server's imports). `overhead_seconds` is the sequential
wall time outside the assets' steps (process start, imports, Dagster run setup, the run summary). Peak RSS is the
largest of those processes (`peak_rss_gb`), and per pass (`peak_rss_gb_by_pass`: cold, warm, parallel, preloaded,
preloaded_parallel, cold_parallel, preloaded_cold_parallel). The last line is JSON with skus, stores, wall_seconds,
cold_wall_seconds, parallel_wall_seconds, cold_parallel_wall_seconds, overhead_seconds, peak_rss_gb,
peak_rss_gb_by_pass, per_asset_seconds, cold_per_asset_seconds, preloaded_wall_seconds,
preloaded_parallel_wall_seconds, preloaded_per_asset_seconds, preloaded_cold_parallel_wall_seconds, and
import_seconds_per_run (a fresh process importing what a run imports: the floor every run pays before its first
step, unless it is forked from a preloaded server).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict

from retail_dagster.preload import thread_env  # standard library only: no heavy import before the runs


def workdir_env(work: str, args) -> dict[str, str]:
    """The settings of a benchmark run in `work`: the demo of the given size generated into work/data, outputs in
    work/out, cached models in work/models (profile_run.py uses the same layout)."""
    return dict(RETAIL_DAGSTER_SOURCE="demo", RETAIL_DAGSTER_DATA=os.path.join(work, "data"),
                RETAIL_DAGSTER_OUT=os.path.join(work, "out"), RETAIL_DAGSTER_MODEL_CACHE=os.path.join(work, "models"),
                RETAIL_DAGSTER_DEMO_SKUS=str(args.skus), RETAIL_DAGSTER_DEMO_STORES=str(args.stores),
                RETAIL_DAGSTER_DEMO_WAREHOUSES=str(args.warehouses), RETAIL_DAGSTER_DEMO_DAYS=str(args.days),
                RETAIL_DAGSTER_DEMO_SEED=str(args.seed))


PEAK_RSS_GB: dict[str, float] = {}  # pass name -> the largest peak RSS of one run's process in that pass


def _reaped(proc: subprocess.Popen) -> tuple[bool, float]:
    """(whether the process has exited, its peak RSS in GB): reaped with wait4, which reports that child's own
    resource usage, so each pass's peak is its own (RUSAGE_CHILDREN only keeps the largest of all)."""
    pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
    if pid == 0:
        return False, 0.0
    proc.returncode = os.waitstatus_to_exitcode(status)
    return True, usage.ru_maxrss / 1024 ** 2


def run_groups(groups: list[str], date: str, env: dict, concurrency: int = 1,
               name: str = "warm") -> tuple[float, dict, bool, float]:
    """Run each group in its own process, at most `concurrency` at once; (wall seconds, per-step seconds summed
    over the groups, success, seconds of the runs' processes outside their steps summed over the groups). The
    largest peak RSS of one run goes to PEAK_RSS_GB[name]."""
    t0 = time.perf_counter()
    per_step: dict[str, float] = defaultdict(float)
    ok, outside = True, 0.0
    PEAK_RSS_GB[name] = 0.0
    cmd = [sys.executable, "-m", "retail_dagster.cli", "run", "--date", date, "--json"]
    pending, running = list(groups), []
    while pending or running:
        while pending and len(running) < concurrency:
            group = pending.pop(0)
            out, err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
            proc = subprocess.Popen(cmd + ["--groups", group], env=env, stdout=out, stderr=err, text=True)
            running.append((group, proc, time.perf_counter(), out, err))
        done = []
        for r in running:
            exited, rss = _reaped(r[1])
            if exited:
                done.append(r)
                PEAK_RSS_GB[name] = max(PEAK_RSS_GB[name], rss)
        if not done:
            time.sleep(0.02)
            continue
        for item in done:
            running.remove(item)
            group, proc, started, out, err = item
            seconds = time.perf_counter() - started
            out.seek(0)
            err.seek(0)
            stdout, stderr = out.read(), err.read()
            out.close()
            err.close()
            if proc.returncode != 0:
                ok = False
                print(stdout[-3000:], stderr[-3000:])
                continue
            summary = json.loads(stdout.strip().splitlines()[-1])
            steps = summary["groups"][group]["step_seconds"]
            for step, sec in steps.items():
                per_step[step] += sec
            outside += seconds - sum(steps.values())
            print(f"  {group}: {seconds:.1f}s as a process, {summary['groups'][group]['seconds']:.1f}s in the run")
    return time.perf_counter() - t0, dict(per_step), ok, outside


def run_preloaded(date: str, env: dict, workers: int, name: str) -> tuple[float, dict, bool]:
    """The day's groups through one `retail-dagster run --workers N`: each group's run is a process forked from a
    server that imported the code location and the steps' libraries once (as `PreloadedRunLauncher` starts a
    deployment's runs), at most `workers` at once, the cores shared between them. (wall seconds, the CLI's own start
    and the server's imports included; per-step seconds summed over the groups; success). Each run's peak RSS,
    the server's shared pages included, goes to PEAK_RSS_GB[name]."""
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "retail_dagster.cli", "run", "--date", date, "--json",
                           "--workers", str(workers)], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        print(done.stdout[-3000:], done.stderr[-3000:])
        return wall, {}, False
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    per_step: dict[str, float] = defaultdict(float)
    for group, g in summary["groups"].items():
        for step, sec in g["step_seconds"].items():
            per_step[step] += sec
        print(f"  {group}: {g['seconds']:.1f}s in the run, peak RSS {g['peak_rss_gb']:.2f} GB")
    PEAK_RSS_GB[name] = max(g["peak_rss_gb"] for g in summary["groups"].values())
    return wall, dict(per_step), summary["success"]


# what every run's process imports before it can do any work: the code location, then the steps' libraries
IMPORTS = "import retail_dagster.definitions, lightgbm, mlforecast"


def import_floor(env: dict, repeats: int = 3) -> float:
    """Median wall seconds of a fresh process that only imports what a daily run imports (IMPORTS): the part of
    every run's time that no change inside the steps can remove."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", IMPORTS], env=env, check=True)
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def _print_steps(per_step: dict) -> None:
    """Each step's seconds summed over the groups, the largest first."""
    for step, sec in sorted(per_step.items(), key=lambda kv: -kv[1]):
        print(f"  {step:<28} {sec:8.1f}s")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--skus", type=int, default=10000)
    ap.add_argument("--stores", type=int, default=10)
    ap.add_argument("--warehouses", type=int, default=2)
    ap.add_argument("--days", type=int, default=730)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--workdir", default=None, help="keep data, models and outputs here (default: a temp dir)")
    ap.add_argument("--skip-cold", action="store_true", help="models already cached in --workdir")
    ap.add_argument("--concurrency", type=int, default=os.cpu_count() or 1,
                    help="runs at once in the parallel pass (default: the cores; 1 = no parallel pass)")
    ap.add_argument("--cold-parallel", action="store_true",
                    help="also time a retraining day with --concurrency runs at once (empties the model cache)")
    args = ap.parse_args()

    work = args.workdir or tempfile.mkdtemp(prefix="pipeline_bench_")
    data = os.path.join(work, "data")
    env = {**os.environ, **workdir_env(work, args)}
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
    cold = cold_parallel = None
    cold_steps: dict = {}
    # one run at a time has the machine to itself: every core for its reader, BLAS and LightGBM
    senv = dict(env, **thread_env(os.cpu_count() or 1))
    if not args.skip_cold:
        print("cold run (trains and caches the models):")
        cold, cold_steps, ok, _ = run_groups(groups, date, senv, name="cold")
        print(f"cold run: {cold:.1f}s success={ok}")
        _print_steps(cold_steps)
    print("daily run with cached models, one group after the other:")
    wall, per_step, ok, overhead = run_groups(groups, date, senv)
    print(f"daily run: {wall:.1f}s for {len(groups)} groups, success={ok}, outside the steps {overhead:.1f}s")
    _print_steps(per_step)
    parallel = None
    penv = dict(env, **thread_env(max(1, (os.cpu_count() or 1) // args.concurrency)))
    if args.concurrency > 1:
        print(f"daily run with cached models, {args.concurrency} runs at once "
              f"({penv['OMP_NUM_THREADS']} BLAS/OpenMP thread(s) each):")
        parallel, _, pok, _ = run_groups(groups, date, penv, args.concurrency, name="parallel")
        ok &= pok
        print(f"parallel daily run: {parallel:.1f}s, success={pok}")
    print("daily run with cached models, each group's run forked from a preloaded server, one after the other:")
    preloaded, pre_steps, prok = run_preloaded(date, senv, 1, "preloaded")
    ok &= prok
    print(f"preloaded daily run: {preloaded:.1f}s, success={prok}")
    _print_steps(pre_steps)
    preloaded_parallel = None
    if args.concurrency > 1:
        print(f"daily run with cached models, forked from a preloaded server, {args.concurrency} runs at once:")
        preloaded_parallel, _, pprok = run_preloaded(date, senv, args.concurrency, "preloaded_parallel")
        ok &= pprok
        print(f"preloaded parallel daily run: {preloaded_parallel:.1f}s, success={pprok}")
    preloaded_cold_parallel = None
    if args.cold_parallel:
        shutil.rmtree(env["RETAIL_DAGSTER_MODEL_CACHE"], ignore_errors=True)
        print(f"retraining day, {args.concurrency} runs at once ({penv['OMP_NUM_THREADS']} thread(s) each), "
              "the model cache emptied:")
        cold_parallel, cp_steps, cpok, _ = run_groups(groups, date, penv, args.concurrency, name="cold_parallel")
        ok &= cpok
        print(f"parallel retraining day: {cold_parallel:.1f}s, success={cpok}")
        _print_steps(cp_steps)
        shutil.rmtree(env["RETAIL_DAGSTER_MODEL_CACHE"], ignore_errors=True)
        print(f"retraining day, forked from a preloaded server, {args.concurrency} runs at once, the model cache "
              "emptied:")
        preloaded_cold_parallel, pcp_steps, pcpok = run_preloaded(date, senv, args.concurrency,
                                                                  "preloaded_cold_parallel")
        ok &= pcpok
        print(f"preloaded parallel retraining day: {preloaded_cold_parallel:.1f}s, success={pcpok}")
        _print_steps(pcp_steps)
    rss_gb = max([resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024 ** 2, *PEAK_RSS_GB.values()])
    imports = import_floor(senv)
    print(f"imports of one run's process: {imports:.1f}s; for {len(groups)} runs {imports * len(groups):.1f}s "
          f"one after the other, {imports * len(groups) / max(args.concurrency, 1):.1f}s on {args.concurrency} "
          f"cores: a floor under wall_seconds and parallel_wall_seconds")
    print(f"peak RSS of a run {rss_gb:.2f} GB (" + ", ".join(f"{k} {v:.2f}" for k, v in PEAK_RSS_GB.items()) + ")")
    print(json.dumps({"skus": args.skus, "stores": args.stores, "wall_seconds": round(wall, 2),
                      "cold_wall_seconds": round(cold, 2) if cold is not None else None,
                      "parallel_wall_seconds": round(parallel, 2) if parallel is not None else None,
                      "cold_parallel_wall_seconds": round(cold_parallel, 2) if cold_parallel is not None else None,
                      "preloaded_wall_seconds": round(preloaded, 2),
                      "preloaded_parallel_wall_seconds":
                          round(preloaded_parallel, 2) if preloaded_parallel is not None else None,
                      "preloaded_per_asset_seconds": {k: round(v, 2) for k, v in pre_steps.items()},
                      "preloaded_cold_parallel_wall_seconds": round(preloaded_cold_parallel, 2)
                      if preloaded_cold_parallel is not None else None,
                      "overhead_seconds": round(overhead, 2), "concurrency": args.concurrency,
                      "import_seconds_per_run": round(imports, 2),
                      "data_seconds": round(gen_seconds, 2), "peak_rss_gb": round(rss_gb, 3),
                      "peak_rss_gb_by_pass": {k: round(v, 3) for k, v in PEAK_RSS_GB.items()},
                      "per_asset_seconds": {k: round(v, 2) for k, v in per_step.items()},
                      "cold_per_asset_seconds": {k: round(v, 2) for k, v in cold_steps.items()}, "success": ok}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
