"""`retail-dagster` command line: generate demo data, validate inputs, run the daily pipeline, backtest, read the
audit trail, run the closed-loop pilot."""

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
    from .core.loading import load_tables
    from .core.storage import make_s3_client

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
                 log_level: str = "WARNING", defs=None, step_timing: bool = True, workers: int = 0) -> dict:
    """Materialize the daily pipeline for `date` and each group through the job the UI uses (`defs`: other
    definitions holding that job, e.g. the pilot's, with other resources; `step_timing`: read each run's event log
    back for per-step seconds). `workers` 0: the groups' runs one after the other in this process; N: each group's
    run in a process of its own forked from a preloaded server (`preload.py`), at most N at once."""
    import dagster as dg

    from .jobs import DAILY_PIPELINE
    from .partitions import partition_key, partition_setup

    all_groups = list(partition_setup()[1])
    groups = groups or all_groups
    groups = list(dict.fromkeys(groups))  # --groups a,a runs a once
    unknown = sorted(set(groups) - set(all_groups))
    if unknown:
        raise UserError(f"unknown SKU group(s) {unknown}; groups: {all_groups}")
    if workers:
        if defs is not None or instance is not None:
            raise ValueError("run_pipeline(workers=...) runs the code location's job on the configured instance")
        return _run_in_workers(date, groups, workers, log_level, raise_on_error, step_timing)
    if defs is None:
        from .definitions import defs
    job = defs.resolve_job_def(DAILY_PIPELINE)
    if instance is None:
        instance = dg.DagsterInstance.get() if os.environ.get("DAGSTER_HOME") else dg.DagsterInstance.ephemeral()
    summary: dict = {"date": date, "groups": {}, "success": True}
    for group in groups:
        t0 = time.perf_counter()
        result = execute_partition(job, partition_key(date, group), instance, raise_on_error,
                                   {"loggers": {"console": {"config": {"log_level": log_level}}}})
        summary["groups"][group] = summarize_result(result, instance if step_timing else None, t0)
        summary["success"] &= result.success
    return summary


def _group_run(conn, date: str, group: str, log_level: str, raise_on_error: bool, step_timing: bool,
               threads: int, more_threads=None) -> None:
    """One group's run in a forked worker process: its summary (with its peak RSS) goes back through `conn`.

    `more_threads` (a pipe's receiving end): the parent sends a larger thread count when this run is left alone
    on the machine (no other run waiting or running); a thread here applies it, and the run's later steps (and
    LightGBM's, the Parquet reader's and the ingest's next calls) use the freed cores."""
    import threading

    from .core.loading import run_threads
    from .preload import limit_threads, peak_rss_gb

    limit_threads(threads)
    if more_threads is not None:
        def listen():
            try:
                limit_threads(int(more_threads.recv()))
            except (EOFError, OSError):  # the parent closed it: no more cores for this run
                pass

        threading.Thread(target=listen, name="retail-dagster-threads", daemon=True).start()
    try:
        summary = run_pipeline(date, [group], log_level=log_level, raise_on_error=raise_on_error,
                               step_timing=step_timing)
        summary["groups"][group]["peak_rss_gb"] = round(peak_rss_gb(), 3)
        summary["groups"][group]["threads"] = run_threads()  # at the end: more when the run was left alone
    except BaseException as exc:  # sent back whole: the parent reports it as this group's failure
        summary = {"error": f"{type(exc).__name__}: {exc}"}
    conn.send(summary)
    conn.close()


