"""The deployment files parse and name only settings that exist (checked against the installed dagster, dagster-aws
and dagster-postgres schemas); the Dockerfile builds a non-root image without secrets whose command is the gRPC
code server; the Helm values agree with the Dockerfile and the instance file.

No Docker engine or Kubernetes cluster here: what needs one (building the image, `helm template`) is not run.
The gRPC code server itself is started from the Dockerfile's CMD in test_deploy_daemon.py.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
PG_ENV = {"DAGSTER_PG_HOST": "db.internal", "DAGSTER_PG_PORT": "5432", "DAGSTER_PG_DB": "dagster",
          "DAGSTER_PG_USER": "dagster", "DAGSTER_PG_PASSWORD": "not-a-real-password"}
SECRET_WORDS = re.compile(r"(PASSWORD|SECRET|TOKEN|ACCESS_KEY|PRIVATE_KEY|CREDENTIAL)", re.I)


def _instance_env(monkeypatch):
    for key, value in {**PG_ENV, "DAGSTER_RUN_TASK_DEFINITION": "retail-dagster-run:1",
                       "DAGSTER_ECS_CLUSTER": "retail", "DAGSTER_PG_PASSWORD_SECRET_ARN": "arn:x",
                       "DAGSTER_COMPUTE_LOG_BUCKET": "logs", "AWS_REGION": "eu-west-1"}.items():
        monkeypatch.setenv(key, value)


def _validate_class_config(block: dict, expected_class: str) -> None:
    """Resolve module/class as Dagster would and validate `config` against the class's own schema."""
    import importlib

    from dagster._config import process_config
    from dagster._config.field import resolve_to_config_type

    module = importlib.import_module(block["module"])
    klass = getattr(module, block["class"])
    assert klass.__name__ == expected_class
    result = process_config(resolve_to_config_type(klass.config_type()), block.get("config", {}))
    assert result.success, [e.message for e in result.errors]


def test_instance_file_validates_against_dagster_schemas(tmp_path, monkeypatch):
    from dagster._core.instance.config import dagster_instance_config

    _instance_env(monkeypatch)
    shutil.copy(DEPLOY / "dagster.yaml", tmp_path / "dagster.yaml")
    config, _ = dagster_instance_config(str(tmp_path))
    # every production concern is present, not just valid
    for key in ("storage", "run_coordinator", "run_launcher", "concurrency", "run_monitoring", "run_retries",
                "compute_logs"):
        assert key in config, key
    assert config["run_monitoring"]["free_slots_after_run_end_seconds"] > 0
    assert config["run_retries"]["enabled"] and config["run_retries"]["max_retries"] >= 1
    raw = yaml.safe_load((DEPLOY / "dagster.yaml").read_text())
    _validate_class_config(raw["run_launcher"], "EcsRunLauncher")
    _validate_class_config(raw["run_coordinator"], "QueuedRunCoordinator")
    _validate_class_config(raw["compute_logs"], "S3ComputeLogManager")
    storage = {"module": "dagster_postgres", "class": "DagsterPostgresStorage", "config": raw["storage"]["postgres"]}
    _validate_class_config(storage, "DagsterPostgresStorage")


def test_instance_file_builds_a_postgres_url_with_the_installed_driver(monkeypatch):
    """The storage URL names psycopg2 (what dagster-postgres installs), and SQLAlchemy can load that driver."""
    import sqlalchemy
    from dagster._config import process_config
    from dagster._config.field import resolve_to_config_type
    from dagster_postgres.storage import DagsterPostgresStorage
    from dagster_postgres.utils import pg_url_from_config

    _instance_env(monkeypatch)
    raw = yaml.safe_load((DEPLOY / "dagster.yaml").read_text())
    resolved = process_config(resolve_to_config_type(DagsterPostgresStorage.config_type()), raw["storage"]["postgres"])
    url = pg_url_from_config(resolved.value)
    assert url.startswith("postgresql+psycopg2://dagster:not-a-real-password@db.internal:5432/dagster?")
    engine = sqlalchemy.create_engine(url)  # imports the DBAPI module; connects lazily
    assert engine.dialect.driver == "psycopg2"
    engine.dispose()


@pytest.mark.parametrize("name", ["workspace.yaml", "deploy/workspace.grpc.yaml"])
def test_workspace_files_validate(name, monkeypatch):
    from dagster._config import process_config
    from dagster._core.workspace.config_schema import WORKSPACE_CONFIG_SCHEMA

    monkeypatch.setenv("DAGSTER_CODE_SERVER_HOST", "retail-dagster")
    monkeypatch.setenv("DAGSTER_CODE_SERVER_PORT", "4000")
    result = process_config(WORKSPACE_CONFIG_SCHEMA, yaml.safe_load((REPO / name).read_text()))
    assert result.success, [e.message for e in result.errors]


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", (REPO / "Dockerfile").read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile_is_slim_python_311_non_root_without_secrets():
    ins = dockerfile_instructions()
    assert ins[0] == ("FROM", "python:3.11-slim")
    users = [arg for word, arg in ins if word == "USER"]
    assert users and users[-1] not in ("root", "0", "0:0")
    # the last USER comes after the last RUN (nothing later runs as root) and before CMD
    last = {word: i for i, (word, _) in enumerate(ins)}
    assert last["USER"] > last["RUN"] and last["USER"] < last["CMD"]
    for word, arg in ins:
        if word in ("ENV", "ARG", "LABEL"):
            assert not SECRET_WORDS.search(arg), f"{word} {arg}"
    copied = [arg.split()[:-1] for word, arg in ins if word == "COPY"]
    assert all((REPO / src).exists() for srcs in copied for src in srcs), copied
    # the build context holds only what the image copies: no .env, no credentials file, no data
    ignore = (REPO / ".dockerignore").read_text().splitlines()
    assert "*" in ignore and {"!pyproject.toml", "!retail_dagster/"} <= set(ignore)


