"""The compiled LightGBM predictor (core.tree_predict) gives LightGBM's predictions bit for bit: every missing-value
rule, categorical bitsets, values at the thresholds, the iterations early stopping chose, the objectives' output
transform; unsupported models fall back to LightGBM; the forecast is the same frame with it as without."""

from __future__ import annotations

import pickle

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from retail_dagster.core import tree_predict
from retail_dagster.core.forecasting import ForecastSettings, anchor_date, forecast_inputs, train_forecaster
from retail_dagster.core.tree_predict import CompiledRegressor, booster_tables, compiled_models

pytestmark = [pytest.mark.filterwarnings("ignore:X does not have valid feature names"),
              pytest.mark.filterwarnings("ignore:.*eval_set.*")]

SMALL = {"n_estimators": 40, "num_leaves": 31, "min_child_samples": 10, "learning_rate": 0.1, "verbose": -1,
         "deterministic": True, "force_row_wise": True, "n_jobs": 1}


def _frame(n: int, seed: int) -> pd.DataFrame:
    """Features with every kind of value a split sees: NaNs (missing type NaN), small integers with many zeros,
    a pandas categorical, a feature never NaN in training (missing type None), negatives."""
    rng = np.random.default_rng(seed)
    f0 = rng.normal(size=n)
    f0[rng.random(n) < 0.2] = np.nan
    return pd.DataFrame({
        "with_nan": f0,
        "counts": rng.poisson(0.7, n).astype(np.float32),
        "shop": pd.Categorical(rng.choice(list("abcdefgh"), n), categories=list("abcdefgh")),
        "dense": rng.uniform(-3, 3, n),
        "code": rng.integers(0, 12, n).astype(np.int32),
    })


