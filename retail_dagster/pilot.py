"""The closed-loop pilot: the three agents run day after day against a simulated store network whose true demand is
known (core/world.py), and their gross profit, lost sales and stock are compared with holding prices and shipping
nothing (today's practice).

Arms: `hold` (no agents), `loop` (forecast + pricing + transfers), `pricing` (forecast + pricing, no transfers),
`rebalancing` (forecast + transfers, prices held). Every agent arm runs the real daily job (`daily_pipeline`: the
same assets, checks and resources as `retail-dagster run`) in process for every SKU group and pilot day, on the
tables the world has written so far; only decisions whose blocking checks passed reach the world. Each agent arm
runs in its own process (its own data folder, outputs, audit, model cache and Dagster instance), up to `parallel`
at once. Same seed and arguments give the same figures (timings aside).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field

import pandas as pd

from .core.demo import DEFAULT_END_DATE, HORIZON_DAYS, generate_demo
from .core.world import World, WorldSettings, summarize_kpis

ARMS = ("hold", "loop", "pricing", "rebalancing")
# which agents' decisions reach the world in each arm (the forecast runs in every agent arm)
ARM_DECISIONS = {"hold": (), "loop": ("prices", "transfers"), "pricing": ("prices",),
                 "rebalancing": ("transfers",)}
STATIC_TABLES = ("catalog", "locations", "promotions", "events", "weather", "lanes")
DAILY_TABLES = ("sales", "inventory", "traffic")
REPORT_KPIS = ("gross_profit", "revenue", "units_sold", "lost_units", "fill_rate", "avg_inventory_value",
               "price_index", "price_changes", "markdown_spend", "transfer_units", "transfer_cost", "holding_cost",
               "guardrail_violations", "price_violations", "transfer_violations", "failed_blocking_checks",
               "blocked_runs", "llm_usd", "seconds_per_day")


@dataclass(frozen=True)
class PilotConfig:
    skus: int = 200
    stores: int = 4
    warehouses: int = 1
    weeks: int = 4
    seed: int = 7
    arms: tuple[str, ...] = ARMS
    history_days: int = 480  # the demo history before the pilot: a year of training data plus lags and holdout
    end_date: str = DEFAULT_END_DATE  # the pilot's last day (in the past, so every day is a valid partition)
    out: str = "out/pilot"
    parallel: int = 3  # agent arms run at once, one process each: all three by default, so no core idles at the end
    world: dict = field(default_factory=dict)  # WorldSettings overrides (holding rate, disruptions)
    pilot_days: int | None = None  # a pilot shorter than whole weeks (tests); None = weeks x 7

    @property
    def days(self) -> int:
        return self.pilot_days or self.weeks * 7

    @property
    def start(self) -> pd.Timestamp:
        return pd.Timestamp(self.end_date) - pd.Timedelta(days=self.days - 1)

    def validate(self) -> None:
        unknown = sorted(set(self.arms) - set(ARMS))
        if unknown:
            raise ValueError(f"unknown pilot arm(s) {unknown}; arms: {', '.join(ARMS)}")
        if self.weeks < 1 or self.skus < 1 or self.stores < 2 or self.warehouses < 1:
            raise ValueError("the pilot needs weeks >= 1, skus >= 1, stores >= 2 and warehouses >= 1")
        if self.history_days < 120:
            raise ValueError(f"history_days={self.history_days}: the forecast needs at least 120 days of history")


def pilot_demo(cfg: PilotConfig):
    """The demo data set the world starts from: history through the day before the pilot, truth through it."""
    return generate_demo(n_skus=cfg.skus, n_stores=cfg.stores, n_warehouses=cfg.warehouses,
                         n_days=cfg.history_days, seed=cfg.seed,
                         end_date=(cfg.start - pd.Timedelta(days=1)).strftime("%Y-%m-%d"),
                         horizon_days=cfg.days + HORIZON_DAYS)


def make_world(cfg: PilotConfig) -> World:
    return World(pilot_demo(cfg), cfg.start, cfg.days, WorldSettings(seed=cfg.seed, **cfg.world))


def _write_observed(world: World, data_dir: str, tables: tuple[str, ...]) -> None:
    from .core.loading import write_tables

    obs = world.observed_tables()
    write_tables({t: obs[t] for t in tables}, data_dir)


def run_hold(cfg: PilotConfig) -> pd.DataFrame:
    """The `hold` arm: prices held, nothing shipped, no agents."""
    world = make_world(cfg)
    rows = []
    for _ in range(cfg.days):
        t0 = time.perf_counter()
        kpis = world.step()
        rows.append(kpis | {"blocked_runs": 0.0, "failed_blocking_checks": 0.0, "llm_usd": 0.0,
                            "seconds": time.perf_counter() - t0})
    return pd.DataFrame(rows).assign(arm="hold")


def _arm_environment(arm_dir: str) -> dict[str, str]:
    return {
        "RETAIL_DAGSTER_SOURCE": "files",
        "RETAIL_DAGSTER_DATA": os.path.join(arm_dir, "data"),
        "RETAIL_DAGSTER_OUT": os.path.join(arm_dir, "out"),
        "RETAIL_DAGSTER_AUDIT": os.path.join(arm_dir, "out"),
        # one model cache for every arm: caches are keyed by the content of the training window, so the arms share
        # what they trained on the common history before the pilot and train their own models once they diverge
        "RETAIL_DAGSTER_MODEL_CACHE": os.path.join(os.path.dirname(os.path.dirname(arm_dir)), "model_cache"),
        "RETAIL_DAGSTER_METADATA_CHARTS": "0",  # hundreds of runs: no per-run PNG charts
        # one thread per process: the arms' processes share the cores
        "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
    }


def arm_definitions(arm: str):
    """The deployment's definitions (built from the environment, as `retail-dagster run` builds them), with the
    agents that the arm leaves out switched to holding: pricing may not move a price (max change 0), rebalancing
    has no budget."""
    import dagster as dg

    from .agents.pricing import PricingAgent
    from .agents.rebalancing import RebalancingAgent
    from .definitions import defs

    def with_setting(resource, **update):  # a new resource (a copy would keep the old config Dagster reads)
        return type(resource)(**{**{k: getattr(resource, k) for k in type(resource).model_fields}, **update})

    resources = dict(defs.resources)
    if "prices" not in ARM_DECISIONS[arm]:  # no price moves: max change 0, in every category
        pricing = resources[PricingAgent.resource_key]
        rules = pricing.guardrails
        hold = with_setting(rules, max_daily_change_pct=0.0, category_overrides={
            cat: {**over, "max_daily_change_pct": 0.0} for cat, over in rules.category_overrides.items()})
        resources[PricingAgent.resource_key] = with_setting(pricing, guardrails=hold)
    if "transfers" not in ARM_DECISIONS[arm]:
        resources[RebalancingAgent.resource_key] = with_setting(resources[RebalancingAgent.resource_key],
                                                                daily_budget_usd=0.0)
    return dg.Definitions(assets=list(defs.assets), jobs=list(defs.jobs), schedules=list(defs.schedules),
                          resources=resources)


def _decisions(summary_group: dict, io_manager, date: str, group: str, asset: str) -> pd.DataFrame | None:
    """The asset's value for the partition if this run published it: the day is published whole, only when every
    blocking check of the run passed; otherwise the world gets no decision from the group (prices held, nothing
    shipped)."""
    from .partitions import partition_key

    key = partition_key(date, group)
    if asset not in summary_group["rows"] or io_manager.published_runs(key).get(asset) != summary_group["run_id"]:
        return None
    return io_manager.load_stored(asset, key)


def run_agent_arm(arm: str, cfg: PilotConfig) -> pd.DataFrame:
    """One agent arm, day by day: write the world's tables, run the daily job for every group, apply decisions."""
    arm_dir = os.path.abspath(os.path.join(cfg.out, "arms", arm))
    env = _arm_environment(arm_dir)
    os.environ.update(env)
    world = make_world(cfg)
    _write_observed(world, env["RETAIL_DAGSTER_DATA"], STATIC_TABLES + DAILY_TABLES)

    import dagster as dg

    from .cli import run_pipeline
    from .partitions import partition_setup

    definitions = arm_definitions(arm)
    io_manager = definitions.resources["io_manager"]
    if os.path.abspath(definitions.resources["data_source"].path) != env["RETAIL_DAGSTER_DATA"] or \
            os.path.abspath(io_manager.base_path) != env["RETAIL_DAGSTER_OUT"]:
        raise RuntimeError(f"arm {arm}: the definitions of this process were built for other folders "
                           f"({definitions.resources['data_source'].path}); run each arm in a fresh process")
    groups = list(partition_setup()[1])
    instance = dg.DagsterInstance.ephemeral()
    rows = []
    for _ in range(cfg.days):
        t0 = time.perf_counter()
        date = world.current_date.strftime("%Y-%m-%d")
        if world.day:
            _write_observed(world, env["RETAIL_DAGSTER_DATA"], DAILY_TABLES)
        summary = run_pipeline(date, groups, instance=instance, defs=definitions, step_timing=False)
        prices, transfers, blocked, usd = [], [], 0, 0.0
        for group, g in summary["groups"].items():
            blocked += int(not g["success"])
            usd += float(g.get("llm_usd", 0.0))
            # read back only the decisions the arm hands to the world
            p = _decisions(g, io_manager, date, group, "price_recommendations") \
                if "prices" in ARM_DECISIONS[arm] else None
            if p is not None:
                prices.append(p)
            tr = _decisions(g, io_manager, date, group, "transfer_plan") \
                if "transfers" in ARM_DECISIONS[arm] else None
            if tr is not None and len(tr):
                transfers.append(tr)
        kpis = world.step(pd.concat(prices, ignore_index=True) if prices else None,
                          pd.concat(transfers, ignore_index=True) if transfers else None)
        failed = [(group, name) for group, g in summary["groups"].items() for name, v in g["checks"].items()
                  if v.startswith("FAILED (error)")]
        for group, name in failed:
            world.record_violation("blocking_check", [group], [""], [name], date=world.dates[world.day - 1])
        kpis["failed_blocking_checks"] = float(len(failed))
        kpis["guardrail_violations"] += len(failed)
        rows.append(kpis | {"blocked_runs": float(blocked), "llm_usd": usd, "seconds": time.perf_counter() - t0})
    world.violation_log().to_parquet(os.path.join(arm_dir, "violations.parquet"), index=False)
    return pd.DataFrame(rows).assign(arm=arm)


