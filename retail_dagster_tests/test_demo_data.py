"""The demo generator: censoring, recoverable elasticities, intermittency, seasonality, determinism, no leakage."""

from __future__ import annotations

import numpy as np
import pandas as pd

from retail_dagster.core.asof import planning_inputs
from retail_dagster.core.demo import generate_demo


def _stores(demo):
    loc = demo.tables["locations"]
    return set(loc.loc[loc["kind"] == "store", "location_id"])


def test_sales_censored_by_stock(demo):
    s = demo.tables["sales"].merge(demo.tables["inventory"], on=["date", "sku_id", "location_id"])
    s = s.sort_values(["sku_id", "location_id", "date"])
    prev = s.groupby(["sku_id", "location_id"])["on_hand"].shift(1)
    implied_arrivals = s["on_hand"] - prev + s["units"]
    assert (implied_arrivals.dropna() >= -1e-6).all()  # sales never exceed stock before the day + arrivals
    truth = demo.truth["demand"]
    m = s.merge(truth[["date", "sku_id", "location_id", "demand"]], on=["date", "sku_id", "location_id"])
    assert (m["units"] <= m["demand"] + 1e-9).all()
    # where stock is left at the end of the day, nothing was censored
    left = m["on_hand"] > 0
    assert np.allclose(m.loc[left, "units"], m.loc[left, "demand"])
    censored = (m["units"] < m["demand"]).mean()
    assert 0.005 < censored < 0.4, censored


def test_elasticity_recoverable_in_sign_and_size(demo):
    """Regular (non-promo) price changes move demand as the recorded elasticity says.

    Weekly log units on log price, with series and category x week fixed effects (removing seasonality), on
    in-stock non-promo days of series selling at least 0.5 units a day.
    """
    s = demo.tables["sales"].merge(demo.tables["inventory"][["date", "sku_id", "location_id", "on_hand"]],
                                   on=["date", "sku_id", "location_id"])
    s = s.merge(demo.tables["catalog"][["sku_id", "category"]], on="sku_id")
    s = s[(~s["on_promotion"]) & (s["on_hand"] > 0)].copy()
    s["week"] = (s["date"] - s["date"].min()).dt.days // 7
    w = s.groupby(["sku_id", "location_id", "category", "week"], as_index=False).agg(
        units=("units", "mean"), price=("price", "mean"), days=("units", "size"))
    w = w[(w["days"] >= 5) & (w.groupby(["sku_id", "location_id"])["units"].transform("mean") > 0.5)].copy()
    w["ly"], w["lp"] = np.log(w["units"] + 0.1), np.log(w["price"])
    for col in ("ly", "lp"):
        w[col] = w[col] - w.groupby(["sku_id", "location_id"])[col].transform("mean")
        w[col] = w[col] - w.groupby(["category", "week"])[col].transform("mean")
    g = w.assign(xy=w["ly"] * w["lp"], xx=w["lp"] ** 2).groupby("sku_id")[["xy", "xx"]].sum()
    truth = demo.truth["sku"].set_index("sku_id")["elasticity"]
    ok = g.index[g["xx"] > 0.05]
    assert len(ok) >= 10
    pooled = g.loc[ok, "xy"].sum() / g.loc[ok, "xx"].sum()
    assert pooled < -0.5  # demand falls when the price rises
    assert abs(pooled - truth.loc[ok].mean()) < 0.5  # and by about the recorded amount
    per_sku = g.loc[ok, "xy"] / g.loc[ok, "xx"]
    assert np.corrcoef(per_sku.clip(-6, 2), truth.loc[ok])[0, 1] > 0.2


def test_intermittent_share_and_seasonality(demo):
    s = demo.tables["sales"]
    zero_share = s.assign(z=s["units"] == 0).groupby(["sku_id", "location_id"])["z"].mean()
    assert (zero_share > 0.5).mean() >= 1 / 3
    by_dow = s.groupby(s["date"].dt.dayofweek)["units"].mean()
    assert by_dow.loc[5] > 1.15 * by_dow.loc[[0, 1, 2]].mean()  # Saturday peak
    truth = demo.truth["demand"].merge(demo.truth["sku"][["sku_id", "category"]], on="sku_id")
    outer = truth[truth["category"] == "outerwear"]
    if len(outer):
        month = outer.groupby(outer["date"].dt.month)["expected_demand"].mean()
        assert month.loc[[12, 1]].mean() > 1.5 * month.loc[[6, 7]].mean()


