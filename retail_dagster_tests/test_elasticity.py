"""Elasticity: recovery of known elasticities, pooling beats the per-SKU fit, censoring and edge cases."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from retail_dagster.core.elasticity import OUTPUT_COLUMNS, ElasticitySettings, estimate_elasticities, shrink


@pytest.fixture(scope="module")
def demo_elasticities(demo):
    t = demo.tables
    el = estimate_elasticities(t["sales"], t["catalog"], t["inventory"], t["events"], locations=t["locations"])
    return el.merge(demo.truth["sku"][["sku_id", "elasticity"]].rename(columns={"elasticity": "true"}), on="sku_id")


def test_pooled_estimate_recovers_the_generator_far_better_than_the_unpooled_fit(demo_elasticities):
    m = demo_elasticities
    lo, hi = ElasticitySettings().clip
    mae_pooled = np.median(np.abs(m["elasticity"] - m["true"]))
    mae_unpooled = np.nanmedian(np.abs(m["unpooled_elasticity"].clip(lo, hi) - m["true"]))
    # measured on this fixture: pooled ~0.5, unpooled ~0.8 (60 SKUs x 4 stores: thin price history)
    assert mae_pooled < 0.8 * mae_unpooled
    assert mae_pooled < 0.65
    # right sign and size: every estimate negative and in range, the average close to the truth's
    assert (m["elasticity"] < 0).all() and m["elasticity"].between(lo, hi).all()
    assert abs(m["elasticity"].mean() - m["true"].mean()) < 0.5
    assert np.corrcoef(m["elasticity"], m["true"])[0, 1] > 0


def test_skipping_the_unpooled_fit_changes_only_its_own_column(demo_elasticities, demo):
    """The pricing agent and the forecaster skip the SKU's own fit (reported, never deciding): every other column
    is the same, bit for bit."""
    t = demo.tables
    fast = estimate_elasticities(t["sales"], t["catalog"], t["inventory"], t["events"], locations=t["locations"],
                                 unpooled=False)
    full = demo_elasticities[OUTPUT_COLUMNS]
    pd.testing.assert_frame_equal(fast.drop(columns="unpooled_elasticity"),
                                  full.drop(columns="unpooled_elasticity"), check_exact=True)
    assert fast["unpooled_elasticity"].isna().all() and full["unpooled_elasticity"].notna().sum() > len(full) // 2


@pytest.mark.parametrize("history_days", [None, 120])
def test_a_row_mask_fits_exactly_as_the_masked_frame(demo, history_days):
    """`rows` (the forecaster's training window, passed without copying the window first) gives exactly the fit
    on `sales[rows]`, the history window included (measured back from the last masked day)."""
    import dataclasses

    t = demo.tables
    s = t["sales"]
    last = s["date"].max()
    rows = ((s["date"] < last - pd.Timedelta(days=30)) & (s["location_id"] != s["location_id"].iloc[0])).to_numpy()
    st = dataclasses.replace(ElasticitySettings(max_iter=8), history_days=history_days)
    kw = dict(inventory=t["inventory"], events=t["events"], settings=st, locations=t["locations"], unpooled=False)
    masked = estimate_elasticities(s, t["catalog"], rows=rows, **kw)
    sliced = estimate_elasticities(s[rows], t["catalog"], **kw)
    pd.testing.assert_frame_equal(masked, sliced, check_exact=True)
    everything = estimate_elasticities(s, t["catalog"], **kw)
    assert not masked["elasticity"].equals(everything["elasticity"])  # the mask mattered


def test_output_columns_and_ranges(demo_elasticities, demo):
    m = demo_elasticities
    assert list(m.columns[:len(OUTPUT_COLUMNS)]) == OUTPUT_COLUMNS
    assert set(m["sku_id"]) == set(demo.tables["catalog"]["sku_id"])
    assert m["shrinkage_weight"].between(0, 1).all() and (m["elasticity_se"] > 0).all()
    assert (m["n_obs"] >= 0).all()


def _synthetic(n_sku=24, n_loc=3, n_days=240, seed=0, elasticity=None, censor=False):
    """Clean data with random daily prices and a promo lift: the estimator's own model, no confounders."""
    rng = np.random.default_rng(seed)
    cats = np.array(["a", "b"])[np.arange(n_sku) % 2]
    true = elasticity if elasticity is not None else np.where(cats == "a", -1.0, -2.5) + rng.normal(0, 0.2, n_sku)
    dates = pd.date_range("2026-01-01", periods=n_days)
    sku = np.repeat(np.arange(n_sku), n_loc * n_days)
    loc = np.tile(np.repeat(np.arange(n_loc), n_days), n_sku)
    day = np.tile(np.arange(n_days), n_sku * n_loc)
    price = 5.0 * np.exp(rng.normal(0, 0.12, len(sku)))
    promo = rng.random(len(sku)) < 0.1
    price = np.where(promo, price * 0.8, price)
    season = np.exp(0.4 * np.sin(2 * np.pi * day / 120))
    rate = 6.0 * season * (price / 5.0) ** true[sku] * np.where(promo, 1.25, 1.0)
    units = rng.poisson(rate).astype(float)
    sales = pd.DataFrame({"date": dates[day], "sku_id": [f"K{i:03d}" for i in sku], "location_id":
                          [f"L{i}" for i in loc], "units": units, "price": price, "on_promotion": promo})
    catalog = pd.DataFrame({"sku_id": [f"K{i:03d}" for i in range(n_sku)], "category": cats, "sku_group": "g"})
    return sales, catalog, true


def test_recovers_known_elasticities_on_clean_data():
    sales, catalog, true = _synthetic()
    el = estimate_elasticities(sales, catalog)
    err = el["elasticity"].to_numpy() - true
    assert np.median(np.abs(err)) < 0.12
    assert abs(err.mean()) < 0.1
    assert np.median(np.abs(el["unpooled_elasticity"] - true)) < 0.2


def test_stock_out_days_are_dropped():
    sales, catalog, _ = _synthetic(n_sku=6, n_days=120)
    inventory = sales[["date", "sku_id", "location_id"]].assign(
        on_hand=np.where(sales["price"] > 5.5, 0.0, 9.0), in_transit=0.0)
    with_inv = estimate_elasticities(sales, catalog, inventory)
    without = estimate_elasticities(sales, catalog)
    dropped = (inventory["on_hand"] == 0).groupby(sales["sku_id"]).sum()
    assert (without.set_index("sku_id")["n_obs"] - with_inv.set_index("sku_id")["n_obs"]).ge(dropped * 0.5).all()
    assert (with_inv["n_obs"] < without["n_obs"]).all()


def test_no_price_variation_falls_back_to_the_prior():
    sales, catalog, _ = _synthetic(n_sku=4, n_days=60)
    sales["price"] = 5.0
    sales["on_promotion"] = False
    el = estimate_elasticities(sales, catalog)
    assert el["unpooled_elasticity"].isna().all()
    assert (el["shrinkage_weight"] == 0).all()
    assert np.allclose(el["elasticity"], ElasticitySettings().prior_elasticity)
    empty = estimate_elasticities(sales.iloc[:0], catalog)
    assert len(empty) == 4 and (empty["n_obs"] == 0).all()


def test_shrinkage_weights_follow_the_noise():
    est = np.array([-1.0, -3.0, -2.0, -2.0, np.nan])
    se = np.array([0.01, 5.0, 0.3, 0.3, np.inf])
    cat = np.zeros(5, dtype=np.int64)
    post, post_se, w = shrink(est, se, cat, np.array([-2.0]), np.array([0.05]))
    assert w[0] > 0.9 and w[1] < 0.05 and w[4] == 0
    assert post[0] == pytest.approx(-1.0, abs=0.05) and post[1] == pytest.approx(-2.0, abs=0.1)
    assert post[4] == pytest.approx(-2.0, abs=0.05) and post_se[4] > post_se[0]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_compiled_passes_give_numpys_bits(seed):
    """The fused kernels of the backfitting equal the numpy expressions they replaced, bit for bit (same sums in
    the same row order, same products), so a fit is the same fit as before, only faster."""
    from retail_dagster.core import fe_kernels as k

    rng = np.random.default_rng(seed)
    m, n, n_e, n_g = 5_000, 37, 11, 3
    c = rng.integers(0, n, m)
    e_row, g_row = rng.integers(0, n_e, m), rng.integers(0, n_g, m)
    y = rng.poisson(2.0, m).astype(float)
    mu, x, p = rng.gamma(2.0, 1.0, m), rng.normal(0, 0.2, m), rng.integers(0, 2, m).astype(float)
    mu[c == 5] = 0.0  # a cell of zero weight: floored at 1e-300
    xt, pt = rng.normal(size=m), rng.normal(size=m)

    assert np.array_equal(k.cell_sums(c, n, mu), np.bincount(c, mu, n))
    f = rng.gamma(1.0, 1.0, n)
    got = mu.copy()
    k.scale_by_cell(got, c, f)
    assert np.array_equal(got, mu * f[c])

    gx, gp = xt.copy(), pt.copy()
    k.demean(c, n, mu, gx, gp)
    w = np.maximum(np.bincount(c, mu, n), 1e-300)
    wx, wp = xt - (np.bincount(c, mu * xt, n) / w)[c], pt - (np.bincount(c, mu * pt, n) / w)[c]
    assert np.array_equal(gx, wx) and np.array_equal(gp, wp)

    r = y - mu
    want = (np.bincount(e_row, r * x, n_e), np.bincount(e_row, mu * xt * xt, n_e),
            np.bincount(e_row, mu * xt * pt, n_e), np.bincount(g_row, r * p, n_g),
            np.bincount(g_row, mu * pt * pt, n_g))
    for a, b in zip(k.newton_sums(e_row, n_e, g_row, n_g, y, mu, x, p, xt, pt), want):
        assert np.array_equal(a, b)
    de, dg = rng.normal(size=n_e), rng.normal(size=n_g)
    assert np.array_equal(k.step_exponent(de, e_row, x, dg, g_row, p, np.empty(m)), de[e_row] * x + dg[g_row] * p)


@pytest.mark.parametrize("top", [50, 10**12])  # a range the value table covers, and one it does not (sort)
def test_compacting_codes_matches_numpys_unique(top):
    from retail_dagster.core.elasticity import _compact, _sorted_unique

    codes = np.random.default_rng(4).integers(0, top, 2_000) * 3  # gaps between the codes used
    uniq, inv = np.unique(codes, return_inverse=True)
    got, n = _compact(codes)
    assert n == len(uniq) and got.dtype == np.int64 and np.array_equal(got, inv)
    assert np.array_equal(_sorted_unique(codes), uniq)
