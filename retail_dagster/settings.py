"""Deployment settings read from environment variables, so the same code runs locally, in CI and in a container.

| variable | default | meaning |
|---|---|---|
| RETAIL_DAGSTER_SOURCE | demo | input data source: `demo` (embedded generator), `files` (a folder or s3:// prefix of tables), `m5` |
| RETAIL_DAGSTER_DATA | ./data/demo | where the input tables live (for `demo`: where the generated set is cached) |
| RETAIL_DAGSTER_OUT | ./out | base path of asset values (local folder or s3://bucket/prefix) |
| RETAIL_DAGSTER_AUDIT | <OUT>/.. audit under the same base | base path of the audit trail (local folder or s3://bucket/prefix) |
| RETAIL_DAGSTER_DEMO_SKUS / _STORES / _WAREHOUSES / _DAYS / _SEED / _END_DATE | 200 / 6 / 1 / 730 / 7 / 2026-11-24 | demo size |
| RETAIL_DAGSTER_START_DATE | first date with 56 days of history | first partition date (override) |
| RETAIL_DAGSTER_MODEL_CACHE | ./.model_cache | local folder of cached forecast models |
| RETAIL_DAGSTER_MAX_STALENESS_DAYS | 0 | freshness tolerance: sales and inventory may end this many days before D-1 |
| AWS_ENDPOINT_URL_S3 | unset | S3 endpoint (moto or MinIO in tests and dev) |
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .core.demo import DEFAULT_END_DATE

MIN_HISTORY_DAYS = 56


@dataclass(frozen=True)
class DemoSize:
    n_skus: int = 200
    n_stores: int = 6
    n_warehouses: int = 1
    n_days: int = 730
    seed: int = 7
    end_date: str = DEFAULT_END_DATE


def demo_size_from_env() -> DemoSize:
    env = os.environ.get
    return DemoSize(
        n_skus=int(env("RETAIL_DAGSTER_DEMO_SKUS", 200)),
        n_stores=int(env("RETAIL_DAGSTER_DEMO_STORES", 6)),
        n_warehouses=int(env("RETAIL_DAGSTER_DEMO_WAREHOUSES", 1)),
        n_days=int(env("RETAIL_DAGSTER_DEMO_DAYS", 730)),
        seed=int(env("RETAIL_DAGSTER_DEMO_SEED", 7)),
        end_date=env("RETAIL_DAGSTER_DEMO_END_DATE", DEFAULT_END_DATE),
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