def _target(X: pd.DataFrame, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shop = X["shop"].cat.codes.to_numpy()
    eta = (0.6 * np.nan_to_num(X["with_nan"].to_numpy(), nan=1.5) + 0.3 * X["counts"] + 0.4 * (shop % 3)
           - 0.2 * X["dense"] + 0.05 * X["code"])
    return rng.poisson(np.exp(eta - 0.5)).astype(float)


def _thresholds_by_feature(est) -> dict[int, np.ndarray]:
    dump = est.booster_.dump_model()["tree_info"]
    out: dict[int, list] = {}

    def walk(node):
        if "split_index" in node:
            if node["decision_type"] == "<=":
                out.setdefault(node["split_feature"], []).append(node["threshold"])
            walk(node["left_child"])
            walk(node["right_child"])

    for tree in dump:
        walk(tree["tree_structure"])
    return {f: np.unique(v) for f, v in out.items()}


def _probe(est, X: pd.DataFrame, seed: int) -> pd.DataFrame:
    """X's rows (numerical columns as float64) with values exactly on each threshold of the model, one ulp either
    side, at 0.0, -0.0, +-kZeroThreshold (LightGBM's zero split) and below it, NaN, infinities, far out of range;
    categories never seen in training, in another order, and missing."""
    rng = np.random.default_rng(seed)
    numeric = [c for c in X.columns if c != "shop"]
    base = X.astype({c: np.float64 for c in numeric})
    k0 = tree_predict.K_ZERO_THRESHOLD
    special = np.array([0.0, -0.0, k0, -k0, np.nextafter(k0, 1), np.nextafter(-k0, -1), 1e-36, -1e-36, np.nan,
                        np.inf, -np.inf, 1e30, -1e30])
    rows = []
    for f, thr in _thresholds_by_feature(est).items():
        values = np.concatenate([thr, np.nextafter(thr, np.inf), np.nextafter(thr, -np.inf), special])
        block = base.sample(len(values), replace=True, random_state=seed + f).reset_index(drop=True)
        block[X.columns[f]] = values
        rows.append(block)
    mixed = base.sample(400, replace=True, random_state=seed).reset_index(drop=True)
    for c in numeric:
        pick = rng.random(len(mixed)) < 0.15
        mixed.loc[pick, c] = rng.choice(special, pick.sum())
    out = pd.concat(rows + [mixed], ignore_index=True)
    shop = out["shop"].astype(object).to_numpy()
    shop[rng.random(len(out)) < 0.1] = "zz"
    shop[rng.random(len(out)) < 0.1] = np.nan
    out["shop"] = pd.Categorical(shop, categories=list("hgfedcba") + ["zz"])
    return out


def _assert_same(est, X, threads=(1, 3)):
    expected = est.predict(X)
    for n in threads:
        got = CompiledRegressor(est, n).predict(X)
        assert got.dtype == np.float64 and got.shape == expected.shape
        bad = np.flatnonzero(got.view(np.int64) != expected.view(np.int64))
        assert not len(bad), f"{len(bad)} of {len(X)} rows differ, e.g. row {bad[0]}: {got[bad[0]]!r} != " \
                             f"{expected[bad[0]]!r}"


@pytest.fixture(scope="module")
def data():
    X = _frame(3000, 1)
    return X, _target(X, 2)


@pytest.mark.parametrize("objective,extra", [
    ("tweedie", {"tweedie_variance_power": 1.2}),
    ("poisson", {}),
    ("regression", {}),
    ("tweedie", {"zero_as_missing": True}),  # missing type Zero: 0.0 (and NaN) go the default way
    ("tweedie", {"use_missing": False}),  # missing type None everywhere: NaN reads as 0.0
    ("tweedie", {"max_cat_to_onehot": 16, "num_leaves": 64}),  # one-vs-rest categorical splits, 64 leaves
])
def test_bits_equal_lightgbm(data, objective, extra):
    X, y = data
    est = lgb.LGBMRegressor(objective=objective, **{**SMALL, **extra}).fit(X, y)
    tables = booster_tables(est.booster_)
    assert tables is not None, "this model should be compiled, not passed to LightGBM"
    p = tables.parsed
    assert p.categorical.any() and (p.special_left == 0).any() and (p.special_left == 1).any()
    assert p.zero_missing.any() == bool(extra.get("zero_as_missing"))
    if extra.get("num_leaves") == 64:  # a full leaf set: bit 63 is a leaf
        assert max(t["num_leaves"] for t in est.booster_.dump_model()["tree_info"]) == 64
    probe = _probe(est, X, 3)
    _assert_same(est, probe)
    _assert_same(est, X)  # mixed dtypes (float32, int32, float64, categorical), as mlforecast's frames
    _assert_same(est, X.iloc[:1], threads=(1,))  # one row
    # a float array (categorical column as its codes: negative, fractional, beyond the bitsets, NaN)
    arr = lgb.basic._data_from_pandas(probe, "auto", "auto", est.booster_.pandas_categorical)[0].astype(np.float64)
    codes = np.array([-3.0, -1.0, -0.5, 0.0, 0.7, 1.0, 2.5, 7.0, 31.0, 32.0, 95.0, 1e12, -1e12, np.nan])
    arr[: len(codes), list(X.columns).index("shop")] = codes
    _assert_same(est, arr)
    _assert_same(est, arr.astype(np.float32))


def test_default_left_both_ways_and_nan_missing_type(data):
    """With NaNs in training the NaN-missing-type nodes learn their default direction: both directions occur."""
    X, y = data
    est = lgb.LGBMRegressor(objective="tweedie", **{**SMALL, "n_estimators": 80}).fit(X, y)
    dump = est.booster_.dump_model()["tree_info"]
    seen = set()

    def walk(node):
        if "split_index" in node:
            if node["missing_type"] == "NaN":
                seen.add(node["default_left"])
            walk(node["left_child"])
            walk(node["right_child"])

    for tree in dump:
        walk(tree["tree_structure"])
    assert seen == {True, False}
    _assert_same(est, _probe(est, X, 4))


def test_trees_of_one_leaf(data):
    """No split is possible (each leaf needs more rows than there are): the trees are single leaves."""
    X, y = data
    est = lgb.LGBMRegressor(objective="tweedie", **{**SMALL, "min_child_samples": 5000}).fit(X, y)
    assert (booster_tables(est.booster_).parsed.root < 0).all()
    _assert_same(est, X.iloc[:50])


def test_early_stopping_predicts_with_the_best_iteration(data):
    X, y = data
    fit, valid = slice(0, 2000), slice(2000, None)
    est = lgb.LGBMRegressor(objective="tweedie", **{**SMALL, "n_estimators": 400, "learning_rate": 0.3})
    est.fit(X.iloc[fit], y[fit], eval_set=[(X.iloc[valid], y[valid])],
            callbacks=[lgb.early_stopping(5, verbose=False)])
    # the scikit-learn fit keeps best_iteration trees; Booster.predict stops at best_iteration even with more
    assert 0 < est.best_iteration_ == est.booster_.best_iteration <= est.booster_.num_trees()
    assert booster_tables(est.booster_).n_trees == est.best_iteration_
    _assert_same(est, _probe(est, X, 5))
    est.booster_.best_iteration = 3
    assert booster_tables(est.booster_).n_trees == 3
    _assert_same(est, _probe(est, X, 5))
    est.booster_.best_iteration = est.best_iteration_
    # a pickled and loaded model predicts the same (its booster is rebuilt from the model string)
    again = pickle.loads(pickle.dumps(est))
    assert np.array_equal(CompiledRegressor(again).predict(X), est.predict(X))


@pytest.mark.parametrize("extra", [
    {"linear_tree": True},  # leaves are linear models
    {"objective": "huber"},  # another objective
    {"objective": "regression", "reg_sqrt": True},  # regression on sqrt(y): squares its output
    {"num_leaves": 100, "min_child_samples": 2},  # more leaves than the kernel's 64-bit leaf sets
    {"boosting_type": "rf", "bagging_freq": 1, "bagging_fraction": 0.5},  # averaged output
])
def test_unsupported_models_fall_back_to_lightgbm(data, extra):
    X, y = data
    params = {**SMALL, "objective": "tweedie", **extra}
    est = lgb.LGBMRegressor(**params).fit(X.drop(columns="shop") if extra.get("linear_tree") else X, y)
    Xp = X.drop(columns="shop") if extra.get("linear_tree") else X
    assert booster_tables(est.booster_) is None
    assert np.array_equal(CompiledRegressor(est, 2).predict(Xp), est.predict(Xp))


def test_prediction_parameters_and_other_inputs_fall_back(data, monkeypatch):
    X, y = data
    est = lgb.LGBMRegressor(objective="tweedie", **SMALL).fit(X, y)
    calls = []
    monkeypatch.setattr(tree_predict, "predict_tables", lambda *a, **k: calls.append(1))
    assert np.array_equal(CompiledRegressor(est).predict(X, raw_score=True), est.predict(X, raw_score=True))
    codes = lgb.basic._data_from_pandas(X, "auto", "auto", est.booster_.pandas_categorical)[0]
    for other in (codes.astype(object), np.nan_to_num(codes).astype(np.int64), codes.tolist()):
        assert np.array_equal(CompiledRegressor(est).predict(other), est.predict(other))
    with pytest.raises(Exception):  # LightGBM's own error for the wrong number of features
        CompiledRegressor(est).predict(X.iloc[:, :3])
    assert calls == []


def test_models_are_swapped_for_the_block_only(data):
    """compiled_models puts the MLForecast's own models back, after an error too: the pickle does not change."""
    X, y = data
    est = lgb.LGBMRegressor(objective="tweedie", **SMALL).fit(X, y)

    class Fcst:
        models_ = {"lgbm": est, "other": "not a LightGBM model"}

    fcst = Fcst()
    fcst.models_ = dict(Fcst.models_)
    before = pickle.dumps(fcst.models_)
    original = fcst.models_
    with pytest.raises(RuntimeError):
        with compiled_models(fcst, 2):
            assert isinstance(fcst.models_["lgbm"], CompiledRegressor)
            assert fcst.models_["other"] == "not a LightGBM model"
            assert np.array_equal(fcst.models_["lgbm"].predict(X), est.predict(X))
            raise RuntimeError("boom")
    assert fcst.models_ is original and pickle.dumps(fcst.models_) == before


# a small engine with early stopping: best_iteration < trees, so the forecast exercises the iteration count too
ENGINE = ForecastSettings(train_window_days=280, early_stopping_rounds=5, lgbm_params={
    "n_estimators": 150, "learning_rate": 0.15, "num_leaves": 31, "min_child_samples": 40,
    "feature_fraction": 0.8, "bagging_fraction": 0.8, "bagging_freq": 1, "tweedie_variance_power": 1.2})


def test_forecast_is_the_same_frame_as_with_lightgbms_predict(demo_tables, monkeypatch):
    """Training (its holdout calibration predicts too) and forecasting through the kernel give the model and the
    frame LightGBM's predict gives, and the model's pickle holds LightGBM's estimators."""
    monkeypatch.setattr(tree_predict, "COLD_PREDICT_WORK", 0)  # a demo group is small: the kernel whatever its size
    plan_date = demo_tables["sales"]["date"].max() + pd.Timedelta(days=1)
    group = "grocery"
    train_inputs = forecast_inputs(demo_tables, anchor_date(plan_date), group)
    inputs = forecast_inputs(demo_tables, plan_date, group)
    models = {}
    for enabled in (False, True):
        monkeypatch.setattr(tree_predict, "ENABLED", enabled)
        models[enabled] = train_forecaster(train_inputs, ENGINE)
    lgbm, compiled = models[False], models[True]
    assert 0 < compiled.fcst.models_["lgbm"].booster_.best_iteration < ENGINE.lgbm_params["n_estimators"]
    assert pickle.dumps(compiled.fcst) == pickle.dumps(lgbm.fcst)
    assert type(compiled.fcst.models_["lgbm"]) is lgb.LGBMRegressor
    assert compiled.dispersion.keys() == lgbm.dispersion.keys() and compiled.point_level == lgbm.point_level
    for name, d in lgbm.dispersion.items():
        assert np.array_equal(compiled.dispersion[name].phi, d.phi)
        assert compiled.dispersion[name].multiplier == d.multiplier
    assert compiled.info == {**lgbm.info, "train_seconds": compiled.info["train_seconds"]}

    monkeypatch.setattr(tree_predict, "ENABLED", False)
    expected = lgbm.predict(inputs)
    monkeypatch.setattr(tree_predict, "ENABLED", True)
    rows = []
    kernel = tree_predict.predict_tables
    monkeypatch.setattr(tree_predict, "predict_tables", lambda t, x, n=1: rows.append(len(x)) or kernel(t, x, n))
    got = compiled.predict(inputs)
    assert len(rows) == ENGINE.horizon_days and min(rows) > 0  # every step went through the kernel
    pd.testing.assert_frame_equal(got, expected, check_exact=True)
    assert type(compiled.fcst.models_["lgbm"]) is lgb.LGBMRegressor

    # the kernel is used when loaded already (as in a run forked from the preloaded server), or when the predict
    # is big enough to repay loading it; else LightGBM predicts, with the same numbers
    monkeypatch.setattr(tree_predict, "COLD_PREDICT_WORK", len(got) * 150)
    monkeypatch.setattr(tree_predict, "KERNELS_READY", False)
    rows.clear()
    pd.testing.assert_frame_equal(compiled.predict(inputs), expected, check_exact=True)
    assert rows == []
    monkeypatch.setattr(tree_predict, "KERNELS_READY", True)
    pd.testing.assert_frame_equal(compiled.predict(inputs), expected, check_exact=True)
    assert len(rows) == ENGINE.horizon_days


def test_warm_scores_the_embedded_model_on_each_path():
    """The server's warm-up model is valid and read as documented: x0 <= 0.5 then x1 <= 0.25 -> leaf 0.5; x0 > 0.5
    -> leaf 1; x1 > 0.25 -> leaf 2; a NaN x1 goes left (missing type NaN, default left); tweedie: exp."""
    assert np.array_equal(tree_predict.warm(), np.exp([0.5, 1.0, 2.0, 0.5]))
    assert tree_predict.KERNELS_READY
