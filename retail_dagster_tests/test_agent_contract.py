"""The agent contract: one guardrail setting reaches every place that enforces it, and a new agent is one class plus
one registry line (here: registered by the test) that the whole pipeline picks up with its checks and costs."""

from __future__ import annotations

import os
from typing import ClassVar

import dagster as dg
import numpy as np
import pandas as pd
import pytest
from pydantic import Field

from retail_dagster.agents import registry
from retail_dagster.agents.base import Agent, Decision
from retail_dagster.agents.pricing import GuardrailConfig, PricingAgent
from retail_dagster.assets import accuracy, ingest
from retail_dagster.assets.agents import agent_assets
from retail_dagster.assets.costs import cost_assets
from retail_dagster.checks import PRICE_AT_BOUND, check_spec
from retail_dagster.core.asof import planning_inputs
from retail_dagster.core.costs import empty_usage
from retail_dagster.core.guardrails import MAX_INCREASE
from retail_dagster.partitions import partition_key
from retail_dagster.audit import audit_runs, read_audit
from retail_dagster.resources.bedrock import BedrockResource
from retail_dagster.settings import settings_problems
from retail_dagster_tests.test_pipeline import resources

DATE, GROUP = "2026-11-25", "grocery"


@pytest.fixture(scope="module")
def pricing_case(demo):
    t = demo.tables
    date = t["sales"]["date"].max() + pd.Timedelta(days=1)
    inputs = planning_inputs(t, date, GROUP)
    dem = demo.truth["demand"]
    fc = dem[(dem["date"] >= date) & (dem["date"] < date + pd.Timedelta(days=14))
             & dem["sku_id"].isin(inputs.catalog["sku_id"])]
    fc = fc.rename(columns={"date": "target_date", "expected_demand": "mean"})
    fc = fc.assign(horizon_day=(fc["target_date"] - date).dt.days + 1, p10=fc["mean"], p50=fc["mean"],
                   p90=fc["mean"], model="truth")
    categories = inputs.catalog["category"].value_counts()
    return inputs, fc, str(categories.index[0])


def _with_category(recs: pd.DataFrame, inputs) -> pd.Series:
    return recs[["sku_id"]].merge(inputs.catalog[["sku_id", "category"]], on="sku_id", how="left")["category"]


def test_one_guardrail_setting_reaches_engine_llm_recheck_blocking_check_and_warning(pricing_case):
    inputs, fc, tight = pricing_case
    rules = GuardrailConfig(max_daily_change_pct=6.0, price_endings=[], min_days_between_changes=0,
                            category_overrides={tight: {"max_daily_change_pct": 2.0}})
    agent = PricingAgent(guardrails=rules)
    decision = agent.decide(inputs, {"demand_forecast": fc})
    recs = decision.frame
    in_tight = (_with_category(recs, inputs) == tight).to_numpy()
    assert in_tight.any() and (~in_tight).any()
    bound = np.where(in_tight, 2.0, 6.0)

    # 1. the engine: every change within its category's bound, and the global one used elsewhere
    change = recs["change_pct"].abs().to_numpy()
    assert (change <= bound + 0.01).all()
    assert change[~in_tight].max() > 2.0 + 0.01  # the global 6% is what the other categories get

    # 2. the LLM re-check: an answer 50% above the current price is cut back to each row's own bound
    wild = recs.assign(recommended_price=np.round(recs["current_price"] * 1.5, 2))
    rechecked = agent._reapply_guardrails(wild, recs, inputs)
    up = (rechecked["recommended_price"] / rechecked["current_price"] - 1).to_numpy() * 100
    held = in_tight & (up < 1e-9)  # rows the rules hold (promotion lock, MSRP, ...) stay put
    assert (up <= bound + 0.01).all() and (up[in_tight & ~held] > 1.0).any()

    # 3. the blocking check: +4% breaks the tight category's 2% but not the global 6%
    moved = recs.assign(recommended_price=np.round(recs["current_price"] * 1.04, 2))
    moved["change_pct"] = (moved["recommended_price"] / moved["current_price"] - 1) * 100
    violations = agent.violations(moved, inputs)
    flagged = set(violations.loc[violations["rule"] == MAX_INCREASE, "sku_id"])
    assert flagged and flagged <= set(recs.loc[in_tight, "sku_id"])

    # 4. the at-bound warning: +2% sits at the bound in the tight category only
    nudged = recs.assign(recommended_price=np.round(recs["current_price"] * 1.02, 2))
    nudged["change_pct"] = (nudged["recommended_price"] / nudged["current_price"] - 1) * 100
    from retail_dagster.checks import price_check_results

    results = {r.check_name: r for r in price_check_results(nudged, fc, violations.iloc[0:0], rules.settings(),
                                                            inputs.catalog, 1.0, 1.0)}
    changed = (nudged["recommended_price"] - nudged["current_price"]).abs() >= 0.005
    assert (changed & in_tight).any() and (changed & ~in_tight).any()
    assert results[PRICE_AT_BOUND].metadata["changes_at_bound"].value == int((changed & in_tight).sum())


# ---- a toy fourth agent --------------------------------------------------------------------------------------
ALERTS_OK = "reorder_alerts_valid"
ALERTS_SHARE = "reorder_alert_share"


