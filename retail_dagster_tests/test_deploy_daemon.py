"""The production deployment's moving parts, end to end, with real services on loopback.

A real PostgreSQL server (retail_dagster_tests/pg_server.py) holds the Dagster instance; the instance file is
deploy/dagster.yaml itself, with only what cannot exist here swapped out (no ECS: runs are local processes, started
by the daemon's PreloadedRunLauncher, the one-host launcher of deploy/README.md; no TLS on the local database) and
the timing knobs shortened. The code location runs as the
image's gRPC code server (the Dockerfile's CMD); `dagster-webserver` and `dagster-daemon` load it through
deploy/workspace.grpc.yaml, as in production. Asset values, the audit trail and the compute logs go to S3 on the
local moto server.

One module-scoped deployment, in phases:
  1. the daily schedule's tick for today runs (one run per group) while a backfill of 3 dates x all groups waits
     in the queue (its runs carry a tag whose concurrency limit is 0 until the test lifts it);
  2. Postgres is stopped and restarted with those runs queued: the daemon recovers (its supervisor restarts it if
     it exits, as ECS or Kubernetes would), the webserver reconnects, the queue is intact;
  3. the backfill runs; one run is killed with SIGKILL in the middle of demand_forecast and its retry
     (run_retries) finishes it;
  4. (last test) the tick is evaluated again, as after a daemon crash in the middle of it: it launches nothing.
"""

from __future__ import annotations

import datetime as dt
import io
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import requests
import yaml

from retail_dagster_tests.graphql import graphql
from retail_dagster_tests import pg_server
from retail_dagster_tests.s3_server import DUMMY_ENV

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
JOB, SCHEDULE = "daily_pipeline", "daily_planning_schedule"
GROUPS = ["apparel", "grocery"]  # "all groups" of the test's data set (RETAIL_DAGSTER_GROUPS)
SMALL_DEMO = {"RETAIL_DAGSTER_DEMO_SKUS": "40", "RETAIL_DAGSTER_DEMO_STORES": "3", "RETAIL_DAGSTER_DEMO_DAYS": "200"}
IN_PROCESS = {"execution": {"config": {"in_process": {}}}}
# Runs tagged hold=yes wait in the queue (a tag concurrency limit of 0) until the test changes the tag: queued
# runs the daemon cannot dequeue yet, as behind any other limit.
HOLD_TAG = "retail-dagster-test/hold"
STARTUP_TIMEOUT_S, PHASE_TIMEOUT_S = 180, 600
IN_PROGRESS = {"QUEUED", "NOT_STARTED", "STARTING", "STARTED", "CANCELING"}
PG_DOWN_SECONDS = 12

