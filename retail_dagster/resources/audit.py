"""The audit trail resource: every agent asset records its decisions, and how they were made, append-only (local
folder or S3 with SSE). Layout, scrubbing, storage and reading live in retail_dagster/audit/."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

import dagster as dg
import pandas as pd
from pydantic import Field, PrivateAttr

from ..audit.layout import (FORMAT, KEY_CANDIDATES, MANIFEST, SSE_CHOICES, STARTED_RE, AuditConflict, _attempt_name,
                            _day, _json_bytes, _sha256, _utc_now, records_jsonl, run_folder)
from ..audit.scrub import scrub, scrub_frame
from ..audit.store import AuditStore


@dataclass(frozen=True)
class AuditAttempt:
    folder: str          # full path or s3:// URI of the run folder
    key: str             # folder relative to the base
    attempt: int
    started_at: str
    asset: str
    partition_date: str
    sku_group: str
    run_id: str


class AuditSink(dg.ConfigurableResource):
    """Append-only decision audit trail under <base_path>/audit/, a local folder or an s3:// prefix (SSE on)."""

    base_path: str = Field(default="out", description="local folder or s3://bucket/prefix; records go under audit/")
    endpoint_url: Optional[str] = Field(default=None, description="S3 endpoint (moto/MinIO); None = AWS default")
    region_name: Optional[str] = Field(default=None, description="S3 region; None = AWS_DEFAULT_REGION")
    sse: str = Field(default="AES256", description="S3 server-side encryption: AES256 (SSE-S3) or aws:kms")
    kms_key_id: Optional[str] = Field(default=None, description="KMS key id/ARN/alias when sse=aws:kms "
                                                                "(None = the account's aws/s3 key)")

    _store_cache: Any = PrivateAttr(default=None)
    _attempts: dict = PrivateAttr(default_factory=dict)

    def _store(self) -> AuditStore:
        if self.sse not in SSE_CHOICES:
            raise ValueError(f"AuditSink.sse must be one of {SSE_CHOICES}, got {self.sse!r}")
        if self._store_cache is None:
            self._store_cache = AuditStore(self.base_path, self.endpoint_url, self.region_name, self.sse,
                                           self.kms_key_id)
        return self._store_cache

    def start_attempt(self, asset: str, partition_date: Any, sku_group: str, run_id: str,
                      extra: Optional[Mapping[str, Any]] = None) -> AuditAttempt:
        """Write started.json (started.<n>.json on a retry within the same run) before any decision is recorded.

        Raises AuditConflict if this run already committed a manifest for this asset and partition.
        """
        store = self._store()
        key = run_folder(asset, partition_date, sku_group, run_id)
        if store.exists(f"{key}/{MANIFEST}"):
            raise AuditConflict(f"run {run_id} already committed audit records for {asset} "
                                f"{_day(partition_date)}|{sku_group} ({store.uri(key)}); the trail is append-only")
        previous = [int(m.group(1) or 1) for f in store.list_files(key) if (m := STARTED_RE.match(f))]
        attempt = max(previous, default=0) + 1
        started_at = _utc_now()
        payload, _ = scrub({
            "format": FORMAT, "asset": asset, "partition_date": _day(partition_date), "sku_group": sku_group,
            "run_id": run_id, "attempt": attempt, "started_at": started_at, "host": socket.gethostname(),
            "pid": os.getpid(), **dict(extra or {})})
        store.create(f"{key}/{_attempt_name('started', '.json', attempt)}", _json_bytes(payload))
        handle = AuditAttempt(store.uri(key), key, attempt, started_at, asset, _day(partition_date), sku_group,
                              run_id)
        self._attempts[key] = handle
        return handle

    def write_records(self, asset: str, partition_date: Any, sku_group: str, run_id: str, records: pd.DataFrame,
                      context: Optional[Mapping[str, Any]] = None,
                      key_columns: Optional[Sequence[str]] = None) -> str:
        """Record one run's decisions for one partition, then commit with manifest.json. Returns the manifest URI.

        `context`: what the decisions were made from and how, e.g. {"inputs": fingerprints(...), "engine": ...,
        "model": ..., "llm": {"calls", "input_tokens", "output_tokens", "usd"}, "guardrails": {...}}.
        Secret-looking keys and strings are redacted from records and context before anything is written.
        """
        if not isinstance(records, pd.DataFrame):
            raise TypeError(f"records must be a pandas DataFrame, got {type(records).__name__}")
        store = self._store()
        key = run_folder(asset, partition_date, sku_group, run_id)
        handle = self._attempts.get(key) or self.start_attempt(asset, partition_date, sku_group, run_id)
        clean, n_rec = scrub_frame(records)
        ctx, n_ctx = scrub(dict(context or {}))
        keys = list(key_columns) if key_columns else [c for c in KEY_CANDIDATES if c in clean.columns]
        files = []
        for stem, ext, data, rows in (
                ("records", ".jsonl", records_jsonl(clean), len(clean)),
                ("context", ".json", _json_bytes(ctx), None)):
            name = _attempt_name(stem, ext, handle.attempt)
            store.create(f"{key}/{name}", data, "application/x-ndjson" if ext == ".jsonl" else "application/json")
            files.append({"name": name, "rows": rows, "bytes": len(data), "sha256": _sha256(data)})
        manifest = {
            "format": FORMAT, "asset": asset, "partition_date": _day(partition_date), "sku_group": sku_group,
            "run_id": run_id, "attempt": handle.attempt, "started_at": handle.started_at,
            "committed_at": _utc_now(), "files": files, "key_columns": keys, "redactions": n_rec + n_ctx,
        }
        # The commit point: until this file exists the run folder is an incomplete attempt.
        store.create(f"{key}/{MANIFEST}", _json_bytes(manifest))
        self._attempts.pop(key, None)
        return store.uri(f"{key}/{MANIFEST}")
