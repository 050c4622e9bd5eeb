"""LLM cost accounting: price table, per-agent cost summary, daily roll-up and dry-run estimates.

Dagster-free: the Bedrock resource and the agent_costs asset both use it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

# On-demand USD per 1M tokens, us-east-1 (source region of the US cross-region profiles).
# Sources and date in docs/bedrock.md; override with BedrockResource.price_table.
DEFAULT_PRICE_TABLE: dict[str, dict[str, float]] = {
    "us.meta.llama4-maverick-17b-instruct-v1:0": {"input_per_1m": 0.24, "output_per_1m": 0.97},
    "us.meta.llama4-scout-17b-instruct-v1:0": {"input_per_1m": 0.17, "output_per_1m": 0.66},
    "qwen.qwen3-235b-a22b-2507-v1:0": {"input_per_1m": 0.22, "output_per_1m": 0.88},
    "qwen.qwen3-32b-v1:0": {"input_per_1m": 0.15, "output_per_1m": 0.60},
}

USAGE_COLUMNS = [
    "agent", "model", "batch_id", "calls", "input_tokens", "output_tokens", "usd",
    "latency_ms", "retries", "outcome", "fallback_reason", "n_items",
]  # the LLM steps add n_fallbacks (items of the batch that kept the numeric decision)

AGENT_COST_COLUMNS = [
    "agent", "model", "calls", "input_tokens", "output_tokens", "usd", "usd_per_sku",
    "usd_per_sku_location", "latency_p50_ms", "latency_p95_ms", "fallbacks", "retries",
    "n_skus", "n_sku_locations",
]


def empty_usage() -> pd.DataFrame:
    """A usage frame with no rows and the agreed columns (what a local-engine step returns)."""
    return pd.DataFrame({c: pd.Series(dtype=_usage_dtype(c)) for c in USAGE_COLUMNS + ["n_fallbacks"]})


def _usage_dtype(col: str) -> str:
    if col in ("calls", "input_tokens", "output_tokens", "retries", "n_items", "batch_id", "n_fallbacks"):
        return "int64"
    if col in ("usd", "latency_ms"):
        return "float64"
    return "object"


def usd_for(model: str, input_tokens: float, output_tokens: float,
            price_table: Mapping[str, Mapping[str, float]]) -> float:
    """USD for one call's tokens; an unknown model is an error (a silent $0 would hide spend)."""
    try:
        price = price_table[model]
    except KeyError:
        raise KeyError(
            f"no price for model {model!r} in the price table (known: {sorted(price_table)}); "
            "add it to BedrockResource.price_table"
        ) from None
    return (input_tokens * price["input_per_1m"] + output_tokens * price["output_per_1m"]) / 1e6


def approx_tokens(text: str) -> int:
    """Documented approximation when CountTokens is unavailable: one token per 4 characters."""
    return math.ceil(len(text) / 4)


def estimate_cost(prompts_token_counts, price_table: Mapping[str, Mapping[str, float]]) -> pd.DataFrame:
    """Projected cost of prompts not (yet) sent.

    prompts_token_counts: frame or records with `model`, `input_tokens`, `output_tokens` (one row a
    prompt; `agent` optional). Returns one row per (agent,) model: prompts, input_tokens,
    output_tokens, usd.
    """
    df = pd.DataFrame(prompts_token_counts)
    keys = ["agent", "model"] if "agent" in df.columns else ["model"]
    if df.empty:
        return pd.DataFrame(columns=keys + ["prompts", "input_tokens", "output_tokens", "usd"])
    prices = pd.DataFrame.from_dict(dict(price_table), orient="index")
    missing = sorted(set(df["model"]) - set(prices.index))
    if missing:
        raise KeyError(f"no price for models {missing} in the price table")
    df = df.join(prices, on="model")
    df["usd"] = (df["input_tokens"] * df["input_per_1m"] + df["output_tokens"] * df["output_per_1m"]) / 1e6
    out = df.groupby(keys, as_index=False).agg(
        prompts=("model", "size"), input_tokens=("input_tokens", "sum"),
        output_tokens=("output_tokens", "sum"), usd=("usd", "sum"),
    )
    return out