# Today's tick (RETAIL_DAGSTER_SCHEDULE_HOUR=0, UTC) plans today with data through yesterday.
TODAY = dt.datetime.now(dt.timezone.utc).date()
TICK_DATE = TODAY.isoformat()
BACKFILL_DATES = [(TODAY - dt.timedelta(days=k)).isoformat() for k in (3, 2, 1)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def partitions(dates) -> list[str]:
    return [f"{d}|{g}" for d in dates for g in GROUPS]


def instance_yaml(moto_url: str) -> str:
    """deploy/dagster.yaml with only the parts that need AWS or a cluster replaced; everything else as shipped."""
    cfg = yaml.safe_load((DEPLOY / "dagster.yaml").read_text())
    cfg["storage"]["postgres"]["postgres_db"]["params"] = {"sslmode": "disable"}  # the local server has no TLS
    # no ECS here: one host, so the one-host launcher (deploy/README.md): the daemon forks each run from a server
    # that imported the code once, and health-checks the run processes for run monitoring
    cfg["run_launcher"] = {"module": "retail_dagster.launcher", "class": "PreloadedRunLauncher",
                           "config": {"threads_per_run": 1}}
    cfg["compute_logs"]["config"]["endpoint_url"] = moto_url
    cfg["run_coordinator"]["config"]["dequeue_interval_seconds"] = 1
    runs = cfg["concurrency"]["runs"]
    runs["max_concurrent_runs"] = min(2, os.cpu_count() or 1)  # the machine's cores, not a cluster's
    runs["tag_concurrency_limits"].append({"key": HOLD_TAG, "value": "yes", "limit": 0})
    cfg["run_monitoring"].update(poll_interval_seconds=2, free_slots_after_run_end_seconds=2)
    cfg["nux"] = {"enabled": False}
    return yaml.safe_dump(cfg, sort_keys=False)


class Deployment:
    """Postgres + gRPC code server + webserver + supervised daemon, all on loopback."""

    def __init__(self, tmp: Path, pg: pg_server.PostgresServer, moto_url: str, bucket: str):
        self.tmp, self.pg, self.moto_url, self.bucket = tmp, pg, moto_url, bucket
        self.home = tmp / "dagster_home"
        self.home.mkdir()
        (self.home / "dagster.yaml").write_text(instance_yaml(moto_url))
        self.code_port, self.web_port = _free_port(), _free_port()
        self.url = f"http://127.0.0.1:{self.web_port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RETAIL_DAGSTER_", "AWS_", "DAGSTER_"))}
        env.update({**DUMMY_ENV, **SMALL_DEMO, **pg.env},
                   AWS_ENDPOINT_URL_S3=moto_url, AWS_CONFIG_FILE="/nonexistent/aws-config",
                   AWS_SHARED_CREDENTIALS_FILE="/nonexistent/aws-credentials",
                   RETAIL_DAGSTER_SOURCE="demo", RETAIL_DAGSTER_GROUPS=",".join(GROUPS),
                   RETAIL_DAGSTER_DEMO_END_DATE=(TODAY - dt.timedelta(days=1)).isoformat(),
                   RETAIL_DAGSTER_DATA=str(tmp / "data"), RETAIL_DAGSTER_MODEL_CACHE=str(tmp / "models"),
                   # the audit trail goes under <base>/audit/
                   RETAIL_DAGSTER_OUT=f"s3://{bucket}/assets", RETAIL_DAGSTER_AUDIT=f"s3://{bucket}",
                   RETAIL_DAGSTER_SCHEDULE_HOUR="0", RETAIL_DAGSTER_TIMEZONE="UTC",
                   DAGSTER_HOME=str(self.home), DAGSTER_COMPUTE_LOG_BUCKET=bucket,
                   DAGSTER_CODE_SERVER_HOST="127.0.0.1", DAGSTER_CODE_SERVER_PORT=str(self.code_port),
                   PYTHONWARNINGS="ignore")
        self.env = env
        self.bin = Path(sys.executable).parent
        self.procs: dict[str, subprocess.Popen] = {}
        self.logs = {name: open(tmp / f"{name}.log", "a") for name in ("code_server", "webserver", "daemon")}
        self.daemon_starts = 0
        self._supervise = threading.Event()
        self._supervisor: threading.Thread | None = None
        self._daemon_lock = threading.Lock()

    # -- processes ---------------------------------------------------------------------------------------------
    def _spawn(self, name: str, cmd: list[str]) -> subprocess.Popen:
        proc = subprocess.Popen(cmd, cwd=REPO, env=self.env, stdout=self.logs[name], stderr=subprocess.STDOUT,
                                start_new_session=True)
        self.procs[name] = proc
        return proc

    def code_server_cmd(self) -> list[str]:
        """The Dockerfile's CMD, on a loopback port instead of 0.0.0.0:4000."""
        cmd = dockerfile_cmd()
        assert cmd[:3] == ["dagster", "api", "grpc"], cmd
        cmd = [str(self.bin / "dagster"), *cmd[1:]]
        cmd[cmd.index("-h") + 1] = "127.0.0.1"
        cmd[cmd.index("-p") + 1] = str(self.code_port)
        return cmd

    def start_code_server(self) -> None:
        self._spawn("code_server", self.code_server_cmd())

    def start_webserver(self) -> None:
        self._spawn("webserver", [str(self.bin / "dagster-webserver"), "-w", str(DEPLOY / "workspace.grpc.yaml"),
                                  "-h", "127.0.0.1", "-p", str(self.web_port)])

    def _start_daemon(self) -> None:
        self.daemon_starts += 1
        self.logs["daemon"].write(f"\n--- daemon start #{self.daemon_starts} at {time.time():.1f}\n")
        self.logs["daemon"].flush()
        self._spawn("daemon", [str(self.bin / "dagster-daemon"), "run", "-w", str(DEPLOY / "workspace.grpc.yaml")])

    def start_daemon_supervised(self) -> None:
        """Start the daemon and restart it whenever it exits, as an ECS service or a K8s Deployment would."""
        with self._daemon_lock:
            self._start_daemon()
        self._supervise.set()

        def supervise():
            while self._supervise.is_set():
                time.sleep(1)
                with self._daemon_lock:
                    if self._supervise.is_set() and self.procs["daemon"].poll() is not None:
                        self._start_daemon()

        self._supervisor = threading.Thread(target=supervise, daemon=True)
        self._supervisor.start()

    def stop_daemon(self) -> None:
        self._supervise.clear()
        if self._supervisor:
            self._supervisor.join(timeout=10)
        with self._daemon_lock:
            self._stop("daemon")

    def _stop(self, name: str) -> None:
        proc = self.procs.get(name)
        if proc is None:
            return
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=20)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # anything the process group left behind
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)

    def close(self) -> None:
        self.stop_daemon()
        for name in ("webserver", "code_server"):
            self._stop(name)
        for log in self.logs.values():
            log.close()

    def log_tail(self, name: str, n: int = 3000) -> str:
        self.logs[name].flush()
        return (self.tmp / f"{name}.log").read_text()[-n:]

    def all_logs(self) -> str:
        return "\n".join(f"===== {name}\n{self.log_tail(name)}" for name in self.logs) + \
            f"\n===== postgres\n{self.pg.log_tail()}"

    # -- GraphQL -----------------------------------------------------------------------------------------------
    def gql(self, query: str, variables: dict | None = None) -> dict:
        return graphql(self.url, query, variables)

    def wait_ready(self) -> dict:
        """Repository selector of the code location, once the webserver serves it from the code server."""
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        last = None
        while time.monotonic() < deadline:
            for name in ("code_server", "webserver"):
                assert self.procs[name].poll() is None, f"{name} exited:\n{self.log_tail(name)}"
            try:
                nodes = self.gql("{ repositoriesOrError { ... on RepositoryConnection { nodes { name location "
                                 "{ name } pipelines { name } } } } }")["repositoriesOrError"]["nodes"]
                for repo in nodes:
                    if JOB in [p["name"] for p in repo["pipelines"]]:
                        return {"repositoryName": repo["name"], "repositoryLocationName": repo["location"]["name"]}
                last = nodes
            except (requests.RequestException, AssertionError, KeyError, TypeError) as exc:
                last = exc
            time.sleep(1)
        raise AssertionError(f"the webserver did not serve {JOB} in {STARTUP_TIMEOUT_S}s ({last}):\n"
                             f"{self.all_logs()}")