def _arm_worker(arm: str, cfg_dict: dict) -> pd.DataFrame:
    cfg = PilotConfig(**{**cfg_dict, "arms": tuple(cfg_dict["arms"])})
    return run_agent_arm(arm, cfg)


def run_pilot(cfg: PilotConfig, log=print) -> dict:
    """Run every arm, write the daily KPIs (Parquet) and the chart (PNG) under `cfg.out`; return the report."""
    cfg.validate()
    t0 = time.perf_counter()
    os.makedirs(cfg.out, exist_ok=True)
    frames = []
    agent_arms = [a for a in cfg.arms if a != "hold"]
    if "hold" in cfg.arms:
        frames.append(run_hold(cfg))
    if agent_arms:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        workers = max(1, min(cfg.parallel, len(agent_arms)))
        ctx = mp.get_context("spawn")  # each arm builds its own definitions from its own environment
        # a fresh process per arm: the definitions are built from the environment once per process, so a
        # reused worker would run the next arm on the previous arm's folders
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, max_tasks_per_child=1) as pool:
            futures = {arm: pool.submit(_arm_worker, arm, asdict(cfg)) for arm in agent_arms}
            for arm, fut in futures.items():
                frames.append(fut.result())
                log(f"arm {arm} done")
    daily = pd.concat(frames, ignore_index=True)
    daily["arm"] = pd.Categorical(daily["arm"], categories=[a for a in ARMS if a in cfg.arms])
    daily = daily.sort_values(["arm", "date"]).reset_index(drop=True)
    report = pilot_report(daily, cfg, time.perf_counter() - t0)
    daily.to_parquet(os.path.join(cfg.out, "pilot_daily_kpis.parquet"), index=False)
    with open(os.path.join(cfg.out, "pilot_chart.png"), "wb") as fh:
        fh.write(pilot_chart_png(daily))
    with open(os.path.join(cfg.out, "pilot_report.json"), "w") as fh:
        json.dump(report, fh, indent=1)
    return report


