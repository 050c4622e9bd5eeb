"""Rebalancing LLM step: the model reviews each planned transfer (approve, trim to fewer units,
reject) with a reason; it can never add units or transfers."""

from __future__ import annotations

import numpy as np
import pandas as pd

from retail_dagster.agents.llm import LLMTask, run_llm_step, step_enabled
from retail_dagster.core.costs import empty_usage

AGENT = "rebalancing"
DECISIONS = ("approve", "trim", "reject")
TYPICAL_REASON = "x" * 18


def _check(answer: dict, item: dict):
    d = answer["d"]
    units = int(item["u"])
    reason = str(answer.get("r", ""))[:80]
    if d == "approve":
        return {"d": "approve", "u": units, "r": reason}, None
    if d == "reject":
        return {"d": "reject", "u": 0, "r": reason}, None
    u = answer.get("u")
    if not isinstance(u, (int, float)) or isinstance(u, bool) or u != int(u):
        return None, "trim needs whole units u"
    u = int(u)
    if u < 0 or u > units:
        return None, f"trim to {u} units is outside 0..{units} (a review never adds units)"
    return {"d": "trim" if u < units else "approve", "u": u, "r": reason}, None


TASK = LLMTask(
    agent=AGENT,
    tool_name="transfer_reviews",
    tool_description="A decision per planned transfer: approve, trim (fewer units) or reject.",
    system_prompt=(
        "You are an inventory planner reviewing planned stock transfers. For each row decide d: "
        "approve, trim (then u = units to keep, fewer than planned) or reject, with a reason of at "
        "most 6 words. You can never add units or transfers."
    ),
    instructions=(
        "Columns: sku; frm source; to destination; u planned units; cost transfer cost; pack case "
        "pack; why the optimiser's reason. Trim or reject only when a transfer looks wasteful "
        "(cost high for the units, tiny quantities)."
    ),
    columns=["sku", "frm", "to", "u", "cost", "pack", "why"],
    item_schema={
        "type": "object",
        "properties": {"i": {"type": "integer"}, "d": {"type": "string", "enum": list(DECISIONS)},
                       "u": {"type": "integer", "minimum": 0}, "r": {"type": "string", "maxLength": 80}},
        "required": ["i", "d", "r"],
    },
    validation_item_schema={
        "type": "object",
        "properties": {"i": {"type": "integer"}, "d": {"type": "string", "enum": list(DECISIONS)},
                       "u": {"type": "number"}, "r": {"type": "string"}},
        "required": ["i", "d"],
    },
    check_item=_check,
    typical_answer=lambda item: {"d": "approve", "r": TYPICAL_REASON},
)


def review_transfers(plan: pd.DataFrame, llm) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Plan keeping only approved and trimmed transfers (trimmed units rounded down to a multiple of
    `case_pack` when that column exists; a trim rounding to 0 drops the row; cost scales with units),
    with llm_decision, llm_reason and engine ("bedrock" / "local_fallback"; kept, or "local", when
    the step is off).
    Fallback rows keep the engine's transfer unchanged (llm_decision "approve")."""
    out = plan.copy().reset_index(drop=True)
    if not step_enabled(llm, AGENT) or out.empty:
        out["llm_decision"] = "approve"
        out["llm_reason"] = ""
        if "engine" not in out.columns:  # step off: the numeric engine's label stands
            out["engine"] = "local"
        return out, empty_usage()

    sent = pd.DataFrame({
        "sku": out["sku_id"].astype(str), "frm": out["from_location"].astype(str),
        "to": out["to_location"].astype(str), "u": out["units"].astype(int),
        "cost": out["cost"].astype(float).round(2),
        "pack": out["case_pack"].astype(int) if "case_pack" in out.columns else None,
        "why": out["reason"].map(lambda v: str(v)[:60] if isinstance(v, str) else None)
        if "reason" in out.columns else None,
    })
    result = run_llm_step(TASK, sent.to_dict("records"), llm)

    ok = np.array([a is not None for a in result.answers], dtype=bool)
    units = out["units"].to_numpy(dtype=float)
    new_units = np.array([a["u"] if a is not None else u for a, u in zip(result.answers, units)], dtype=float)
    decision = np.array([a["d"] if a is not None else "approve" for a in result.answers], dtype=object)
    trimmed = decision == "trim"
    if "case_pack" in out.columns:
        pack = out["case_pack"].fillna(1).clip(lower=1).to_numpy(dtype=float)
        new_units = np.where(trimmed, np.floor(new_units / pack) * pack, new_units)
    out["llm_decision"] = decision
    out["llm_reason"] = [a["r"] if a is not None else f"fallback: {r}"
                         for a, r in zip(result.answers, result.fallback_reasons)]
    out["engine"] = np.where(ok, "bedrock", "local_fallback")
    scale = np.divide(new_units, units, out=np.zeros_like(units), where=units > 0)
    out["cost"] = out["cost"].to_numpy(dtype=float) * np.where(trimmed, scale, 1.0)
    out["units"] = new_units.astype(out["units"].dtype) if out["units"].dtype.kind in "iu" else new_units
    keep = (decision != "reject") & (new_units > 0)
    return out[keep].reset_index(drop=True), result.usage