def dockerfile_cmd() -> list[str]:
    """The exec-form CMD of the Dockerfile."""
    import json

    from retail_dagster_tests.test_deploy_files import dockerfile_instructions

    cmds = [arg for word, arg in dockerfile_instructions() if word == "CMD"]
    assert len(cmds) == 1, cmds
    return json.loads(cmds[0])


# -- reading the instance from the test process ----------------------------------------------------------------
def run_records(instance, **filters):
    from dagster._core.storage.dagster_run import RunsFilter

    return list(instance.get_run_records(filters=RunsFilter(**filters)))


def run_partition(run) -> str | None:
    return run.tags.get("dagster/partition")


def engine_messages(instance, run_id: str) -> list[str]:
    from dagster._core.events import DagsterEventType

    return [(e.dagster_event.message if e.dagster_event else None) or e.user_message or ""
            for e in instance.all_logs(run_id, of_type=DagsterEventType.ENGINE_EVENT)]


def parent_pid(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def worker_pid(instance, run_id: str) -> int | None:
    for message in engine_messages(instance, run_id):
        m = re.search(r"Started process for run \(pid: (\d+)\)", message or "")
        if m:
            return int(m.group(1))
    return None


def materializations_by_partition(instance, run_ids) -> dict[tuple[str, str], list[str]]:
    """{(asset, partition): [run ids that materialized it]} over the given runs' event logs."""
    from dagster._core.events import DagsterEventType

    out: dict[tuple[str, str], list[str]] = {}
    for run_id in run_ids:
        for event in instance.all_logs(run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION):
            mat = event.asset_materialization
            out.setdefault(("/".join(mat.asset_key.path), str(mat.partition)), []).append(run_id)
    return out


def check_evaluations_by_partition(instance, runs) -> dict[tuple[str, str, str], list[bool]]:
    """{(asset, check, partition): [passed, ...]}; an evaluation belongs to its run's (single) partition."""
    from dagster._core.events import DagsterEventType

    out: dict[tuple[str, str, str], list[bool]] = {}
    for run in runs:
        for event in instance.all_logs(run.run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION):
            ev = event.dagster_event.event_specific_data
            key = ("/".join(ev.asset_key.path), ev.check_name, ev.partition or run_partition(run))
            out.setdefault(key, []).append(ev.passed)
    return out


def expected_assets_and_checks() -> tuple[list[str], dict[tuple[str, str], bool]]:
    """The job's assets, and {(asset, check): blocking} for their checks."""
    from retail_dagster.definitions import defs

    job = defs.resolve_job_def(JOB)
    assets = sorted("/".join(k.path) for k in job.asset_layer.executable_asset_keys)
    checks = {("/".join(spec.asset_key.path), spec.name): spec.blocking
              for a in defs.resolve_asset_graph().assets_defs for spec in a.check_specs
              if "/".join(spec.asset_key.path) in assets}
    return assets, checks


def wait_until(predicate, timeout: float, what: str, dep: Deployment, interval: float = 1.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}\n{dep.all_logs()}")


def settled(instance, wanted: list[str]) -> bool:
    """Every wanted partition has a successful run, and nothing is queued, running or waiting for a retry."""
    records = run_records(instance)
    if any(r.dagster_run.status.value in IN_PROGRESS for r in records):
        return False
    if any(r.dagster_run.status.value == "FAILURE" and r.dagster_run.tags.get("dagster/will_retry") == "true"
           and not any(c.dagster_run.parent_run_id == r.dagster_run.run_id for c in records)
           for r in records):
        return False
    done = {run_partition(r.dagster_run) for r in records if r.dagster_run.status.value == "SUCCESS"}
    return set(wanted) <= done


# -- the deployment --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def deployment(tmp_path_factory, moto_server, s3_client):
    reason = pg_server.unavailable_reason()
    if reason:
        pytest.skip(reason)
    from dagster import DagsterInstance
    from dagster._core.scheduler.instigation import InstigatorType, ScheduleInstigatorData

    import logging

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's per-request lines
    tmp = tmp_path_factory.mktemp("deploy")
    bucket = "retail-deploy-test"
    s3_client.create_bucket(Bucket=bucket)
    pg = pg_server.PostgresServer()
    patch = pytest.MonkeyPatch()
    dep = instance = None
    try:
        dep = Deployment(tmp, pg, moto_server, bucket)
        for key in ("DAGSTER_PG_HOST", "DAGSTER_PG_PORT", "DAGSTER_PG_DB", "DAGSTER_PG_USER", "DAGSTER_PG_PASSWORD",
                    "DAGSTER_COMPUTE_LOG_BUCKET"):
            patch.setenv(key, dep.env[key])
        # the bedrock pool as README's "after deploying" step sets it, through the CLI; 1 slot, so that steps
        # which may call Bedrock never overlap across the parallel runs
        out = subprocess.run([str(dep.bin / "dagster"), "instance", "concurrency", "set", "bedrock", "1"],
                             cwd=REPO, env=dep.env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stdout + out.stderr
        instance = DagsterInstance.from_config(str(dep.home))
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        dep.start_code_server()
        dep.start_webserver()
        repo = dep.wait_ready()

        # The schedule, started through the UI's API, then backdated to an hour before today's 00:00 tick: the
        # daemon, when it starts, finds that tick due and evaluates it, as it would have at 00:00.
        started = dep.gql("""mutation($s: ScheduleSelector!) { startSchedule(scheduleSelector: $s) {
                               __typename ... on ScheduleStateResult { scheduleState { status } }
                               ... on PythonError { message } } }""",
                          {"s": {**repo, "scheduleName": SCHEDULE}})["startSchedule"]
        assert started["__typename"] == "ScheduleStateResult", started
        state = next(s for s in instance.all_instigator_state(instigator_type=InstigatorType.SCHEDULE)
                     if s.name == SCHEDULE)
        tick_time = dt.datetime.combine(TODAY, dt.time(0), tzinfo=dt.timezone.utc)
        instance.update_instigator_state(state.with_data(ScheduleInstigatorData(
            cron_schedule=state.instigator_data.cron_schedule, start_timestamp=tick_time.timestamp() - 3600)))

        # The backfill: 3 dates x all groups, one run per partition, through the queue. Its runs carry the hold
        # tag: they wait in the queue while Postgres goes down and comes back.
        result = dep.gql(
            """mutation($p: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $p) { __typename
                 ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message }
                 ... on PartitionSetNotFoundError { message } ... on InvalidSubsetError { message } } }""",
            {"p": {"selector": {"partitionSetName": f"{JOB}_partition_set", "repositorySelector": repo},
                   "partitionNames": partitions(BACKFILL_DATES), "runConfigData": IN_PROCESS,
                   "tags": [{"key": HOLD_TAG, "value": "yes"}]}}
        )["launchPartitionBackfill"]
        assert result["__typename"] == "LaunchBackfillSuccess", result
        backfill_id = result["backfillId"]

        dep.start_daemon_supervised()

        # 1. The tick's runs complete while the backfill's runs wait in the queue.
        def tick_done_backfill_queued():
            runs = [r.dagster_run for r in run_records(instance)]
            tick = [r for r in runs if r.tags.get("dagster/schedule_name") == SCHEDULE]
            held = [r for r in runs if r.tags.get("dagster/backfill") == backfill_id]
            return (len(tick) == len(GROUPS) and all(r.status.value == "SUCCESS" for r in tick)
                    and len(held) == len(partitions(BACKFILL_DATES))
                    and all(r.status.value == "QUEUED" for r in held)) and held

        held = wait_until(tick_done_backfill_queued, PHASE_TIMEOUT_S, "the tick's runs, with the backfill queued", dep)

        # The tick's run workers are gone before Postgres stops (the outage is about queued runs, not running ones).
        tick_pids = [worker_pid(instance, r.dagster_run.run_id) for r in run_records(instance)
                     if r.dagster_run.tags.get("dagster/schedule_name") == SCHEDULE]
        wait_until(lambda: not any(p and os.path.exists(f"/proc/{p}") for p in tick_pids), 120,
                   "the tick's run workers to exit", dep)

        # 2. Postgres stops and comes back while those runs are queued; the daemon must recover (or be restarted
        # by its supervisor) and the webserver reconnect.
        starts_before = dep.daemon_starts
        dep.pg.stop("fast")
        time.sleep(PG_DOWN_SECONDS)
        dep.pg.start()
        restarted_at = time.time()

        def healthy():
            beats = instance.get_daemon_heartbeats()
            return bool(beats) and all(b.timestamp > restarted_at for b in beats.values())

        wait_until(healthy, 180, "fresh daemon heartbeats after the Postgres restart", dep, interval=2)
        webserver_ok = dep.gql("{ runsOrError(limit: 1) { __typename } }")["runsOrError"]["__typename"]
        still_queued = [instance.get_run_by_id(r.run_id).status.value for r in held]
        outage = {"held": [r.run_id for r in held], "queued_after_restart": still_queued,
                  "daemon_restarts": dep.daemon_starts - starts_before, "webserver": webserver_ok}
        for run in held:
            instance.add_run_tags(run.run_id, {HOLD_TAG: "no"})

        # 3. SIGKILL the first run worker seen inside demand_forecast (its audit "started" marker comes first).
        killed = None
        deadline = time.monotonic() + PHASE_TIMEOUT_S
        while killed is None and time.monotonic() < deadline:
            listing = s3_client.list_objects_v2(Bucket=bucket, Prefix="audit/demand_forecast/")
            markers = [o["Key"] for o in listing.get("Contents", []) if "/started" in o["Key"]
                       and f"date={TICK_DATE}/" not in o["Key"]]
            for key in markers:
                run_id = re.search(r"/run=([^/]+)/", key).group(1)
                pid = worker_pid(instance, run_id)
                if pid is None:
                    continue
                # only ever a run process of our own daemon: forked by its launcher's server, a child of the daemon
                assert parent_pid(parent_pid(pid)) == dep.procs["daemon"].pid, (pid, dep.procs["daemon"].pid)
                os.kill(pid, signal.SIGKILL)
                killed = {"run_id": run_id, "pid": pid, "marker": key}
                break
            time.sleep(0.2)
        assert killed, f"no run reached demand_forecast in {PHASE_TIMEOUT_S}s\n{dep.all_logs()}"

        wanted = partitions(BACKFILL_DATES + [TICK_DATE])
        wait_until(lambda: settled(instance, wanted), PHASE_TIMEOUT_S, "the backfill, the tick and the retry", dep)
        yield {"dep": dep, "instance": instance, "repo": repo, "backfill_id": backfill_id, "outage": outage,
               "killed": killed, "s3": s3_client, "bucket": bucket, "tick_time": tick_time}
    finally:
        if dep is not None:
            dep.close()
        if instance is not None:
            instance.dispose()
        pg.close()
        patch.undo()


def test_backfill_and_tick_materialize_every_partition_once_with_checks(deployment):
    instance, dep = deployment["instance"], deployment["dep"]
    records = run_records(instance)
    runs = [r.dagster_run for r in records]
    backfill_runs = [r for r in runs if r.tags.get("dagster/backfill") == deployment["backfill_id"]]
    tick_runs = [r for r in runs if r.tags.get("dagster/schedule_name") == SCHEDULE]
    # one run per partition (the killed one's retry is a run of its own, tagged with the same partition)
    first_attempts = [r for r in backfill_runs + tick_runs if r.parent_run_id is None]
    assert sorted(map(run_partition, first_attempts)) == sorted(partitions(BACKFILL_DATES + [TICK_DATE]))
    assert sorted(map(run_partition, tick_runs)) == sorted(partitions([TICK_DATE]))
    assert {r.tags.get("dagster/run_key") for r in tick_runs} == {f"{TICK_DATE}|{g}" for g in GROUPS}
    assert all(r.tags.get("trigger") == "daily_schedule" for r in tick_runs)

    assets, checks = expected_assets_and_checks()
    assert assets and checks
    successful = [r for r in runs if r.status.value == "SUCCESS"]
    mats = materializations_by_partition(instance, [r.run_id for r in runs])
    evals = check_evaluations_by_partition(instance, runs)
    for partition in partitions(BACKFILL_DATES + [TICK_DATE]):
        for asset in assets:
            assert len(mats.get((asset, partition), [])) == 1, (asset, partition, mats.get((asset, partition)))
        for (asset, check), blocking in checks.items():
            # evaluated once per partition; a blocking check must have passed (its asset's consumers ran), a
            # warning check may report either way on this small data set
            outcome = evals.get((asset, check, partition), [])
            assert len(outcome) == 1 and (outcome == [True] or not blocking), (asset, check, partition, outcome)
    # only the killed run failed; every run that ended, ended in success otherwise
    failed = [r.run_id for r in runs if r.status.value != "SUCCESS"]
    assert failed == [deployment["killed"]["run_id"]], (failed, dep.all_logs())
    assert len(successful) == len(runs) - 1

    # the per-group run limit (dagster/partition/sku_group, 1 per value) kept two runs of a group apart in time
    for group in GROUPS:
        spans = sorted((r.start_time, r.end_time) for r in records if r.start_time
                       and r.dagster_run.tags.get("dagster/partition/sku_group") == group)
        assert len(spans) >= len(BACKFILL_DATES) + 1
        assert all(s1 >= e0 for (_, e0), (s1, _) in zip(spans, spans[1:])), (group, spans)

    # the bedrock pool (1 slot, in Postgres) kept every Bedrock-capable step of all runs apart in time
    from dagster._core.events import DagsterEventType

    from retail_dagster.definitions import defs

    pool_steps = {n.name for n in defs.resolve_job_def(JOB).graph.node_defs if getattr(n, "pool", None) == "bedrock"}
    assert pool_steps, "no asset declares pool='bedrock'"
    spans = []
    for run in successful:
        starts, ends = {}, {}
        for e in instance.all_logs(run.run_id, of_type={DagsterEventType.STEP_START, DagsterEventType.STEP_SUCCESS}):
            (starts if e.dagster_event.event_type == DagsterEventType.STEP_START else ends)[e.step_key] = e.timestamp
        spans += [(starts[k], ends[k], run.run_id, k) for k in starts if k in ends and k in pool_steps]
    spans.sort()
    assert len(spans) >= len(successful)
    for (s0, e0, r0, k0), (s1, e1, r1, k1) in zip(spans, spans[1:]):
        assert s1 >= e0, f"{k0} of {r0} and {k1} of {r1} overlapped"


def test_killed_run_is_marked_failed_then_retried_to_completion(deployment):
    from retail_dagster.audit import audit_runs

    instance, killed, s3 = deployment["instance"], deployment["killed"], deployment["s3"]
    run = instance.get_run_by_id(killed["run_id"])
    assert run.status.value == "FAILURE"
    messages = " ".join(m or "" for m in engine_messages(instance, run.run_id))
    assert "signal 9" in messages or "SIGKILL" in messages or "exit code -9" in messages, messages
    retries = [r.dagster_run for r in run_records(instance) if r.dagster_run.parent_run_id == run.run_id]
    assert len(retries) == 1, retries
    retry = retries[0]
    assert retry.status.value == "SUCCESS"
    assert retry.tags.get("dagster/retry_number") == "1"
    assert run_partition(retry) == run_partition(run)

    # audit: the killed attempt incomplete, the retry complete
    date, group = run_partition(run).split("|")
    trail = audit_runs(f"s3://{deployment['bucket']}", date, group=group, asset="demand_forecast",
                       endpoint_url=deployment["dep"].moto_url)
    by_run = dict(zip(trail["run_id"], trail["complete"]))
    assert by_run == {run.run_id: False, retry.run_id: True}, trail

    # no partial output: every stored asset value reads back in full as Parquet
    paginator = s3.get_paginator("list_objects_v2")
    keys = [o["Key"] for page in paginator.paginate(Bucket=deployment["bucket"], Prefix="assets/")
            for o in page.get("Contents", [])]
    assert keys and all(k.endswith((".parquet", ".json")) for k in keys), keys
    for key in keys:
        if key.endswith(".parquet"):
            pd.read_parquet(io.BytesIO(s3.get_object(Bucket=deployment["bucket"], Key=key)["Body"].read()))
    assert f"assets/demand_forecast/{date}/{group}.parquet" in keys


def test_tick_evaluated_again_launches_nothing(deployment):
    """The daemon re-does a tick it was in the middle of when it died; run keys make that launch nothing."""
    from dagster._core.scheduler.instigation import InstigatorType, ScheduleInstigatorData, TickStatus

    dep, instance = deployment["dep"], deployment["instance"]
    state = next(s for s in instance.all_instigator_state(instigator_type=InstigatorType.SCHEDULE)
                 if s.name == SCHEDULE)
    ticks = instance.get_ticks(state.instigator_origin_id, state.selector_id)
    assert [t.status for t in ticks] == [TickStatus.SUCCESS]
    tick = ticks[0]
    assert tick.timestamp == deployment["tick_time"].timestamp() and len(tick.run_ids) == len(GROUPS)
    before = {r.dagster_run.run_id for r in run_records(instance)}

    # the daemon "dies" with the tick in progress: stopped, tick back to STARTED, last iteration forgotten
    dep.stop_daemon()
    instance.update_tick(tick.with_status(TickStatus.STARTED))
    instance.update_instigator_state(state.with_data(ScheduleInstigatorData(
        cron_schedule=state.instigator_data.cron_schedule, start_timestamp=state.instigator_data.start_timestamp)))
    dep.start_daemon_supervised()

    def redone():
        t = instance.get_ticks(state.instigator_origin_id, state.selector_id)
        return t if t and t[0].status != TickStatus.STARTED else None

    after_ticks = wait_until(redone, 120, "the tick to be evaluated again", dep)
    assert all(t.timestamp == tick.timestamp for t in after_ticks), after_ticks  # the same tick, nothing newer
    assert after_ticks[0].status in (TickStatus.SKIPPED, TickStatus.SUCCESS), after_ticks[0]
    time.sleep(3)  # a launched run would be queued by now
    assert {r.dagster_run.run_id for r in run_records(instance)} == before


def test_postgres_restart_while_runs_are_queued(deployment):
    """The backfill's runs sat in the queue through a Postgres stop/start; afterwards each ran once and succeeded."""
    instance, outage = deployment["instance"], deployment["outage"]
    assert outage["queued_after_restart"] == ["QUEUED"] * len(outage["held"])
    assert outage["webserver"] == "Runs"
    print(f"daemon processes started after the outage began: {outage['daemon_restarts']}")
    retries = {r.dagster_run.parent_run_id for r in run_records(instance) if r.dagster_run.parent_run_id}
    for run_id in outage["held"]:
        run = instance.get_run_by_id(run_id)
        # none twice: one run worker per run; the killed one was finished by its retry, not re-run in place
        starts = [m for m in engine_messages(instance, run_id) if "Started process for run" in m]
        assert len(starts) == 1, (run_id, starts)
        assert run.status.value == "SUCCESS" or (run_id == deployment["killed"]["run_id"] and run_id in retries)