class ReorderAlertAgent(Agent):
    """Flags the SKU-locations whose stock on hand will not cover the forecast over the next `cover_days`."""

    name: ClassVar[str] = "alerts"
    asset_name: ClassVar[str] = "reorder_alerts"
    resource_key: ClassVar[str] = "alerts_agent"
    group_name: ClassVar[str] = "alerts"
    tag: ClassVar[str] = "alerts"
    description: ClassVar[str] = "SKU-locations whose stock will not cover the forecast."
    ingest_inputs: ClassVar[tuple[str, ...]] = ("inventory_snapshot", "catalog_slice")
    upstream: ClassVar[tuple[str, ...]] = ("demand_forecast",)
    checks: ClassVar[tuple] = (
        check_spec(ALERTS_OK, "reorder_alerts", True, "cover is finite and non-negative"),
        check_spec(ALERTS_SHARE, "reorder_alerts", False, "warns when most SKU-locations need stock"),
    )
    local_model: ClassVar[str] = "cover_rule"
    default_llm_model: ClassVar[str] = "qwen.qwen3-32b-v1:0"

    cover_days: int = Field(default=7, description="days the stock on hand must cover")

    def decide(self, inputs, upstream, source_identity=""):
        fc = upstream["demand_forecast"]
        need = fc[fc["horizon_day"] <= self.cover_days].groupby(["sku_id", "location_id"], as_index=False)["p90"].sum()
        stock = inputs.inventory_snapshot[["sku_id", "location_id", "on_hand"]]
        frame = need.merge(stock, on=["sku_id", "location_id"], how="left").fillna({"on_hand": 0.0})
        frame["short_units"] = np.maximum(frame["p90"] - frame["on_hand"], 0.0)
        frame["alert"] = frame["short_units"] > 0
        share = float(frame["alert"].mean()) if len(frame) else 0.0
        checks = [dg.AssetCheckResult(check_name=ALERTS_OK, passed=bool(np.isfinite(frame["short_units"]).all())),
                  dg.AssetCheckResult(check_name=ALERTS_SHARE, passed=share <= 0.9,
                                      severity=dg.AssetCheckSeverity.WARN, metadata={"share": share})]
        return Decision(frame=frame, summary={"alerts": int(frame["alert"].sum())}, checks=checks,
                        usage=empty_usage(), engine="local", model=self.model_label(), n_sku_locations=len(frame),
                        metadata={"alerts": dg.MetadataValue.int(int(frame["alert"].sum()))})


@pytest.fixture
def toy_registered():
    # the module-level definitions are built from the registry when first imported: build them before the toy
    # joins, so no later test sees it
    import retail_dagster.definitions  # noqa: F401

    registry.register(ReorderAlertAgent)
    try:
        yield ReorderAlertAgent
    finally:
        registry.unregister(ReorderAlertAgent)


def test_registering_an_agent_is_checked(toy_registered):
    class Clash(ReorderAlertAgent):
        name: ClassVar[str] = "pricing"

    with pytest.raises(ValueError, match="already PricingAgent's"):
        registry.register(Clash)

    class Orphan(ReorderAlertAgent):
        name: ClassVar[str] = "orphan"
        asset_name: ClassVar[str] = "orphan_alerts"
        resource_key: ClassVar[str] = "orphan_agent"
        upstream: ClassVar[tuple[str, ...]] = ("no_such_asset",)

    with pytest.raises(ValueError, match="no registered agent makes"):
        registry.register(Orphan)


@pytest.mark.slow
def test_a_registered_toy_agent_runs_in_the_pipeline_with_its_checks_costs_and_audit(toy_registered, demo_path,
                                                                                     model_cache, tmp_path,
                                                                                     monkeypatch):
    # the Bedrock switch, the settings check and the definitions know it without any other edit
    assert BedrockResource().engine_for("alerts") == "local"
    monkeypatch.setenv("RETAIL_DAGSTER_ALERTS_ENGINE", "bedrok")
    assert any("RETAIL_DAGSTER_ALERTS_ENGINE" in p for p in settings_problems())
    monkeypatch.delenv("RETAIL_DAGSTER_ALERTS_ENGINE")
    from retail_dagster.definitions import build_definitions

    defs = build_definitions()
    assert defs.resolve_assets_def("reorder_alerts") is not None and "alerts_agent" in defs.resources

    out = str(tmp_path / "out")
    res = {**resources(demo_path, out, model_cache), "alerts_agent": ReorderAlertAgent(cover_days=5)}
    result = dg.materialize([ingest.ingest_planning_inputs, *agent_assets(), accuracy.forecast_accuracy,
                             cost_assets()[0]], partition_key=partition_key(DATE, GROUP), resources=res,
                            raise_on_error=False)
    assert result.success
    alerts = pd.read_parquet(os.path.join(out, "reorder_alerts", DATE, f"{GROUP}.parquet"))
    fc = pd.read_parquet(os.path.join(out, "demand_forecast", DATE, f"{GROUP}.parquet"))
    assert len(alerts) == fc[["sku_id", "location_id"]].drop_duplicates().shape[0]
    expected = fc[fc["horizon_day"] <= 5].groupby(["sku_id", "location_id"])["p90"].sum()
    got = alerts.set_index(["sku_id", "location_id"])["p90"]
    assert np.allclose(got.loc[expected.index], expected)

    checks = {e.check_name: e for e in result.get_asset_check_evaluations()
              if e.asset_key.to_user_string() == "reorder_alerts"}
    assert set(checks) == {ALERTS_OK, ALERTS_SHARE} and checks[ALERTS_OK].passed
    costs = pd.read_parquet(os.path.join(out, "agent_costs", DATE, f"{GROUP}.parquet"))
    assert list(costs["agent"]) == ["demand", "pricing", "rebalancing", "alerts"]
    audited = read_audit(out, DATE, group=GROUP, asset="reorder_alerts")
    assert len(audited) == len(alerts) and audited["complete"].all()
    assert set(audit_runs(out, DATE, group=GROUP, asset="reorder_alerts")["model"]) == {"cover_rule"}
