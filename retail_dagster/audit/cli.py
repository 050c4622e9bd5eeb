"""`retail-dagster audit`: print one day's decision history (runs, engine, model, LLM cost, what changed)."""

from __future__ import annotations

import json
from typing import Any, Callable, Optional

import numpy as np
import pandas as pd

from .layout import AUDIT_DIR, _day
from .reader import audit_changes, audit_runs, read_audit


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
