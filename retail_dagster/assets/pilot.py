"""The closed-loop pilot as an asset: launch it from the UI with its size as run config; the report (KPI table,
chart, uplift figures) shows on the materialization."""

import os

import dagster as dg
from pydantic import Field

from .. import settings
from ..core.storage import is_s3
from ..core.plots import image_markdown
from ..pilot import ARMS, PilotConfig, format_report, report_markdown, run_pilot

PILOT_GROUP = "pilot"


class PilotRunConfig(dg.Config):
    """Size of the simulated network and which arms to compare."""

    weeks: int = Field(default=4, description="pilot length in weeks")
    skus: int = Field(default=200, description="SKUs in the simulated network")
    stores: int = Field(default=4, description="stores")
    warehouses: int = Field(default=1, description="warehouses")
    seed: int = Field(default=7, description="seed of the world (demand, noise, disruptions)")
    arms: list[str] = Field(default=list(ARMS), description="hold, loop, pricing, rebalancing")
    parallel: int = Field(default=3, description="agent arms run at once (one process each)")


@dg.asset(group_name=PILOT_GROUP, owners=["team:retail-data"], tags={"layer": "pilot"})
def closed_loop_pilot(context: dg.AssetExecutionContext, config: PilotRunConfig) -> dg.MaterializeResult:
    """Runs the three agents day after day in a simulated store network whose true demand is known, each agent arm
    through the real daily job, and compares gross profit, lost sales, stock and prices with holding prices and
    shipping nothing (`hold`). Writes the daily KPIs (Parquet) and a chart (PNG) beside the asset values."""
    base = settings.out_path()
    base = os.path.abspath("out") if is_s3(base) else base  # the pilot's own files are local scratch
    out = os.path.join(base, "pilot", context.run_id[:8])
    cfg = PilotConfig(skus=config.skus, stores=config.stores, warehouses=config.warehouses, weeks=config.weeks,
                      seed=config.seed, arms=tuple(config.arms), parallel=config.parallel, out=out)
    cfg.validate()
    report = run_pilot(cfg, log=context.log.info)
    context.log.info("\n" + format_report(report))
    with open(os.path.join(out, "pilot_chart.png"), "rb") as fh:
        chart = fh.read()
    meta = {
        "report": dg.MetadataValue.md(report_markdown(report)),
        "chart": dg.MetadataValue.md(image_markdown(chart, "cumulative gross profit and lost units per arm")),
        "daily_kpis": dg.MetadataValue.path(os.path.join(out, "pilot_daily_kpis.parquet")),
        "guardrail_violations": dg.MetadataValue.int(int(report["guardrail_violations"])),
        "seconds": dg.MetadataValue.float(float(report["seconds"])),
    }
    for key in ("profit_uplift_pct", "lost_units_cut_pct", "inventory_value_change_pct"):
        if report.get(key) is not None:
            meta[key] = dg.MetadataValue.float(float(report[key]))
    for arm, kpis in report["arms"].items():
        meta[f"{arm}_gross_profit_usd"] = dg.MetadataValue.float(float(kpis["gross_profit"]))
    return dg.MaterializeResult(metadata=meta)
