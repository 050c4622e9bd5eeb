"""Deployment settings read from environment variables, so the same code runs locally, in CI and in a container.

| variable | default | meaning |
|---|---|---|
| RETAIL_DAGSTER_SOURCE | demo | input source: `demo` (embedded generator), `files` (folder or s3:// prefix), `m5` |
| RETAIL_DAGSTER_DATA | ./data/demo | where the input tables live (for `demo`: where the generated set is cached) |
| RETAIL_DAGSTER_OUT | ./out | base path of asset values (local folder or s3://bucket/prefix) |
| RETAIL_DAGSTER_AUDIT | <OUT> | base of the audit trail (audit/ under it; local folder or s3://bucket/prefix) |
| RETAIL_DAGSTER_DEMO_SKUS / _STORES / _WAREHOUSES / _DAYS / _SEED / _END_DATE | core.demo.DemoSize | demo size |
| RETAIL_DAGSTER_START_DATE | first date with 56 days of history | first partition date (override) |
| RETAIL_DAGSTER_MODEL_CACHE | ./.model_cache | local folder of cached forecast models |
| RETAIL_DAGSTER_MAX_STALENESS_DAYS | 0 | freshness tolerance: sales and inventory may end this many days before D-1 |
| AWS_ENDPOINT_URL_S3 | unset | S3 endpoint (moto or MinIO in tests and dev) |
| RETAIL_DAGSTER_METADATA_CHARTS | 1 | 0 = no charts in asset metadata (the pilot's many runs need none) |
"""

from __future__ import annotations

import os

from .core.demo import DemoSize

MIN_HISTORY_DAYS = 56


def demo_size_from_env() -> DemoSize:
    env = os.environ.get
    d = DemoSize()
    return DemoSize(
        n_skus=int(env("RETAIL_DAGSTER_DEMO_SKUS", d.n_skus)),
        n_stores=int(env("RETAIL_DAGSTER_DEMO_STORES", d.n_stores)),
        n_warehouses=int(env("RETAIL_DAGSTER_DEMO_WAREHOUSES", d.n_warehouses)),
        n_days=int(env("RETAIL_DAGSTER_DEMO_DAYS", d.n_days)),
        seed=int(env("RETAIL_DAGSTER_DEMO_SEED", d.seed)),
        end_date=env("RETAIL_DAGSTER_DEMO_END_DATE", d.end_date),
    )


def source_kind() -> str:
    return os.environ.get("RETAIL_DAGSTER_SOURCE", "demo")


def data_path() -> str:
    return os.environ.get("RETAIL_DAGSTER_DATA", os.path.abspath("data/demo"))


def out_path() -> str:
    return os.environ.get("RETAIL_DAGSTER_OUT", os.path.abspath("out"))


def model_cache_path() -> str:
    """Local folder for trained forecast models (per data set, SKU group and training anchor)."""
    return os.environ.get("RETAIL_DAGSTER_MODEL_CACHE", os.path.abspath(".model_cache"))


def audit_path() -> str:
    return os.environ.get("RETAIL_DAGSTER_AUDIT", out_path())


def metadata_charts() -> bool:
    """Whether assets attach charts to their metadata (the pilot's many runs skip them)."""
    return os.environ.get("RETAIL_DAGSTER_METADATA_CHARTS", "1") != "0"


class SettingsError(ValueError):
    """Settings (environment variables) that cannot work: raised before any asset writes anything."""


_INT_SETTINGS = {"RETAIL_DAGSTER_DEMO_SKUS": 1, "RETAIL_DAGSTER_DEMO_STORES": 1, "RETAIL_DAGSTER_DEMO_WAREHOUSES": 0,
                 "RETAIL_DAGSTER_DEMO_DAYS": MIN_HISTORY_DAYS + 1, "RETAIL_DAGSTER_DEMO_SEED": 0,
                 "RETAIL_DAGSTER_MAX_STALENESS_DAYS": 0}  # name -> smallest allowed value


def settings_problems(env: dict | None = None) -> list[str]:
    """Every problem with the environment settings, each naming the variable, its value and what it must be."""
    env = dict(os.environ if env is None else env)
    problems = []
    from .agents.registry import agent_names

    for agent in agent_names():
        name = f"RETAIL_DAGSTER_{agent.upper()}_ENGINE"
        value = env.get(name)
        if value and value.strip().lower() not in ("local", "bedrock"):
            problems.append(f"{name}={value!r} must be 'local' or 'bedrock'")
    kind = env.get("RETAIL_DAGSTER_SOURCE")
    if kind and kind not in ("demo", "files", "m5"):
        problems.append(f"RETAIL_DAGSTER_SOURCE={kind!r} must be 'demo', 'files' or 'm5'")
    for name, low in _INT_SETTINGS.items():
        value = env.get(name)
        if value is None or value == "":
            continue
        try:
            ok = int(value) >= low
        except ValueError:
            ok = False
        if not ok:
            problems.append(f"{name}={value!r} must be a whole number >= {low}")
    for name in ("RETAIL_DAGSTER_START_DATE", "RETAIL_DAGSTER_DEMO_END_DATE"):
        value = env.get(name)
        if value:
            try:
                import pandas as pd

                pd.Timestamp(value)
            except (ValueError, TypeError):
                problems.append(f"{name}={value!r} must be a date (YYYY-MM-DD)")
    dry = env.get("RETAIL_DAGSTER_LLM_DRY_RUN")
    if dry not in (None, "", "0", "1"):
        problems.append(f"RETAIL_DAGSTER_LLM_DRY_RUN={dry!r} must be 0 or 1")
    groups = env.get("RETAIL_DAGSTER_GROUPS")
    if groups:
        from .core.contracts import GROUP_NAME_RULE, is_valid_group_name

        bad = [g.strip() for g in groups.split(",") if g.strip() and not is_valid_group_name(g.strip())]
        if bad:
            problems.append(f"RETAIL_DAGSTER_GROUPS names {bad}: {GROUP_NAME_RULE}")
    return problems


def check_settings(env: dict | None = None) -> None:
    """Raise SettingsError (one paragraph naming every bad variable) when a setting cannot work."""
    problems = settings_problems(env)
    if problems:
        raise SettingsError(f"{len(problems)} settings problem(s): " + "; ".join(problems)
                            + ". Fix the environment and run again; nothing was written.")
