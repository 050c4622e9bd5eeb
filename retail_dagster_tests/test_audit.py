"""Audit trail: documented layout, append-only runs, SSE on S3 (moto), incomplete attempts, history, scrubbing."""

from __future__ import annotations

import json
import os

import boto3
import pandas as pd
import pytest

from retail_dagster.audit.layout import META_COLUMNS
from retail_dagster.audit.store import AuditStore
from retail_dagster.audit import AuditConflict, audit_changes, audit_runs, read_audit
from retail_dagster.audit.cli import audit_main
from retail_dagster.audit.scrub import scrub
from retail_dagster.resources.audit import AuditSink
# Until conftest.py imports them, the S3 fixtures come from here.
from retail_dagster_tests.s3_server import REGION

DAY, GROUP, ASSET = "2026-03-02", "grocery", "price_recommendations"
RUN_FILES = ["context.json", "manifest.json", "records.jsonl", "started.json"]


def _recs(price_s2: float = 5.49, engine: str = "numeric") -> pd.DataFrame:
    return pd.DataFrame({
        "sku_id": ["S1", "S1", "S2"],
        "location_id": ["L1", "L2", "L1"],
        "current_price": [4.99, 4.99, 5.00],
        "recommended_price": [5.29, 5.29, price_s2],
        "change_pct": [6.0, 6.0, round((price_s2 / 5.0 - 1) * 100, 2)],
        "reason": ["low stock", "low stock", "elastic demand"],
        "engine": [engine] * 3,
        "clamped": [False, False, True],
        "target_date": pd.to_datetime([DAY] * 3),
    })


def _ctx(engine="numeric", usd=0.0, forecast_fp="ab" * 32):
    return {"engine": engine, "model": "llama4-maverick" if engine == "llm" else None,
            "inputs": {"demand_forecast": forecast_fp, "inventory_snapshot": "cd" * 32},
            "llm": {"calls": 3, "input_tokens": 1200, "output_tokens": 300, "usd": usd},
            "guardrails": {"max_daily_change_pct": "passed", "map_price": "passed"}}


def _two_runs(sink: AuditSink):
    sink.write_records(ASSET, DAY, GROUP, "run-a", _recs(5.49), _ctx())
    sink.write_records(ASSET, DAY, GROUP, "run-b", _recs(5.79, "llm"), _ctx("llm", 0.0042, "ef" * 32))


def test_local_layout_manifest_and_two_runs_kept(tmp_path):
    sink = AuditSink(base_path=str(tmp_path))
    _two_runs(sink)
    part = tmp_path / "audit" / ASSET / f"date={DAY}" / f"sku_group={GROUP}"
    assert sorted(os.listdir(part)) == ["run=run-a", "run=run-b"]
    for run in ("run-a", "run-b"):
        folder = part / f"run={run}"
        assert sorted(os.listdir(folder)) == RUN_FILES
        manifest = json.loads((folder / "manifest.json").read_text())
        assert manifest["run_id"] == run and manifest["partition_date"] == DAY and manifest["attempt"] == 1
        lines = (folder / "records.jsonl").read_text().splitlines()
        assert len(lines) == 3 and json.loads(lines[0])["target_date"] == DAY
        import hashlib
        for f in manifest["files"]:
            assert hashlib.sha256((folder / f["name"]).read_bytes()).hexdigest() == f["sha256"]
        assert {f["name"]: f["rows"] for f in manifest["files"]}["records.jsonl"] == 3
        started = json.loads((folder / "started.json").read_text())
        assert started["run_id"] == run and started["started_at"] <= manifest["committed_at"]

    records = read_audit(str(tmp_path), DAY, GROUP)
    assert len(records) == 6 and records["complete"].all()
    assert records["run_id"].tolist() == ["run-a"] * 3 + ["run-b"] * 3
    assert set(META_COLUMNS) <= set(records.columns)

    changes = audit_changes(records)
    price = changes[changes["column"] == "recommended_price"]
    assert price[["key", "before", "after", "run_before", "run_after"]].values.tolist() == [
        ["sku_id=S2 location_id=L1 target_date=2026-03-02", 5.49, 5.79, "run-a", "run-b"]]
    assert set(changes["column"]) == {"recommended_price", "change_pct", "engine"}


