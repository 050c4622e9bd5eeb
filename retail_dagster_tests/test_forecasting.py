"""Demand forecast engine: recovered structure (promotion lift, weekday shape), accuracy vs a baseline, quantile
calibration, no leakage, deterministic output, model cache and anchors, new SKUs."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

from retail_dagster.core.backtest import run_backtest
from retail_dagster.core.forecasting import (
    NEW_SERIES_MODEL, ForecastSettings, active_series, anchor_date, forecast_for_date, forecast_inputs,
    nb_quantiles, train_forecaster,
)

# small and fast: fewer trees, short window (the demo fixture has 420 days)
SETTINGS = ForecastSettings(train_window_days=280, lgbm_params={
    "n_estimators": 120, "learning_rate": 0.08, "num_leaves": 31, "min_child_samples": 40,
    "feature_fraction": 0.8, "bagging_fraction": 0.8, "bagging_freq": 1, "tweedie_variance_power": 1.2})


@pytest.fixture(scope="module")
def plan_date(demo_tables):
    """The day after the last observed day (what the demo plans)."""
    return demo_tables["sales"]["date"].max() + pd.Timedelta(days=1)


@pytest.fixture(scope="module")
def new_sku_group(demo):
    sku = demo.truth["sku"]
    last = demo.tables["sales"]["date"].max()
    new = sku[sku["launch_date"] > last - pd.Timedelta(days=20)]
    assert len(new), "the demo fixture should have recently launched SKUs"
    return str(new["sku_group"].iloc[0]), set(new["sku_id"])


@pytest.fixture(scope="module")
def group_forecast(demo_tables, plan_date, new_sku_group, tmp_path_factory):
    cache = str(tmp_path_factory.mktemp("fc_cache"))
    group = new_sku_group[0]
    fc, info = forecast_for_date(demo_tables, plan_date, group, SETTINGS, cache)
    return fc, info, cache, group


def test_output_frame_invariants(group_forecast, demo_tables, plan_date):
    fc, info, _, group = group_forecast
    inputs = forecast_inputs(demo_tables, plan_date, group)
    act = active_series(inputs)
    stores = set(demo_tables["locations"].query("kind == 'store'")["location_id"])
    assert set(act["location_id"]) <= stores
    assert list(act.columns) == ["sku_id", "location_id"]
    assert len(fc) == 14 * len(act) == 14 * info["series"]
    assert fc["target_date"].dtype == "datetime64[ns]"
    assert set(fc["horizon_day"]) == set(range(1, 15))
    assert (fc["target_date"] == plan_date + pd.to_timedelta(fc["horizon_day"] - 1, unit="D")).all()
    q = fc[["mean", "p05", "p10", "p50", "p90", "p95"]].to_numpy()
    assert np.isfinite(q).all() and (q >= 0).all()
    assert (fc["p05"] <= fc["p10"]).all() and (fc["p10"] <= fc["p50"]).all() and (fc["p50"] <= fc["p90"]).all()
    assert (fc["p90"] <= fc["p95"]).all()
    assert fc["model"].map(type).eq(str).all()
    assert sum(info["model_mix"].values()) == info["series"]


def test_new_skus_get_a_profile_forecast(group_forecast, new_sku_group):
    fc, info, _, _ = group_forecast
    new = fc[fc["sku_id"].isin(new_sku_group[1])]
    assert len(new) and (new.groupby(["sku_id", "location_id"]).size() == 14).all()
    launched_recently = new[new["model"] == NEW_SERIES_MODEL]
    assert len(launched_recently) > 0
    assert launched_recently["mean"].sum() > 0
    assert info["model_mix"].get(NEW_SERIES_MODEL, 0) > 0


def test_cache_reuse_and_backfill_anchor(group_forecast, demo_tables, plan_date):
    fc, info, cache, group = group_forecast
    anchor = anchor_date(plan_date, SETTINGS.retrain_every_days)
    assert info["trained_now"] and info["anchor"] == f"{anchor:%Y-%m-%d}"
    assert os.path.exists(os.path.join(cache, group, f"{anchor:%Y-%m-%d}.pkl"))
    again, info2 = forecast_for_date(demo_tables, plan_date, group, SETTINGS, cache)
    assert not info2["trained_now"]
    pd.testing.assert_frame_equal(fc, again)
    # a backfill date in an earlier week gets the anchor on or before it, trained and cached separately
    back = plan_date - pd.Timedelta(days=10)
    _, info3 = forecast_for_date(demo_tables, back, group, SETTINGS, cache)
    a3 = anchor_date(back, 7)
    assert a3 <= back < a3 + pd.Timedelta(days=7) and a3.dayofweek == pd.Timestamp("2000-01-03").dayofweek
    assert info3["trained_now"] and info3["anchor"] == f"{a3:%Y-%m-%d}"
    assert os.path.exists(os.path.join(cache, group, f"{a3:%Y-%m-%d}.pkl"))
    assert pd.Timestamp(info3["trained_through"]) < a3


# trained through the anchor: early stopping on the holdout's one-step rows, then a refit through A-1
THROUGH_ANCHOR = ForecastSettings(**{**SETTINGS.__dict__, "early_stopping_rounds": 10, "refit_on_holdout": True,
                                     "long_windows": (56, 112),
                                     "lgbm_params": {**SETTINGS.lgbm_params, "n_estimators": 400}})


@pytest.mark.parametrize("settings", [SETTINGS, THROUGH_ANCHOR], ids=["default", "through_anchor"])
def test_no_leakage_and_deterministic(demo_tables, plan_date, settings):
    """Corrupting every fact dated >= D (and calendars past the horizon) leaves the forecast for D unchanged."""
    D = plan_date - pd.Timedelta(days=30)
    group = "beverages"
    base, _ = forecast_for_date(demo_tables, D, group, settings, None)
    bad = {k: v.copy() for k, v in demo_tables.items()}
    s = bad["sales"]
    late = s["date"] >= D
    s.loc[late, "units"] = s.loc[late, "units"] * 7 + 3
    s.loc[late, "price"] = s.loc[late, "price"] * 0.5
    inv = bad["inventory"]
    inv.loc[inv["date"] >= D, "on_hand"] = 0.0
    tr = bad["traffic"]
    tr.loc[tr["date"] >= D, "visitors"] = 1.0
    w = bad["weather"]
    w.loc[w["date"] >= D + pd.Timedelta(days=14), "temperature_c"] = 99.0
    again, _ = forecast_for_date(bad, D, group, settings, None)
    pd.testing.assert_frame_equal(base, again)  # also: same inputs, identical output


@pytest.mark.parametrize("settings", [SETTINGS, THROUGH_ANCHOR], ids=["default", "through_anchor"])
def test_training_on_a_later_days_inputs_up_to_the_anchor_is_training_on_the_inputs_at_the_anchor(
        demo_tables, plan_date, settings):
    """The daily run trains from its own day's inputs, read up to the anchor, instead of a copy sliced at the anchor:
    the same model (trees, elasticities, dispersions, model choice), so the same forecast, with 12 days of facts
    and calendars after the anchor in the inputs."""
    group = "grocery"
    A = anchor_date(plan_date) - pd.Timedelta(days=7)
    at_anchor = train_forecaster(forecast_inputs(demo_tables, A, group), settings)
    later = forecast_inputs(demo_tables, plan_date, group)
    assert (later.sales["date"] >= A).sum() > 0 and (later.events["date"] >= A + pd.Timedelta(days=14)).any()
    from_later = train_forecaster(later, settings, anchor=A)
    trees = [m.fcst.models_["lgbm"].booster_.model_to_string().split("\nparameters:")[0]
             for m in (at_anchor, from_later)]
    assert trees[0] == trees[1]
    pd.testing.assert_series_equal(at_anchor.elasticity, from_later.elasticity)
    assert at_anchor.meta == from_later.meta and at_anchor.intermittent_model == from_later.intermittent_model
    assert at_anchor.info == {**from_later.info, "train_seconds": at_anchor.info["train_seconds"]}
    pd.testing.assert_frame_equal(at_anchor.predict(later), from_later.predict(later))
    with pytest.raises(ValueError, match="after the inputs' date"):
        train_forecaster(forecast_inputs(demo_tables, A, group), settings, anchor=plan_date)


def test_early_stopping_then_refit_through_the_anchor(demo_tables, plan_date):
    """Early stopping picks fewer trees than the cap on the holdout; the refit learns the holdout weeks with that
    many trees; the long rolling windows are features."""
    A = anchor_date(plan_date)
    model = train_forecaster(forecast_inputs(demo_tables, A, "household"), THROUGH_ANCHOR)
    best = model.info["best_iteration"]
    assert best is not None and 1 <= best < 400
    assert model.fcst.models_["lgbm"].booster_.num_trees() == best
    assert {"rolling_mean_lag1_window_size56", "rolling_mean_lag1_window_size112"} <= set(model.fcst.ts.features_order_)
    assert model.info["trained_through"] == f"{A - pd.Timedelta(days=1):%Y-%m-%d}"
    plain = train_forecaster(forecast_inputs(demo_tables, A, "household"), SETTINGS)
    assert plain.info["trained_through"] == f"{A - pd.Timedelta(days=1 + SETTINGS.calibration_days):%Y-%m-%d}"
    assert model.info["train_rows"] > 0 and plain.info.get("best_iteration") is None
    fc = model.predict(forecast_inputs(demo_tables, plan_date, "household"))
    assert np.isfinite(fc["mean"]).all() and (fc["p10"] <= fc["p50"]).all() and (fc["p50"] <= fc["p90"]).all()


def test_promotion_lift_and_weekday_shape(demo, demo_tables, plan_date):
    """A planned promotion raises the forecast (vs the same days without it); the weekly shape matches truth."""
    # the group and day (in the last 16 weeks) with the most promotion days planned in the next 14 days
    pr = demo_tables["promotions"].merge(demo_tables["catalog"][["sku_id", "sku_group"]], on="sku_id")

    def promo_days(d, g):
        p = pr[pr["sku_group"] == g]
        overlap = (p["end_date"].clip(upper=d + pd.Timedelta(days=13)) - p["start_date"].clip(lower=d)).dt.days + 1
        return int(overlap.clip(lower=0).sum())

    best = max((promo_days(d, g), d, g) for d in pd.date_range(end=plan_date, periods=16, freq="7D")
               for g in sorted(set(pr["sku_group"])))
    _, D, group = best
    model = train_forecaster(forecast_inputs(demo_tables, anchor_date(D), group), SETTINGS)
    inputs = forecast_inputs(demo_tables, D, group)
    with_promo = model.predict(inputs)
    pr = inputs.promotions
    planned = pr[(pr["end_date"] >= D)]
    assert len(planned), "the fixture should plan promotions in the horizon"
    inputs.promotions = pr[pr["end_date"] < D].reset_index(drop=True)
    without = model.predict(inputs)
    days = planned.assign(target_date=[pd.date_range(a, b)
                                       for a, b in zip(planned["start_date"], planned["end_date"])])
    days = days.explode("target_date")[["sku_id", "location_id", "target_date"]]
    days["target_date"] = days["target_date"].astype("datetime64[ns]")
    key = ["sku_id", "location_id", "target_date"]
    on = with_promo.merge(days, on=key)
    off = without.merge(days, on=key)
    assert len(on) > 20
    lift = on["mean"].sum() / off["mean"].sum()
    assert lift > 1.1, f"promotion lift {lift:.3f}"
    # outside the promotions nothing moves much
    rest = with_promo.merge(days, on=key, how="left", indicator=True).query("_merge == 'left_only'")
    rest0 = without.merge(days, on=key, how="left", indicator=True).query("_merge == 'left_only'")
    assert abs(rest["mean"].sum() / rest0["mean"].sum() - 1) < 0.05
    # weekday shape: forecast volume by day of week vs the true weekly shape
    by_dow = with_promo.groupby(with_promo["target_date"].dt.dayofweek)["mean"].sum().sort_index()
    truth = demo.truth["weekday_shape"].sort_values("dayofweek")["shape"].to_numpy()
    assert np.corrcoef(by_dow.to_numpy(), truth)[0, 1] > 0.8


def test_backtest_beats_seasonal_naive_and_is_calibrated(demo, demo_tables):
    r = run_backtest(demo_tables, horizon=14, cutoffs=1, settings=SETTINGS, groups=["grocery", "beverages"],
                     baselines=["SeasonalNaive"], demand=demo.truth["demand"], return_frames=True)
    eng, sn = r["engine"], r["baselines"]["SeasonalNaive"]
    assert eng["n"] == sn["n"] > 0
    assert eng["wape_daily"] < sn["wape_daily"]
    # 14-day totals: on in-stock days, as the engine forecasts demand while sales are censored by stock (the demo's
    # last weeks have supply disruptions, so censored sales would reward forecasting the stock-outs)
    assert eng["wape_14d_in_stock"] < sn["wape_14d_in_stock"]
    assert 0.6 <= eng["coverage_p10_p90"] <= 0.95
    # against the demand behind the sales (the world's truth): every scored row has it, sales never exceed it, and
    # a forecast's bias against demand is its bias against sales less the lost sales: (1 + b_d) = (1 + b_s)(1 - lost)
    m, vd = r["frames"], r["vs_demand"]
    assert vd["rows"] == eng["n"] and vd["rows_without_demand"] == 0
    assert (m["units"] <= m["demand"] + 1e-9).all()
    lost = 1 - m["units"].sum() / m["demand"].sum()
    assert lost > 0.01 and vd["lost_sales_share"] == pytest.approx(lost, abs=1e-4)
    for name, col, b_s in (("engine", "mean", eng["bias"]), ("SeasonalNaive", "SeasonalNaive", sn["bias"])):
        assert vd[name]["bias"] == pytest.approx(m[col].clip(lower=0).sum() / m["demand"].sum() - 1, abs=1e-4)
        assert 1 + vd[name]["bias"] == pytest.approx((1 + b_s) * (1 - lost), abs=2e-4)
    assert vd["engine"]["wape_daily"] == pytest.approx((m["p50"] - m["demand"]).abs().sum() / m["demand"].sum(),
                                                       abs=1e-4)
    # the in-stock bias reads only the days the series was in stock, where sales are the demand
    ins = m[m["in_stock"]]
    assert (ins["units"] == ins["demand"]).mean() > 0.99 and (~m["in_stock"]).any()
    assert eng["bias_in_stock"] == pytest.approx(ins["mean"].clip(lower=0).sum() / ins["units"].sum() - 1, abs=1e-4)


def test_nb_quantiles_calibrated_on_simulated_counts():
    rng = np.random.default_rng(0)
    mu = rng.gamma(1.0, 2.0, 20000)
    phi = np.full_like(mu, 0.3)
    y = rng.poisson(mu * rng.gamma(1 / 0.3, 0.3, len(mu)))
    q = nb_quantiles(mu, phi, [0.1, 0.5, 0.9])
    assert (np.diff(q, axis=1) >= 0).all()
    cov = np.mean((y >= q[:, 0]) & (y <= q[:, 2]))
    assert 0.75 <= cov <= 0.88


def test_forecast_band_svg_draws_each_series_band_and_sales_where_they_are(group_forecast, demo_tables):
    """The metadata chart is an SVG whose lines, mapped back through its axes, are the forecast and the sales."""
    import base64
    import xml.etree.ElementTree as ET

    from retail_dagster.core.plots import _BOTTOM, _PANEL_H, _TOP, forecast_band_svg, image_markdown, top_series

    fc = group_forecast[0]
    top = top_series(fc, 3)
    svg = forecast_band_svg(demo_tables["sales"], fc, top)
    root = ET.fromstring(svg)  # well-formed XML
    ns = "{http://www.w3.org/2000/svg}"
    titles = [t.text for t in root.iter(ns + "text") if t.text and " @ " in t.text]
    assert [t.split(" (")[0] for t in titles] == [f"{sku} @ {loc}" for sku, loc in top]

    def coords(el):
        return np.array([[float(v) for v in p.split(",")] for p in el.get("points").split()])

    p50s = [coords(e) for e in root.iter(ns + "polyline") if e.get("class") == "p50"]
    bands = [coords(e) for e in root.iter(ns + "polygon") if e.get("class") == "band"]
    sales = [coords(e) for e in root.iter(ns + "polyline") if e.get("class") == "sales"]
    assert len(p50s) == len(bands) == len(sales) == 3
    for i, (sku, loc) in enumerate(top):
        f = fc[(fc["sku_id"] == sku) & (fc["location_id"] == loc)].sort_values("target_date")
        top_px, bottom_px = i * _PANEL_H + _TOP, (i + 1) * _PANEL_H - _BOTTOM
        ymax = float(next(t.text for t in root.iter(ns + "text")
                          if t.get("text-anchor") == "end" and abs(float(t.get("y")) - 3 - top_px) < 0.2))
        back = (bottom_px - p50s[i][:, 1]) / (bottom_px - top_px) * ymax  # the p50 read back from the picture
        np.testing.assert_allclose(back, np.clip(f["p50"].to_numpy(), 0, ymax), atol=ymax * 0.002)
        assert ymax >= f["p90"].max()
        n = len(f)
        upper, lower = bands[i][:n], bands[i][n:][::-1]
        assert (upper[:, 1] <= p50s[i][:, 1] + 1e-6).all() and (p50s[i][:, 1] <= lower[:, 1] + 1e-6).all()
        assert np.all(np.diff(p50s[i][:, 0]) > 0)
        assert sales[i][:, 0].max() < p50s[i][:, 0].min()  # the history, then the days ahead
        assert ((sales[i][:, 1] >= top_px - 1e-6) & (sales[i][:, 1] <= bottom_px + 1e-6)).all()
    md = image_markdown(svg, "forecast", "image/svg+xml")
    assert md.startswith("![forecast](data:image/svg+xml;base64,")
    assert base64.b64decode(md[len("![forecast](data:image/svg+xml;base64,"):-1]) == svg


def test_forecast_band_svg_escapes_ids_and_draws_a_series_without_forecast(demo_tables):
    from retail_dagster.core.plots import forecast_band_svg

    import xml.etree.ElementTree as ET

    empty = pd.DataFrame(columns=["sku_id", "location_id", "target_date", "p10", "p50", "p90", "mean", "model"])
    svg = forecast_band_svg(demo_tables["sales"], empty, [("<A&B>", "S1")])
    texts = [t.text for t in ET.fromstring(svg).iter("{http://www.w3.org/2000/svg}text")]
    assert "<A&B> @ S1 (no forecast)" in texts


def test_intermittent_segment_uses_the_statsforecast_model_it_chose(demo_tables, plan_date):
    """When the holdout picks a statsforecast model for the intermittent segment, those series get it."""
    inputs = forecast_inputs(demo_tables, plan_date, "household")
    model = train_forecaster(forecast_inputs(demo_tables, anchor_date(plan_date), "household"), SETTINGS)
    assert set(model.info["holdout"]) >= {SETTINGS.model_name, "tsb", "croston_sba", "adida", "imapa"}
    model.intermittent_model = "tsb"  # as if TSB had won the holdout
    fc = model.predict(inputs)
    mix = fc.drop_duplicates(["sku_id", "location_id"])["model"].value_counts()
    assert mix.get("tsb", 0) > 0 and mix.get(SETTINGS.model_name, 0) > 0
    assert (fc["p10"] <= fc["p50"]).all() and (fc["p50"] <= fc["p90"]).all() and np.isfinite(fc["mean"]).all()


@pytest.mark.parametrize("lift, expect", [(1.0, 0.5), (1.6, 0.65), (0.6, 0.35)])
def test_point_level_is_the_holdout_median(lift, expect):
    """With actuals drawn from the model's own NB the calibrated point level stays the median; when the actuals
    run above (below) the model's distribution, a higher (lower) level wins."""
    from retail_dagster.core.forecasting import DemandForecaster, Dispersion

    rng = np.random.default_rng(0)
    mu = rng.gamma(2.0, 2.0, 20_000) + 0.2
    phi = 0.3
    n = 1 / phi
    y = rng.negative_binomial(n, n / (n + mu * lift))
    model = DemandForecaster(ForecastSettings(point_levels=(0.35, 0.5, 0.65)))
    model.dispersion[model.settings.model_name] = Dispersion(np.array([0.0]), np.array([phi]))
    model._fit_point_level(model.settings.model_name, mu, y.astype(float))
    assert model.point_level == {model.settings.model_name: expect}


