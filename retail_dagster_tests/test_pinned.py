"""Pinned behaviour: one small partition through the whole daily job, on the local engines and with every agent on
the fake Bedrock, compared with golden files. A refactor or a speed-up must leave every decision, check outcome and
audit record as it was; a change meant to move them (a better model) regenerates the golden files and shows the
difference in review:

    RETAIL_DAGSTER_UPDATE_PINNED=1 .venv/bin/python -m pytest retail_dagster_tests/test_pinned.py
"""

from __future__ import annotations

import json
import os

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from retail_dagster.partitions import partition_key
from retail_dagster.audit import audit_runs, read_audit
from retail_dagster.resources.bedrock import BedrockResource
from retail_dagster.testing.fake_bedrock import FakeReply, FakeRequest
from retail_dagster_tests.test_pipeline import PIPELINE, resources

ALL_BEDROCK = {"demand": "bedrock", "pricing": "bedrock", "rebalancing": "bedrock"}

DATE, GROUP = "2026-11-25", "grocery"
GOLDEN = os.path.join(os.path.dirname(__file__), "pinned")
UPDATE = os.environ.get("RETAIL_DAGSTER_UPDATE_PINNED") == "1"
DECISIONS = {"demand_forecast": ["sku_id", "location_id", "horizon_day"],
             "price_recommendations": ["sku_id", "location_id"],
             "transfer_plan": ["sku_id", "from_location", "to_location"]}
# run-specific audit columns: who ran it and when, not what was decided
VOLATILE = {"run_id", "attempt", "written_at", "started_at", "folder", "complete"}


def llm_model(req: FakeRequest) -> FakeReply:
    """A deterministic model that moves things within bounds: a 10% lift on every second series, the lowest
    candidate price for every third SKU-location, every other transfer trimmed to half (whole packs)."""
    rows = req.data_rows()
    items = []
    for row in rows:
        i = row["i"]
        if req.tool_name == "price_choices":
            items.append({"i": i, "p": min(c[0] for c in row["cands"]) if i % 3 == 0 else row["eng"], "r": "pin"})
        elif req.tool_name == "transfer_reviews":
            items.append({"i": i, "d": "approve" if i % 2 else "reject", "r": "pin"})
        else:
            items.append({"i": i, "m": 1.1 if i % 2 else 1.0, "r": "pin"})
    return FakeReply(tool_input={"items": items})


def _canonical(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Sorted by its keys, columns in name order, floats rounded to 4 decimals, dates as text."""
    frame = frame.copy()
    for col in frame.columns:
        if pd.api.types.is_datetime64_any_dtype(frame[col]):
            frame[col] = frame[col].dt.strftime("%Y-%m-%d")
        elif pd.api.types.is_float_dtype(frame[col]):
            frame[col] = frame[col].round(4)
        elif frame[col].dtype == object or isinstance(frame[col].dtype, pd.CategoricalDtype):
            frame[col] = frame[col].map(lambda v: v if isinstance(v, str) or v is None else json.dumps(
                v.tolist() if isinstance(v, np.ndarray) else v, sort_keys=True, default=str))
    keys = [k for k in keys if k in frame.columns]
    return frame[sorted(frame.columns)].sort_values(keys, kind="stable").reset_index(drop=True)


def pinned_outputs(result, out: str) -> dict[str, pd.DataFrame]:
    """Everything the refactor must not move: the three decision tables, every check outcome, the audit rows and
    the audit runs' engine, model, LLM usage, guardrail outcomes and input fingerprints."""
    tables = {asset: _canonical(pd.read_parquet(os.path.join(out, asset, DATE, f"{GROUP}.parquet")), keys)
              for asset, keys in DECISIONS.items()}
    checks = pd.DataFrame([{"asset": e.asset_key.to_user_string(), "check": e.check_name, "passed": e.passed,
                            "severity": str(e.severity.value), "blocking": bool(e.blocking)}
                           for e in result.get_asset_check_evaluations()])
    tables["checks"] = _canonical(checks, ["asset", "check"])
    records = read_audit(out, DATE, group=GROUP)
    keys = ["asset", "sku_id", "location_id", "from_location", "to_location"]
    tables["audit_records"] = _canonical(records.drop(columns=[c for c in VOLATILE if c in records.columns]), keys)
    runs = audit_runs(out, DATE, group=GROUP)
    tables["audit_runs"] = _canonical(runs.drop(columns=[c for c in VOLATILE | {"key_columns"} if c in runs.columns]),
                                      ["asset"])
    return tables


def compare_with_golden(name: str, tables: dict[str, pd.DataFrame]) -> None:
    folder = os.path.join(GOLDEN, name)
    if UPDATE:
        os.makedirs(folder, exist_ok=True)
        for table, frame in tables.items():
            frame.to_csv(os.path.join(folder, f"{table}.csv"), index=False)
        pytest.skip(f"golden files of {name!r} rewritten")
    for table, frame in tables.items():
        path = os.path.join(folder, f"{table}.csv")
        assert os.path.exists(path), f"no golden file {path}: regenerate (see the module docstring)"
        golden = pd.read_csv(path, keep_default_na=False, na_values=[""])
        got = pd.read_csv(pd.io.common.StringIO(frame.to_csv(index=False)), keep_default_na=False, na_values=[""])
        assert list(got.columns) == list(golden.columns), f"{name}/{table}: columns changed"
        assert len(got) == len(golden), f"{name}/{table}: {len(got)} rows, golden {len(golden)}"
        pd.testing.assert_frame_equal(got, golden, check_dtype=False, rtol=1e-5, atol=2e-4,
                                      obj=f"{name}/{table}")


@pytest.mark.slow
def test_local_engines_pinned(demo_path, model_cache, tmp_path):
    out = str(tmp_path / "out")
    result = dg.materialize(PIPELINE, partition_key=partition_key(DATE, GROUP),
                            resources=resources(demo_path, out, model_cache), raise_on_error=False)
    assert result.success
    compare_with_golden("local", pinned_outputs(result, out))


@pytest.mark.slow
def test_bedrock_agents_pinned(fake_bedrock, demo_path, model_cache, tmp_path):
    fake_bedrock.responder = llm_model
    llm = BedrockResource(endpoint_url=fake_bedrock.url, engines=ALL_BEDROCK, retry_mode="standard", max_attempts=2,
                          backoff_base_s=0.01, read_timeout_s=10, batch_size=40, max_concurrent_calls=2)
    out = str(tmp_path / "out")
    result = dg.materialize(PIPELINE, partition_key=partition_key(DATE, GROUP),
                            resources=resources(demo_path, out, model_cache, bedrock=llm),
                            raise_on_error=False)
    assert result.success
    compare_with_golden("bedrock", pinned_outputs(result, out))
