"""The forecast responds to the price the project sets: at a 10% lower price it forecasts more demand, with an
implied elasticity close to the demo's true one; a price cut already in the sales history lifts the next forecast."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from retail_dagster.core.forecasting import ForecastSettings, anchor_date, forecast_inputs, train_forecaster

# small and fast (the price response does not depend on the tree count): fewer trees than the default engine
SETTINGS = ForecastSettings(lgbm_params={
    "n_estimators": 120, "learning_rate": 0.08, "num_leaves": 31, "min_child_samples": 40,
    "feature_fraction": 0.8, "bagging_fraction": 0.8, "bagging_freq": 1, "tweedie_variance_power": 1.2})
KEY = ["sku_id", "location_id"]


def _current_price(sales: pd.DataFrame) -> pd.DataFrame:
    """The regular price in effect: each series' last price off promotion."""
    off = sales[~sales["on_promotion"].astype(bool)].sort_values("date", kind="stable")
    return off.groupby(KEY, as_index=False)["price"].last()


def _mean14(fc: pd.DataFrame) -> pd.Series:
    return fc.groupby(KEY)["mean"].mean()


@pytest.fixture(scope="module")
def plan_date(demo_tables):
    return demo_tables["sales"]["date"].max() + pd.Timedelta(days=1)


@pytest.fixture(scope="module")
def models(demo_tables, plan_date):
    """One model per SKU group, trained at the anchor before the planning date (data < anchor only)."""
    groups = sorted(demo_tables["catalog"]["sku_group"].unique())
    return {g: train_forecaster(forecast_inputs(demo_tables, anchor_date(plan_date), g), SETTINGS) for g in groups}


@pytest.fixture(scope="module")
def price_response(demo_tables, plan_date, models):
    """Per SKU-location: 14-day mean forecast at the current price and at a 10% lower price."""
    rows = []
    for g, model in models.items():
        inputs = forecast_inputs(demo_tables, plan_date, g)
        base = model.predict(inputs)
        lower = _current_price(inputs.sales).assign(price=lambda f: f["price"] * 0.9)
        cut = model.predict(inputs, prices=lower)
        pd.testing.assert_frame_equal(base[KEY + ["target_date"]], cut[KEY + ["target_date"]])
        rows.append(pd.DataFrame({"current": _mean14(base), "lower": _mean14(cut)}).reset_index())
    return pd.concat(rows, ignore_index=True)


def test_lower_price_implies_the_true_elasticity(demo, price_response):
    r = price_response[price_response["current"] > 0]
    assert len(r) > 100
    implied = np.log(r["lower"] / r["current"]) / np.log(0.9)
    truth = r[["sku_id"]].merge(demo.truth["sku"][["sku_id", "elasticity"]], on="sku_id", how="left")["elasticity"]
    assert truth.notna().all()
    sign_share = float(np.mean(np.sign(implied.to_numpy()) == np.sign(truth.to_numpy())))
    median_error = float(np.median(np.abs(implied.to_numpy() - truth.to_numpy())))
    assert sign_share >= 0.9, f"implied elasticity has the true sign for {sign_share:.1%} of SKU-locations"
    assert median_error < 0.5, f"median |implied - true elasticity| = {median_error:.3f}"
    # more elastic SKUs (truth) respond more: the ranking carries information, not just a shared constant
    assert np.corrcoef(implied, truth)[0, 1] > 0.3


def test_price_override_only_moves_the_series_it_names(demo_tables, plan_date, models):
    g = sorted(models)[0]
    inputs = forecast_inputs(demo_tables, plan_date, g)
    base = _mean14(models[g].predict(inputs))
    one = _current_price(inputs.sales).iloc[[0]]
    moved = _mean14(models[g].predict(inputs, prices=one.assign(price=one["price"] * 1.2)))
    key = tuple(one[KEY].iloc[0])
    assert moved[key] < base[key]  # a 20% higher price: less demand
    others = base.index != key
    np.testing.assert_allclose(moved[others].to_numpy(), base[others].to_numpy())
    with pytest.raises(ValueError, match="price"):
        models[g].predict(inputs, prices=one[KEY])


def test_a_price_cut_in_the_history_lifts_the_next_forecast(demo_tables, plan_date, models):
    """Closed loop: the project cut prices 10% three days ago (the sales rows carry the new price, units as before);
    the next forecast, from the same cached model, expects more demand for nearly every series."""
    g = sorted(models)[1]
    inputs = forecast_inputs(demo_tables, plan_date, g)
    before = _mean14(models[g].predict(inputs))
    s = inputs.sales.copy()
    recent = s["date"] >= plan_date - pd.Timedelta(days=3)
    s.loc[recent, "price"] = s.loc[recent, "price"] * 0.9
    inputs.sales = s
    after = _mean14(models[g].predict(inputs))
    both = pd.concat({"before": before, "after": after}, axis=1).dropna()
    live = both[both["before"] > 0]
    assert len(live) > 20
    assert (live["after"] > live["before"]).mean() >= 0.9
    assert live["after"].sum() > 1.03 * live["before"].sum()
