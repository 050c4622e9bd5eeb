"""Runs in processes forked from a preloaded server (`retail_dagster/preload.py`): the same outputs as a run in a
process of its own, and, through the run launcher, the lifecycle a deployment relies on (success, a killed worker
reported failed to run monitoring, termination marked canceled).

Each scenario runs in a subprocess of its own, so that its environment (data, outputs, model cache) is the one
the preloaded server imports the code location with, as in a deployment."""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
import time

import pandas as pd
import pytest

DATE = "2026-11-25"


def _env(demo_path: str, out: str, model_cache: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RETAIL_DAGSTER_", "DAGSTER_HOME"))}
    env.update(RETAIL_DAGSTER_SOURCE="files", RETAIL_DAGSTER_DATA=demo_path, RETAIL_DAGSTER_OUT=out,
               RETAIL_DAGSTER_MODEL_CACHE=model_cache, RETAIL_DAGSTER_GROUPS="apparel,grocery,household",
               OMP_NUM_THREADS="2", PYTHONWARNINGS="ignore")
    return env


def _cli_run(env: dict, *extra: str) -> dict:
    done = subprocess.run([sys.executable, "-m", "retail_dagster.cli", "run", "--date", DATE, "--json", *extra],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _outputs(out: str, group: str | None = None) -> dict[str, pd.DataFrame]:
    files = sorted(glob.glob(os.path.join(out, "*", DATE, f"{group or '*'}.parquet")))
    return {os.path.relpath(f, out): pd.read_parquet(f) for f in files}


def _assert_same_outputs(a: dict, b: dict) -> None:
    assert a and sorted(a) == sorted(b)
    for name in a:
        pd.testing.assert_frame_equal(a[name], b[name], check_exact=True, obj=name)


@pytest.fixture(scope="module")
def one_process(demo_path, model_cache, tmp_path_factory):
    """The day's three groups one after the other in one process (the CLI's default)."""
    out = str(tmp_path_factory.mktemp("one_process"))
    return _cli_run(_env(demo_path, out, model_cache)), out


def test_workers_decide_exactly_as_one_process(one_process, demo_path, model_cache, tmp_path):
    summary, out = one_process
    forked = _cli_run(_env(demo_path, str(tmp_path), model_cache), "--workers", "2")
    assert summary["success"] and forked["success"]
    assert list(forked["groups"]) == ["apparel", "grocery", "household"]  # in the order asked, whatever finished first
    for group, g in forked["groups"].items():
        assert g["run_id"] != summary["groups"][group]["run_id"]
        assert set(g["step_seconds"]) == set(summary["groups"][group]["step_seconds"])
        assert g["peak_rss_gb"] > 0
        assert g["checks"] == summary["groups"][group]["checks"]
    # 2 cores, 2 at once: one thread a run, and the run left alone at the end is given both (same decisions)
    assert sorted(g["threads"] for g in forked["groups"].values()) == [1, 1, 2]
    _assert_same_outputs(_outputs(out), _outputs(str(tmp_path)))


def test_a_worker_that_dies_fails_its_group_only(one_process, demo_path, model_cache, tmp_path):
    """A run's process killed (as by the out-of-memory killer): that group is reported failed with the exit code,
    the other groups still run, and the command exits 1."""
    import signal

    proc = subprocess.Popen([sys.executable, "-m", "retail_dagster.cli", "run", "--date", DATE, "--json",
                             "--groups", "apparel,grocery", "--workers", "1"],
                            env=_env(demo_path, str(tmp_path), model_cache), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)

    def children(pid: int) -> list[int]:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]

    def is_python(pid: int) -> bool:  # a forked run, not a command a library runs while the server imports
        try:  # (dagster's croniter runs `file` on the interpreter at import, a short-lived child of the server)
            return os.path.realpath(f"/proc/{pid}/exe") == os.path.realpath(sys.executable)
        except OSError:
            return False

    victim, deadline = None, time.time() + 120
    while victim is None and time.time() < deadline:  # the first group's run: a child of the forkserver
        servers = children(proc.pid)
        runs = [c for s in servers for c in children(s) if is_python(c)] if servers else []
        victim = runs[0] if runs else None
        time.sleep(0.05)
    assert victim, "no run process appeared"
    os.kill(victim, signal.SIGKILL)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 1, err[-3000:]
    summary = json.loads(out.strip().splitlines()[-1])
    apparel, grocery = summary["groups"]["apparel"], summary["groups"]["grocery"]
    assert not summary["success"] and not apparel["success"]
    assert apparel["errors"] == ["the run's process exited with code -9"]
    assert grocery["success"]
    _assert_same_outputs(_outputs(one_process[1], "grocery"), _outputs(str(tmp_path), "grocery"))


def launcher_scenario(result_path: str) -> None:
    """Run in a subprocess by the test below: launch three partitions through PreloadedRunLauncher on a test
    instance and record what happened to each."""
    import signal

    import dagster as dg
    from dagster._core.execution.execute_in_process import merge_run_tags
    from dagster._core.launcher.base import WorkerStatus
    from dagster._core.test_utils import in_process_test_workspace, poll_for_finished_run, poll_for_step_start
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin

    import retail_dagster
    from retail_dagster.definitions import defs
    from retail_dagster.jobs import DAILY_PIPELINE
    from retail_dagster.partitions import partition_key
    from retail_dagster.launcher import PID_TAG, PreloadedRunLauncher
    from retail_dagster.schedules import IN_PROCESS_RUN_CONFIG  # as the daily schedule's runs

    job_def = defs.resolve_job_def(DAILY_PIPELINE)
    launcher = {"module": "retail_dagster.launcher", "class": "PreloadedRunLauncher", "config": {"threads_per_run": 1}}
    origin = LoadableTargetOrigin(executable_path=sys.executable, module_name="retail_dagster.definitions")
    found: dict = {}
    with dg.instance_for_test(overrides={"run_launcher": launcher}) as instance, \
            in_process_test_workspace(instance, origin) as workspace:
        location = next(iter(workspace.get_code_location_entries().values())).code_location
        remote_job = next(iter(location.get_repositories().values())).get_full_job(DAILY_PIPELINE)

        def launch(group: str) -> str:
            tags = merge_run_tags(job_def=job_def, partition_key=partition_key(DATE, group), tags=None,
                                  asset_selection=[], instance=instance, run_config=IN_PROCESS_RUN_CONFIG)
            run = instance.create_run_for_job(job_def=job_def, tags=tags, run_config=IN_PROCESS_RUN_CONFIG,
                                              remote_job_origin=remote_job.get_remote_origin(),
                                              job_code_origin=remote_job.get_python_origin())
            instance.launch_run(run.run_id, workspace)
            return run.run_id

        def started(run_id: str):
            deadline = time.time() + 120
            while time.time() < deadline:
                run = instance.get_run_by_id(run_id)
                if run.status.value == "STARTED" and PID_TAG in run.tags:
                    return run
                time.sleep(0.1)
            raise TimeoutError(run_id)

        def exited(run):
            """The launcher's health report once the run's process has exited."""
            deadline = time.time() + 60
            health = instance.run_launcher.check_run_worker_health(run)
            while health.status == WorkerStatus.RUNNING and time.time() < deadline:
                time.sleep(0.1)
                health = instance.run_launcher.check_run_worker_health(run)
            return health

        ok = launch("grocery")
        run = poll_for_finished_run(instance, ok, timeout=300)
        messages = [e.dagster_event.message or "" for e in instance.all_logs(ok) if e.is_dagster_event]
        found["ok"] = {"status": run.status.value, "pid": run.tags.get(PID_TAG), "parent_pid": os.getpid(),
                       "messages": messages, "health": exited(run).status.value}

        # a launcher that did not start the run (the daemon restarted) checks it by the pid in its tags
        restarted = PreloadedRunLauncher()
        restarted.register_instance(instance)

        killed = launch("apparel")
        run = started(killed)
        found["restarted_while_running"] = restarted.check_run_worker_health(run).status.value
        os.kill(int(run.tags[PID_TAG]), signal.SIGKILL)
        health = exited(run)
        found["restarted_after_kill"] = restarted.check_run_worker_health(run).msg
        found["killed"] = {"health": health.status.value, "msg": health.msg,
                           "said": [e.dagster_event.message or "" for e in instance.all_logs(killed)
                                    if e.is_dagster_event and e.dagster_event.event_type_value == "ENGINE_EVENT"]}

        canceled = launch("household")
        poll_for_step_start(instance, canceled, timeout=120)  # in a step, as a user cancels a run from the UI
        found["terminate_returned"] = instance.run_launcher.terminate(canceled)
        found["canceled"] = poll_for_finished_run(instance, canceled, timeout=120).status.value

        # new code deployed under a running server: the run replaces itself with a fresh `dagster api execute_run`
        os.utime(os.path.join(os.path.dirname(retail_dagster.__file__), "jobs.py"))
        fresh = launch("grocery")
        run = started(fresh)
        with open(f"/proc/{run.tags[PID_TAG]}/cmdline", "rb") as f:
            found["fresh_cmdline"] = f.read().decode().split("\0")
        found["fresh"] = poll_for_finished_run(instance, fresh, timeout=300).status.value
    with open(result_path, "w") as f:
        json.dump(found, f)


@pytest.mark.slow
def test_launcher_runs_partitions_in_preloaded_processes(one_process, demo_path, model_cache, tmp_path):
    out, result = str(tmp_path / "out"), str(tmp_path / "found.json")
    # the project's code from a copy, so that the scenario can "deploy new code" by touching a file of it
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    shutil.copytree(os.path.join(repo, "retail_dagster"), tmp_path / "code" / "retail_dagster",
                    ignore=shutil.ignore_patterns("__pycache__"))
    env = dict(_env(demo_path, out, model_cache), PYTHONPATH=os.pathsep.join([str(tmp_path / "code"), repo]))
    code = f"from retail_dagster_tests.test_preload import launcher_scenario; launcher_scenario({result!r})"
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=str(tmp_path), capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    found = json.load(open(result))

    ok = found["ok"]
    assert ok["status"] == "SUCCESS" and ok["health"] == "SUCCESS"
    assert any(m.endswith(f"Launched run in a preloaded worker process (pid: {ok['pid']}).") for m in ok["messages"])
    assert f"Started process for run (pid: {ok['pid']})." in ok["messages"]  # Dagster's run worker, in that process
    assert int(ok["pid"]) != ok["parent_pid"]
    _assert_same_outputs(_outputs(one_process[1], "grocery"), _outputs(out, "grocery"))

    # a worker killed mid-run: run monitoring is told it failed, and why
    assert found["killed"]["health"] == "FAILED", found["killed"]
    assert "signal 9" in found["killed"]["msg"]
    assert sum(m.endswith(found["killed"]["msg"]) for m in found["killed"]["said"]) == 1  # in its event log, once

    # after a daemon restart: the pid tag on this host says running, then gone
    assert found["restarted_while_running"] == "RUNNING"
    assert found["restarted_after_kill"].startswith("Run worker process (pid ") and "is gone" in \
        found["restarted_after_kill"]

    # terminate: SIGINT to the run's process, which Dagster's run worker turns into a canceled run
    assert found["terminate_returned"] is True
    assert found["canceled"] == "CANCELED"

    # a run launched after the code changed ran in a fresh process of Dagster's own run worker, and succeeded
    assert found["fresh_cmdline"][1:5] == ["-m", "dagster", "api", "execute_run"], found["fresh_cmdline"]
    assert found["fresh"] == "SUCCESS"
