"""A materialization killed with SIGKILL leaves no partial asset file and an audit attempt marked incomplete;
the rerun gives the same asset values as an uninterrupted run."""

from __future__ import annotations

import glob
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from retail_dagster.audit import audit_runs, read_audit

DATE, GROUP = "2026-11-25", "grocery"
ASSETS = ["demand_forecast", "price_recommendations", "transfer_plan"]


def _env(demo_path, out, cache):
    env = dict(os.environ)
    env.update(RETAIL_DAGSTER_SOURCE="files", RETAIL_DAGSTER_DATA=demo_path, RETAIL_DAGSTER_OUT=str(out),
               RETAIL_DAGSTER_AUDIT=str(out), RETAIL_DAGSTER_MODEL_CACHE=str(cache))
    env.pop("DAGSTER_HOME", None)
    return env


def _run_cli(demo_path, out, cache):
    return subprocess.Popen([sys.executable, "-m", "retail_dagster.cli", "run", "--date", DATE, "--groups", GROUP],
                            env=_env(demo_path, out, cache), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)


@pytest.mark.slow
def test_sigkill_mid_run_then_rerun_matches_clean_run(demo_path, tmp_path):
    cache = tmp_path / "models"
    clean_out, crash_out = tmp_path / "clean", tmp_path / "crash"
    clean = _run_cli(demo_path, clean_out, cache)  # also trains and caches the model
    assert clean.wait(timeout=600) == 0, clean.stdout.read().decode()[-3000:]

    proc = _run_cli(demo_path, crash_out, cache)
    started = str(crash_out / "audit" / "price_recommendations" / f"date={DATE}" / f"sku_group={GROUP}" / "run=*"
                  / "started*.json")
    deadline = time.time() + 300
    while not glob.glob(started) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)  # mid price_recommendations
    proc.wait(timeout=30)

    # no half-written files: every Parquet file present reads back; no temp files are left where readers look
    for path in glob.glob(str(crash_out / "**" / "*.parquet"), recursive=True):
        pd.read_parquet(path)
    assert not (crash_out / "price_recommendations" / DATE / f"{GROUP}.parquet").exists()
    assert not (crash_out / "transfer_plan").exists()

    runs = audit_runs(str(crash_out), DATE, group=GROUP)
    killed = runs[runs["asset"] == "price_recommendations"]
    assert len(killed) == 1 and not killed["complete"].iloc[0]
    assert read_audit(str(crash_out), DATE, group=GROUP, asset="price_recommendations").empty

    rerun = _run_cli(demo_path, crash_out, cache)
    assert rerun.wait(timeout=600) == 0, rerun.stdout.read().decode()[-3000:]
    for asset in ASSETS:
        a = crash_out / asset / DATE / f"{GROUP}.parquet"
        b = clean_out / asset / DATE / f"{GROUP}.parquet"
        pd.testing.assert_frame_equal(pd.read_parquet(a), pd.read_parquet(b))
        assert a.read_bytes() == b.read_bytes()
    runs = audit_runs(str(crash_out), DATE, group=GROUP)
    pr = runs[runs["asset"] == "price_recommendations"].sort_values("started_at")
    assert list(pr["complete"]) == [False, True]  # both attempts kept, the first marked incomplete
