"""cProfile of one daily run (one SKU group), per step and outside the steps (imports, run setup, summaries).

    python benchmarks/profile_run.py --workdir /tmp/bench --skus 2000 --stores 10 [--group grocery] [--top 15]

Uses the data, models and outputs of a `pipeline_bench.py --workdir` directory (run that first so the models are
cached: this profiles the normal daily run). Each step's own profiler runs while Dagster executes that step
(input loading, the asset body, output storing); everything else in the process, imports of the code location
included, goes to the `outside` profile. Prints each profile's top entries by internal time and by cumulative
time, and writes the `.prof` files under --out (open them with `python -m pstats` or snakeviz).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import sys
import time

from pipeline_bench import workdir_env  # the same workdir layout (benchmarks/ is on the path)

OUTSIDE = cProfile.Profile()
OUTSIDE.enable()


def _install_step_profiler(profiles: dict[str, cProfile.Profile]) -> None:
    """Run each step's events under a profiler of its own (outside profiler paused meanwhile)."""
    from dagster._core.execution.plan import execute_plan

    inner = execute_plan.core_dagster_event_sequence_for_step

    def profiled(step_context, *args, **kwargs):
        prof = profiles.setdefault(step_context.step.key, cProfile.Profile())
        gen = inner(step_context, *args, **kwargs)
        while True:
            OUTSIDE.disable()
            prof.enable()
            try:
                event = next(gen)
            except StopIteration:
                return
            finally:
                prof.disable()
                OUTSIDE.enable()
            yield event

    execute_plan.core_dagster_event_sequence_for_step = profiled


def top_entries(prof: cProfile.Profile, sort: str, n: int) -> str:
    out = io.StringIO()
    stats = pstats.Stats(prof, stream=out)
    stats.strip_dirs().sort_stats(sort).print_stats(n)
    lines = out.getvalue().splitlines()
    start = next((i for i, line in enumerate(lines) if line.lstrip().startswith("ncalls")), 0)
    total = next((line.strip() for line in lines if "function calls" in line), "")
    return "\n".join([total] + lines[start:])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--workdir", required=True, help="a pipeline_bench.py --workdir directory")
    ap.add_argument("--skus", type=int, default=2000)
    ap.add_argument("--stores", type=int, default=10)
    ap.add_argument("--warehouses", type=int, default=2)
    ap.add_argument("--days", type=int, default=730)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--group", default=None, help="SKU group (default: the first)")
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--out", default=None, help="folder for the .prof files (default: <workdir>/profiles)")
    args = ap.parse_args()

    work = os.path.abspath(args.workdir)
    os.environ.update(workdir_env(work, args))
    os.environ.pop("DAGSTER_HOME", None)
    t0 = time.perf_counter()
    profiles: dict[str, cProfile.Profile] = {}
    _install_step_profiler(profiles)
    from retail_dagster.cli import latest_plannable_date, run_pipeline
    from retail_dagster.partitions import partition_setup

    group = args.group or partition_setup()[1][0]
    summary = run_pipeline(latest_plannable_date(), [group])
    wall = time.perf_counter() - t0
    OUTSIDE.disable()
    out_dir = args.out or os.path.join(work, "profiles")
    os.makedirs(out_dir, exist_ok=True)
    step_total = {k: pstats.Stats(p).total_tt for k, p in profiles.items()}
    outside_total = pstats.Stats(OUTSIDE).total_tt
    print(f"group {group}: success={summary['success']}, wall {wall:.1f}s in this process; profiled seconds "
          f"(cProfile overhead included): outside {outside_total:.1f}, "
          + ", ".join(f"{k} {v:.1f}" for k, v in sorted(step_total.items(), key=lambda kv: -kv[1])))
    for name, prof in [("outside", OUTSIDE)] + sorted(profiles.items(), key=lambda kv: -step_total[kv[0]]):
        prof.dump_stats(os.path.join(out_dir, f"{name}.prof"))
        print(f"\n===== {name}: top {args.top} by internal time")
        print(top_entries(prof, "tottime", args.top))
        print(f"\n===== {name}: top {args.top} by cumulative time")
        print(top_entries(prof, "cumulative", args.top))
    return 0 if summary["success"] else 1


if __name__ == "__main__":
    sys.exit(main())