def arm_totals(daily: pd.DataFrame) -> dict[str, dict[str, float]]:
    out = {}
    for arm, d in daily.groupby("arm", observed=True, sort=False):
        tot = summarize_kpis(d)
        for k in ("blocked_runs", "failed_blocking_checks", "price_violations", "transfer_violations"):
            tot[k] = float(d[k].sum())
        tot["llm_usd"] = float(d["llm_usd"].sum())
        tot["seconds_per_day"] = float(d["seconds"].mean())
        out[str(arm)] = {k: round(v, 4) for k, v in tot.items()}
    return out


def _pct(new: float, base: float) -> float | None:
    return round((new / base - 1) * 100, 2) if base else None


def pilot_report(daily: pd.DataFrame, cfg: PilotConfig, seconds: float) -> dict:
    arms = arm_totals(daily)
    report: dict = {"weeks": cfg.weeks, "skus": cfg.skus, "stores": cfg.stores, "warehouses": cfg.warehouses,
                    "seed": cfg.seed, "start": f"{cfg.start:%Y-%m-%d}", "end": cfg.end_date,
                    "holding_rate_per_year": WorldSettings(**cfg.world).holding_rate_per_year, "arms": arms}
    hold = arms.get("hold")
    if hold:
        report["vs_hold"] = {arm: {"profit_uplift_pct": _pct(a["gross_profit"], hold["gross_profit"]),
                                   "lost_units_cut_pct": -_pct(a["lost_units"], hold["lost_units"])
                                   if hold["lost_units"] else None,
                                   "inventory_value_change_pct": _pct(a["avg_inventory_value"],
                                                                      hold["avg_inventory_value"]),
                                   "units_sold_change_pct": _pct(a["units_sold"], hold["units_sold"])}
                             for arm, a in arms.items() if arm != "hold"}
        loop = report["vs_hold"].get("loop", {})
        report["profit_uplift_pct"] = loop.get("profit_uplift_pct")
        report["lost_units_cut_pct"] = loop.get("lost_units_cut_pct")
        report["inventory_value_change_pct"] = loop.get("inventory_value_change_pct")
    report["guardrail_violations"] = int(sum(a["guardrail_violations"] for a in arms.values()))
    report["seconds"] = round(seconds, 1)
    return report


