"""Reading the audit trail back: every decision row of a day, one row per run, and what changed between runs."""

from __future__ import annotations

import io
import json
from typing import Any, Iterable, Mapping, Optional, Sequence

import pandas as pd

from .layout import AUDIT_DIR, KEY_CANDIDATES, MANIFEST, META_COLUMNS, STARTED_RE, _attempt_name, _day, _sha256
from .store import AuditStore


def _store_for(base_or_uri: str, endpoint_url: Optional[str] = None, client: Any = None) -> AuditStore:
    return AuditStore(base_or_uri, endpoint_url=endpoint_url, client=client)


def _parse_records(data: Optional[bytes]) -> pd.DataFrame:
    if not data or not data.strip():
        return pd.DataFrame()
    return pd.read_json(io.BytesIO(data), lines=True, dtype=False, convert_dates=False)


def _run_folders(store: AuditStore, date: Any, group: Optional[str], asset: Optional[str]) -> Iterable[tuple]:
    day = _day(date)
    assets = [asset] if asset else store.list_dirs(AUDIT_DIR)
    for a in assets:
        date_key = f"{AUDIT_DIR}/{a}/date={day}"
        groups = [f"sku_group={group}"] if group else [
            g for g in store.list_dirs(date_key) if g.startswith("sku_group=")]
        for g in groups:
            for r in store.list_dirs(f"{date_key}/{g}"):
                if r.startswith("run="):
                    yield a, day, g[len("sku_group="):], r[len("run="):], f"{date_key}/{g}/{r}"


def _load_run(store: AuditStore, asset: str, day: str, group: str, run_id: str, key: str) -> tuple[dict, pd.DataFrame]:
    """(run summary, its records) for one run folder; complete only with a manifest whose checksums match."""
    files = store.list_files(key)
    manifest_raw = store.read(f"{key}/{MANIFEST}") if MANIFEST in files else None
    info: dict[str, Any] = {"asset": asset, "partition_date": day, "sku_group": group, "run_id": run_id,
                            "folder": store.uri(key), "problem": None}
    started = sorted(((int(m.group(1) or 1), f) for f in files if (m := STARTED_RE.match(f))))
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
