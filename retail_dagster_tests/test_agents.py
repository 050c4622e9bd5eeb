"""Agent resources: weekly elasticity estimates are the same for every day of a week and never see that week."""

from __future__ import annotations

import os

import pandas as pd

from retail_dagster.agents.pricing import PricingAgent
from retail_dagster.core.asof import planning_inputs


def test_elasticities_are_weekly_cached_and_leak_free(demo_tables, tmp_path):
    agent = PricingAgent(model_cache_dir=str(tmp_path))
    monday = pd.Timestamp("2026-11-16")  # a grid date (the grid starts on Monday 2000-01-03)
    first = agent.elasticities(planning_inputs(demo_tables, monday + pd.Timedelta(days=2), "grocery"), "demo")
    files = [os.path.join(r, f) for r, _, fs in os.walk(tmp_path) for f in fs]
    assert len(files) == 1 and files[0].endswith("grocery/2026-11-16.parquet")
    same_week = agent.elasticities(planning_inputs(demo_tables, monday + pd.Timedelta(days=6), "grocery"), "demo")
    pd.testing.assert_frame_equal(first, same_week)
    # the estimate only uses data before the grid date: corrupting that week's sales changes nothing
    tables = dict(demo_tables)
    sales = tables["sales"].copy()
    week = sales["date"] >= monday
    sales.loc[week, "units"] = sales.loc[week, "units"] * 7 + 3
    tables["sales"] = sales
    later = planning_inputs(tables, monday + pd.Timedelta(days=3), "grocery")
    fresh = PricingAgent(model_cache_dir=None).elasticities(later)
    pd.testing.assert_frame_equal(first, fresh)
    next_week = agent.elasticities(planning_inputs(demo_tables, monday + pd.Timedelta(days=7), "grocery"), "demo")
    assert len([f for _, _, fs in os.walk(tmp_path) for f in fs]) == 2
    assert set(next_week["sku_id"]) == set(first["sku_id"])


def test_elasticities_read_only_the_span_their_cache_key_covers(demo_tables, monkeypatch):
    """The estimate (and its outlier capping) reads the estimation window and the days the capping looks back on,
    which is what its cache key covers, not all the history a run is handed: older days are never copied, and
    corrupting them changes nothing."""
    import retail_dagster.agents.pricing as pricing_agent
    from retail_dagster.core.plausibility import OutlierSettings

    seen = []
    real = pricing_agent.cap_outliers

    def spy(sales, *args, **kwargs):
        seen.append(sales["date"].min())
        return real(sales, *args, **kwargs)

    monkeypatch.setattr(pricing_agent, "cap_outliers", spy)
    monday = pd.Timestamp("2026-11-16")
    agent = PricingAgent(model_cache_dir=None)
    span = agent.settings().elasticity.history_days + 1 + OutlierSettings().window_days
    first = monday - pd.Timedelta(days=span)
    inputs = planning_inputs(demo_tables, monday + pd.Timedelta(days=2), "grocery")
    assert inputs.sales["date"].min() < first  # the run was handed older days
    est = agent.elasticities(inputs)
    assert seen == [first]
    tables = dict(demo_tables)
    sales = tables["sales"].copy()
    old = sales["date"] < first
    sales.loc[old, "units"] = sales.loc[old, "units"] * 50 + 100
    tables["sales"] = sales
    pd.testing.assert_frame_equal(est, agent.elasticities(planning_inputs(tables, monday + pd.Timedelta(days=2),
                                                                          "grocery")))
