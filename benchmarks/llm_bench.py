"""Benchmark of the three agents' LLM steps against the local fake Bedrock (300 ms per call):
USD per 1,000 SKU-locations per day, dry-run estimate error, wall time.

    python benchmarks/llm_bench.py --sku-locations 10000

Last line: JSON {usd_per_1000_sku_locations, estimate_error_pct, seconds, calls, fallbacks, ...}.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import pandas as pd


from retail_dagster.agents.pricing_llm import choose_prices
from retail_dagster.agents.rebalancing_llm import review_transfers
from retail_dagster.agents.sensing_llm import sense_demand
from retail_dagster.core.costs import agent_costs
from retail_dagster.agents.registry import agent_names
from retail_dagster.resources.bedrock import BedrockResource
from retail_dagster.testing.fake_bedrock import FakeBedrock, echo_engine

ALL_BEDROCK = {"demand": "bedrock", "pricing": "bedrock", "rebalancing": "bedrock"}


def synthetic_frames(n: int, n_locations: int = 10, horizon: int = 14, n_cands: int = 5,
                     transfer_share: float = 0.2, seed: int = 0):
    """Forecast, context, candidates, recs, catalog and transfer plan for n SKU-locations."""
    rng = np.random.default_rng(seed)
    n_skus = max(1, n // n_locations)
    keys = pd.DataFrame({"sku_id": np.repeat([f"SKU{s:05d}" for s in range(n_skus)], n_locations)[:n],
                         "location_id": np.tile([f"S{j:03d}" for j in range(n_locations)], n_skus)[:n]})
    base = rng.gamma(2.0, 3.0, n)
    dates = pd.date_range("2026-03-01", periods=horizon)
    fc = keys.loc[keys.index.repeat(horizon)].reset_index(drop=True)
    fc["target_date"] = np.tile(dates, n)
    fc["horizon_day"] = np.tile(np.arange(1, horizon + 1), n)
    fc["mean"] = np.repeat(base, horizon)
    fc["p50"] = fc["mean"]
    fc["p10"] = fc["mean"] * 0.6
    fc["p90"] = fc["mean"] * 1.5
    fc["model"] = "lightgbm"
    ctx = keys.copy()
    ctx["recent_actual_per_day"] = (base * rng.lognormal(0, 0.2, n)).round(1)
    ctx["recent_forecast_per_day"] = base.round(1)
    promo = rng.random(n) < 0.1
    ctx["promo_discount_pct"] = np.where(promo, 20.0, 0.0)
    ctx["promo_days"] = np.where(promo, 7, 0)
    ctx["event"] = np.where(rng.random(n) < 0.05, "city marathon", None)
    ctx["temp_anomaly_c"] = rng.normal(0, 2, n).round(1)
    price = rng.uniform(2, 30, n).round(2)
    steps = np.linspace(0.9, 1.1, n_cands)
    cands = keys.loc[keys.index.repeat(n_cands)].reset_index(drop=True)
    cands["candidate_price"] = (np.repeat(price, n_cands) * np.tile(steps, n)).round(2)
    cands["expected_units"] = (np.repeat(base, n_cands) * np.tile(steps[::-1], n)).round(1)
    cands["expected_margin"] = (cands["expected_units"] * cands["candidate_price"] * 0.3).round(1)
    cands["is_engine_choice"] = np.tile(np.arange(n_cands) == n_cands // 2, n)
    recs = keys.copy()
    recs["current_price"] = price
    recs["recommended_price"] = price
    recs["reason"] = "optimal margin"
    recs["engine"] = "local"
    recs["clamped"] = False
    catalog = pd.DataFrame({"sku_id": [f"SKU{s:05d}" for s in range(n_skus)], "category": "grocery",
                            "description": "Organic whole milk 1L, family size"})
    m = int(n * transfer_share)
    pick = rng.choice(n, size=m, replace=False)
    plan = pd.DataFrame({"sku_id": keys["sku_id"].to_numpy()[pick], "from_location": "W001",
                         "to_location": keys["location_id"].to_numpy()[pick],
                         "units": rng.integers(1, 10, m) * 6, "cost": rng.uniform(2, 20, m).round(2),
                         "reason": "avoid stockout", "engine": "local", "case_pack": 6})
    return dict(forecast=fc, context=ctx, candidates=cands, recs=recs, catalog=catalog, plan=plan,
                n_skus=n_skus)


def run_all(frames: dict, llm: BedrockResource) -> pd.DataFrame:
    _, u1 = sense_demand(frames["forecast"], frames["context"], llm)
    _, u2 = choose_prices(frames["candidates"], frames["recs"], frames["catalog"], llm)
    _, u3 = review_transfers(frames["plan"], llm)
    return pd.concat([u1, u2, u3], ignore_index=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sku-locations", type=int, default=1000)
    ap.add_argument("--latency-s", type=float, default=0.3)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=50)
    args = ap.parse_args()

    # the fake accepts any SigV4 signature; these are not credentials
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    n = args.sku_locations
    frames = synthetic_frames(n)
    fake = FakeBedrock(responder=echo_engine, latency_s=args.latency_s).start()
    try:
        common = dict(endpoint_url=fake.url, engines=ALL_BEDROCK, batch_size=args.batch_size,
                      max_concurrent_calls=args.concurrency, run_budget_usd=None)
        estimate = run_all(frames, BedrockResource(dry_run=True, **common))
        t0 = time.perf_counter()
        metered = run_all(frames, BedrockResource(**common))
        seconds = time.perf_counter() - t0
    finally:
        fake.stop()

    costs = agent_costs(metered, frames["n_skus"], n, agent_names())
    print(costs[["agent", "model", "calls", "input_tokens", "output_tokens", "usd",
                 "usd_per_sku_location", "latency_p50_ms", "latency_p95_ms", "fallbacks"]].to_string(index=False))
    usd, est_usd = float(metered["usd"].sum()), float(estimate["usd"].sum())
    per_agent = {a: round(float(g["usd"].sum()) * 1000 / n, 5) for a, g in metered.groupby("agent")}
    print(f"estimate {est_usd:.5f} USD vs metered {usd:.5f} USD; {seconds:.1f} s for {n} SKU-locations")
    print(json.dumps({
        "usd_per_1000_sku_locations": round(usd * 1000 / n, 5),
        "estimate_error_pct": round((est_usd - usd) / usd * 100, 2) if usd else None,
        "seconds": round(seconds, 2),
        "calls": int(metered["calls"].sum()),
        "fallbacks": int(metered["n_fallbacks"].sum()),
        "sku_locations": n,
        "usd_per_1000_by_agent": per_agent,
    }))


if __name__ == "__main__":
    main()
