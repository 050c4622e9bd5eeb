"""End to end through the real UI server: `dagster dev`, a partition backfill launched over GraphQL, every asset and
check recorded per partition, then the lineage page in headless Chromium with a screenshot."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from retail_dagster_tests.graphql import graphql
from retail_dagster_tests.test_backfill import REPO, SMALL_DEMO, planning_dates

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
JOB = "daily_pipeline"
# Two groups keep the backfill at 6 runs (each run is a fresh process that imports the whole stack, ~10 s of CPU
# before any work) so the test stays within a few minutes on 2 cores; "all groups" is then exactly these two.
GROUPS = "apparel,grocery"
STARTUP_TIMEOUT_S, BACKFILL_TIMEOUT_S = 180, 420
TERMINAL = {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}
# Instance for the test: runs queue two at a time (2 cores; the first day's runs train each group's model once and
# the later days reuse it instead of all training at once), no telemetry and no first-visit newsletter modal.
TEST_INSTANCE_YAML = """\
concurrency:
  runs:
    max_concurrent_runs: 2
telemetry:
  enabled: false
nux:
  enabled: false
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DagsterDev:
    """A `dagster dev` process group on a loopback port, with a small GraphQL client."""

    def __init__(self, tmp: Path):
        self.tmp, self.port = tmp, _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        home = tmp / "dagster_home"
        home.mkdir()
        (home / "dagster.yaml").write_text(TEST_INSTANCE_YAML)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RETAIL_DAGSTER_", "AWS_", "DAGSTER_"))}
        env.update(SMALL_DEMO, RETAIL_DAGSTER_SOURCE="demo", RETAIL_DAGSTER_GROUPS=GROUPS,
                   RETAIL_DAGSTER_DATA=str(tmp / "data"), RETAIL_DAGSTER_OUT=str(tmp / "out"),
                   RETAIL_DAGSTER_AUDIT=str(tmp / "audit"), RETAIL_DAGSTER_MODEL_CACHE=str(tmp / "models"),
                   DAGSTER_HOME=str(home), PYTHONWARNINGS="ignore")
        dagster = Path(sys.executable).parent / "dagster"
        self.log = open(tmp / "dagster_dev.log", "w")
        # own process group: dagster dev starts the webserver, the daemon, a code server and run workers;
        # killing the group stops them all
        self.proc = subprocess.Popen(
            [str(dagster), "dev", "-w", "workspace.yaml", "-p", str(self.port), "-h", "127.0.0.1"],
            cwd=REPO, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
            # a shell running us in the background may ignore SIGINT, and dagster dev maps SIGTERM onto its SIGINT
            # handler: give it back the default so that stop() can shut it down cleanly
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))

    def log_tail(self, n: int = 4000) -> str:
        self.log.flush()
        return (self.tmp / "dagster_dev.log").read_text()[-n:]

    def gql(self, query: str, variables: dict | None = None) -> dict:
        return graphql(self.url, query, variables)

    def wait_ready(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"dagster dev exited ({self.proc.returncode}):\n{self.log_tail()}"
            try:
                repos = self.gql("{ repositoriesOrError { ... on RepositoryConnection { nodes { name "
                                 "location { name } pipelines { name } } } } }")["repositoriesOrError"]["nodes"]
                if any(JOB in [p["name"] for p in r["pipelines"]] for r in repos):
                    return
            except (requests.RequestException, AssertionError, KeyError, TypeError):
                pass
            time.sleep(2)
        raise AssertionError(f"dagster dev did not serve the {JOB} job within {STARTUP_TIMEOUT_S}s:\n{self.log_tail()}")

    def stop(self) -> None:
        """Ask `dagster dev` to shut its children down (as Ctrl+C does), then kill whatever is left of the group."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # run workers or a code server that outlived the parent
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=10)
        self.log.close()


@pytest.fixture(scope="module")
def dagster_dev(tmp_path_factory):
    server = DagsterDev(tmp_path_factory.mktemp("e2e"))
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def repository_selector(server: DagsterDev) -> dict:
    repos = server.gql("{ repositoriesOrError { ... on RepositoryConnection { nodes { name location { name } "
                       "pipelines { name } } } } }")["repositoriesOrError"]["nodes"]
    repo = next(r for r in repos if JOB in [p["name"] for p in r["pipelines"]])
    return {"repositoryName": repo["name"], "repositoryLocationName": repo["location"]["name"]}


def job_assets_and_checks(server: DagsterDev, repo: dict) -> dict[str, list[str]]:
    """{asset path: [check names]} for every asset the job materializes, as the server sees them."""
    selector = {"pipelineName": JOB, **repo}
    nodes = server.gql(
        """query($p: PipelineSelector!) { assetNodes(pipeline: $p) { assetKey { path } isMaterializable
             assetChecksOrError(pipeline: $p) { ... on AssetChecks { checks { name } } } } }""",
        {"p": selector})["assetNodes"]
    return {"/".join(n["assetKey"]["path"]): [c["name"] for c in (n["assetChecksOrError"].get("checks") or [])]
            for n in nodes if n["isMaterializable"]}


def launch_backfill(server: DagsterDev, repo: dict, partitions: list[str]) -> str:
    result = server.gql(
        """mutation($p: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $p) {
             __typename ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message }
             ... on PartitionSetNotFoundError { message } ... on InvalidSubsetError { message } } }""",
        {"p": {"selector": {"partitionSetName": f"{JOB}_partition_set", "repositorySelector": repo},
               "partitionNames": partitions,
               # each run executes its steps in its own process instead of one process per step: the same
               # code, far less process start-up on 2 cores
               "runConfigData": {"execution": {"config": {"in_process": {}}}}}})["launchPartitionBackfill"]
    assert result["__typename"] == "LaunchBackfillSuccess", result
    return result["backfillId"]


def wait_for_backfill(server: DagsterDev, backfill_id: str) -> dict:
    query = """query($id: String!) { partitionBackfillOrError(backfillId: $id) { __typename
                 ... on PartitionBackfill { status numPartitions runs(limit: 1000) { runId status
                   tags { key value } } } ... on PythonError { message } } }"""
    deadline = time.monotonic() + BACKFILL_TIMEOUT_S
    backfill: dict = {}
    while time.monotonic() < deadline:
        backfill = server.gql(query, {"id": backfill_id})["partitionBackfillOrError"]
        assert backfill["__typename"] == "PartitionBackfill", backfill
        if backfill["status"] in TERMINAL:
            return backfill
        time.sleep(5)
    raise AssertionError(f"backfill {backfill_id} not finished in {BACKFILL_TIMEOUT_S}s: "
                         f"{[(r['status']) for r in backfill.get('runs', [])]}\n{server.log_tail()}")


def materialized_partitions(server: DagsterDev, asset: str, partitions: list[str]) -> set[str]:
    data = server.gql(
        """query($k: AssetKeyInput!, $parts: [String!]) { assetOrError(assetKey: $k) { __typename
             ... on Asset { assetMaterializations(partitions: $parts) { partition runId } } } }""",
        {"k": {"path": asset.split("/")}, "parts": partitions})["assetOrError"]
    return {m["partition"] for m in data.get("assetMaterializations", [])}


def evaluated_partitions(server: DagsterDev, asset: str, check: str,
                         partition_of_run: dict[str, str]) -> dict[str, bool]:
    """{partition: passed} of the check's evaluations.

    An evaluation names its partition only when the check spec itself is partitioned (AssetCheckSpec.partitions_def,
    a preview feature in 1.13); otherwise it is attributed to the partition of the run that produced it, which
    for one-partition runs is the same thing.
    """
    executions = server.gql(
        """query($k: AssetKeyInput!, $c: String!) { assetCheckExecutions(assetKey: $k, checkName: $c, limit: 1000) {
             runId partition evaluation { partition success } } }""",
        {"k": {"path": asset.split("/")}, "c": check})["assetCheckExecutions"]
    return {(e["evaluation"]["partition"] or e["partition"] or partition_of_run.get(e["runId"])):
            e["evaluation"]["success"] for e in executions if e["evaluation"] is not None}


def screenshot_lineage(url: str, assets: list[str], out: Path) -> str:
    """Open the global lineage page, expand every group (tree and graph), take a screenshot; return the page text.

    The graph's nodes show long names shortened ("price_re…endations"); the tree beside it lists them in full.
    The page's buttons carry no labels, so they are found by place: tree carets on the left, graph controls in
    the bottom-right corner (zoom in, zoom out, settings, ...).
    """
    from playwright.sync_api import sync_playwright

    width, height = 1920, 1300
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.goto(f"{url}/asset-groups", wait_until="domcontentloaded", timeout=90_000)
            page.wait_for_selector("text=Global asset lineage", timeout=90_000)
            page.wait_for_timeout(1500)
            skip = page.locator("text=Skip >> visible=true")  # first-visit modal, should nux be on
            if skip.count():
                skip.first.click()

            def buttons(where):
                found = []
                for i in range(page.locator("button").count()):
                    box = page.locator("button").nth(i).bounding_box()
                    if box and where(box):
                        found.append((page.locator("button").nth(i), box))
                return found

            # tree carets, bottom-up so that opening one does not move the next
            carets = buttons(lambda b: b["x"] < 320 and b["width"] < 24 and b["y"] > 90)
            for caret, _ in sorted(carets, key=lambda t: -t[1]["y"]):
                caret.click()
                page.wait_for_timeout(150)
            controls = sorted(buttons(lambda b: b["x"] > width - 100 and b["y"] > height - 420),
                              key=lambda t: t[1]["y"])
            for control, _ in controls:
                control.click()
                page.wait_for_timeout(400)
                expand = page.locator("text=Expand all groups >> visible=true")
                if expand.count():
                    expand.first.click()
                    break
                page.keyboard.press("Escape")
            page.keyboard.press("Escape")
            if len(controls) > 1:
                for _ in range(4):  # zoom out (second control from the top) until the graph fits the window
                    controls[1][0].click()
                    page.wait_for_timeout(300)
            for asset in assets:
                page.get_by_text(asset.split("/")[-1], exact=True).first.wait_for(timeout=60_000)
            page.wait_for_timeout(1000)  # let the layout animation settle before the picture
            page.screenshot(path=str(out), full_page=False)
            return page.inner_text("body")
        finally:
            browser.close()


def test_backfill_through_graphql_then_lineage_in_the_browser(dagster_dev, tmp_path):
    repo = repository_selector(dagster_dev)
    expected = job_assets_and_checks(dagster_dev, repo)
    assert expected, "the job materializes no assets"
    groups = GROUPS.split(",")
    partitions = [f"{d}|{g}" for d in planning_dates() for g in groups]

    backfill = wait_for_backfill(dagster_dev, launch_backfill(dagster_dev, repo, partitions))
    failed = [(r["runId"], [t["value"] for t in r["tags"] if t["key"] == "dagster/partition"])
              for r in backfill["runs"] if r["status"] != "SUCCESS"]
    assert backfill["status"] in ("COMPLETED", "COMPLETED_SUCCESS") and not failed, \
        f"backfill {backfill['status']}; failed runs {failed}\n{dagster_dev.log_tail()}"
    partition_of_run = {r["runId"]: next(t["value"] for t in r["tags"] if t["key"] == "dagster/partition")
                        for r in backfill["runs"]}
    assert sorted(partition_of_run.values()) == sorted(partitions)  # one run per partition

    for asset, checks in expected.items():
        assert materialized_partitions(dagster_dev, asset, partitions) == set(partitions), asset
        for check in checks:
            evaluated = evaluated_partitions(dagster_dev, asset, check, partition_of_run)
            missing = set(partitions) - set(evaluated)
            assert not missing, f"{asset}:{check} has no evaluation for {sorted(missing)}"

    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} not installed (make e2e-deps installs it): backfill checked, no screenshot")
    shot = tmp_path / "lineage.png"
    text = screenshot_lineage(dagster_dev.url, sorted(expected), shot)
    assert all(asset.split("/")[-1] in text for asset in expected)
    assert shot.stat().st_size > 10_000
    keep = REPO / "out" / "e2e"
    keep.mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, keep / "lineage.png")
    summary = {"partitions": partitions, "assets": expected, "backfill_status": backfill["status"]}
    (keep / "backfill.json").write_text(json.dumps(summary, indent=2))
