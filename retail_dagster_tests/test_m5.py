"""The M5 source adapter on small hand-made files in the official layout (trimmed d_N range, missing prices)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from retail_dagster.core.contracts import validate_tables
from retail_dagster.core.m5 import UNIT_COST_SHARE, load_m5


@pytest.fixture(scope="module")
def m5_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("m5")
    dates = pd.date_range("2011-01-29", periods=28, freq="D")
    cal = pd.DataFrame({
        "date": dates.strftime("%Y-%m-%d"), "wm_yr_wk": 11101 + np.arange(28) // 7,
        "weekday": dates.day_name(), "wday": (dates.dayofweek + 2) % 7 + 1, "month": dates.month,
        "year": dates.year, "d": [f"d_{i}" for i in range(1, 29)],
        "event_name_1": None, "event_type_1": None, "event_name_2": None, "event_type_2": None,
        "snap_CA": 0, "snap_TX": 0, "snap_WI": 0,
    })
    cal.loc[8, ["event_name_1", "event_type_1"]] = ["SuperBowl", "Sporting"]
    cal.loc[8, ["event_name_2", "event_type_2"]] = ["ValentinesDay", "Cultural"]
    cal.loc[[2, 3], "snap_CA"] = 1
    cal.loc[[4], "snap_TX"] = 1
    cal.to_csv(path / "calendar.csv", index=False)
    # trimmed d_N range: only days 3..20 in the sales file
    days = [f"d_{i}" for i in range(3, 21)]
    rows = []
    for item, dept, cat in [("FOODS_1_001", "FOODS_1", "FOODS"), ("HOBBIES_1_001", "HOBBIES_1", "HOBBIES"),
                            ("FOODS_1_002", "FOODS_1", "FOODS")]:
        for store, state in [("CA_1", "CA"), ("TX_1", "TX")]:
            rows.append({"id": f"{item}_{store}_evaluation", "item_id": item, "dept_id": dept, "cat_id": cat,
                         "store_id": store, "state_id": state,
                         **{d: (i * 3 + len(item)) % 4 for i, d in enumerate(days)}})
    pd.DataFrame(rows).to_csv(path / "sales_train_evaluation.csv", index=False)
    prices = []
    for item, store in [("FOODS_1_001", "CA_1"), ("FOODS_1_001", "TX_1"), ("HOBBIES_1_001", "CA_1"),
                        ("FOODS_1_002", "CA_1"), ("FOODS_1_002", "TX_1")]:
        for k, wk in enumerate(range(11101, 11105)):
            if item == "FOODS_1_002" and store == "TX_1" and wk < 11103:
                continue  # first priced in week 3: earlier rows are dropped
            if item == "FOODS_1_001" and store == "CA_1" and wk == 11102:
                continue  # a gap: filled from the nearest known week
            prices.append({"store_id": store, "item_id": item, "wm_yr_wk": wk, "sell_price": 2.0 + 0.5 * k})
    # HOBBIES_1_001 at TX_1 is never priced: no sales rows for it
    pd.DataFrame(prices).to_csv(path / "sell_prices.csv", index=False)
    return str(path)


def test_m5_tables_pass_the_contracts(m5_dir):
    t = load_m5(m5_dir)
    validate_tables(t)  # idempotent: the adapter already validated
    assert set(t["catalog"]["sku_group"]) == {"FOODS", "HOBBIES"}
    assert set(t["catalog"]["category"]) == {"FOODS_1", "HOBBIES_1"}
    assert (t["locations"]["kind"] == "store").all()
    assert dict(zip(t["locations"]["location_id"], t["locations"]["region"])) == {"CA_1": "CA", "TX_1": "TX"}
    for name in ("inventory", "promotions", "weather", "traffic", "lanes"):
        assert t[name].empty
    cat = t["catalog"].set_index("sku_id")
    assert np.allclose(cat["unit_cost"], np.round(cat["base_price"] * UNIT_COST_SHARE, 2))
    assert (cat["msrp"] >= cat["base_price"]).all()


def test_m5_sales_dates_prices(m5_dir):
    s = load_m5(m5_dir)["sales"]
    # the trimmed range d_3..d_20 maps to calendar dates
    assert s["date"].min() == pd.Timestamp("2011-01-31")
    assert s["date"].max() == pd.Timestamp("2011-02-17")
    # never-priced series dropped; rows before the first price dropped
    assert not ((s["sku_id"] == "HOBBIES_1_001") & (s["location_id"] == "TX_1")).any()
    late = s[(s["sku_id"] == "FOODS_1_002") & (s["location_id"] == "TX_1")]
    assert late["date"].min() == pd.Timestamp("2011-02-12")  # first day of week 11103
    # the week-2 gap takes the nearest known price (week 1, tie broken towards the earlier week)
    gap = s[(s["sku_id"] == "FOODS_1_001") & (s["location_id"] == "CA_1") & (s["date"] == "2011-02-06")]
    assert gap["price"].item() == 2.0
    assert s["price"].gt(0).all() and not s["on_promotion"].any()


def test_m5_events_and_filters(m5_dir):
    t = load_m5(m5_dir, stores=["CA_1"], max_items=2)
    ev = t["events"]
    assert {"SuperBowl", "ValentinesDay"} <= set(ev.loc[ev["region"] == "ALL", "event_name"])
    snap = ev[ev["event_name"] == "SNAP"]
    assert set(snap["region"]) == {"CA"}  # only the kept stores' states
    assert len(snap) == 2
    assert set(t["sales"]["location_id"]) == {"CA_1"}
    assert set(t["catalog"]["sku_id"]) == {"FOODS_1_001", "FOODS_1_002"}


def test_m5_missing_file_message(tmp_path):
    with pytest.raises(FileNotFoundError, match="sales_train_evaluation.csv"):
        load_m5(str(tmp_path))


@pytest.fixture(scope="module")
def m5_long_dir(tmp_path_factory):
    """150 days, 8 items in two categories, two stores in two states: enough history for the engine."""
    path = tmp_path_factory.mktemp("m5_long")
    n = 150
    dates = pd.date_range("2015-03-02", periods=n, freq="D")
    cal = pd.DataFrame({"date": dates.strftime("%Y-%m-%d"), "wm_yr_wk": 11501 + np.arange(n) // 7,
                        "d": [f"d_{i}" for i in range(1, n + 1)], "event_name_1": None, "event_type_1": None,
                        "event_name_2": None, "event_type_2": None,
                        "snap_CA": (dates.day <= 10).astype(int), "snap_TX": (dates.day % 3 == 0).astype(int)})
    cal.loc[100, ["event_name_1", "event_type_1"]] = ["Easter", "Cultural"]
    cal.to_csv(path / "calendar.csv", index=False)
    rng = np.random.default_rng(0)
    weekly = np.array([1.0, 0.9, 0.9, 1.0, 1.2, 1.6, 1.4])[dates.dayofweek]
    rows, prices = [], []
    for i in range(8):
        cat = "FOODS" if i < 5 else "HOUSEHOLD"
        item = f"{cat}_1_{i:03d}"
        for store, state in [("CA_1", "CA"), ("TX_1", "TX")]:
            y = rng.poisson(weekly * (0.5 + i))
            rows.append({"id": f"{item}_{store}_evaluation", "item_id": item, "dept_id": f"{cat}_1", "cat_id": cat,
                         "store_id": store, "state_id": state, **{f"d_{k + 1}": y[k] for k in range(n)}})
            for wk in range(11501, 11501 + n // 7 + 1):
                prices.append({"store_id": store, "item_id": item, "wm_yr_wk": wk, "sell_price": 3.0 + i})
    pd.DataFrame(rows).to_csv(path / "sales_train_validation.csv", index=False)
    pd.DataFrame(prices).to_csv(path / "sell_prices.csv", index=False)
    return str(path)


def test_engine_and_backtest_run_on_m5(m5_long_dir, capsys):
    import json

    from retail_dagster.core.backtest import backtest_main, format_backtest
    from retail_dagster.core.forecasting import forecast_for_date

    t = load_m5(m5_long_dir)
    D = t["sales"]["date"].max() + pd.Timedelta(days=1)
    fc, info = forecast_for_date(t, D, "FOODS", None, None)
    assert len(fc) == 5 * 2 * 14 and info["series"] == 10
    assert (fc["p10"] <= fc["p50"]).all() and (fc["p50"] <= fc["p90"]).all() and (fc["mean"] >= 0).all()
    capsys.readouterr()
    result = backtest_main(m5=m5_long_dir, cutoffs=1)
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(last)["engine"]["wape_daily"] == result["engine"]["wape_daily"]
    assert set(result["baselines"]) == {"SeasonalNaive", "WindowAverage", "AutoETS", "StatEnsemble", "SeasonalES"}
    assert result["engine"]["n"] > 0
    assert 0 < result["engine"]["cpu_seconds"] and "s CPU" in format_backtest(result)
    for r in [result["engine"], *result["baselines"].values()]:  # the JSON keeps its keys and adds the scaled errors
        assert {"wape_daily", "wape_14d", "bias", "coverage_p10_p90", "seconds", "mase", "rmsse"} <= set(r)
        assert r["rmsse"] is not None and r["rmsse"] > 0