def test_same_run_cannot_be_rewritten(tmp_path):
    sink = AuditSink(base_path=str(tmp_path))
    uri = sink.write_records(ASSET, DAY, GROUP, "run-a", _recs(), _ctx())
    before = open(uri, "rb").read()
    with pytest.raises(AuditConflict, match="append-only"):
        sink.write_records(ASSET, DAY, GROUP, "run-a", _recs(9.99), _ctx())
    assert open(uri, "rb").read() == before
    assert read_audit(str(tmp_path), DAY)["recommended_price"].max() == 5.49


def test_killed_attempt_is_incomplete_and_a_retry_commits_beside_it(tmp_path, monkeypatch):
    sink = AuditSink(base_path=str(tmp_path))
    sink.write_records(ASSET, DAY, GROUP, "run-a", _recs(5.49), _ctx())

    # run-b dies between writing its records and committing the manifest
    real_create = AuditStore.create

    def crash_on_manifest(self, key, data, content_type="application/json"):
        if key.endswith("manifest.json"):
            raise KeyboardInterrupt("killed")
        return real_create(self, key, data, content_type)

    monkeypatch.setattr(AuditStore, "create", crash_on_manifest)
    with pytest.raises(KeyboardInterrupt):
        sink.write_records(ASSET, DAY, GROUP, "run-b", _recs(7.77), _ctx())
    monkeypatch.undo()

    runs = audit_runs(str(tmp_path), DAY, GROUP)
    assert runs.set_index("run_id")["complete"].to_dict() == {"run-a": True, "run-b": False}
    assert "no manifest" in runs.set_index("run_id").loc["run-b", "problem"]
    records = read_audit(str(tmp_path), DAY, GROUP)
    assert not records.loc[records["run_id"] == "run-b", "complete"].any()
    assert audit_changes(records).empty                     # the killed attempt is not a decision

    lines = []
    assert audit_main(DAY, GROUP, path=str(tmp_path), echo=lines.append) == 0
    text = "\n".join(lines)
    assert "INCOMPLETE" in text and "run-b" in text and "no manifest" in text

    # a retry of the same run id (Dagster step retry) writes attempt-2 files; attempt 1's files stay untouched
    folder = tmp_path / "audit" / ASSET / f"date={DAY}" / f"sku_group={GROUP}" / "run=run-b"
    first_records = (folder / "records.jsonl").read_bytes()
    AuditSink(base_path=str(tmp_path)).write_records(ASSET, DAY, GROUP, "run-b", _recs(5.79), _ctx())
    assert sorted(os.listdir(folder)) == ["context.2.json", "context.json", "manifest.json", "records.2.jsonl",
                                          "records.jsonl", "started.2.json", "started.json"]
    assert (folder / "records.jsonl").read_bytes() == first_records
    records = read_audit(str(tmp_path), DAY, GROUP)
    assert records["complete"].all()
    assert records.loc[records["run_id"] == "run-b", "recommended_price"].max() == 5.79


def test_tampered_record_file_is_not_complete(tmp_path):
    sink = AuditSink(base_path=str(tmp_path))
    sink.write_records(ASSET, DAY, GROUP, "run-a", _recs(), _ctx())
    path = tmp_path / "audit" / ASSET / f"date={DAY}" / f"sku_group={GROUP}" / "run=run-a" / "records.jsonl"
    path.write_text(path.read_text().replace("5.29", "1.00"))
    runs = audit_runs(str(tmp_path), DAY)
    assert not runs["complete"].iloc[0] and "checksum" in runs["problem"].iloc[0]


def test_audit_main_shows_history_engine_cost_and_change(tmp_path):
    _two_runs(AuditSink(base_path=str(tmp_path)))
    lines = []
    assert audit_main(DAY, GROUP, sku="S2", path=str(tmp_path), echo=lines.append) == 0
    text = "\n".join(lines)
    for expected in ("run-a", "run-b", "complete", "numeric", "llm", "llama4-maverick", "0.0042",
                     "recommended_price", "5.49", "5.79", "guardrails", "inputs changed: demand_forecast",
                     "engine numeric -> llm"):
        assert expected in text, expected
    assert audit_main("2026-03-09", path=str(tmp_path), echo=lines.append) == 1
    assert "No audit records" in lines[-1]
    sku_rows = read_audit(str(tmp_path), DAY, sku="S2")
    assert sku_rows["sku_id"].unique().tolist() == ["S2"] and len(sku_rows) == 2


