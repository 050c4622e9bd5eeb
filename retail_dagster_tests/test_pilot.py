"""A short closed-loop pilot through the real daily job: every arm runs, decisions reach the world only through
the job's outputs, the report has its figures, and the same arguments give the same figures."""

import json
import os

import pandas as pd
import pytest

from retail_dagster.pilot import ARMS, PilotConfig, format_report, run_pilot

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pilot(tmp_path_factory):
    out = tmp_path_factory.mktemp("pilot")
    cfg = PilotConfig(skus=10, stores=2, warehouses=1, weeks=1, pilot_days=2, seed=5, history_days=150,
                      out=str(out), parallel=2)
    return cfg, run_pilot(cfg, log=lambda m: None)


def test_every_arm_runs_and_reports(pilot):
    cfg, report = pilot
    assert list(report["arms"]) == list(ARMS)
    for arm, kpis in report["arms"].items():
        log = os.path.join(cfg.out, "arms", arm, "violations.parquet")
        assert kpis["guardrail_violations"] == 0, (arm, pd.read_parquet(log).to_string() if os.path.exists(log) else "")
        assert kpis["blocked_runs"] == 0, arm
        assert kpis["llm_usd"] == 0, arm  # local engines
        assert 0 < kpis["fill_rate"] <= 1
        assert kpis["units_sold"] + kpis["lost_units"] == pytest.approx(kpis["demand_units"])
    hold = report["arms"]["hold"]
    assert hold["price_changes"] == 0 and hold["transfer_units"] == 0 and hold["price_index"] == 1
    assert report["arms"]["pricing"]["transfer_units"] == 0  # no transfers in the pricing arm
    assert report["arms"]["rebalancing"]["price_changes"] == 0  # prices held in the rebalancing arm
    for key in ("profit_uplift_pct", "lost_units_cut_pct", "inventory_value_change_pct", "guardrail_violations",
                "seconds"):
        assert key in report
    assert "hold" in format_report(report) and "Against hold" in format_report(report)


def test_outputs_and_the_agents_inputs(pilot):
    cfg, report = pilot
    daily = pd.read_parquet(os.path.join(cfg.out, "pilot_daily_kpis.parquet"))
    assert len(daily) == len(ARMS) * cfg.days
    assert open(os.path.join(cfg.out, "pilot_chart.png"), "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    assert json.load(open(os.path.join(cfg.out, "pilot_report.json")))["arms"] == report["arms"]
    for arm in ("loop", "pricing", "rebalancing"):
        data = os.path.join(cfg.out, "arms", arm, "data")
        files = sorted(os.listdir(data))
        assert "truth" not in files and all(f.endswith(".parquet") for f in files)
        sales = pd.read_parquet(os.path.join(data, "sales.parquet"))
        # the agents' last day saw facts through the day before it
        assert sales["date"].max() == cfg.start + pd.Timedelta(days=cfg.days - 2)
        # the real job wrote every group's decisions for every pilot day
        prices = os.path.join(cfg.out, "arms", arm, "out", "price_recommendations")
        assert len(os.listdir(prices)) == cfg.days


def test_same_arguments_same_figures(pilot, tmp_path):
    cfg, report = pilot
    again = run_pilot(PilotConfig(**{**cfg.__dict__, "out": str(tmp_path), "arms": ("loop",)}),
                      log=lambda m: None)
    for arm in ("loop",):
        a = {k: v for k, v in report["arms"][arm].items() if k != "seconds_per_day"}
        b = {k: v for k, v in again["arms"][arm].items() if k != "seconds_per_day"}
        assert a == b