def test_dockerfile_cmd_is_the_grpc_code_server_for_the_project():
    cmds = [arg for word, arg in dockerfile_instructions() if word == "CMD"]
    assert len(cmds) == 1
    cmd = json.loads(cmds[0])  # exec form: no shell between the container's PID 1 and the server
    assert cmd[:3] == ["dagster", "api", "grpc"]
    assert cmd[cmd.index("-m") + 1] == "retail_dagster.definitions"
    assert cmd[cmd.index("-h") + 1] == "0.0.0.0"
    port = int(cmd[cmd.index("-p") + 1])
    assert f"EXPOSE {port}" in (REPO / "Dockerfile").read_text()
    from dagster._cli.api import grpc_command

    # every option the CMD passes exists on the installed `dagster api grpc`
    known = {opt for p in grpc_command.params for opt in p.opts}
    assert {a for a in cmd[3:] if a.startswith("-")} <= known


def test_helm_values_agree_with_the_dockerfile_and_the_instance_file():
    values = yaml.safe_load((DEPLOY / "helm-values.yaml").read_text())
    cmd = json.loads(next(arg for word, arg in dockerfile_instructions() if word == "CMD"))
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    # the chart runs `dagster api grpc <args> -h 0.0.0.0 -p <port>`: the same code location as the image's CMD
    rest, it = [], iter(cmd[3:])
    for arg in it:
        if arg in ("-h", "-p"):
            next(it)
        else:
            rest.append(arg)
    assert deployment["dagsterApiGrpcArgs"] == rest
    assert deployment["port"] == int(cmd[cmd.index("-p") + 1])
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    assert deployment["includeConfigInLaunchedRuns"]["enabled"] is True

    instance = yaml.safe_load((DEPLOY / "dagster.yaml").read_text())
    inst_runs = instance["concurrency"]["runs"]
    helm_runs = values["concurrency"]["runs"]
    assert helm_runs["maxConcurrentRuns"] == inst_runs["max_concurrent_runs"]
    assert helm_runs["tagConcurrencyLimits"] == inst_runs["tag_concurrency_limits"]
    assert values["concurrency"]["pools"] == {"defaultLimit": instance["concurrency"]["pools"]["default_limit"],
                                              "granularity": instance["concurrency"]["pools"]["granularity"]}
    monitoring = values["dagsterDaemon"]["runMonitoring"]
    assert monitoring["startTimeoutSeconds"] == instance["run_monitoring"]["start_timeout_seconds"]
    assert monitoring["freeSlotsAfterRunEndSeconds"] == instance["run_monitoring"]["free_slots_after_run_end_seconds"]
    retries = values["dagsterDaemon"]["runRetries"]
    assert (retries["maxRetries"], retries["retryOnAssetOrOpFailure"]) == (
        instance["run_retries"]["max_retries"], instance["run_retries"]["retry_on_asset_or_op_failure"])
    pg = values["postgresql"]
    assert pg["postgresqlScheme"] == instance["storage"]["postgres"]["postgres_db"]["scheme"]
    assert pg["postgresqlParams"] == instance["storage"]["postgres"]["postgres_db"]["params"]
    # every RETAIL_DAGSTER_* variable the ECS launcher forwards is set for the K8s code server and its runs too
    forwarded = {v for v in instance["run_launcher"]["config"]["env_vars"] if v.startswith("RETAIL_DAGSTER_")}
    assert forwarded <= set(deployment["env"])


def test_no_secret_values_in_deployment_files():
    """Passwords and keys come from the environment / Secrets Manager / Kubernetes Secrets, never from these files."""
    for path in [DEPLOY / "dagster.yaml", DEPLOY / "helm-values.yaml", DEPLOY / "workspace.grpc.yaml",
                 REPO / "Dockerfile"]:
        text = path.read_text()
        assert not re.search(r"AKIA[0-9A-Z]{16}", text), path  # AWS access key ids
        data = yaml.safe_load(text) if path.suffix == ".yaml" else None

        def walk(node, trail=()):
            if isinstance(node, dict):
                for k, v in node.items():
                    walk(v, trail + (str(k),))
            elif isinstance(node, list):
                for v in node:
                    walk(v, trail)
            elif trail and SECRET_WORDS.search(trail[-1]) and not trail[-1].endswith("SecretName"):
                # a secret-named key holds an indirection ({env: VAR}, a Secret's name), never a literal value
                assert not isinstance(node, str), (path, trail, node)

        if data is not None:
            walk(data)