def _all_objects(client, bucket):
    return [o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])]


def test_s3_layout_sse_s3_and_read_back(moto_server, s3_client, s3_bucket):
    sink = AuditSink(base_path=f"s3://{s3_bucket}/prod", endpoint_url=moto_server)
    _two_runs(sink)
    keys = _all_objects(s3_client, s3_bucket)
    prefix = f"prod/audit/{ASSET}/date={DAY}/sku_group={GROUP}/"
    assert sorted(keys) == sorted(f"{prefix}run={r}/{f}" for r in ("run-a", "run-b") for f in RUN_FILES)
    for key in keys:
        assert s3_client.head_object(Bucket=s3_bucket, Key=key)["ServerSideEncryption"] == "AES256"
    records = read_audit(f"s3://{s3_bucket}/prod", DAY, GROUP, endpoint_url=moto_server)
    assert len(records) == 6 and records["complete"].all()
    change = audit_changes(records)
    assert change.loc[change["column"] == "recommended_price", "after"].tolist() == [5.79]
    # S3 itself refuses the overwrite (conditional put), not only the client-side check
    with pytest.raises(AuditConflict):
        sink._store().create(f"audit/{ASSET}/date={DAY}/sku_group={GROUP}/run=run-a/records.jsonl", b"{}\n")
    lines = []
    assert audit_main(DAY, s3_uri=f"s3://{s3_bucket}/prod", endpoint_url=moto_server, echo=lines.append) == 0
    assert "recommended_price" in "\n".join(lines)


def test_s3_sse_kms(moto_server, s3_client, s3_bucket):
    kms = boto3.client("kms", endpoint_url=moto_server, region_name=REGION)
    key_id = kms.create_key(Description="audit trail")["KeyMetadata"]["KeyId"]
    sink = AuditSink(base_path=f"s3://{s3_bucket}", endpoint_url=moto_server, sse="aws:kms", kms_key_id=key_id)
    sink.write_records(ASSET, DAY, GROUP, "run-k", _recs(), _ctx())
    keys = _all_objects(s3_client, s3_bucket)
    assert len(keys) == 4 and all(k.startswith("audit/") for k in keys)
    for key in keys:
        head = s3_client.head_object(Bucket=s3_bucket, Key=key)
        assert head["ServerSideEncryption"] == "aws:kms"
        assert key_id in head["SSEKMSKeyId"]
    assert read_audit(f"s3://{s3_bucket}", DAY, endpoint_url=moto_server)["complete"].all()


def test_bad_sse_setting_is_refused(tmp_path):
    with pytest.raises(ValueError, match="AES256"):
        AuditSink(base_path=str(tmp_path), sse="rot13").write_records(ASSET, DAY, GROUP, "r", _recs(), {})


FAKE_KEY_ID = "AKIAIOSFODNN7EXAMPLE"
FAKE_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
FAKE_SESSION = "FwoGZXIvYXdzEBYaDFAKEFAKEFAKEsessiontokenvalue0123456789"
FAKE_ENV_SECRET = "my-own-process-secret-value-42"


