"""The audit trail's layout and encoding: one folder per run and partition,
`audit/<asset>/date=<D>/sku_group=<G>/run=<run_id>/` holding started.json, records.jsonl, context.json and,
written last, manifest.json (docs/audit.md)."""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import re
from typing import Any

import numpy as np
import pandas as pd

from ..core.paths import check_segment

AUDIT_DIR = "audit"
FORMAT = "retail_dagster.audit/1"
MANIFEST = "manifest.json"
# Columns the reader adds to every record.
META_COLUMNS = ["asset", "partition_date", "sku_group", "run_id", "attempt", "complete", "written_at"]
# Columns that identify one decision row, by asset kind; the first present ones form the key when a writer
# did not say (forecasts: sku-location-target day; prices: sku-location; transfers: sku-lane).
KEY_CANDIDATES = ["sku_id", "location_id", "from_location", "to_location", "target_date", "ship_date", "agent",
                  "model"]
SSE_CHOICES = ("AES256", "aws:kms")


class AuditConflict(FileExistsError):
    """An audit file already exists: the trail is append-only, so the write is refused."""


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


def run_folder(asset: str, partition_date: Any, sku_group: str, run_id: str) -> str:
    """Relative key of one run's audit folder: audit/<asset>/date=<D>/sku_group=<G>/run=<run_id>."""
    return "/".join([AUDIT_DIR, check_segment(asset, "asset name"), f"date={_day(partition_date)}",
                     f"sku_group={check_segment(sku_group, 'sku_group')}", f"run={check_segment(run_id, 'run id')}"])


def _attempt_name(stem: str, ext: str, attempt: int) -> str:
    # First attempt keeps the plain documented names; a retry inside the same run id gets numbered files.
    return f"{stem}{ext}" if attempt == 1 else f"{stem}.{attempt}{ext}"


STARTED_RE = re.compile(r"^started(?:\.(\d+))?\.json$")