def test_dispersion_index_ranks_lumpy_series_above_steady_ones_of_the_same_mean():
    """Series sold in packs of 6 (lumpy) and one by one (Poisson) at the same means: the index puts the lumpy ones
    above 1 and the steady ones below, reads only the last `days` uncensored days from the series' first day, and
    leaves a series with too few such days at 1."""
    from retail_dagster.core.forecasting import dispersion_index

    rng = np.random.default_rng(3)
    N, T = 400, 90
    mean = np.repeat(np.geomspace(0.3, 12, N // 2), 2)
    lumpy = np.arange(N) % 2 == 0
    y = np.where(lumpy[:, None], 6 * rng.poisson(mean[:, None] / 6, (N, T)), rng.poisson(mean[:, None], (N, T)))
    y = y.astype(np.float32)
    censored = np.zeros((N, T), dtype=bool)
    first_t = np.zeros(N, dtype=np.int64)
    index = dispersion_index(y, censored, first_t, days=56)
    assert np.median(index[lumpy]) > 1.3 and np.median(index[~lumpy]) < 0.8
    assert (index[lumpy] > index[~lumpy]).mean() > 0.9  # pairwise: each lumpy series vs the steady one of its mean
    assert index.min() >= 0.5 and index.max() <= 2.0  # the clip

    # censored days and days before the window or before the series' first day are not read
    y2, censored2 = y.copy(), censored.copy()
    censored2[:, -10:] = True
    y2[:, -10:] = 500.0
    y2[:, : T - 56] = 500.0
    assert np.array_equal(dispersion_index(y2, censored2, first_t, days=56),
                          dispersion_index(y, censored2, first_t, days=56))
    late = first_t.copy()
    late[:10] = T - 10  # 10 days of history
    assert (dispersion_index(y, censored, late, days=56)[:10] == 1.0).all()
    assert (dispersion_index(y[:15], censored[:15], first_t[:15]) == 1.0).all()  # too few series to compare


@pytest.mark.parametrize("lumpy_truth, powers", [(True, (0.75, 1.0)), (False, (0.0, 0.25))])
def test_point_dispersion_power_is_chosen_on_the_holdout(lumpy_truth, powers):
    """Actuals whose NB dispersion follows each series' index (the pooled one times the index) make the holdout pick
    a high power, and p50 errs less with it than without; actuals with the pooled dispersion keep a low one (the
    gain of a power is a fraction of a percent of the error: 0.25 vs 0 is within the noise of 42,000 rows)."""
    from retail_dagster.core.forecasting import DemandForecaster, Dispersion, nb_median

    rng = np.random.default_rng(0)
    n_series, days = 3000, 14
    mu = np.repeat(rng.gamma(1.5, 1.5, n_series) + 0.3, days)
    index = np.repeat(np.exp(rng.uniform(np.log(0.5), np.log(2.0), n_series)), days)
    phi = 0.6
    phi_true = phi * index if lumpy_truth else np.full_like(mu, phi)
    r = 1 / phi_true
    y = rng.negative_binomial(r, r / (r + mu)).astype(float)
    model = DemandForecaster(ForecastSettings(point_levels=(0.5,)))
    name = model.settings.model_name
    model.dispersion[name] = Dispersion(np.array([0.0]), np.array([phi]))
    model._fit_point_level(name, mu, y, index)
    assert model.point_power[name] in powers and model.point_level == {name: 0.5}
    if lumpy_truth:
        err = [np.abs(nb_median(mu, phi * index ** a) - y).sum() for a in (0.0, 1.0)]
        assert err[1] < err[0]
    # without an index (or with the option off) only the level is calibrated
    off = DemandForecaster(ForecastSettings(point_levels=(0.5,), point_dispersion_powers=(0.0,)))
    off.dispersion[name] = model.dispersion[name]
    off._fit_point_level(name, mu, y, index)
    assert off.point_power.get(name, 0.0) == 0.0


@pytest.mark.parametrize("lumpy_truth", [True, False])
def test_band_dispersion_follows_the_series_index_when_the_holdout_says_so(lumpy_truth):
    """Actuals whose NB dispersion follows each series' index: the band takes the index's full power, and the
    coverage of the lumpiest and steadiest thirds both come near the target (the pooled band under-covers the
    lumpy ones and over-covers the steady ones); actuals with one dispersion keep power 0. The coverage overall
    stays calibrated either way."""
    from retail_dagster.core.forecasting import fit_dispersion

    rng = np.random.default_rng(1)
    n_series, days = 4000, 14
    mu = np.repeat(rng.gamma(2.0, 2.0, n_series) + 0.5, days)
    index = np.repeat(np.exp(rng.uniform(np.log(0.5), np.log(2.0), n_series)), days)
    phi_true = 0.5 * index if lumpy_truth else np.full_like(mu, 0.5)
    r = 1 / phi_true
    y = rng.negative_binomial(r, r / (r + mu)).astype(float)
    d = fit_dispersion(mu, y, 0.8, index=index, powers=(0.0, 0.5, 1.0))
    pooled = fit_dispersion(mu, y, 0.8)
    assert d.power == (1.0 if lumpy_truth else 0.0) and pooled.power == 0.0
    assert set(d.holdout_quantile_loss) == {0.0, 0.5, 1.0}
    assert abs(d.holdout_coverage - 0.8) < 0.02

    def coverage(disp, rows):
        q = nb_quantiles(mu[rows], disp(mu[rows], index[rows]), [0.1, 0.9])
        return np.mean((y[rows] >= q[:, 0]) & (y[rows] <= q[:, 1]))

    lumpy, steady = index > np.quantile(index, 2 / 3), index < np.quantile(index, 1 / 3)
    if lumpy_truth:
        assert coverage(pooled, lumpy) < 0.76 and coverage(pooled, steady) > 0.84
        assert abs(coverage(d, lumpy) - 0.8) < 0.03 and abs(coverage(d, steady) - 0.8) < 0.03
    # without the index (as a cached model is called) the curve is the pooled one
    assert np.array_equal(pooled(mu[:100]), pooled(mu[:100], index[:100]))


def test_the_point_power_lowers_the_median_of_lumpy_series_and_keeps_the_mean_and_band(demo_tables, plan_date):
    """At prediction each series' index is read from its history before D: with a power the median of a series
    above the index's 1 can only fall and one below can only rise, against the same model without it; the mean and
    the band do not move."""
    from retail_dagster.core.forecasting import _build_panel, dispersion_index

    inputs = forecast_inputs(demo_tables, plan_date, "grocery")
    model = train_forecaster(forecast_inputs(demo_tables, anchor_date(plan_date), "grocery"), SETTINGS)
    main = SETTINGS.model_name
    model.point_power[main] = 1.0
    with_power = model.predict(inputs)
    model.point_power[main] = 0.0
    without = model.predict(inputs)
    assert np.array_equal(with_power[["mean", "p10", "p90"]].to_numpy(), without[["mean", "p10", "p90"]].to_numpy())
    series = with_power.drop_duplicates(["sku_id", "location_id"])[["sku_id", "location_id"]].merge(
        inputs.catalog[["sku_id", "category"]], on="sku_id").reset_index(drop=True)  # the forecast's series
    start = plan_date - pd.Timedelta(days=SETTINGS.dispersion_index_days + 14)
    panel = _build_panel(inputs, series, plan_date, start, SETTINGS.horizon_days, model.meta,
                         elasticity=model._elasticity_of(series))
    index = pd.Series(dispersion_index(panel.y_feat, panel.censored, panel.first_t),
                      index=pd.MultiIndex.from_frame(series[["sku_id", "location_id"]]))
    key = pd.MultiIndex.from_frame(with_power[["sku_id", "location_id"]])
    idx = index.reindex(key).to_numpy()
    is_main = (with_power["model"] == main).to_numpy()
    d = with_power["p50"].to_numpy() - without["p50"].to_numpy()
    assert (d[is_main & (idx > 1)] <= 0).all() and (d[is_main & (idx < 1)] >= 0).all()
    assert (d[is_main & (idx > 1)] < 0).any() and (d[is_main & (idx < 1)] > 0).any()  # it does move some
    assert (d[~is_main] == 0).all() and (d[is_main & (idx == 1)] == 0).all()


def test_threads_follow_the_run_share_and_never_change_the_forecast(demo_tables, plan_date, monkeypatch):
    """LightGBM threads default to the run's share of the cores (OMP_NUM_THREADS, else 1) at training and at
    prediction time; deterministic row-wise training gives the same trees, so the same forecast, for any count."""
    import dataclasses

    group = "household"
    A = anchor_date(plan_date)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert SETTINGS.threads() == 1 and dataclasses.replace(SETTINGS, num_threads=3).threads() == 3
    one = train_forecaster(forecast_inputs(demo_tables, A, group), SETTINGS)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert SETTINGS.threads() == 2
    two = train_forecaster(forecast_inputs(demo_tables, A, group), SETTINGS)
    assert two.fcst.models_["lgbm"].get_params()["n_jobs"] == 2
    trees = [m.fcst.models_["lgbm"].booster_.model_to_string().split("\nparameters:")[0] for m in (one, two)]
    assert trees[0] == trees[1]  # the trees (the parameters section records the thread count)
    inputs = forecast_inputs(demo_tables, plan_date, group)
    by_two = one.predict(inputs)  # a model trained on 1 thread predicts on this run's 2
    assert one.fcst.models_["lgbm"].get_params()["n_jobs"] == 2
    monkeypatch.delenv("OMP_NUM_THREADS")
    pd.testing.assert_frame_equal(by_two, two.predict(inputs))
    pd.testing.assert_frame_equal(by_two, one.predict(inputs))


def test_blend_with_a_statistical_model_sets_the_mean_and_keeps_lightgbms_median(demo_tables, plan_date):
    """blend_weights (w,): the main model's mean is (1 - w) LightGBM + w the statistical member, which is never
    negative and responds to a planned price like LightGBM; p50 stays the median around LightGBM's own mean (it moves
    only through the dispersion fitted on the blend), inside the p10-p90 band. The LightGBM model is the same."""
    inputs = forecast_inputs(demo_tables, plan_date, "grocery")
    train = forecast_inputs(demo_tables, anchor_date(plan_date), "grocery")
    # one model for every series, no level model (it rescales the blend's totals)
    plain = ForecastSettings(**{**SETTINGS.__dict__, "use_intermittent_models": False, "level_weight": 0.0})
    off = train_forecaster(train, plain)
    on = train_forecaster(train, ForecastSettings(**{**plain.__dict__, "blend_weights": (0.3,)}))
    assert off.blend_weight == 0.0 and on.blend_weight == 0.3 and on.info["blend"]["model"] == "sses"
    assert plain.fingerprint() != on.settings.fingerprint()
    a, b = off.predict(inputs), on.predict(inputs)
    main = (a["model"] == SETTINGS.model_name).to_numpy()
    assert main.any() and (a["model"] == b["model"]).all()
    member = (b["mean"].to_numpy() - 0.7 * a["mean"].to_numpy()) / 0.3
    assert (member[main] >= -1e-9).all() and not np.allclose(member[main], a["mean"].to_numpy()[main])
    np.testing.assert_allclose(b["mean"].to_numpy()[~main], a["mean"].to_numpy()[~main])
    assert (b["p10"] <= b["p50"]).all() and (b["p50"] <= b["p90"]).all()
    # p50: the median around LightGBM's own mean (the blend-off forecast's), at the blended model's dispersion
    from retail_dagster.core.forecasting import nb_median

    own = a["mean"].to_numpy()[main]
    level = on.point_level.get(SETTINGS.model_name, 0.5)
    expect = nb_median(own, on.dispersion[SETTINGS.model_name](own), level)
    np.testing.assert_array_equal(b["p50"].to_numpy()[main],
                                  np.clip(expect, b["p10"].to_numpy()[main], b["p90"].to_numpy()[main]))
    # a 10% lower planned price raises the blended mean on every main-model series, as it does LightGBM's
    cur = inputs.sales.sort_values("date").drop_duplicates(["sku_id", "location_id"], keep="last")
    cheap = b.merge(cur[["sku_id", "location_id", "price"]].assign(price=lambda f: f["price"] * 0.9),
                    on=["sku_id", "location_id"])[["sku_id", "location_id", "price"]].drop_duplicates()
    c = on.predict(inputs, prices=cheap)
    sums = lambda f: f[f["model"] == SETTINGS.model_name].groupby(["sku_id", "location_id"])["mean"].sum()  # noqa
    lo, hi = sums(b).align(sums(c), join="inner")
    assert len(lo) and (hi >= lo - 1e-9).all() and (hi > lo).mean() > 0.9


def test_blend_weight_is_chosen_on_the_holdout_totals(demo_tables, plan_date):
    """With several candidate weights the model keeps the one whose holdout totals erred least (ties: the smaller)."""
    train = forecast_inputs(demo_tables, anchor_date(plan_date), "apparel")
    model = train_forecaster(train, ForecastSettings(**{**SETTINGS.__dict__, "blend_weights": (0.0, 0.5, 1.0)}))
    errs = {float(k): v for k, v in model.info["blend"]["holdout_total_abs_error"].items()}
    assert set(errs) == {0.0, 0.5, 1.0} and len(set(errs.values())) == 3
    assert model.blend_weight == min(errs, key=lambda w: (errs[w], w))


def test_the_demand_agent_switches_the_blend_on_and_off():
    """The resource's blend_weight reaches the engine; 0 keeps the default settings' fingerprint (cached models and
    pinned decisions stay valid); a weight outside 0..1 is refused before any run."""
    from pydantic import ValidationError

    from retail_dagster.agents.demand import DemandSensingAgent

    assert DemandSensingAgent().settings().fingerprint() == ForecastSettings().fingerprint()
    on = DemandSensingAgent(blend_weight=0.3).settings()
    assert on.blend_weights == (0.3,) and on.fingerprint() != ForecastSettings().fingerprint()
    with pytest.raises(ValidationError, match="blend_weight"):
        DemandSensingAgent(blend_weight=1.5)
    imp = DemandSensingAgent(censored_imputation="conditional").settings()
    assert imp.censored_imputation == "conditional" and imp.fingerprint() != ForecastSettings().fingerprint()
    with pytest.raises(ValidationError, match="censored_imputation"):
        DemandSensingAgent(censored_imputation="tobit")


def test_level_features_read_only_the_days_before_the_origin(demo_tables, plan_date):
    """The level model's row at origin o sees demand before o only: rewriting the days from o on (what it predicts)
    changes no feature; rewriting the day before o does."""
    from retail_dagster.core import forecasting as fc

    inputs = forecast_inputs(demo_tables, plan_date, "grocery")
    series = fc.DemandForecaster._history_series(inputs, plan_date)
    meta = fc._feature_meta(inputs, SETTINGS, plan_date)
    panel = fc._build_panel(inputs, series, plan_date, plan_date - pd.Timedelta(days=200), 14, meta)
    o0 = panel.n_hist - 30
    r, o = np.arange(len(series)), np.full(len(series), o0)
    before = fc._level_features(panel, r, o, [(0, 14)])
    assert len(before) == len(series) and before["mean_7"].notna().all() and (before["mean_112"] >= 0).all()
    panel.y_feat[:, o0:] += 1000.0
    pd.testing.assert_frame_equal(before, fc._level_features(panel, r, o, [(0, 14)]))
    panel.y_feat[:, o0 - 1] += 7.0
    np.testing.assert_allclose(fc._level_features(panel, r, o, [(0, 14)])["mean_7"] - before["mean_7"], 1.0, rtol=1e-6)
    # a part of the horizon (week 2): the same history, the known-ahead features over its own days only
    whole, week2 = fc._level_features(panel, r, o, [(0, 14)]), fc._level_features(panel, r, o, [(7, 14)])
    pd.testing.assert_series_equal(week2["mean_28"], whole["mean_28"])
    assert (week2["part_start"] == 7).all() and (whole["part_start"] == 0).all()
    temp = panel.exog["temperature_c"]
    np.testing.assert_allclose(week2["next_temperature_c"], np.nanmean(temp[:, o0 + 7:o0 + 14], axis=1), rtol=1e-5)
    temp[:, o0:o0 + 7] += 30.0
    pd.testing.assert_series_equal(fc._level_features(panel, r, o, [(7, 14)])["next_temperature_c"],
                                   week2["next_temperature_c"])


def test_apply_level_moves_each_total_part_way_and_keeps_the_daily_shape():
    from retail_dagster.core.forecasting import _apply_level

    mu = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0], [2.0, 2.0, 2.0], [1.0, 1.0, 2.0]])
    level = np.array([12.0, 5.0, np.nan, 0.0])
    np.testing.assert_array_equal(_apply_level(mu, level, 0.0), mu)
    out = _apply_level(mu, level, 0.5)
    np.testing.assert_allclose(out.sum(axis=1), [9.0, 0.0, 6.0, 2.0])  # halfway; zero and unknown totals kept
    np.testing.assert_allclose(out[0] / out[0].sum(), mu[0] / mu[0].sum())
    np.testing.assert_allclose(_apply_level(mu, level, 1.0)[0].sum(), 12.0)
    # cut in parts: each part's total moves on its own, each part keeps its shape
    parts = _apply_level(mu, np.array([[3.0, 9.0], [1.0, 1.0], [np.nan, 4.0], [0.0, 0.0]]), 0.5, (1,))
    np.testing.assert_allclose(parts[:, 0], [2.0, 0.0, 2.0, 0.5])
    np.testing.assert_allclose(parts[:, 1:].sum(axis=1), [7.0, 0.0, 4.0, 1.5])
    np.testing.assert_allclose(parts[0, 1:] / parts[0, 1:].sum(), mu[0, 1:] / mu[0, 1:].sum())