def test_no_secret_reaches_any_audit_file(tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_SESSION_TOKEN", FAKE_ENV_SECRET)
    recs = _recs().assign(
        reason=[f"key {FAKE_KEY_ID} leaked", "Authorization: AWS4-HMAC-SHA256 Credential=abc/2026/s3, Signature=ff",
                f"debug aws_secret_access_key={FAKE_SECRET} and {FAKE_ENV_SECRET}"],
        api_key=["k1", "k2", "k3"])
    context = {**_ctx("llm", 0.01),
               "aws_secret_access_key": FAKE_SECRET,
               "client": {"aws_session_token": FAKE_SESSION, "headers": {"Authorization": "Bearer abc.def"}},
               "notes": [f"token {FAKE_SESSION}", f"secret {FAKE_SECRET}"]}
    sink = AuditSink(base_path=str(tmp_path))
    sink.write_records(ASSET, DAY, GROUP, "run-s", recs, context)
    folder = tmp_path / "audit" / ASSET / f"date={DAY}" / f"sku_group={GROUP}" / "run=run-s"
    blob = b"".join((folder / f).read_bytes() for f in os.listdir(folder))
    for secret in (FAKE_KEY_ID, FAKE_SECRET, FAKE_SESSION, FAKE_ENV_SECRET, "AWS4-HMAC-SHA256", "abc.def",
                   "k1"):
        assert secret.encode() not in blob, secret
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["redactions"] >= 9
    # what must stay stays: usage counts, fingerprints, ordinary text
    saved_ctx = json.loads((folder / "context.json").read_text())
    assert saved_ctx["llm"] == {"calls": 3, "input_tokens": 1200, "output_tokens": 300, "usd": 0.01}
    assert saved_ctx["inputs"] == {"demand_forecast": "ab" * 32, "inventory_snapshot": "cd" * 32}
    back = read_audit(str(tmp_path), DAY)
    assert back["reason"].iloc[0] == "key [REDACTED] leaked"
    assert (back["api_key"] == "[REDACTED]").all()


def test_scrub_leaves_ordinary_values_alone():
    value = {"reason": "price up 6% on low stock", "run_id": "2f6c0b3e-8a39-4c5e-9a5e-2b0a3e7d9c11",
             "fingerprint": "0f" * 32, "max_tokens": 512, "kms_key_id": "alias/audit", "sku_id": "SKU000123"}
    assert scrub(value) == (value, 0)


def test_explicit_key_columns_for_transfers(tmp_path):
    sink = AuditSink(base_path=str(tmp_path))
    plan = pd.DataFrame({"sku_id": ["S1", "S1"], "from_location": ["W1", "W1"], "to_location": ["L1", "L2"],
                         "units": [12, 4], "engine": ["milp", "milp"]})
    keys = ["sku_id", "from_location", "to_location"]
    sink.write_records("transfer_plan", DAY, GROUP, "r1", plan, {"engine": "milp"}, key_columns=keys)
    sink.write_records("transfer_plan", DAY, GROUP, "r2", plan.assign(units=[12, 6]).iloc[[1]], {}, key_columns=keys)
    runs = audit_runs(str(tmp_path), DAY, asset="transfer_plan")
    assert runs["key_columns"].tolist() == [keys, keys]
    changes = audit_changes(read_audit(str(tmp_path), DAY, asset="transfer_plan"), {"transfer_plan": keys})
    got = changes[["key", "column", "before", "after"]].values.tolist()
    assert got == [["sku_id=S1 from_location=W1 to_location=L1", "(row)", "present", "absent"],
                   ["sku_id=S1 from_location=W1 to_location=L2", "units", 4, 6]]


def test_sink_as_dagster_resource_in_a_partitioned_asset(tmp_path):
    import dagster as dg

    parts = dg.MultiPartitionsDefinition({"date": dg.DailyPartitionsDefinition(start_date="2026-03-01"),
                                          "sku_group": dg.StaticPartitionsDefinition(["grocery"])})

    @dg.asset(partitions_def=parts)
    def price_recommendations(context, audit: AuditSink) -> None:
        dims = context.partition_key.keys_by_dimension
        audit.start_attempt("price_recommendations", dims["date"], dims["sku_group"], context.run_id)
        audit.write_records("price_recommendations", dims["date"], dims["sku_group"], context.run_id, _recs(),
                            _ctx())

    key = dg.MultiPartitionKey({"date": DAY, "sku_group": GROUP})
    results = [dg.materialize([price_recommendations], partition_key=key,
                              resources={"audit": AuditSink(base_path=str(tmp_path))}) for _ in range(2)]
    runs = audit_runs(str(tmp_path), DAY, GROUP)
    assert sorted(runs["run_id"]) == sorted(r.run_id for r in results)
    assert runs["complete"].all() and (runs["attempt"] == 1).all()