def _run_in_workers(date: str, groups: list[str], workers: int, log_level: str, raise_on_error: bool,
                    step_timing: bool) -> dict:
    """Each group's run in its own process forked from the preloaded server, at most `workers` at once, each with
    its share of the run's threads (the cores, or OMP_NUM_THREADS when set, divided by the runs at once). The last
    run, once alone (nothing waiting, nothing else running), is sent every thread: with 5 groups on 2 workers the
    fifth run would otherwise finish the day on one core while the other idles."""
    from multiprocessing.connection import wait

    from .core.loading import run_threads
    from .preload import worker_context

    ctx = worker_context()
    cores = run_threads()
    threads = max(1, cores // max(1, min(workers, len(groups))))
    summary: dict = {"date": date, "groups": {}, "success": True}
    pending, running = list(groups), {}
    while pending or running:
        while pending and len(running) < workers:
            group = pending.pop(0)
            recv, send = ctx.Pipe(duplex=False)
            more_recv, more_send = ctx.Pipe(duplex=False)
            process = ctx.Process(target=_group_run, name=f"retail-dagster-{group}",
                                  args=(send, date, group, log_level, raise_on_error, step_timing, threads,
                                        more_recv))
            process.start()
            send.close()
            more_recv.close()
            running[group] = (process, recv, time.perf_counter(), more_send)
        if not pending and len(running) == 1 and threads < cores:
            (process, recv, t0, more_send), = running.values()
            if not more_send.closed:
                try:
                    more_send.send(cores)
                except OSError:  # it has just ended
                    pass
                more_send.close()
        wait([r[1] for r in running.values()] + [r[0].sentinel for r in running.values()])
        for group, (process, recv, t0, more_send) in list(running.items()):
            if not recv.poll() and process.is_alive():
                continue
            try:
                result = recv.recv()
            except EOFError:  # died without a word (killed, out of memory): its end of the pipe closed empty
                result = None
            recv.close()
            more_send.close()
            process.join()
            if result is None:
                result = {"error": f"the run's process exited with code {process.exitcode}"}
            del running[group]
            if "error" in result:
                if raise_on_error:
                    raise RuntimeError(f"group {group}: {result['error']}")
                result = {"groups": {group: failed_run_summary(result["error"], time.perf_counter() - t0)}}
            summary["groups"][group] = result["groups"][group]
            summary["success"] &= summary["groups"][group]["success"]
    summary["groups"] = {g: summary["groups"][g] for g in groups}
    return summary


def execute_partition(job, partition_key: str, instance, raise_on_error: bool, run_config: dict):
    """`job.execute_in_process` for one partition, as a deployment's run worker executes it: without keeping
    every step's output value in memory for the result (`execute_in_process` always does, so a 10,000 x 10
    group's input frames stayed alive through every later step of the run). The result's events, run id and
    success are the same; its output values are not kept (nothing here reads them)."""
    from dagster._core.definitions.job_base import InMemoryJob
    from dagster._core.execution.execute_in_process import core_execute_in_process, merge_run_tags

    tags = merge_run_tags(job_def=job, partition_key=partition_key, tags=None, asset_selection=[],
                          instance=instance, run_config=run_config)  # also validates the partition key
    ephemeral = job.as_ephemeral_job(resource_defs={}, input_values={})
    return core_execute_in_process(run_config=run_config, job=InMemoryJob(job_def=ephemeral), instance=instance,
                                   output_capturing_enabled=False, raise_on_error=raise_on_error, run_tags=tags)


def summarize_result(result, instance=None, t0: float | None = None) -> dict:
    """One group's run as the summary shows it: rows, paths, checks, errors, what was decided, warnings."""
    rows, paths, decided = {}, {}, {}
    for ev in result.get_asset_materialization_events():
        meta = ev.materialization.metadata
        name = ev.asset_key.to_user_string()
        if "rows" in meta:
            rows[name] = meta["rows"].value
        if "path" in meta:
            paths[name] = str(meta["path"].value)
        decided[name] = {k: v.value for k, v in meta.items() if k in SUMMARY_KEYS}
    checks, check_notes = {}, {}
    for ev in result.get_asset_check_evaluations():
        key = f"{ev.asset_key.to_user_string()}:{ev.check_name}"
        checks[key] = "passed" if ev.passed else f"FAILED ({ev.severity.value.lower()})"
        if not ev.passed and ev.description:
            check_notes[key] = ev.description
    errors = [_first_paragraph(ev) for ev in result.all_events if ev.event_type_value == "STEP_FAILURE"]
    input_errors = [m for m in (_contract_error(ev) for ev in result.all_events
                                if ev.event_type_value == "STEP_FAILURE") if m]
    return {"success": result.success, "run_id": result.run_id, "rows": rows, "checks": checks,
            "check_notes": check_notes, "errors": errors, "input_errors": input_errors, "decided": decided,
            "warnings": decision_warnings(decided), "paths": paths,
            "llm_usd": float(sum(decided.get(a, {}).get("llm_usd") or 0.0 for a in AGENT_ASSETS)),
            "seconds": round(time.perf_counter() - t0, 2) if t0 is not None else None,
            "step_seconds": step_seconds(instance, result.run_id) if instance is not None else {}}


def failed_run_summary(error: str, seconds: float) -> dict:
    """A group whose run never reported (its process died, or failed before Dagster ran it), shaped as
    summarize_result's summary."""
    return {"success": False, "run_id": "-" * 8, "rows": {}, "checks": {}, "check_notes": {}, "errors": [error],
            "input_errors": [], "decided": {}, "warnings": [], "paths": {}, "llm_usd": 0.0,
            "seconds": round(seconds, 2), "step_seconds": {}}


# metadata the run summary reads back per group (what was decided)
SUMMARY_KEYS = {"series", "forecast_units_14d", "implausible_sales_capped", "data_note", "engines", "changed",
                "changed_up", "changed_down", "avg_change_pct", "expected_margin_uplift_usd",
                "expected_margin_uplift_pct", "transfers", "units_moved", "shortage_units_avoided",
                "transfer_cost_usd", "llm_usd", "llm_calls", "llm_fallbacks", "empty_plan_reason"}
AGENT_ASSETS = ("demand_forecast", "price_recommendations", "transfer_plan")


def _contract_error(event) -> str | None:
    """The data contract message of a step that failed on invalid input (a run validates its partition's slice of
    the tables), else None."""
    error = getattr(event.event_specific_data, "error", None)
    while error is not None:
        if error.cls_name == "ContractError":
            message = error.message.strip()
            return message[len("ContractError: "):] if message.startswith("ContractError: ") else message
        error = error.cause
    return None


def _first_paragraph(event) -> str:
    """The message of a failed step without its traceback."""
    data = event.event_specific_data
    error = getattr(data, "error", None)
    message = error.message if error is not None else (event.message or "")
    if "DagsterAssetCheckFailedError" in message:
        return f"{event.step_key}: stopped by the failed blocking check(s) above; nothing downstream was written"
    return f"{event.step_key}: " + message.strip().split("\n\n")[0].strip()


def decision_warnings(decided: dict) -> list[str]:
    """What a reader of a SUCCESS must still know: LLM steps whose every answer fell back, capped sales rows."""
    out = []
    for asset in AGENT_ASSETS:
        meta = decided.get(asset, {})
        engines = meta.get("engines") or {}
        fell_back = sum(v for k, v in engines.items() if "fallback" in k)
        if fell_back and not engines.get("bedrock"):
            out.append(f"{asset}: every LLM answer fell back to the numeric engine ({fell_back} rows, "
                       f"{meta.get('llm_calls', 0)} calls): check the Bedrock endpoint, model access and "
                       "credentials; the decisions are the local engine's")
    capped = decided.get("demand_forecast", {}).get("implausible_sales_capped")
    if capped:
        out.append(f"demand_forecast: {capped} implausible sales row(s) capped before training "
                   "(see the forecast_within_series_history check; `retail-dagster validate` names them)")
    note = decided.get("demand_forecast", {}).get("data_note")
    if note and note != "ordinary history":
        out.append(f"demand_forecast: {note}")
    return out


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


def decision_lines(decided: dict) -> list[str]:
    """Per group, what was decided: forecast, price changes and margin, transfers and shortage avoided, LLM cost."""
    lines = []
    fc = decided.get("demand_forecast")
    if fc:
        lines.append(f"forecast: {fc.get('series', 0):,} series, {fc.get('forecast_units_14d', 0):,.0f} units over "
                     "14 days")
    pr = decided.get("price_recommendations")
    if pr:
        lines.append(f"prices: {pr.get('changed', 0)} changed ({pr.get('changed_up', 0)} up, "
                     f"{pr.get('changed_down', 0)} down, avg {pr.get('avg_change_pct', 0):+.1f}%); expected "
                     f"14-day margin {pr.get('expected_margin_uplift_usd', 0):+,.2f} USD "
                     f"({pr.get('expected_margin_uplift_pct', 0):+.2f}%)")
    tp = decided.get("transfer_plan")
    if tp:
        lines.append(f"transfers: {tp.get('transfers', 0)} moving {tp.get('units_moved', 0):,} units, "
                     f"{tp.get('shortage_units_avoided', 0):,.0f} shortage units avoided, cost "
                     f"{tp.get('transfer_cost_usd', 0):,.2f} USD"
                     + (f" ({tp['empty_plan_reason']})" if tp.get("empty_plan_reason") else ""))
    usd = sum(float(decided.get(a, {}).get("llm_usd", 0) or 0) for a in AGENT_ASSETS)
    calls = sum(int(decided.get(a, {}).get("llm_calls", 0) or 0) for a in AGENT_ASSETS)
    fallbacks = sum(int(decided.get(a, {}).get("llm_fallbacks", 0) or 0) for a in AGENT_ASSETS)
    if calls or fc or pr:
        lines.append(f"LLM: {usd:.4f} USD, {calls} calls, {fallbacks} fallbacks" if calls
                     else "LLM: off (local engines)")
    return lines


def print_summary(summary: dict) -> None:
    from . import settings

    warned = any(g.get("warnings") for g in summary["groups"].values())
    status = ("SUCCESS with warnings" if warned else "SUCCESS") if summary["success"] else "FAILED"
    print(f"\nDaily pipeline for {summary['date']}: {status}")
    for group, g in summary["groups"].items():
        print(f"\n[{group}] run {g['run_id'][:8]} {'ok' if g['success'] else 'FAILED'} in {g['seconds']}s")
        for line in decision_lines(g.get("decided", {})):
            print(f"  {line}")
        failed = {k: v for k, v in g["checks"].items() if v != "passed"}
        print(f"  checks: {len(g['checks']) - len(failed)}/{len(g['checks'])} passed"
              + "".join(f"\n    {k}: {v}" + (f" - {g['check_notes'][k]}" if k in g.get("check_notes", {}) else "")
                        for k, v in failed.items()))
        for error in g.get("errors", []):
            print(f"  error: {error}")
        for warning in g.get("warnings", []):
            print(f"  warning: {warning}")
    print(f"\nOutputs: {settings.out_path()}/<asset>/<date>/<sku_group>.parquet")
    print("Open the UI: make ui   (or: DAGSTER_HOME=$PWD/.dagster_home dagster dev -w workspace.yaml), then "
          "http://127.0.0.1:3000")


def check_planning_date(date: str) -> str:
    """The planning day as YYYY-MM-DD if it is a partition; a UserError naming the valid range otherwise."""
    import pandas as pd

    from .partitions import DATE_DIM, daily_by_group

    try:
        day = pd.Timestamp(date).strftime("%Y-%m-%d")
    except (ValueError, TypeError):
        raise UserError(f"--date {date!r} is not a date: use YYYY-MM-DD") from None
    dates = daily_by_group.get_partitions_def_for_dimension(DATE_DIM)
    keys = dates.get_partition_keys()
    if day not in set(keys):
        first, last = (keys[0], keys[-1]) if keys else ("-", "-")
        raise UserError(
            f"planning date {day} is not a partition: partitions run from {first} to {last} (today in "
            f"{dates.timezone or 'UTC'}; the daily partition of a day exists from that day on). Data that ends "
            f"after today (a demo or a test set dated in the future) needs --date within that range.")
    return day


def _cmd_run(args) -> int:
    _configure_env(args)
    if args.workers:  # the server imports the run's stack while this process reads the settings and the partitions
        from .preload import worker_context

        worker_context(start=True)
    from .settings import check_settings

    check_settings()
    date = check_planning_date(args.date or latest_plannable_date())
    groups = list(dict.fromkeys(g.strip() for g in args.groups.split(",") if g.strip())) if args.groups else None
    summary = run_pipeline(date, groups, log_level="DEBUG" if args.verbose else "CRITICAL", workers=args.workers)
    print_summary(summary)
    if args.json:
        print(json.dumps(summary, default=str))
    bad_input = [m for g in summary["groups"].values() for m in g.get("input_errors", [])]
    if bad_input:  # as when the tables are validated before the run: one paragraph, exit code 2
        print(f"ERROR (invalid input data): {bad_input[0]}\n(run again with --verbose for the traceback)",
              file=sys.stderr)
        return 2
    return 0 if summary["success"] else 1


def _cmd_backtest(args) -> int:
    from .core.backtest import backtest_main

    backtest_main(path=args.path, m5=args.m5, horizon=args.horizon, cutoffs=args.cutoffs)
    return 0


def _cmd_pilot(args) -> int:
    from .pilot import ARMS, PilotConfig, format_report, run_pilot

    arms = tuple(a.strip() for a in args.arms.split(",") if a.strip()) if args.arms else ARMS
    cfg = PilotConfig(skus=args.skus, stores=args.stores, warehouses=args.warehouses, weeks=args.weeks,
                      seed=args.seed, arms=arms, out=args.out, parallel=args.parallel,
                      history_days=args.history_days)
    try:
        cfg.validate()
    except ValueError as exc:
        print(f"pilot: {exc}", file=sys.stderr)
        return 2
    report = run_pilot(cfg, log=lambda msg: print(msg, file=sys.stderr))
    print(format_report(report))
    print(f"\nDaily KPIs: {os.path.join(cfg.out, 'pilot_daily_kpis.parquet')}; chart: "
          f"{os.path.join(cfg.out, 'pilot_chart.png')}")
    print(json.dumps(report, default=str))
    return 0


def _cmd_audit(args) -> int:
    from .audit.cli import audit_main

    return audit_main(date=args.date, group=args.group, sku=args.sku, path=args.path, s3_uri=args.s3_uri,
                      endpoint_url=args.endpoint_url)


def build_parser() -> argparse.ArgumentParser:
    from .core.asof import HORIZON_DAYS
    from .core.demo import DemoSize

    p = argparse.ArgumentParser(prog="retail-dagster", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="write the demo data set (and truth/) as Parquet")
    g.add_argument("--out", required=True)
    size = DemoSize()
    g.add_argument("--skus", type=int, default=size.n_skus)
    g.add_argument("--stores", type=int, default=size.n_stores)
    g.add_argument("--warehouses", type=int, default=size.n_warehouses)
    g.add_argument("--days", type=int, default=size.n_days)
    g.add_argument("--seed", type=int, default=size.seed)
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
    r.add_argument("--workers", type=int, default=0,
                   help="run each group in its own process, forked from one that imported the code location once, "
                        "at most this many at once, the cores shared between them (default 0: one after the other "
                        "in this process)")
    r.set_defaults(fn=_cmd_run)

    b = sub.add_parser("backtest", help="rolling-origin forecast backtest vs statsforecast baselines")
    b.add_argument("--path", default=None)
    b.add_argument("--m5", default=None, help="folder with the Kaggle M5 csv files")
    b.add_argument("--horizon", type=int, default=HORIZON_DAYS)
    b.add_argument("--cutoffs", type=int, default=3)
    b.set_defaults(fn=_cmd_backtest)

    pl = sub.add_parser("pilot", help="closed-loop pilot: run the agents day after day in a simulated network "
                                      "and compare their gross profit, lost sales and stock with holding")
    pl.add_argument("--skus", type=int, default=200)
    pl.add_argument("--stores", type=int, default=4)
    pl.add_argument("--warehouses", type=int, default=1)
    pl.add_argument("--weeks", type=int, default=4)
    pl.add_argument("--seed", type=int, default=7)
    pl.add_argument("--arms", default=None, help="comma-separated: hold,loop,pricing,rebalancing (default: all)")
    pl.add_argument("--out", default="out/pilot", help="where the daily KPIs, the chart and each arm's files go")
    pl.add_argument("--parallel", type=int, default=3, help="agent arms run at once (one process each)")
    pl.add_argument("--history-days", type=int, default=480, help="days of demo history before the pilot")
    pl.set_defaults(fn=_cmd_pilot)

    a = sub.add_parser("audit", help="print the decision history of a day from the audit trail")
    a.add_argument("--date", required=True)
    a.add_argument("--group", default=None)
    a.add_argument("--sku", default=None)
    a.add_argument("--path", default=None, help="local audit base (default ./out)")
    a.add_argument("--s3-uri", default=None)
    a.add_argument("--endpoint-url", default=None)
    a.set_defaults(fn=_cmd_audit)
    return p


class UserError(Exception):
    """A problem the user can fix (input, settings, arguments): printed as one paragraph, no traceback."""


def _user_errors() -> tuple[type, ...]:
    import dagster as dg

    from .core.contracts import ContractError
    from .settings import SettingsError

    return (UserError, ContractError, SettingsError, FileNotFoundError, dg.DagsterUnknownPartitionError,
            dg.DagsterInvalidDefinitionError)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except Exception as exc:
        if getattr(args, "verbose", False) or not isinstance(exc, _user_errors()):
            raise
        kind = {"ContractError": "invalid input data", "SettingsError": "invalid settings",
                "FileNotFoundError": "not found"}.get(type(exc).__name__, "cannot run")
        print(f"ERROR ({kind}): {exc}\n(run again with --verbose for the traceback)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