def test_level_model_trains_and_serves(demo_tables, plan_date):
    """On by default: trained on origins before the calibration cut (for the calibration) and again through the
    anchor; its totals pull the daily model's totals level_weight of the way; 0 is the engine without it."""
    inputs = forecast_inputs(demo_tables, plan_date, "grocery")
    train = forecast_inputs(demo_tables, anchor_date(plan_date), "grocery")
    on = train_forecaster(train, SETTINGS)
    off = train_forecaster(train, ForecastSettings(**{**SETTINGS.__dict__, "level_weight": 0.0}))
    assert on.level is not None and off.level is None
    assert on.info["level_model"]["rows"] > 1000 and on.info["level_model"]["weight"] == SETTINGS.level_weight
    a, b = off.predict(inputs), on.predict(inputs)
    key = ["sku_id", "location_id"]
    ta, tb = a.groupby(key)["mean"].sum(), b.groupby(key)["mean"].sum()
    assert np.isfinite(tb).all() and (tb >= 0).all() and not np.allclose(ta, tb)
    assert 0.7 < tb.sum() / ta.sum() < 1.3  # a level, not a different world


def test_the_level_models_year_of_origins_is_read_and_fingerprinted(demo_tables, plan_date):
    """The serving level model's origins span train_window_days before the anchor (a whole year by default), which
    reaches further back than the daily model's window: training reads that span, and the training fingerprint
    (the model cache's key) covers it: a sale changed there retrains, one before it does not."""
    import dataclasses

    from retail_dagster.agents.demand import DemandSensingAgent
    from retail_dagster.core.forecasting import LOOKBACK_DAYS, level_span_days, training_span_days

    agent = DemandSensingAgent(train_window_days=280)
    st = agent.settings()
    assert training_span_days(st) == level_span_days(st) == 280 + 112 + 14 > 14 + 280 + LOOKBACK_DAYS
    assert training_span_days(ForecastSettings(level_weight=0.0)) == 14 + 364 + LOOKBACK_DAYS
    inputs = forecast_inputs(demo_tables, plan_date, "grocery")
    A = anchor_date(plan_date)
    base = agent.training_fingerprint(inputs)

    def changed(days_before: int) -> str:
        sales = inputs.sales.copy()
        row = sales.index[sales["date"] == A - pd.Timedelta(days=days_before)][0]
        sales.loc[row, "units"] += 5
        return agent.training_fingerprint(dataclasses.replace(inputs, sales=sales))

    assert changed(400) != base  # read by the level model only
    assert changed(410) == base  # before anything training reads
    # the level model's origins: every level_origin_step days over the span, after its 112 days of trailing means
    fit = train_forecaster(forecast_inputs(demo_tables, A, "grocery"), SETTINGS)
    span = level_span_days(SETTINGS)
    assert fit.info["level_model"]["origins"] == len(range(span - 14, 112 - 1, -SETTINGS.level_origin_step))