def kpi_table(report: dict) -> pd.DataFrame:
    """Arms x the reported KPIs."""
    return pd.DataFrame(report["arms"]).T.reindex(columns=list(REPORT_KPIS))


def format_report(report: dict) -> str:
    table = kpi_table(report)
    lines = [f"Closed-loop pilot: {report['skus']} SKUs x {report['stores']} stores x {report['weeks']} weeks "
             f"({report['start']}..{report['end']}), seed {report['seed']}, holding cost "
             f"{report['holding_rate_per_year']:.0%} of unit cost per year", "",
             table.T.to_string(float_format=lambda v: f"{v:,.3f}" if abs(v) < 10 else f"{v:,.0f}")]
    if "vs_hold" in report:
        lines += ["", "Against hold (%):", pd.DataFrame(report["vs_hold"]).to_string(
            float_format=lambda v: f"{v:+.2f}")]
    lines.append(f"\nguardrail violations: {report['guardrail_violations']}; {report['seconds']} s")
    return "\n".join(lines)


def report_markdown(report: dict) -> str:
    """The KPI table and the changes against hold as markdown (for the UI)."""
    out = kpi_table(report).T.to_markdown(floatfmt=",.2f")
    if "vs_hold" in report:
        out += "\n\n**Change against hold, %**\n\n" + pd.DataFrame(report["vs_hold"]).to_markdown(floatfmt="+.2f")
    return out


def pilot_chart_png(daily: pd.DataFrame, dpi: int = 80) -> bytes:
    """Cumulative gross profit, cumulative lost units and the unit-weighted price index per arm over the pilot."""
    import io

    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 3.2), dpi=dpi)
    ax1, ax2, ax3 = fig.subplots(1, 3)
    for arm, d in daily.groupby("arm", observed=True, sort=False):
        d = d.sort_values("date")
        ax1.plot(d["date"], d["gross_profit"].cumsum(), label=str(arm))
        ax2.plot(d["date"], d["lost_units"].cumsum(), label=str(arm))
        ax3.plot(d["date"], d["revenue"] / d["price_revenue_at_start"].where(d["price_revenue_at_start"] > 0),
                 label=str(arm))
    ax1.set_title("cumulative gross profit, USD", fontsize=9)
    ax2.set_title("cumulative lost units", fontsize=9)
    ax3.set_title("price index vs the start (unit-weighted)", fontsize=9)
    for ax in (ax1, ax2, ax3):
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7)
    fig.autofmt_xdate()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


__all__ = ["ARMS", "PilotConfig", "run_pilot", "format_report", "report_markdown"]
