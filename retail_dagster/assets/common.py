"""What every agent asset does besides deciding: LLM usage as metadata, and its decisions into the audit trail."""

import dagster as dg
import pandas as pd

from ..core.asof import PlanningInputs
from ..core.costs import agent_costs
from ..core.fingerprint import fingerprints
from ..display import num
from ..resources.audit import AuditSink

USAGE_METADATA_KEY = "llm_usage"


def usage_metadata(agent: str, usage: pd.DataFrame, n_skus: int, n_sku_locations: int,
                   agents: tuple[str, ...]) -> dict:
    """Per-agent LLM usage (calls, tokens, USD, USD per SKU, latency, fallbacks) as asset metadata."""
    costs = agent_costs(usage, n_skus, n_sku_locations, agents)
    row = costs[costs["agent"] == agent]
    meta = {USAGE_METADATA_KEY: dg.MetadataValue.json(row.to_dict("records"))}
    if len(row):
        meta["llm_usd"] = num(float(row["usd"].sum()))
        meta["llm_calls"] = dg.MetadataValue.int(int(row["calls"].sum()))
        meta["llm_fallbacks"] = dg.MetadataValue.int(int(row["fallbacks"].sum()))
        meta["llm_usd_per_sku"] = num(float(row["usd_per_sku"].sum()))
    return meta


def input_fingerprints(context, inputs: PlanningInputs, used: list[str] | None = None) -> dict:
    """Content hashes of the ingest tables a decision was made from (`used`, default all), as the ingest step
    recorded them for this partition; computed here only when that record is missing."""
    from .ingest import FINGERPRINT_KEY, INGEST_OUTPUTS

    used = list(used or INGEST_OUTPUTS)
    out = {}
    partition = str(context.partition_key)
    for name in used:
        records = context.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey(name), asset_partitions=[partition]), limit=1).records
        meta = records[0].asset_materialization.metadata if records else {}
        if FINGERPRINT_KEY in meta:
            out[name] = meta[FINGERPRINT_KEY].value
    missing = [name for name in used if name not in out]
    if missing:
        attr = {name: attr for name, (attr, _) in INGEST_OUTPUTS.items()}
        out.update(fingerprints({name: getattr(inputs, attr[name]) for name in missing}))
    return out


def start_audit(context, audit: AuditSink, asset: str, inputs: PlanningInputs) -> None:
    """Mark the attempt started before deciding, so a killed run shows up as incomplete."""
    audit.start_attempt(asset, inputs.date, inputs.sku_group, context.run_id,
                        extra={"job": context.job_name, "partition": str(context.partition_key)})


def write_audit(context, audit: AuditSink, asset: str, inputs: PlanningInputs, records: pd.DataFrame,
                engine: str, model: str, usage: pd.DataFrame, checks: dict, extra: dict | None = None,
                used_inputs: list[str] | None = None) -> str:
    """Commit the run's decision rows with how they were made. Returns the manifest URI."""
    usage_rows = [] if usage is None or usage.empty else usage.drop(
        columns=[c for c in ("fallback_reason",) if c in usage.columns]).to_dict("records")
    fallback_reasons = sorted({str(r) for r in usage.get("fallback_reason", []) if str(r)}) \
        if usage is not None and len(usage) else []
    ctx = {
        "inputs": input_fingerprints(context, inputs, used_inputs),
        "engine": engine,
        "model": model,
        "llm": {
            "calls": int(usage["calls"].sum()) if usage is not None and len(usage) else 0,
            "input_tokens": int(usage["input_tokens"].sum()) if usage is not None and len(usage) else 0,
            "output_tokens": int(usage["output_tokens"].sum()) if usage is not None and len(usage) else 0,
            "usd": float(usage["usd"].sum()) if usage is not None and len(usage) else 0.0,
            "batches": usage_rows,
            "fallback_reasons": fallback_reasons,
        },
        "guardrails": checks,
        "dagster": {"run_id": context.run_id, "job": context.job_name, "partition": str(context.partition_key)},
        **(extra or {}),
    }
    return audit.write_records(asset, inputs.date, inputs.sku_group, context.run_id, records, ctx)


def blocking_checks_passed(results: list, specs: list) -> dict:
    """Output metadata telling the IO manager whether the asset's blocking checks passed: when one failed, the
    run's decisions are not published (the previous complete day stays in place)."""
    from ..resources.io_manager import BLOCKING_CHECKS_PASSED

    blocking = {s.name for s in specs if s.blocking}
    return {BLOCKING_CHECKS_PASSED: dg.MetadataValue.bool(all(r.passed for r in results if r.check_name in blocking))}


def check_outcomes(results: list) -> dict:
    """{check name: passed/failed (+ severity)} from AssetCheckResults."""
    return {r.check_name: ("passed" if r.passed else f"failed ({r.severity.value.lower()})") for r in results}