def test_closed_days_are_store_days_that_sold_nothing_in_a_busy_store():
    from retail_dagster.core.forecasting import _closed_days

    rng = np.random.default_rng(3)
    y = np.zeros((6, 40))
    y[:3] = rng.poisson(10.0, size=(3, 40))  # store A: about 30 units a day
    y[3:] = rng.poisson(0.3, size=(3, 40))  # store B: about one a day, so a day without sales is no closure
    loc = np.array(["A", "A", "A", "B", "B", "B"])
    y[3:, :5] = 0.0  # B before its first sale
    y[:3, 20] = 0.0  # A closed
    y[0, 30] = 0.0  # one series without sales: not a closure
    y[:3, 38:] = 0.0  # A after its last sale: not closures either (the store stopped trading, or no data)
    closed = _closed_days(y, loc)
    assert closed.shape == y.shape
    assert closed[:3, 20].all() and closed.sum() == 3
    y[:3, 21] = np.nan  # unobserved counts as nothing sold
    assert _closed_days(y, loc)[:3, 21].all()


def test_annual_closures_zero_the_forecast_of_a_day_the_store_was_closed_a_year_before(demo_tables, plan_date):
    """Stores closed on a day of a past year (Christmas) are expected closed on it again: every series of that
    store gets a forecast of 0 that day (mean and quantiles); other days and stores keep theirs. The closed day is
    censored in the history, not learned as demand. A closure on a day without a yearly event (a gap in the feed)
    is censored but not projected."""
    from retail_dagster.core import forecasting as fc

    target, other = plan_date + pd.Timedelta(days=3), plan_date + pd.Timedelta(days=5)
    last_year = target - pd.DateOffset(years=1)
    ev = demo_tables["events"]
    assert (ev["date"] == last_year).any() and not (ev["date"] == other - pd.DateOffset(years=1)).any()
    store = sorted(demo_tables["locations"].query("kind == 'store'")["location_id"])[0]
    tables = dict(demo_tables)
    s = tables["sales"].copy()
    s.loc[(s["location_id"] == store) & s["date"].isin([last_year, other - pd.DateOffset(years=1)]), "units"] = 0
    tables["sales"] = s
    inputs = forecast_inputs(tables, plan_date, "grocery")
    series = fc.DemandForecaster._history_series(inputs, plan_date)

    def censored(i):
        return fc._build_panel(i, series, plan_date, plan_date - pd.Timedelta(days=400), 14,
                               fc._feature_meta(i, SETTINGS, plan_date)).censored
    new, old = censored(inputs), censored(forecast_inputs(demo_tables, plan_date, "grocery"))
    col = (last_year - (plan_date - pd.Timedelta(days=400))).days
    at = (series["location_id"] == store).to_numpy()
    col2 = col + (other - target).days
    assert new[at, col].all() and not old[at, col].all()  # the closed days are censored (stockouts aside) ...
    assert new[at, col2].all()
    changed = new != old
    changed[at, col] = changed[at, col2] = False
    assert not changed.any()  # ... and nothing else is
    out = train_forecaster(forecast_inputs(tables, anchor_date(plan_date), "grocery"), SETTINGS).predict(inputs)
    day = out[out["target_date"] == target]
    there = day["location_id"] == store
    assert there.any() and (day.loc[there, ["mean", "p50", "p90", "p95"]] == 0).all().all()
    assert (day.loc[~there, "mean"] > 0).mean() > 0.9
    assert (out.loc[(out["location_id"] == store) & (out["target_date"] != target), "mean"] > 0).mean() > 0.9
    gap = out[(out["target_date"] == other) & (out["location_id"] == store)]
    assert (gap["mean"] > 0).mean() > 0.9  # the day without a yearly event is not projected


