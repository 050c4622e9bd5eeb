"""`retail-dagster` command line: generate demo data, validate inputs, run the daily pipeline, backtest, read the audit."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


def _cmd_generate(args) -> int:
    from .core.demo import DEFAULT_END_DATE, write_demo_streaming

    t0 = time.perf_counter()
    rows = write_demo_streaming(args.out, n_skus=args.skus, n_stores=args.stores, n_warehouses=args.warehouses,
                                n_days=args.days, seed=args.seed, end_date=args.end_date or DEFAULT_END_DATE)
    print(f"wrote {len(rows)} files to {args.out} in {time.perf_counter() - t0:.1f}s: "
          + ", ".join(f"{k}={v:,}" for k, v in rows.items()))
    return 0


def _cmd_validate(args) -> int:
    from .core.contracts import ContractError
    from .core.loading import load_tables, make_s3_client

    client = make_s3_client(args.endpoint_url) if args.path.startswith("s3://") else None
    try:
        tables = load_tables(args.path, s3_client=client)
    except ContractError as exc:
        print(f"INVALID {args.path}\n{exc}", file=sys.stderr)
        return 1
    except FileNotFoundError as exc:
        print(f"INVALID {exc}", file=sys.stderr)
        return 1
    from .core.contracts import group_name_problems

    bad_groups = group_name_problems(tables["catalog"], args.path)
    if bad_groups:
        print(f"INVALID {args.path}\n{ContractError(bad_groups)}", file=sys.stderr)
        return 1
    sales = tables["sales"]
    print(f"OK {args.path}: {len(tables)} tables valid; {len(tables['catalog']):,} SKUs, "
          f"{len(tables['locations']):,} locations, {len(sales):,} sales rows "
          f"{sales['date'].min():%Y-%m-%d}..{sales['date'].max():%Y-%m-%d}")
    from .core.plausibility import describe_outliers, explained_days, find_outliers

    outliers = find_outliers(sales, explained=explained_days(sales, tables["events"], tables["locations"]))
    if len(outliers):
        print(f"WARNING {describe_outliers(outliers)}. They pass the contracts; the pipeline caps them to their "
              "series' local median before training and reports them.", file=sys.stderr)
    return 0


def _configure_env(args) -> None:
    """The CLI sets the same environment variables a deployment would, before the definitions are imported."""
    if getattr(args, "path", None):
        os.environ["RETAIL_DAGSTER_DATA"] = os.path.abspath(args.path) if "://" not in args.path else args.path
        os.environ.setdefault("RETAIL_DAGSTER_SOURCE", args.source or "files")
    if getattr(args, "source", None):
        os.environ["RETAIL_DAGSTER_SOURCE"] = args.source
    if getattr(args, "out", None):
        os.environ["RETAIL_DAGSTER_OUT"] = os.path.abspath(args.out) if "://" not in args.out else args.out


def latest_plannable_date() -> str:
    """The day after the last observed sales day of the configured source."""
    import pandas as pd

    from . import settings

    if settings.source_kind() == "demo":
        return (pd.Timestamp(settings.demo_size_from_env().end_date) + pd.Timedelta(days=1)).strftime("%Y-%m-%d")
    from .definitions import defs

    tables = defs.resources["data_source"].load()
    return (tables["sales"]["date"].max() + pd.Timedelta(days=1)).strftime("%Y-%m-%d")


def run_pipeline(date: str, groups: list[str] | None = None, instance=None, raise_on_error: bool = False,
                 log_level: str = "WARNING") -> dict:
    """Materialize the daily pipeline for `date` and each group, in process, through the job the UI uses."""
    import dagster as dg

    from .definitions import defs
    from .jobs import DAILY_PIPELINE
    from .partitions import partition_key, partition_setup

    all_groups = list(partition_setup()[1])
    groups = groups or all_groups
    unknown = sorted(set(groups) - set(all_groups))
    if unknown:
        raise SystemExit(f"unknown SKU group(s) {unknown}; groups: {all_groups}")
    job = defs.resolve_job_def(DAILY_PIPELINE)
    instance = instance or (dg.DagsterInstance.get() if os.environ.get("DAGSTER_HOME") else dg.DagsterInstance.ephemeral())
    summary: dict = {"date": date, "groups": {}, "success": True}
    for group in groups:
        t0 = time.perf_counter()
        result = job.execute_in_process(partition_key=partition_key(date, group), instance=instance,
                                        raise_on_error=raise_on_error,
                                        run_config={"loggers": {"console": {"config": {"log_level": log_level}}}})
        rows, paths = {}, {}
        for ev in result.get_asset_materialization_events():
            meta = ev.materialization.metadata
            name = ev.asset_key.to_user_string()
            if "rows" in meta:
                rows[name] = meta["rows"].value
            if "path" in meta:
                paths[name] = str(meta["path"].value)
        checks = {}
        for ev in result.get_asset_check_evaluations():
            checks[f"{ev.asset_key.to_user_string()}:{ev.check_name}"] = (
                "passed" if ev.passed else f"FAILED ({ev.severity.value.lower()})")
        summary["groups"][group] = {"success": result.success, "run_id": result.run_id, "rows": rows,
                                    "checks": checks, "paths": paths, "seconds": round(time.perf_counter() - t0, 2),
                                    "step_seconds": step_seconds(instance, result.run_id)}
        summary["success"] &= result.success
    return summary


def step_seconds(instance, run_id: str) -> dict[str, float]:
    """Seconds each step of a run took, from its event log."""
    starts, out = {}, {}
    for rec in instance.all_logs(run_id):
        ev = rec.dagster_event
        if ev is None or ev.step_key is None:
            continue
        if ev.event_type_value == "STEP_START":
            starts[ev.step_key] = rec.timestamp
        elif ev.event_type_value in ("STEP_SUCCESS", "STEP_FAILURE") and ev.step_key in starts:
            out[ev.step_key] = round(rec.timestamp - starts[ev.step_key], 3)
    return out


def print_summary(summary: dict) -> None:
    from . import settings

    print(f"\nDaily pipeline for {summary['date']}: {'SUCCESS' if summary['success'] else 'FAILED'}")
    for group, g in summary["groups"].items():
        print(f"\n[{group}] run {g['run_id'][:8]} {'ok' if g['success'] else 'FAILED'} in {g['seconds']}s")
        for name, n in g["rows"].items():
            print(f"  {name:<24} {n:>10,} rows")
        failed = {k: v for k, v in g["checks"].items() if v != "passed"}
        print(f"  checks: {len(g['checks']) - len(failed)}/{len(g['checks'])} passed"
              + "".join(f"\n    {k}: {v}" for k, v in failed.items()))
    print(f"\nOutputs: {settings.out_path()}/<asset>/<date>/<sku_group>.parquet")
    print("Open the UI: make ui   (or: DAGSTER_HOME=$PWD/.dagster_home dagster dev -w workspace.yaml), then "
          "http://127.0.0.1:3000")


def _cmd_run(args) -> int:
    _configure_env(args)
    date = args.date or latest_plannable_date()
    groups = [g.strip() for g in args.groups.split(",")] if args.groups else None
    summary = run_pipeline(date, groups, log_level="DEBUG" if args.verbose else "WARNING")
    print_summary(summary)
    if args.json:
        print(json.dumps(summary, default=str))
    return 0 if summary["success"] else 1


def _cmd_backtest(args) -> int:
    from .core.backtest import backtest_main

    backtest_main(path=args.path, m5=args.m5, horizon=args.horizon, cutoffs=args.cutoffs)
    return 0


def _cmd_audit(args) -> int:
    from .resources.audit import audit_main

    return audit_main(date=args.date, group=args.group, sku=args.sku, path=args.path, s3_uri=args.s3_uri,
                      endpoint_url=args.endpoint_url)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="retail-dagster", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="write the demo data set (and truth/) as Parquet")
    g.add_argument("--out", required=True)
    g.add_argument("--skus", type=int, default=200)
    g.add_argument("--stores", type=int, default=6)
    g.add_argument("--warehouses", type=int, default=1)
    g.add_argument("--days", type=int, default=730)
    g.add_argument("--seed", type=int, default=7)
    g.add_argument("--end-date", default=None, help="last observed day (default: the demo's fixed end date)")
    g.set_defaults(fn=_cmd_generate)

    v = sub.add_parser("validate", help="check a folder (or s3:// prefix) of input tables against the contracts")
    v.add_argument("--path", required=True)
    v.add_argument("--endpoint-url", default=None)
    v.set_defaults(fn=_cmd_validate)

    r = sub.add_parser("run", help="materialize the daily pipeline for a date through Dagster (in process)")
    r.add_argument("--date", default=None, help="planning day (default: the day after the last sales day)")
    r.add_argument("--groups", default=None, help="comma-separated SKU groups (default: all)")
    r.add_argument("--path", default=None, help="input tables (default: the embedded demo data)")
    r.add_argument("--source", default=None, choices=["demo", "files", "m5"])
    r.add_argument("--out", default=None, help="where asset values go (default ./out)")
    r.add_argument("--json", action="store_true", help="also print the summary as JSON")
    r.add_argument("--verbose", action="store_true", help="show Dagster's debug log")
    r.set_defaults(fn=_cmd_run)

    b = sub.add_parser("backtest", help="rolling-origin forecast backtest vs statsforecast baselines")
    b.add_argument("--path", default=None)
    b.add_argument("--m5", default=None, help="folder with the Kaggle M5 csv files")
    b.add_argument("--horizon", type=int, default=14)
    b.add_argument("--cutoffs", type=int, default=3)
    b.set_defaults(fn=_cmd_backtest)

    a = sub.add_parser("audit", help="print the decision history of a day from the audit trail")
    a.add_argument("--date", required=True)
    a.add_argument("--group", default=None)
    a.add_argument("--sku", default=None)
    a.add_argument("--path", default=None, help="local audit base (default ./out)")
    a.add_argument("--s3-uri", default=None)
    a.add_argument("--endpoint-url", default=None)
    a.set_defaults(fn=_cmd_audit)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
