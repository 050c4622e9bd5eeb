"""Shared fixtures: a small seeded demo data set, in memory and on disk."""

from __future__ import annotations

import pytest

from retail_dagster.core.contracts import validate_tables
from retail_dagster.core.demo import generate_demo, write_demo
from retail_dagster.testing.fake_bedrock import fake_bedrock  # noqa: F401  (fixtures for every module)
from retail_dagster_tests.s3_server import moto_server, s3_bucket, s3_client, s3_env  # noqa: F401

SMALL = dict(n_skus=60, n_stores=4, n_warehouses=1, n_days=420, seed=3)


@pytest.fixture(scope="session")
def demo():
    """DemoData (tables + truth) for a small network; tables already pass their contracts."""
    data = generate_demo(**SMALL)
    data.tables = validate_tables(data.tables)
    return data


@pytest.fixture(scope="session")
def demo_tables(demo):
    return demo.tables


@pytest.fixture(scope="session")
def demo_path(demo, tmp_path_factory):
    """The small demo data set written as Parquet (with truth/)."""
    path = tmp_path_factory.mktemp("demo_data")
    write_demo(demo, str(path))
    return str(path)


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory):
    """One model and elasticity cache for the session: both are keyed by the content of their training data, so
    every test that plans the same data shares one trained model (a test about training uses its own folder)."""
    return str(tmp_path_factory.mktemp("model_cache"))