def test_level_model_rows_are_capped_by_a_sample_of_series_with_every_origin(demo_tables, plan_date):
    from retail_dagster.core.forecasting import _hash_sample

    train = forecast_inputs(demo_tables, anchor_date(plan_date), "grocery")
    full = train_forecaster(train, SETTINGS).info["level_model"]
    capped = train_forecaster(train, ForecastSettings(**{**SETTINGS.__dict__, "level_max_rows": 6000})).info
    lv = capped["level_model"]
    assert lv["rows"] <= 6000 < full["rows"] and lv["origins"] == full["origins"]
    assert lv["series"] == 6000 // (lv["origins"] * lv["parts"]) < full["series"] == capped["train_series"]
    # the sample is the same series whatever the order of the rows
    series = pd.DataFrame({"sku_id": [f"S{i}" for i in range(50)], "location_id": ["L1", "L2"] * 25})
    pick = series.iloc[_hash_sample(series, 10)]
    shuffled = series.sample(frac=1.0, random_state=3).reset_index(drop=True)
    again = shuffled.iloc[_hash_sample(shuffled, 10)]
    assert len(pick) == 10 and set(map(tuple, pick.to_numpy())) == set(map(tuple, again.to_numpy()))
    assert (np.diff(_hash_sample(series, 10)) > 0).all() and len(_hash_sample(series, 80)) == 50