def agent_costs(usage: pd.DataFrame, n_skus: int, n_sku_locations: int, agents: Sequence[str]) -> pd.DataFrame:
    """One row per agent and model: calls, tokens, USD (total, per SKU, per SKU-location), latency
    percentiles (over batches, per call), fallbacks (items that kept the numeric decision), retries.

    `agents`: the registered agents' names (agents.registry), in pipeline order: an agent absent from `usage`
    (local engine) gets a row of zeros with model "local". Dry-run rows
    (outcome "dry_run", calls 0) carry projected tokens and USD.
    """
    usage = usage if usage is not None and len(usage) else empty_usage()
    rows = []
    for (agent, model), g in usage.groupby(["agent", "model"], sort=True):
        called = g[g["calls"] > 0]
        per_call_ms = (called["latency_ms"] / called["calls"]).to_numpy(dtype=float)
        usd = float(g["usd"].sum())
        rows.append({
            "agent": agent, "model": model,
            "calls": int(g["calls"].sum()),
            "input_tokens": int(g["input_tokens"].sum()),
            "output_tokens": int(g["output_tokens"].sum()),
            "usd": usd,
            "usd_per_sku": usd / n_skus if n_skus else 0.0,
            "usd_per_sku_location": usd / n_sku_locations if n_sku_locations else 0.0,
            "latency_p50_ms": float(np.percentile(per_call_ms, 50)) if len(per_call_ms) else 0.0,
            "latency_p95_ms": float(np.percentile(per_call_ms, 95)) if len(per_call_ms) else 0.0,
            # items that kept the numeric decision: n_fallbacks when the step reports it (a partly
            # valid batch), else every item of a batch whose outcome is not ok
            "fallbacks": int(g["n_fallbacks"].sum()) if "n_fallbacks" in g.columns
            else int(g.loc[g["outcome"] != "ok", "n_items"].sum()),
            "retries": int(g["retries"].sum()),
        })
    present = {r["agent"] for r in rows}
    for agent in agents:
        if agent not in present:
            rows.append({"agent": agent, "model": "local", "calls": 0, "input_tokens": 0,
                         "output_tokens": 0, "usd": 0.0, "usd_per_sku": 0.0,
                         "usd_per_sku_location": 0.0, "latency_p50_ms": 0.0,
                         "latency_p95_ms": 0.0, "fallbacks": 0, "retries": 0})
    out = pd.DataFrame(rows)
    out["n_skus"] = int(n_skus)
    out["n_sku_locations"] = int(n_sku_locations)
    order = {a: i for i, a in enumerate(agents)}
    out = out.sort_values(["agent", "model"], key=lambda s: s.map(order).fillna(99) if s.name == "agent" else s)
    return out[AGENT_COST_COLUMNS].reset_index(drop=True)


def daily_rollup(frames: Iterable[pd.DataFrame]) -> pd.DataFrame:
    """Sum agent_costs frames of several partitions (e.g. a day's SKU groups) into one row per
    (date,) agent and model. Per-SKU figures are recomputed from the summed counts; latency p50 is
    the call-weighted mean of the partitions' p50 and p95 their maximum (an upper bound)."""
    frames = [f for f in frames if f is not None and len(f)]
    if not frames:
        return pd.DataFrame(columns=AGENT_COST_COLUMNS)
    df = pd.concat(frames, ignore_index=True)
    keys = (["date"] if "date" in df.columns else []) + ["agent", "model"]
    df["_w"] = df["latency_p50_ms"] * df["calls"]
    out = df.groupby(keys, as_index=False).agg(
        calls=("calls", "sum"), input_tokens=("input_tokens", "sum"),
        output_tokens=("output_tokens", "sum"), usd=("usd", "sum"), _w=("_w", "sum"),
        latency_p95_ms=("latency_p95_ms", "max"), fallbacks=("fallbacks", "sum"),
        retries=("retries", "sum"), n_skus=("n_skus", "sum"), n_sku_locations=("n_sku_locations", "sum"),
    )
    out["latency_p50_ms"] = np.where(out["calls"] > 0, out["_w"] / out["calls"].clip(lower=1), 0.0)
    out["usd_per_sku"] = np.where(out["n_skus"] > 0, out["usd"] / out["n_skus"].clip(lower=1), 0.0)
    out["usd_per_sku_location"] = np.where(
        out["n_sku_locations"] > 0, out["usd"] / out["n_sku_locations"].clip(lower=1), 0.0)
    return out[keys[:-2] + AGENT_COST_COLUMNS].reset_index(drop=True)
