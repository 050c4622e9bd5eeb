"""Pricing LLM step: the model picks one of the engine's guardrail-compliant candidate prices per
SKU-location and says why; anything else is rejected and the engine's choice stands."""

from __future__ import annotations

import numpy as np
import pandas as pd

from retail_dagster.agents.llm import LLMTask, run_llm_step, step_enabled
from retail_dagster.core.costs import empty_usage

AGENT = "pricing"
KEYS = ["sku_id", "location_id"]
PRICE_TOL = 0.005  # an answer matches a candidate within half a cent
TYPICAL_REASON = "x" * 18


def _check(answer: dict, item: dict):
    p = float(answer["p"])
    prices = np.asarray(item["_prices"], dtype=float)
    hit = np.flatnonzero(np.abs(prices - p) <= PRICE_TOL)
    if not len(hit):
        return None, f"price {p:g} is not one of the candidates"
    return {"p": float(prices[hit[0]]), "r": str(answer.get("r", ""))[:80]}, None


TASK = LLMTask(
    agent=AGENT,
    tool_name="price_choices",
    tool_description="The chosen candidate price per row, with a short reason.",
    system_prompt=(
        "You are a retail pricing analyst. For each row choose exactly one price from its candidate "
        "list (cands) and give a reason of at most 6 words. Any other price is invalid."
    ),
    instructions=(
        "Columns: cat category; desc product description; cur current price; cands candidates as "
        "[price, expected units/day, expected margin/day]; eng the optimiser's choice. Prefer eng "
        "unless margin is near-equal and another candidate sells more or changes price less."
    ),
    columns=["cat", "desc", "cur", "cands", "eng"],
    item_schema={
        "type": "object",
        "properties": {"i": {"type": "integer"}, "p": {"type": "number"},
                       "r": {"type": "string", "maxLength": 80}},
        "required": ["i", "p", "r"],
    },
    validation_item_schema={
        "type": "object",
        "properties": {"i": {"type": "integer"}, "p": {"type": "number"}, "r": {"type": "string"}},
        "required": ["i", "p"],
    },
    check_item=_check,
    typical_answer=lambda item: {"p": item["eng"], "r": TYPICAL_REASON},
)


def _candidate_lists(candidates: pd.DataFrame) -> pd.DataFrame:
    """Per SKU-location: candidate table as nested lists, the price array and the engine's price."""
    c = candidates.sort_values(KEYS + ["candidate_price"], kind="stable").reset_index(drop=True)
    keys = c[KEYS]
    starts = np.flatnonzero((keys != keys.shift()).any(axis=1).to_numpy())
    table = np.column_stack([c["candidate_price"].round(2), c["expected_units"].round(1),
                             c["expected_margin"].round(1)])
    groups = np.split(table, starts[1:])
    engine = c["candidate_price"].where(c["is_engine_choice"].astype(bool))
    eng = engine.groupby([c["sku_id"], c["location_id"]], sort=False).max().to_numpy()
    out = c.loc[starts, KEYS].reset_index(drop=True)
    out["cands"] = [g.tolist() for g in groups]
    out["_prices"] = [g[:, 0] for g in groups]
    out["eng"] = eng
    return out


def choose_prices(candidates: pd.DataFrame, recs: pd.DataFrame, catalog: pd.DataFrame | None, llm
                  ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """recs with recommended_price set to the LLM's choice among candidates (or kept), plus
    engine ("bedrock" / "local_fallback"; kept, or "local", when the step is off) and llm_reason. If recs has
    expected_units / expected_margin they follow the chosen candidate. Returns (recs, usage)."""
    out = recs.copy()
    if not step_enabled(llm, AGENT) or out.empty or candidates.empty:
        if "engine" not in out.columns:  # step off: the numeric engine's label stands
            out["engine"] = "local"
        out["llm_reason"] = ""
        return out, empty_usage()

    per_key = _candidate_lists(candidates)
    per_key = per_key.merge(out[KEYS + ["current_price"]].drop_duplicates(KEYS), on=KEYS, how="inner")
    if catalog is not None and len(catalog):
        cat_cols = [c for c in ("category", "description") if c in catalog.columns]
        per_key = per_key.merge(catalog[["sku_id"] + cat_cols].drop_duplicates("sku_id"), on="sku_id", how="left")
    per_key["cat"] = per_key["category"] if "category" in per_key else None
    desc = per_key["description"] if "description" in per_key else pd.Series(None, index=per_key.index)
    # untrusted free text: bounded, sent as a JSON string inside <data>
    per_key["desc"] = desc.map(lambda v: str(v)[:80] if isinstance(v, str) else None)
    per_key["cur"] = per_key["current_price"].round(2)
    # no engine flag for a key: its engine choice is the recommended price (nearest candidate)
    missing = per_key["eng"].isna()
    if missing.any():
        rec_price = per_key[KEYS].merge(out[KEYS + ["recommended_price"]].drop_duplicates(KEYS), on=KEYS,
                                        how="left")["recommended_price"].to_numpy()
        per_key.loc[missing, "eng"] = [p[np.argmin(np.abs(p - r))] for p, r in
                                       zip(per_key.loc[missing, "_prices"], rec_price[missing.to_numpy()])]
    items = per_key[["cat", "desc", "cur", "cands", "eng", "_prices"]].to_dict("records")
    result = run_llm_step(TASK, items, llm)

    ok = np.array([a is not None for a in result.answers], dtype=bool)
    per_key["_chosen"] = [a["p"] if a is not None else np.nan for a in result.answers]
    per_key["_reason"] = [a["r"] if a is not None else f"fallback: {r}"
                          for a, r in zip(result.answers, result.fallback_reasons)]
    per_key["_engine"] = np.where(ok, "bedrock", "local_fallback")

    merged = out[KEYS].merge(per_key[KEYS + ["_chosen", "_reason", "_engine"]], on=KEYS, how="left")
    chosen = merged["_chosen"].to_numpy(dtype=float)
    has = ~np.isnan(chosen)
    out["recommended_price"] = np.where(has, chosen, out["recommended_price"].to_numpy(dtype=float))
    out["engine"] = merged["_engine"].fillna("local_fallback").to_numpy()
    out["llm_reason"] = merged["_reason"].fillna("fallback: no candidates for this SKU-location").to_numpy()

    follow = [c for c in ("expected_units", "expected_margin") if c in out.columns]
    if follow and has.any():
        pick = candidates[KEYS + ["candidate_price"] + follow].copy()
        pick["candidate_price"] = pick["candidate_price"].round(2)
        chosen_keys = out.loc[has, KEYS].assign(candidate_price=np.round(chosen[has], 2))
        vals = chosen_keys.merge(pick.drop_duplicates(KEYS + ["candidate_price"]),
                                 on=KEYS + ["candidate_price"], how="left")
        for col in follow:
            out.loc[has, col] = np.where(vals[col].notna(), vals[col].to_numpy(), out.loc[has, col].to_numpy())
    return out, result.usage