def test_bias_correction_recovers_the_holdout_ratio_of_the_model_that_serves_each_segment():
    """Each named segment's factor is its serving model's holdout ratio sum(y) / sum(mean) (stocked-out days, NaN,
    left out), clipped; only that model's rows of that segment are scaled; a segment with too little holdout keeps
    its mean; an unknown segment name is an error."""
    from retail_dagster.core.forecasting import DemandForecaster

    rng = np.random.default_rng(3)
    n, h = 400, 14
    inter = np.arange(n) < 150
    est = np.arange(n) != 0
    mu_main, mu_tsb = rng.gamma(2.0, 1.0, (n, h)) + 0.1, rng.gamma(2.0, 0.5, (n, h)) + 0.1
    y = np.where(inter[:, None], mu_tsb * 1.2, mu_main * 0.9)
    y[5, 3] = np.nan  # a stocked-out day: not in the ratio
    both = ForecastSettings(bias_correction_segments=("intermittent", "regular"), bias_correction_weight=1.0)
    model = DemandForecaster(both)
    means = {"lgbm_tweedie": mu_main.copy(), "tsb": mu_tsb.copy()}
    model._correct_bias(means, y, est, inter, "lgbm_tweedie", "tsb")
    assert model.mean_scale == pytest.approx({"intermittent": 1.2, "regular": 0.9})
    rows = est & inter
    np.testing.assert_allclose(means["tsb"][rows], mu_tsb[rows] * 1.2)
    np.testing.assert_allclose(means["tsb"][~rows], mu_tsb[~rows])  # not its segment: unchanged
    np.testing.assert_allclose(means["lgbm_tweedie"][est & ~inter], mu_main[est & ~inter] * 0.9)
    np.testing.assert_allclose(means["lgbm_tweedie"][~est], mu_main[~est])
    assert model.info["bias_correction"]["intermittent"]["model"] == "tsb"

    # off by default; when on, the default weight takes the ratio to the power 0.5
    model = DemandForecaster(ForecastSettings())
    model._correct_bias({"lgbm_tweedie": mu_main.copy(), "tsb": mu_tsb.copy()}, y, est, inter, "lgbm_tweedie", "tsb")
    assert model.mean_scale == {}
    inter_only = ForecastSettings(bias_correction_segments=("intermittent",))
    model = DemandForecaster(inter_only)
    means = {"lgbm_tweedie": mu_main.copy(), "tsb": mu_tsb.copy()}
    model._correct_bias(means, y, est, inter, "lgbm_tweedie", "tsb")
    assert model.mean_scale == pytest.approx({"intermittent": 1.2 ** 0.5})
    assert model.info["bias_correction"]["intermittent"]["holdout_ratio"] == pytest.approx(1.2, abs=1e-4)

    # clipped: a holdout 2x over the mean moves it by the clip's top only
    model = DemandForecaster(ForecastSettings(bias_correction_segments=("intermittent",),
                                              bias_correction_clip=(0.8, 1.25), bias_correction_weight=1.0))
    means = {"lgbm_tweedie": mu_main.copy(), "tsb": mu_tsb.copy()}
    model._correct_bias(means, np.where(inter[:, None], mu_tsb * 2.0, mu_main), est, inter, "lgbm_tweedie", "tsb")
    assert model.mean_scale == {"intermittent": 1.25}

    # when the main model serves the intermittent segment too, its intermittent rows get the intermittent factor
    model = DemandForecaster(both)
    means = {"lgbm_tweedie": mu_main.copy()}
    y2 = np.where(inter[:, None], mu_main * 1.1, mu_main * 0.95)
    model._correct_bias(means, y2, est, inter, "lgbm_tweedie", "lgbm_tweedie")
    np.testing.assert_allclose(means["lgbm_tweedie"][est], y2[est])

    # a segment with too few holdout rows keeps its mean
    model = DemandForecaster(inter_only)
    few = np.arange(n) < 5
    means = {"lgbm_tweedie": mu_main.copy(), "tsb": mu_tsb.copy()}
    model._correct_bias(means, y, est, few, "lgbm_tweedie", "tsb")
    assert model.mean_scale == {} and np.array_equal(means["tsb"], mu_tsb)

    with pytest.raises(ValueError, match="unknown segment 'promo'"):
        DemandForecaster(ForecastSettings(bias_correction_segments=("promo",)))._correct_bias(
            {"lgbm_tweedie": mu_main}, y, est, inter, "lgbm_tweedie", "tsb")


