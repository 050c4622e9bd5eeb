"""How far a poisoned series (units = 1e12 on three training days) moves the others: the demand forecast of a
group on clean data vs the same data with two SKUs poisoned, with outlier capping on and off. Last line: JSON.

    python benchmarks/poison_bench.py --skus 60 --stores 3 --days 420 --seed 7 --group grocery --date 2026-11-25
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import pandas as pd

from retail_dagster.agents.demand import DemandSensingAgent
from retail_dagster.core.asof import planning_inputs
from retail_dagster.core.contracts import validate_tables
from retail_dagster.core.demo import generate_demo
from retail_dagster.core.plausibility import explained_days, find_outliers

POISON_DAYS = pd.to_datetime(["2026-08-03", "2026-08-04", "2026-08-05"])


def main() -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skus", type=int, default=60)
    ap.add_argument("--stores", type=int, default=3)
    ap.add_argument("--days", type=int, default=420)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--group", default="grocery")
    ap.add_argument("--date", default="2026-11-25")
    args = ap.parse_args()

    tables = validate_tables(generate_demo(n_skus=args.skus, n_stores=args.stores, n_warehouses=1,
                                           n_days=args.days, seed=args.seed).tables)
    cat = tables["catalog"]
    skus = sorted(cat.loc[cat["sku_group"] == args.group, "sku_id"].astype(str))[:2]
    sales = tables["sales"].copy()
    hit = sales["sku_id"].isin(skus) & sales["date"].isin(POISON_DAYS)
    sales.loc[hit, "units"] = 1e12
    poisoned = {**tables, "sales": sales}
    t0 = time.perf_counter()
    false_alarms = len(find_outliers(tables["sales"], explained=explained_days(tables["sales"], tables["events"],
                                                                               tables["locations"])))
    detect_s = time.perf_counter() - t0

    def forecast(t, cap=True):
        inputs = planning_inputs(t, args.date, args.group, history_days=460)
        fc, info, _ = DemandSensingAgent(model_cache_dir=tempfile.mkdtemp(), cap_outliers=cap).forecast(inputs)
        return fc.groupby(["sku_id", "location_id"])["mean"].sum(), fc, info

    clean, _, _ = forecast(tables)
    capped, fc_capped, info = forecast(poisoned)
    raw, fc_raw, _ = forecast(poisoned, cap=False)
    capped, raw = capped.reindex(clean.index), raw.reindex(clean.index)
    untouched = ~clean.index.get_level_values("sku_id").isin(skus)
    a, b, c = clean[untouched], capped[untouched], raw[untouched]
    rel = (b - a).abs() / a
    out = {
        "data": f"{args.skus} SKUs x {args.stores} stores, {args.days} days, seed {args.seed}, group {args.group}",
        "poisoned_skus": skus, "poisoned_rows": int(hit.sum()), "outlier_rows_found": int(len(info.outliers)),
        "false_alarms_on_clean_data": false_alarms, "detect_seconds_all_groups": round(detect_s, 3),
        "untouched_series": int(untouched.sum()),
        "untouched_total_change_pct_capped": round(float(b.sum() / a.sum() - 1) * 100, 2),
        "untouched_series_change_pct_median_capped": round(float(rel.median()) * 100, 2),
        "untouched_series_change_pct_max_capped": round(float(rel.max()) * 100, 2),
        "untouched_series_change_units_max_capped": round(float((b - a).abs().max()), 2),
        "untouched_series_within_5pct_share_capped": round(float((rel <= 0.05).mean()), 3),
        "p50_max_capped": float(fc_capped["p50"].max()), "p50_max_uncapped": float(fc_raw["p50"].max()),
        "untouched_inflation_median_uncapped": round(float((c / a).median()), 1),
    }
    for k, v in out.items():
        print(f"{k:<45} {v}")
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
