"""Append-only audit trail of decisions (local folder or S3 with SSE), and the reader behind `retail-dagster audit`.

One folder per run and partition, never overwritten: `<base>/audit/<asset>/date=<D>/sku_group=<G>/run=<run_id>/`
holding started.json, records.jsonl, context.json and, written last, manifest.json. See docs/audit.md.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import io
import json
import os
import re
import socket
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

import dagster as dg
import numpy as np
import pandas as pd
from pydantic import Field, PrivateAttr

from ..core.loading import is_s3, make_s3_client, split_s3
from ..core.files import TMP_PREFIX, synced_temp_file
from .io_manager import _check_segment

AUDIT_DIR = "audit"
FORMAT = "retail_dagster.audit/1"
MANIFEST = "manifest.json"
REDACTED = "[REDACTED]"
# Columns the reader adds to every record.
META_COLUMNS = ["asset", "partition_date", "sku_group", "run_id", "attempt", "complete", "written_at"]
# Columns that identify one decision row, by asset kind; the first present ones form the key when a writer
# did not say (forecasts: sku-location-target day; prices: sku-location; transfers: sku-lane).
KEY_CANDIDATES = ["sku_id", "location_id", "from_location", "to_location", "target_date", "ship_date", "agent",
                  "model"]
SSE_CHOICES = ("AES256", "aws:kms")


class AuditConflict(FileExistsError):
    """An audit file already exists: the trail is append-only, so the write is refused."""


# ---- secret scrubbing ------------------------------------------------------------------------------------------
# Key names whose values are secrets. Deliberately not a bare "token" substring: LLM usage has input_tokens.
SECRET_KEY_RE = re.compile(
    r"(?i)(secret|passw(or)?d|authori[sz]ation|credential|api[-_]?key|private[-_]?key|access[-_]?key"
    r"|(access|session|security|refresh|auth|id|bearer|api)[-_]?token|^token$|cookie|signature)")
SECRET_VALUE_RE = re.compile(
    r"(?:"
    r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA|ABIA|ACCA)[A-Z0-9]{16}\b"      # AWS access key ids
    r"|AWS4-HMAC-SHA256[^\n\"']*"                                                  # SigV4 Authorization header
    r"|(?i:\bbearer\s+[A-Za-z0-9\-._~+/]+=*)"                                       # bearer tokens
    r"|(?i:\b(?:aws_secret_access_key|aws_session_token|aws_security_token|secret_access_key|session_token"
    r"|x-amz-security-token|password|api_key)\b\s*[=:]\s*[\"']?[^\s\"',;]+)"        # key=value in free text
    r"|(?:FwoGZXIvYXdz|IQoJb3JpZ2lu)[A-Za-z0-9/+=]+"                                 # STS session tokens
    r"|(?<![A-Za-z0-9/+=])(?=[A-Za-z0-9/+=]{0,39}[A-Z])(?=[A-Za-z0-9/+=]{0,39}[a-z])"
    r"(?=[A-Za-z0-9/+=]{0,39}[0-9])[A-Za-z0-9/+=]{40}(?![A-Za-z0-9/+=])"             # 40-char secret keys
    r"|[A-Za-z0-9/+=]{100,}"                                                        # long opaque blobs
    r")")
_ENV_SECRETS = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")


def _value_pattern() -> re.Pattern:
    # Also redact the literal credentials of this process, whatever they look like (long enough to be real).
    literals = [re.escape(v) for k in _ENV_SECRETS if len(v := os.environ.get(k, "")) >= 16]
    if not literals:
        return SECRET_VALUE_RE
    return re.compile(SECRET_VALUE_RE.pattern + "|" + "|".join(literals))


def scrub(value: Any, _pattern: Optional[re.Pattern] = None) -> tuple[Any, int]:
    """(copy of `value` with secret-looking keys' values and secret-looking substrings redacted, redactions)."""
    pattern = _pattern or _value_pattern()
    if isinstance(value, Mapping):
        out, n = {}, 0
        for k, v in value.items():
            if SECRET_KEY_RE.search(str(k)):
                out[k], n = REDACTED, n + 1
            else:
                out[k], m = scrub(v, pattern)
                n += m
        return out, n
    if isinstance(value, (list, tuple, set)):
        items = [scrub(v, pattern) for v in value]
        return [v for v, _ in items], sum(m for _, m in items)
    if isinstance(value, str):
        new, n = pattern.subn(REDACTED, value)
        return new, n
    return value, 0


def scrub_frame(frame: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """(copy of `frame` with secret-named columns and secret-looking strings redacted, number of redactions)."""
    pattern = _value_pattern()
    out, n = frame.copy(), 0
    for col in out.columns:
        s = out[col]
        if SECRET_KEY_RE.search(str(col)):
            out[col] = REDACTED
            n += len(s)
            continue
        if s.dtype != object and not pd.api.types.is_string_dtype(s):
            continue
        kind = pd.api.types.infer_dtype(s, skipna=True)
        if kind in ("string", "empty"):
            counts = s.str.count(pattern)
            if counts.fillna(0).any():
                out[col] = s.str.replace(pattern, REDACTED, regex=True)
                n += int(counts.fillna(0).sum())
        else:  # nested values (dicts, lists) in cells: rare, scrub cell by cell
            pairs = s.map(lambda v: scrub(v, pattern))
            out[col] = pairs.map(lambda p: p[0])
            n += int(pairs.map(lambda p: p[1]).sum())
    return out, n


# ---- encoding --------------------------------------------------------------------------------------------------
def _utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _day(value: Any) -> str:
    return pd.Timestamp(value).strftime("%Y-%m-%d")


def records_jsonl(frame: pd.DataFrame) -> bytes:
    """JSON Lines, one object per row; dates as YYYY-MM-DD (ISO timestamps when they carry a time), NaN as null."""
    out = frame.copy()
    for col in out.columns:
        s = out[col]
        if pd.api.types.is_datetime64_any_dtype(s):
            has_time = bool((s.dropna() != s.dropna().dt.normalize()).any())
            out[col] = s.dt.strftime("%Y-%m-%dT%H:%M:%S" if has_time else "%Y-%m-%d")
    if out.empty:
        return b""
    text = out.to_json(orient="records", lines=True, date_format="iso", force_ascii=False)
    return (text if text.endswith("\n") else text + "\n").encode("utf-8")


def _json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n").encode("utf-8")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    if isinstance(obj, (pd.Timestamp, _dt.datetime, _dt.date)):
        return obj.isoformat()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---- storage backends ------------------------------------------------------------------------------------------
class _Store:
    """Append-only file store: a local folder or an S3 prefix. Keys are '/'-separated, relative to the base."""

    def __init__(self, base: str, endpoint_url: Optional[str] = None, region_name: Optional[str] = None,
                 sse: Optional[str] = None, kms_key_id: Optional[str] = None, client: Any = None):
        self.base = base.rstrip("/") if is_s3(base) else base
        self.s3 = is_s3(base)
        self.sse, self.kms_key_id = sse, kms_key_id
        self._endpoint_url, self._region_name, self._client = endpoint_url, region_name, client
        if self.s3:
            self.bucket, self.prefix = split_s3(base)

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = make_s3_client(self._endpoint_url, self._region_name)
        return self._client

    def uri(self, key: str) -> str:
        return f"{self.base}/{key}" if self.s3 else os.path.join(self.base, *key.split("/"))

    def _s3_key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def exists(self, key: str) -> bool:
        if not self.s3:
            return os.path.exists(self.uri(key))
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._s3_key(key))
            return True
        except self.client.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise

    def create(self, key: str, data: bytes, content_type: str = "application/json") -> None:
        """Write a new file; AuditConflict if it exists. Atomic: the file is absent or whole, never partial."""
        if self.s3:
            extra: dict[str, Any] = {}
            if self.sse:
                extra["ServerSideEncryption"] = self.sse
                if self.sse == "aws:kms" and self.kms_key_id:
                    extra["SSEKMSKeyId"] = self.kms_key_id
            try:
                # IfNoneMatch='*' makes S3 itself refuse to overwrite (conditional write), not just this client.
                self.client.put_object(Bucket=self.bucket, Key=self._s3_key(key), Body=data,
                                       ContentType=content_type, IfNoneMatch="*", **extra)
            except self.client.exceptions.ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in ("PreconditionFailed", "ConditionalRequestConflict"):
                    raise AuditConflict(f"audit file already exists, refusing to overwrite: {self.uri(key)}") from exc
                raise
            return
        path = self.uri(key)
        with synced_temp_file(path, data) as tmp:
            try:
                os.link(tmp, path)  # atomic, and fails instead of replacing an existing file
            except FileExistsError as exc:
                raise AuditConflict(f"audit file already exists, refusing to overwrite: {path}") from exc
            except OSError:  # filesystem without hard links: check-then-rename (a tiny race, still no partial file)
                if os.path.exists(path):
                    raise AuditConflict(f"audit file already exists, refusing to overwrite: {path}")
                os.replace(tmp, path)

    def read(self, key: str) -> Optional[bytes]:
        if self.s3:
            try:
                return self.client.get_object(Bucket=self.bucket, Key=self._s3_key(key))["Body"].read()
            except self.client.exceptions.NoSuchKey:
                return None
        path = self.uri(key)
        if not os.path.exists(path):
            return None
        with open(path, "rb") as fh:
            return fh.read()

    def list_dirs(self, key: str) -> list[str]:
        """Names of the sub-folders directly under `key`."""
        if self.s3:
            prefix = self._s3_key(key).rstrip("/") + "/"
            names = []
            for page in self.client.get_paginator("list_objects_v2").paginate(
                    Bucket=self.bucket, Prefix=prefix, Delimiter="/"):
                names += [p["Prefix"][len(prefix):].rstrip("/") for p in page.get("CommonPrefixes", [])]
            return sorted(names)
        path = self.uri(key)
        if not os.path.isdir(path):
            return []
        return sorted(n for n in os.listdir(path) if os.path.isdir(os.path.join(path, n)))

    def list_files(self, key: str) -> list[str]:
        """Names of the files directly under `key` (in-flight temp files excluded)."""
        if self.s3:
            prefix = self._s3_key(key).rstrip("/") + "/"
            names = []
            for page in self.client.get_paginator("list_objects_v2").paginate(
                    Bucket=self.bucket, Prefix=prefix, Delimiter="/"):
                names += [o["Key"][len(prefix):] for o in page.get("Contents", [])]
            return sorted(names)
        path = self.uri(key)
        if not os.path.isdir(path):
            return []
        return sorted(n for n in os.listdir(path)
                      if not n.startswith(TMP_PREFIX) and os.path.isfile(os.path.join(path, n)))


def run_folder(asset: str, partition_date: Any, sku_group: str, run_id: str) -> str:
    """Relative key of one run's audit folder: audit/<asset>/date=<D>/sku_group=<G>/run=<run_id>."""
    return "/".join([AUDIT_DIR, _check_segment(asset, "asset name"), f"date={_day(partition_date)}",
                     f"sku_group={_check_segment(sku_group, 'sku_group')}", f"run={_check_segment(run_id, 'run id')}"])


def _attempt_name(stem: str, ext: str, attempt: int) -> str:
    # First attempt keeps the plain documented names; a retry inside the same run id gets numbered files.
    return f"{stem}{ext}" if attempt == 1 else f"{stem}.{attempt}{ext}"


_STARTED_RE = re.compile(r"^started(?:\.(\d+))?\.json$")


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

    def _store(self) -> _Store:
        if self.sse not in SSE_CHOICES:
            raise ValueError(f"AuditSink.sse must be one of {SSE_CHOICES}, got {self.sse!r}")
        if self._store_cache is None:
            self._store_cache = _Store(self.base_path, self.endpoint_url, self.region_name, self.sse,
                                       self.kms_key_id)
        return self._store_cache

    def run_uri(self, asset: str, partition_date: Any, sku_group: str, run_id: str) -> str:
        return self._store().uri(run_folder(asset, partition_date, sku_group, run_id))

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
        previous = [int(m.group(1) or 1) for f in store.list_files(key) if (m := _STARTED_RE.match(f))]
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


# ---- reading back ----------------------------------------------------------------------------------------------
def _store_for(base_or_uri: str, endpoint_url: Optional[str] = None, client: Any = None) -> _Store:
    return _Store(base_or_uri, endpoint_url=endpoint_url, client=client)


def _parse_records(data: Optional[bytes]) -> pd.DataFrame:
    if not data or not data.strip():
        return pd.DataFrame()
    return pd.read_json(io.BytesIO(data), lines=True, dtype=False, convert_dates=False)


def _run_folders(store: _Store, date: Any, group: Optional[str], asset: Optional[str]) -> Iterable[tuple]:
    day = _day(date)
    assets = [asset] if asset else store.list_dirs(AUDIT_DIR)
    for a in assets:
        date_key = f"{AUDIT_DIR}/{a}/date={day}"
        groups = [f"sku_group={group}"] if group else [g for g in store.list_dirs(date_key)
                                                      if g.startswith("sku_group=")]
        for g in groups:
            for r in store.list_dirs(f"{date_key}/{g}"):
                if r.startswith("run="):
                    yield a, day, g[len("sku_group="):], r[len("run="):], f"{date_key}/{g}/{r}"


def _load_run(store: _Store, asset: str, day: str, group: str, run_id: str, key: str) -> tuple[dict, pd.DataFrame]:
    """(run summary, its records) for one run folder; complete only with a manifest whose checksums match."""
    files = store.list_files(key)
    manifest_raw = store.read(f"{key}/{MANIFEST}") if MANIFEST in files else None
    info: dict[str, Any] = {"asset": asset, "partition_date": day, "sku_group": group, "run_id": run_id,
                            "folder": store.uri(key), "problem": None}
    started = sorted(((int(m.group(1) or 1), f) for f in files if (m := _STARTED_RE.match(f))))
    started_doc = json.loads(store.read(f"{key}/{started[-1][1]}") or b"{}") if started else {}
    context: dict = {}
    if manifest_raw is not None:
        manifest = json.loads(manifest_raw)
        info.update(attempt=manifest.get("attempt"), started_at=manifest.get("started_at"),
                    written_at=manifest.get("committed_at"), key_columns=manifest.get("key_columns"),
                    redactions=manifest.get("redactions", 0), complete=True)
        blobs = {}
        for f in manifest.get("files", []):
            data = store.read(f"{key}/{f['name']}")
            if data is None or _sha256(data) != f.get("sha256"):
                info.update(complete=False, problem=f"{f['name']} missing or checksum mismatch")
            blobs[f["name"].split(".")[0]] = data
        records = _parse_records(blobs.get("records"))
        if blobs.get("context"):
            context = json.loads(blobs["context"])
    else:
        attempt = started[-1][0] if started else 1
        info.update(attempt=attempt, started_at=started_doc.get("started_at"),
                    written_at=started_doc.get("started_at"), key_columns=None, redactions=None, complete=False,
                    problem="no manifest: attempt did not finish")
        records = _parse_records(store.read(f"{key}/{_attempt_name('records', '.jsonl', attempt)}"))
        ctx_raw = store.read(f"{key}/{_attempt_name('context', '.json', attempt)}")
        context = json.loads(ctx_raw) if ctx_raw else {}
    info["rows"] = len(records)
    info["context"] = context
    return info, records


def _collect(base_or_uri: str, date: Any, group: Optional[str], asset: Optional[str],
             endpoint_url: Optional[str], client: Any = None) -> tuple[list[dict], list[pd.DataFrame]]:
    store = _store_for(base_or_uri, endpoint_url, client)
    infos, frames = [], []
    for a, day, g, run_id, key in _run_folders(store, date, group, asset):
        info, records = _load_run(store, a, day, g, run_id, key)
        infos.append(info)
        meta = {c: info[c] for c in META_COLUMNS}
        frames.append(records.assign(**meta) if len(records) else pd.DataFrame(columns=META_COLUMNS))
    return infos, frames


def read_audit(base_or_uri: str, date: Any, group: Optional[str] = None, sku: Optional[str] = None,
               asset: Optional[str] = None, endpoint_url: Optional[str] = None, client: Any = None) -> pd.DataFrame:
    """Every audited decision row for partition date `date` (optionally one group / SKU / asset), all runs.

    Columns: the record's own columns plus asset, partition_date, sku_group, run_id, attempt, complete (bool:
    False for attempts without a valid manifest) and written_at (commit time, or start time if incomplete).
    Sorted by asset and written_at.
    """
    _, frames = _collect(base_or_uri, date, group, asset, endpoint_url, client)
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame(columns=META_COLUMNS)
    out = pd.concat(frames, ignore_index=True)
    if sku is not None:
        out = (out[out["sku_id"].astype(str) == str(sku)] if "sku_id" in out.columns else out.iloc[0:0]).copy()
    out["complete"] = out["complete"].astype(bool)
    return out.sort_values(["asset", "written_at", "run_id"], kind="stable").reset_index(drop=True)


def _summary_fields(context: Mapping[str, Any], records: Optional[pd.DataFrame] = None) -> dict[str, Any]:
    llm = context.get("llm") or context.get("llm_usage") or {}
    engine = context.get("engine")
    if engine is None and records is not None and "engine" in records.columns and len(records):
        engine = ",".join(sorted(map(str, records["engine"].dropna().unique())))
    guard = context.get("guardrails")
    return {"engine": engine, "model": context.get("model") or (llm.get("model") if isinstance(llm, Mapping) else None),
            "llm_calls": llm.get("calls") if isinstance(llm, Mapping) else None,
            "llm_usd": llm.get("usd") if isinstance(llm, Mapping) else None,
            "guardrails": json.dumps(guard, sort_keys=True, default=str) if guard is not None else None,
            "inputs": json.dumps(context.get("inputs"), sort_keys=True) if context.get("inputs") else None}


def audit_runs(base_or_uri: str, date: Any, group: Optional[str] = None, asset: Optional[str] = None,
               endpoint_url: Optional[str] = None, client: Any = None) -> pd.DataFrame:
    """One row per audited run folder: asset, partition_date, sku_group, run_id, attempt, complete, started_at,
    written_at, rows, engine, model, llm_calls, llm_usd, guardrails (JSON), inputs (JSON fingerprints), key_columns
    (list, from the manifest), redactions, problem, folder. Sorted by asset, partition and written_at."""
    infos, frames = _collect(base_or_uri, date, group, asset, endpoint_url, client)
    rows = []
    for info, frame in zip(infos, frames):
        row = {k: v for k, v in info.items() if k != "context"}
        row.update(_summary_fields(info["context"], frame))
        rows.append(row)
    cols = ["asset", "partition_date", "sku_group", "run_id", "attempt", "complete", "started_at", "written_at",
            "rows", "engine", "model", "llm_calls", "llm_usd", "guardrails", "inputs", "key_columns", "redactions",
            "problem", "folder"]
    out = pd.DataFrame(rows, columns=cols)
    return out.sort_values(["asset", "partition_date", "sku_group", "written_at"], kind="stable").reset_index(drop=True)


def _key_labels(frame: pd.DataFrame, keys: Sequence[str]) -> pd.Series:
    """'sku_id=S1 location_id=L2' per row, built column-wise."""
    label = pd.Series("", index=frame.index, dtype=object)
    for i, k in enumerate(keys):
        label = label + ("" if i == 0 else " ") + k + "=" + frame[k].astype(str)
    return label


def audit_changes(records: pd.DataFrame,
                  key_columns: Optional[Sequence[str] | Mapping[str, Sequence[str]]] = None) -> pd.DataFrame:
    """What changed between consecutive complete runs of the same asset and partition, per decision key.

    `records` as returned by read_audit; `key_columns` (a list, or {asset: list}) names the columns that
    identify a decision, by default the first of sku_id, location_id, from/to_location, target_date, ... present.
    Returns columns asset, partition_date, sku_group, key (e.g.
    "sku_id=S1 location_id=L2"), column, before, after, run_before, run_after, written_at; a row that appears or
    disappears shows column "(row)" with before/after "absent"/"present".
    """
    cols = ["asset", "partition_date", "sku_group", "key", "column", "before", "after", "run_before", "run_after",
            "written_at"]
    done = records[records["complete"].astype(bool)] if len(records) else records
    out = []
    for (asset, day, group), part in done.groupby(["asset", "partition_date", "sku_group"], sort=True):
        runs = part.drop_duplicates("run_id").sort_values("written_at")["run_id"].tolist()
        value_cols = [c for c in part.columns if c not in META_COLUMNS]
        wanted = key_columns.get(asset) if isinstance(key_columns, Mapping) else key_columns
        keys = [c for c in (wanted or KEY_CANDIDATES) if c in value_cols and part[c].notna().any()]
        if not keys:
            continue
        compare = [c for c in value_cols if c not in keys]
        for r0, r1 in zip(runs, runs[1:]):
            a = part[part["run_id"] == r0][keys + compare]
            b = part[part["run_id"] == r1][keys + compare]
            merged = a.merge(b, on=keys, how="outer", suffixes=("__before", "__after"), indicator=True)
            label = _key_labels(merged, keys)
            written = part.loc[part["run_id"] == r1, "written_at"].iloc[0]
            base = {"asset": asset, "partition_date": day, "sku_group": group, "run_before": r0, "run_after": r1,
                    "written_at": written}
            for side, before, after in (("left_only", "present", "absent"), ("right_only", "absent", "present")):
                m = merged["_merge"] == side
                if m.any():
                    out.append(pd.DataFrame({**base, "key": label[m].to_numpy(), "column": "(row)",
                                             "before": before, "after": after}))
            both = merged["_merge"] == "both"
            for c in compare:
                x, y = merged[f"{c}__before"], merged[f"{c}__after"]
                same = (x.astype(str) == y.astype(str)) | (x.isna() & y.isna())
                diff = both & ~same
                if diff.any():
                    out.append(pd.DataFrame({**base, "key": label[diff].to_numpy(), "column": c,
                                             "before": x[diff].to_numpy(), "after": y[diff].to_numpy()}))
    if not out:
        return pd.DataFrame(columns=cols)
    return pd.concat(out, ignore_index=True)[cols]


def audit_main(date: Any, group: Optional[str] = None, sku: Optional[str] = None, path: Optional[str] = None,
               s3_uri: Optional[str] = None, asset: Optional[str] = None, endpoint_url: Optional[str] = None,
               max_changes: int = 40, echo: Callable[[str], None] = print) -> int:
    """Print the decision history of one day: runs (complete or not), engine, model, LLM cost, and what changed
    between runs. Returns 0 when audit records were found, 1 otherwise (a CLI exit code)."""
    if path and s3_uri:
        raise ValueError("give either a local path or an s3:// URI, not both")
    if path is None and s3_uri is None:
        from .. import settings

        base = settings.audit_path()
    else:
        base = s3_uri or path
    day = _day(date)
    runs = audit_runs(base, day, group, asset, endpoint_url)
    scope = f"date {day}" + (f", group {group}" if group else "") + (f", sku {sku}" if sku else "") + \
        (f", asset {asset}" if asset else "")
    if runs.empty:
        echo(f"No audit records under {base.rstrip('/')}/{AUDIT_DIR}/ for {scope}.")
        return 1
    records = read_audit(base, day, group, sku, asset, endpoint_url)
    echo(f"Audit trail {base.rstrip('/')}/{AUDIT_DIR}/ for {scope}")
    show = runs.assign(status=np.where(runs["complete"], "complete", "INCOMPLETE"),
                       llm_calls=pd.to_numeric(runs["llm_calls"], errors="coerce").astype("Int64"))
    if sku is not None and len(records):
        counts = records.groupby("run_id").size()
        show["rows"] = show["run_id"].map(counts).fillna(0).astype(int)
    table_cols = ["run_id", "attempt", "status", "written_at", "rows", "engine", "model", "llm_calls", "llm_usd"]
    for (a, d, g), part in show.groupby(["asset", "partition_date", "sku_group"], sort=True):
        echo(f"\n{a}  {d}|{g}  ({len(part)} run{'s' if len(part) != 1 else ''})")
        echo(part[table_cols].astype(object).where(part[table_cols].notna(), "-").to_string(index=False))
        for _, r in part[~part["complete"]].iterrows():
            echo(f"  ! run {r['run_id']}: {r['problem']} (not counted as a decision)")
        for _, r in part[part["complete"] & part["guardrails"].notna()].iterrows():
            echo(f"  guardrails {r['run_id']}: {r['guardrails']}")
    done = runs[runs["complete"]]
    for (a, d, g), part in done.groupby(["asset", "partition_date", "sku_group"], sort=True):
        # A decision changes because its inputs changed, or because the engine/model did: say which.
        for (_, r0), (_, r1) in zip(part.iloc[:-1].iterrows(), part.iloc[1:].iterrows()):
            before, after = json.loads(r0["inputs"] or "{}"), json.loads(r1["inputs"] or "{}")
            moved = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
            how = [f"{f} {r0[f]} -> {r1[f]}" for f in ("engine", "model") if str(r0[f]) != str(r1[f])]
            echo(f"\n{a} {d}|{g} run {r0['run_id']} -> {r1['run_id']}: inputs "
                 + (f"changed: {', '.join(moved)}" if moved else "identical (same fingerprints)")
                 + (f"; {'; '.join(how)}" if how else ""))
    keys = {a: k for a, k in zip(done["asset"], done["key_columns"]) if k}
    changes = audit_changes(records, keys or None) if len(records) else pd.DataFrame()
    if len(changes):
        echo(f"\nChanges between consecutive complete runs ({len(changes)}):")
        summary = changes.groupby(["asset", "sku_group", "run_before", "run_after", "column"]).size()
        echo(summary.rename("rows").reset_index().to_string(index=False))
        echo("")
        echo(changes[["asset", "key", "column", "before", "after", "run_before", "run_after"]]
             .head(max_changes).to_string(index=False))
        if len(changes) > max_changes:
            echo(f"... {len(changes) - max_changes} more (narrow with --sku)")
    elif (runs["complete"].sum() > 1):
        echo("\nNo decision changed between complete runs.")
    return 0


__all__ = ["AuditSink", "AuditAttempt", "AuditConflict", "read_audit", "audit_runs", "audit_changes", "audit_main",
           "run_folder", "scrub", "scrub_frame", "records_jsonl"]