def test_bias_correction_scales_the_served_mean_of_its_segment_and_nothing_else(demo_tables, plan_date):
    """Through training and predict: with the correction on, the intermittent series' means are the uncorrected
    engine's times the factor learned on the holdout, the other series' means are identical, and p50 stays inside
    the band."""
    inputs = forecast_inputs(demo_tables, plan_date, "household")
    train = forecast_inputs(demo_tables, anchor_date(plan_date), "household")
    segments = {"bias_correction_segments": ("intermittent",)}
    off = train_forecaster(train, ForecastSettings(**{**SETTINGS.__dict__, "bias_correction_segments": ()}))
    on = train_forecaster(train, ForecastSettings(**{**SETTINGS.__dict__, **segments}))
    assert off.mean_scale == {} and set(on.mean_scale) == {"intermittent"}
    f = on.mean_scale["intermittent"]
    rep = on.info["bias_correction"]["intermittent"]
    assert f == pytest.approx(np.clip(rep["holdout_ratio"] ** on.settings.bias_correction_weight,
                                      *on.settings.bias_correction_clip), abs=1e-4)
    assert f != 1.0
    a, b = off.predict(inputs), on.predict(inputs)
    key = ["sku_id", "location_id", "target_date"]
    m = a.merge(b, on=key, suffixes=("_off", "_on"))
    ratio = (m["mean_on"] / m["mean_off"]).where(m["mean_off"] > 0)
    scaled = np.isclose(ratio, f, rtol=1e-9)
    same = np.isclose(m["mean_on"], m["mean_off"], rtol=1e-12, atol=0)
    assert (scaled | same | m["mean_off"].eq(0)).all()
    assert scaled.sum() > 50 and same.sum() > 50
    # the segment is a series' (all its days scaled, or none), and only series with a forecast model are
    pos = m["mean_off"].to_numpy() > 0
    per = m[pos].assign(scaled=scaled[pos]).groupby(["sku_id", "location_id"])["scaled"]
    assert (per.all() | ~per.any()).all()
    assert (m.loc[scaled, "model_on"] != "new_series_profile").all()
    assert (b["p10"] <= b["p50"]).all() and (b["p50"] <= b["p90"]).all()