def test_network_shape(demo):
    loc = demo.tables["locations"]
    assert (loc["kind"] == "warehouse").sum() >= 1 and (loc["kind"] == "store").sum() >= 2
    lanes = demo.tables["lanes"]
    assert set(lanes["from_location"]) | set(lanes["to_location"]) <= set(loc["location_id"])
    snap = demo.tables["inventory"][demo.tables["inventory"]["date"] == demo.tables["inventory"]["date"].max()]
    snap = snap[snap["location_id"].isin(_stores(demo))]
    future = demo.truth["demand"][demo.truth["demand"]["date"] > snap["date"].max()]
    rate = future.groupby(["sku_id", "location_id"])["expected_demand"].mean()
    cover = snap.set_index(["sku_id", "location_id"])["on_hand"] / rate.reindex(
        snap.set_index(["sku_id", "location_id"]).index).clip(lower=0.05)
    assert (cover > 28).mean() > 0.05 and (cover < 3).mean() > 0.05  # some overstocked, some short


def test_deterministic_and_seed_sensitive():
    a = generate_demo(n_skus=12, n_stores=2, n_days=90, seed=1)
    b = generate_demo(n_skus=12, n_stores=2, n_days=90, seed=1)
    c = generate_demo(n_skus=12, n_stores=2, n_days=90, seed=2)
    pd.testing.assert_frame_equal(a.tables["sales"], b.tables["sales"])
    assert not a.tables["sales"]["units"].equals(c.tables["sales"]["units"])


def test_planning_inputs_have_no_leakage(demo_tables):
    d = pd.Timestamp(demo_tables["sales"]["date"].max()) - pd.Timedelta(days=40)
    inp = planning_inputs(demo_tables, d, "grocery")
    assert inp.sales["date"].max() == d - pd.Timedelta(days=1)
    assert inp.inventory_snapshot["date"].unique().tolist() == [d - pd.Timedelta(days=1)]
    assert inp.traffic["date"].max() < d
    assert inp.weather["date"].max() == d + pd.Timedelta(days=13)
    assert (inp.promotions["start_date"] <= d + pd.Timedelta(days=13)).all()
    assert set(inp.catalog["sku_group"]) == {"grocery"}
    assert set(inp.sales["sku_id"]) <= set(inp.catalog["sku_id"])


def test_runs_starting_together_generate_the_demo_once(tmp_path):
    """A deployment's first day: one run per SKU group starts at the same moment on an empty data folder. Each run
    asks for the demo set; one generates it while the others wait, and all read the same complete files (before the
    lock, every run generated into the same folder at once, racing on the same temporary files: one run failed with
    FileNotFoundError)."""
    import glob
    import os
    import subprocess
    import sys
    import time

    # each process imports first, then all call ensure_demo_data at the same instant; each generation is counted
    code = ("import sys, time; import retail_dagster.core.demo as demo; "
            "from retail_dagster.resources.data_source import ensure_demo_data\n"
            "write = demo.write_demo_streaming\n"
            "def counted(*a, **k):\n    open(sys.argv[3], 'a').write('g')\n    return write(*a, **k)\n"
            "demo.write_demo_streaming = counted\n"
            "time.sleep(max(0.0, float(sys.argv[2]) - time.time()))\n"
            "ensure_demo_data(sys.argv[1], n_skus=30, n_stores=3, n_warehouses=1, n_days=200, seed=5)")
    shared, alone, count = str(tmp_path / "shared"), str(tmp_path / "alone"), str(tmp_path / "generations")
    start = str(time.time() + 8)
    procs = [subprocess.Popen([sys.executable, "-c", code, shared, start, count], stderr=subprocess.PIPE, text=True)
             for _ in range(3)]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], errors
    assert open(count).read() == "g"  # generated once, not once per run
    subprocess.run([sys.executable, "-c", code, alone, "0", str(tmp_path / "alone_count")], check=True, timeout=300)
    files = sorted(os.path.relpath(f, alone) for f in glob.glob(os.path.join(alone, "**", "*.parquet"),
                                                                recursive=True))
    assert files and files == sorted(os.path.relpath(f, shared) for f in
                                     glob.glob(os.path.join(shared, "**", "*.parquet"), recursive=True))
    for name in files:  # the shared folder holds exactly what one generation alone writes
        pd.testing.assert_frame_equal(pd.read_parquet(os.path.join(shared, name)),
                                      pd.read_parquet(os.path.join(alone, name)), check_exact=True, obj=name)
    assert not glob.glob(os.path.join(shared, "**", "*.tmp"), recursive=True)
