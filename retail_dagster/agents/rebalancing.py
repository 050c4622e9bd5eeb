"""Rebalancing agent: the transfer optimiser (one MIP per partition, HiGHS) or the greedy rule engine, and, when
switched on, an LLM review that may approve, trim or reject transfers but never add units."""

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar, Optional

import dagster as dg
import pandas as pd
from pydantic import Field

from ..checks import TRANSFER_CHECKS, transfer_check_results
from ..core.asof import PlanningInputs
from ..core.costs import empty_usage
from ..core.rebalancing import RebalancingSettings, plan_transfers, plan_violations, positions, \
    share_of_network_stock_moved
from ..display import engine_counts, md_table, num
from .base import Agent, Decision, engine_label
from .rebalancing_llm import review_transfers

_R = RebalancingSettings()


@dataclasses.dataclass
class PlanSummary:
    """How the plan was made: the solver and its status, what the plan moves and costs, what it saves by the
    engine's objective, why it is empty when it is; `solver_report` keeps the solver's full report (audited)."""

    engine: str
    solver: str
    solver_status: str
    transfers: int
    units: int
    cost_usd: float
    seconds: float
    saving_usd: Optional[float]
    why_empty: Optional[str]
    share_of_network_stock_moved: float
    solver_report: dict[str, Any]

    @classmethod
    def of(cls, info: dict, share: float) -> "PlanSummary":
        return cls(engine=info["engine"], solver=str(info.get("solver", info["engine"])),
                   solver_status=str(info.get("solver_status", "")), transfers=int(info["transfers"]),
                   units=int(info["units"]), cost_usd=float(info["cost"]), seconds=float(info["seconds"]),
                   saving_usd=info.get("saving_usd"), why_empty=info.get("why_empty"),
                   share_of_network_stock_moved=float(share),
                   solver_report={k: v for k, v in info.items() if k != "settings"})