def test_conditional_imputation_recovers_the_demand_behind_censored_sales():
    """Poisson demand sold from a daily stock (a day that sells out is censored): the uncensored days are the days
    demand stayed under the stock, so their mean, and the sales, read low. E[D | D >= sold] around a mean that counts
    the censored days at their imputed value recovers the true rate; the old rule ("mean") stays as it was."""
    from retail_dagster.core.forecasting import _impute_censored, _rolling_sum

    rng = np.random.default_rng(0)
    n, t = 2000, 120
    lam = rng.uniform(1, 8, n)[:, None]
    demand = rng.poisson(lam, (n, t)).astype(float)
    stock = np.round(lam * rng.uniform(0.8, 1.5, (n, 1)))
    sold = np.minimum(demand, stock).astype(np.float32)
    cens = demand >= stock
    assert 0.3 < cens.mean() < 0.6

    def recovered(z):
        return float((z[:, 28:].mean(axis=1) / lam[:, 0]).mean())

    cond = _impute_censored(sold, cens, "conditional")
    old = _impute_censored(sold, cens, "mean")
    assert recovered(sold) < 0.87 and recovered(old) < 0.87  # the old rule imputes about the day's sales
    assert abs(recovered(cond) - 1) < 0.03
    assert np.array_equal(cond[~cens], sold[~cens]) and (cond[cens] >= sold[cens]).all()
    # the old rule, as it was: the mean of the uncensored days of the previous 4 weeks, at least the day's sales
    unc = (~cens).astype(np.float64)
    den = _rolling_sum(unc, 28)
    est = np.where(den > 0, _rolling_sum(sold * unc, 28) / np.maximum(den, 1), sold)
    np.testing.assert_array_equal(old, np.where(cens, np.maximum(sold, est), sold).astype(np.float32))
    with pytest.raises(ValueError, match="censored_imputation: 'tobit'"):
        _impute_censored(sold, cens, "tobit")
