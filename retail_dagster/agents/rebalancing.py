"""Rebalancing agent: the transfer optimiser (one MIP per partition, HiGHS) or the greedy rule engine, and, when
switched on, an LLM review that may approve, trim or reject transfers but never add units."""

from typing import Optional

import dagster as dg
import pandas as pd
from pydantic import Field

from ..core.asof import PlanningInputs
from ..core.costs import empty_usage
from ..core.rebalancing import RebalancingSettings, plan_transfers, plan_violations, positions, \
    share_of_network_stock_moved
from ..resources.bedrock import BedrockResource
from .rebalancing_llm import review_transfers


class RebalancingAgent(dg.ConfigurableResource):
    """Stock transfers between stores and warehouses that cut stockouts and overstock at least cost."""

    bedrock: Optional[BedrockResource] = Field(default=None, description="LLM client; its engine switch for "
                                                                         "'rebalancing' turns the LLM review on")
    solver_engine: str = Field(default="optimizer", description="optimizer (MIP/min-cost) or greedy (rule based)")
    service_level: float = Field(default=0.95, description="protection stock covers demand over lead time + review "
                                                           "with this probability")
    review_period_days: int = Field(default=7, description="days until the next chance to fix a store's stock")
    warehouse_reserve_share: float = Field(default=0.2, description="share of warehouse on-hand never transferred")
    overstock_cover_days: int = Field(default=28, description="stock above this many days of demand is overstock")
    daily_budget_usd: Optional[float] = Field(default=None, description="cap on the day's transfer cost per group")
    min_transfer_units: int = Field(default=1, description="smallest transfer (on top of whole case packs)")
    max_share_moved: float = Field(default=0.15, description="warn when a plan moves more of the network's stock")

    def settings(self) -> RebalancingSettings:
        return RebalancingSettings(service_level=self.service_level, review_period_days=self.review_period_days,
                                   warehouse_reserve_share=self.warehouse_reserve_share,
                                   overstock_cover_days=self.overstock_cover_days,
                                   daily_budget_usd=self.daily_budget_usd, min_transfer_units=self.min_transfer_units)

    def plan(self, inputs: PlanningInputs, forecast: pd.DataFrame, prices: Optional[pd.DataFrame] = None):
        """(plan, info, positions, LLM usage). The LLM review, when on, may approve, trim (whole case packs) or
        reject each transfer; it can never add units or transfers."""
        s = self.settings()
        pos = positions(inputs, forecast, s, prices)
        plan, info = plan_transfers(inputs, forecast, s, prices=prices, engine=self.solver_engine, pos=pos)
        plan = plan.assign(engine=f"local_{self.solver_engine}") if len(plan) else plan.assign(
            engine=pd.Series(dtype=object))
        if self.bedrock is None or self.bedrock.engine_for("rebalancing") != "bedrock" or plan.empty:
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

    def validate(self, plan: pd.DataFrame, pos: pd.DataFrame, inputs: PlanningInputs) -> tuple[pd.DataFrame, float]:
        violations = plan_violations(plan, pos, inputs.lanes, inputs.catalog, self.settings())
        return violations, share_of_network_stock_moved(plan, pos)