class RebalancingAgent(Agent):
    """Stock transfers between stores and warehouses that cut stockouts and overstock at least cost."""

    name: ClassVar[str] = "rebalancing"
    asset_name: ClassVar[str] = "transfer_plan"
    resource_key: ClassVar[str] = "rebalancing_agent"
    group_name: ClassVar[str] = "rebalancing"
    owners: ClassVar[tuple[str, ...]] = ("team:supply-chain",)
    tag: ClassVar[str] = "rebalancing"
    # all it reads: the stock position, catalog and network (not the sales and inventory histories)
    ingest_inputs: ClassVar[Optional[tuple[str, ...]]] = ("inventory_snapshot", "catalog_slice", "store_network",
                                                          "transfer_lanes")
    upstream: ClassVar[tuple[str, ...]] = ("demand_forecast", "price_recommendations")
    checks: ClassVar[tuple] = tuple(TRANSFER_CHECKS)
    local_model: ClassVar[str] = "local_optimizer"  # local_<solver_engine>: see model_label
    default_llm_model: ClassVar[str] = "qwen.qwen3-32b-v1:0"
    description: ClassVar[str] = """Transfers to ship today: senders keep their protection stock, receivers get \
what cuts shortage most per $.

Need and surplus come from stock on hand and in transit against the forecast quantiles over lead time +
review period; one mixed-integer model per partition (HiGHS) minimises transfer cost + lost margin from
shortages + overstock holding cost, with lane capacities, case packs, minimum quantities and a budget."""

    solver_engine: str = Field(default="optimizer", description="optimizer (MIP/min-cost) or greedy (rule based)")
    service_level: float = Field(default=_R.service_level, description="protection stock covers demand over lead "
                                                                       "time + review with this probability")
    review_period_days: int = Field(default=_R.review_period_days,
                                    description="days until the next chance to fix a store's stock")
    warehouse_reserve_share: float = Field(default=_R.warehouse_reserve_share,
                                           description="share of warehouse on-hand never transferred")
    overstock_cover_days: int = Field(default=_R.overstock_cover_days,
                                      description="stock above this many days of demand is overstock")
    daily_budget_usd: Optional[float] = Field(default=_R.daily_budget_usd,
                                              description="cap on the day's transfer cost per group")
    min_transfer_units: int = Field(default=_R.min_transfer_units,
                                    description="smallest transfer (on top of whole case packs)")
    max_share_moved: float = Field(default=0.15, description="warn when a plan moves more of the network's stock")

    def settings(self) -> RebalancingSettings:
        return RebalancingSettings(service_level=self.service_level, review_period_days=self.review_period_days,
                                   warehouse_reserve_share=self.warehouse_reserve_share,
                                   overstock_cover_days=self.overstock_cover_days,
                                   daily_budget_usd=self.daily_budget_usd, min_transfer_units=self.min_transfer_units)

    def model_label(self) -> str:
        return self.bedrock.model_for(self.name) if self.llm_on() else f"local_{self.solver_engine}"

    def plan(self, inputs: PlanningInputs, forecast: pd.DataFrame, prices: Optional[pd.DataFrame] = None):
        """(plan, info, positions, LLM usage). The LLM review, when on, may approve, trim (whole case packs) or
        reject each transfer; it can never add units or transfers."""
        s = self.settings()
        pos = positions(inputs, forecast, s, prices)
        plan, info = plan_transfers(inputs, forecast, s, prices=prices, engine=self.solver_engine, pos=pos)
        plan = plan.assign(engine=f"local_{self.solver_engine}") if len(plan) else plan.assign(
            engine=pd.Series(dtype=object))
        if not self.llm_on() or plan.empty:
            return plan, info, pos, empty_usage()
        with_pack = plan.merge(inputs.catalog[["sku_id", "case_pack"]], on="sku_id", how="left")
        reviewed, usage = review_transfers(with_pack, self.bedrock)
        reviewed = reviewed.merge(plan[["sku_id", "from_location", "to_location", "units"]].rename(
            columns={"units": "_engine_units"}), on=["sku_id", "from_location", "to_location"], how="left")
        share = (reviewed["units"] / reviewed["_engine_units"]).to_numpy(dtype=float)
        # a trim keeps its share of the benefit: a linear approximation of the engine's estimate
        for col in ("shortage_units_avoided", "overstock_units_relieved"):
            reviewed[col] = reviewed[col].to_numpy(dtype=float) * share
        return reviewed.drop(columns=["_engine_units", "case_pack"]), info, pos, usage

    def decide(self, inputs: PlanningInputs, upstream: Mapping[str, pd.DataFrame],
               source_identity: str = "") -> Decision:
        forecast = upstream["demand_forecast"]
        plan, info, pos, usage = self.plan(inputs, forecast, upstream.get("price_recommendations"))
        violations = plan_violations(plan, pos, inputs.lanes, inputs.catalog, self.settings())
        share = share_of_network_stock_moved(plan, pos)
        summary = PlanSummary.of(info, share)
        return Decision(frame=plan, summary=summary,
                        checks=list(transfer_check_results(violations, share, self.max_share_moved)),
                        usage=usage, engine=engine_label(plan), model=self.model_label(),
                        n_sku_locations=int(forecast[["sku_id", "location_id"]].drop_duplicates().shape[0]),
                        metadata=plan_metadata(plan, info), audit_extra={"solver": summary.solver_report})


def plan_metadata(plan: pd.DataFrame, info: dict) -> dict:
    meta = {
        "transfers": dg.MetadataValue.int(len(plan)),
        "units_moved": dg.MetadataValue.int(int(plan["units"].sum()) if len(plan) else 0),
        "transfer_cost_usd": num(float(plan["cost"].sum()) if len(plan) else 0.0),
        "shortage_units_avoided": num(float(plan["shortage_units_avoided"].sum()) if len(plan) else 0.0),
        "overstock_units_relieved": num(float(plan["overstock_units_relieved"].sum()) if len(plan) else 0.0),
        "engines": engine_counts(plan),
        "solver": dg.MetadataValue.text(f"{info.get('solver', info['engine'])}: {info.get('solver_status', '')}"),
        "largest_moves": md_table(plan.nlargest(10, "units")[
            ["sku_id", "from_location", "to_location", "units", "cost", "shortage_units_avoided", "reason"]]
            if len(plan) else plan),
    }
    for key in ("saving_usd", "objective_usd", "objective_without_plan_usd", "gap_vs_relaxation_pct", "mip_gap",
                "seconds"):
        if isinstance(info.get(key), (int, float)):
            meta[key] = num(float(info[key]))
    if not len(plan):
        meta["empty_plan_reason"] = dg.MetadataValue.text(str(info.get("why_empty",
                                                                       "no transfer improves the objective")))
    return meta
