"""Backfill equivalence: a multi-day backfill in one process writes exactly what day-by-day CLI runs write.

Partitions are independent by design (as-of inputs, models trained on a fixed weekly grid), so day D run inside
a backfill (one process, after D-1 warmed the in-process caches) or alone in a fresh `retail-dagster run` process
must give the same Parquet values. Both sides run in subprocesses because the definitions read their settings
(demo size, output folder, model cache) from environment variables at import time, and the test session has
already imported them.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

# ~75 s on 2 shared cores (4 fresh processes, 6 partition runs, 2 model trainings): in `make test`, not `make test-fast`
slow = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
SMALL_DEMO = {"RETAIL_DAGSTER_DEMO_SKUS": "40", "RETAIL_DAGSTER_DEMO_STORES": "3", "RETAIL_DAGSTER_DEMO_DAYS": "200"}
N_DAYS, N_GROUPS = 3, 1
# Columns that measure the run rather than the decision (wall-clock latencies, run ids, write times) differ
# between any two executions; every other column must be identical.
VOLATILE = re.compile(r"(_ms|_seconds|_at|^run_id|^timestamp|^created)$")

# One in-process run per partition, like a job backfill (one run per partition) but without a daemon, through
# the same code path as `retail-dagster run`; prints what the test needs to know as the last line.
BACKFILL_SCRIPT = r"""
import json, sys
from retail_dagster.cli import run_pipeline
from retail_dagster.definitions import defs
from retail_dagster.jobs import DAILY_PIPELINE
from retail_dagster.partitions import partition_setup

dates, n_groups = json.loads(sys.argv[1]), int(sys.argv[2])
groups = list(partition_setup()[1])[:n_groups]
job = defs.resolve_job_def(DAILY_PIPELINE)
assets = sorted({"/".join(k.path) for k in job.asset_layer.executable_asset_keys})
runs = {}
for date in dates:
    summary = run_pipeline(date, groups)
    runs[date] = {g: v["success"] for g, v in summary["groups"].items()}
print(json.dumps({"groups": groups, "assets": assets, "runs": runs}))
"""


def _env(tmp: Path, side: str) -> dict:
    """A clean environment: no inherited RETAIL_DAGSTER_/AWS_ settings, the small demo, this side's folders."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RETAIL_DAGSTER_", "AWS_", "DAGSTER_"))}
    home = tmp / side / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text("")
    env.update(SMALL_DEMO, RETAIL_DAGSTER_SOURCE="demo", RETAIL_DAGSTER_DATA=str(tmp / "data"),
               RETAIL_DAGSTER_OUT=str(tmp / side / "out"), RETAIL_DAGSTER_AUDIT=str(tmp / side / "audit"),
               RETAIL_DAGSTER_MODEL_CACHE=str(tmp / side / "models"), DAGSTER_HOME=str(home),
               PYTHONWARNINGS="ignore")
    return env


def _run(cmd: list[str], env: dict, timeout: int = 240) -> str:
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, \
        f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc.stdout


def _cli() -> list[str]:
    """The installed `retail-dagster` console script, or the same entry point through `python -m`."""
    script = Path(sys.executable).parent / "retail-dagster"
    return [str(script)] if script.exists() else [sys.executable, "-m", "retail_dagster.cli"]


def planning_dates() -> list[str]:
    """The latest N_DAYS consecutive plannable demo days that share one model-training anchor.

    Sharing an anchor keeps the test to one model training per side.
    """
    from retail_dagster.core.demo import DEFAULT_END_DATE

    last = pd.Timestamp(os.environ.get("RETAIL_DAGSTER_DEMO_END_DATE", DEFAULT_END_DATE)) + pd.Timedelta(days=1)
    try:
        from retail_dagster.core.forecasting import anchor_date
    except ImportError:  # no training grid: any consecutive days will do
        return [(last - pd.Timedelta(days=i)).strftime("%Y-%m-%d") for i in reversed(range(N_DAYS))]
    end = last
    while anchor_date(end - pd.Timedelta(days=N_DAYS - 1)) != anchor_date(end):
        end -= pd.Timedelta(days=1)
    return [(end - pd.Timedelta(days=i)).strftime("%Y-%m-%d") for i in reversed(range(N_DAYS))]


def _stored_value(base: Path, asset: str, date: str, group: str):
    for ext in (".parquet", ".json"):
        path = base.joinpath(*asset.split("/"), date, group + ext)
        if path.exists():
            return path, (pd.read_parquet(path) if ext == ".parquet" else json.loads(path.read_text()))
    return None, None


@pytest.fixture(scope="module")
def backfill_vs_single(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("backfill")
    dates = planning_dates()
    # Backfill side first: it also generates the shared demo data set, which the single-day runs then reuse.
    out = _run([sys.executable, "-c", BACKFILL_SCRIPT, json.dumps(dates), str(N_GROUPS)], _env(tmp, "backfill"))
    info = json.loads(out.strip().splitlines()[-1])
    # Single-day side: the documented CLI, one fresh process per day, oldest day first as the daily schedule
    # would run them (forecast_accuracy of day D scores the forecasts already stored for D-14..D-1, so the days
    # must be run in date order on both sides), with its own model cache, trained afresh.
    single_env = _env(tmp, "single")
    summaries = {}
    for date in dates:
        out = _run(_cli() + ["run", "--date", date, "--groups", ",".join(info["groups"]), "--json"], single_env)
        summaries[date] = json.loads(out.strip().splitlines()[-1])
    return {"tmp": tmp, "dates": dates, "info": info, "single": summaries}


@slow
def test_every_partition_run_succeeds(backfill_vs_single):
    info, dates = backfill_vs_single["info"], backfill_vs_single["dates"]
    assert sorted(info["runs"]) == sorted(dates)
    assert all(all(ok.values()) for ok in info["runs"].values()), info["runs"]
    assert all(s["success"] for s in backfill_vs_single["single"].values())


@slow
def test_backfill_writes_the_same_values_as_single_day_runs(backfill_vs_single):
    tmp, info = backfill_vs_single["tmp"], backfill_vs_single["info"]
    compared = 0
    for asset in info["assets"]:
        for date in backfill_vs_single["dates"]:
            for group in info["groups"]:
                path_b, value_b = _stored_value(tmp / "backfill" / "out", asset, date, group)
                path_s, value_s = _stored_value(tmp / "single" / "out", asset, date, group)
                assert path_b is not None and path_s is not None, \
                    f"{asset} {date}|{group}: backfill file {path_b}, single-day file {path_s}"
                if isinstance(value_b, pd.DataFrame):
                    volatile = [c for c in value_b.columns if VOLATILE.search(str(c))]
                    pd.testing.assert_frame_equal(value_b.drop(columns=volatile),
                                                  value_s.drop(columns=volatile, errors="ignore"),
                                                  check_exact=True, obj=f"{asset} {date}|{group}")
                else:
                    assert value_b == value_s, f"{asset} {date}|{group}"
                compared += 1
    assert compared == len(info["assets"]) * len(backfill_vs_single["dates"]) * len(info["groups"])


def test_partitioned_assets_run_one_partition_per_run():
    """The IO manager stores one value per partition, so no asset may ask for multi-partition runs."""
    from retail_dagster.definitions import defs

    offenders = {}
    for assets_def in defs.resolve_asset_graph().assets_defs:
        policy = assets_def.backfill_policy
        if assets_def.partitions_def is not None and policy is not None and policy.max_partitions_per_run != 1:
            offenders[str(assets_def.keys)] = policy
    assert not offenders, f"assets whose backfill policy puts several partitions in one run: {offenders}"
