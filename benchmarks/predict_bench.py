"""Forecast prediction with cached models for every SKU group of a pipeline_bench work folder.

    python benchmarks/pipeline_bench.py --skus 10000 --stores 10 --workdir /tmp/pbench   # trains and caches
    python benchmarks/predict_bench.py --workdir /tmp/pbench [--date 2026-11-25]

Times only the engine's prediction per group (inputs are read first and not timed); last line JSON with
series, predict_seconds, load_model_seconds.
"""

from __future__ import annotations

import argparse
import json
import os

import pandas as pd

from retail_dagster.core.asof import planning_inputs
from retail_dagster.core.demo import DEFAULT_END_DATE
from retail_dagster.core.forecasting import ForecastSettings, forecast_for_date
from retail_dagster.core.loading import load_tables
from retail_dagster.resources.data_source import HISTORY_DAYS


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--workdir", required=True, help="a pipeline_bench --workdir (data/ and models/ inside)")
    ap.add_argument("--date", default=None, help="planning day (default: the day after the demo's last day)")
    args = ap.parse_args()
    date = pd.Timestamp(args.date) if args.date else pd.Timestamp(DEFAULT_END_DATE) + pd.Timedelta(days=1)
    data = os.path.join(args.workdir, "data")
    models = os.path.join(args.workdir, "models")
    cache = os.path.join(models, sorted(os.listdir(models))[0])  # the data set's model folder
    groups = sorted(pd.read_parquet(os.path.join(data, "catalog.parquet"))["sku_group"].astype(str).unique())
    out = {}
    for g in groups:
        tables = load_tables(data, sku_group=g, since=date - pd.Timedelta(days=HISTORY_DAYS))
        tables = planning_inputs(tables, date, g, history_days=HISTORY_DAYS).as_tables()
        _, info = forecast_for_date(tables, date, g, ForecastSettings(), cache)
        out[g] = {k: info[k] for k in ("series", "trained_now", "load_or_train_seconds", "predict_seconds")}
        print(g, out[g], flush=True)
    print(json.dumps({"series": sum(v["series"] for v in out.values()),
                      "predict_seconds": round(sum(v["predict_seconds"] for v in out.values()), 2),
                      "load_model_seconds": round(sum(v["load_or_train_seconds"] for v in out.values()), 2),
                      "any_trained_now": any(v["trained_now"] for v in out.values())}))


if __name__ == "__main__":
    main()
