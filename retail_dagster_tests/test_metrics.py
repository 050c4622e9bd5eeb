"""Forecast metrics: WAPE, bias, coverage and the forecast-vs-sales scorer."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from retail_dagster.core.metrics import bias, coverage, score_forecasts, wape


def test_wape_bias_coverage_values():
    y = np.array([10.0, 0.0, 5.0, 5.0])
    f = np.array([8.0, 1.0, 5.0, 7.0])
    assert wape(y, f) == pytest.approx((2 + 1 + 0 + 2) / 20)
    assert bias(y, f) == pytest.approx((21 - 20) / 20)
    assert coverage(y, f - 1, f + 1) == pytest.approx(0.5)  # 0 in [0,2], 5 in [4,6]
    assert wape(y, y) == 0.0 and bias(y, y) == 0.0
    assert math.isnan(wape([0, 0], [1, 1]))


def test_score_forecasts_matches_rows_and_totals():
    d = pd.date_range("2026-01-01", periods=3)
    fc = pd.DataFrame({"sku_id": ["A"] * 3 + ["B"] * 3, "location_id": "S1", "target_date": list(d) * 2,
                       "mean": [1.0, 2.0, 3.0, 4.0, 0.0, 0.0], "p10": 0.0, "p90": 2.5})
    # B has no sales row on day 2 (counts as 0); day 3 has no actuals at all (not scored)
    sales = pd.DataFrame({"date": [d[0], d[1], d[0]], "sku_id": ["A", "A", "B"], "location_id": "S1",
                          "units": [1.0, 4.0, 2.0]})
    r = score_forecasts(fc, sales)
    assert r["n"] == 4
    y = np.array([1, 4, 2, 0.0])
    f = np.array([1, 2, 4, 0.0])
    assert r["wape_daily"] == pytest.approx(wape(y, f))
    assert r["bias"] == pytest.approx(bias(y, f))
    assert r["wape_14d"] == pytest.approx((abs(3 - 5) + abs(4 - 2)) / 7)
    assert r["coverage_p10_p90"] == pytest.approx(0.75)


def test_score_forecasts_without_actuals():
    fc = pd.DataFrame({"sku_id": ["A"], "location_id": ["S1"], "target_date": [pd.Timestamp("2026-02-01")],
                       "mean": [1.0], "p10": [0.0], "p90": [2.0]})
    sales = pd.DataFrame({"date": [pd.Timestamp("2026-01-01")], "sku_id": ["A"], "location_id": ["S1"],
                          "units": [1.0]})
    assert score_forecasts(fc, sales)["n"] == 0


def test_scaled_errors_use_the_in_sample_naive_error_from_the_first_sale():
    from retail_dagster.core.metrics import naive_scales, scaled_errors

    hist = np.array([[0, 0, 2, 4, 2, 4],     # leading zeros before the first sale do not count: diffs 2, -2, 2
                     [1, 1, 1, 1, 1, 1],     # never changes: no scale (left out)
                     [3, 0, 3, 0, 3, 0.0]])  # diffs of 3
    mae, mse = naive_scales(hist)
    assert mae[0] == pytest.approx(2.0) and mse[0] == pytest.approx(4.0)
    assert math.isnan(mae[1]) and math.isnan(mse[1])
    assert mae[2] == pytest.approx(3.0) and mse[2] == pytest.approx(9.0)
    y = np.array([2.0, 4.0, 1.0, 1.0, 0.0, 3.0])
    f = np.array([4.0, 4.0, 9.0, 9.0, 3.0, 3.0])
    series = np.array([0, 0, 1, 1, 2, 2])
    mase, rmsse = scaled_errors(y, f, series, mae, mse)
    # series 0: mean |e| = 1 -> 1/2, rmsse sqrt((4 + 0) / 2 / 4); series 2: mean |e| 1.5 -> 0.5, sqrt(4.5 / 9)
    assert mase == pytest.approx((0.5 + 0.5) / 2)
    assert rmsse == pytest.approx((np.sqrt(0.5) + np.sqrt(0.5)) / 2)
    # a perfect forecast scores 0; the naive forecast of a random walk scores about 1
    assert scaled_errors(y, y, series, mae, mse) == (0.0, 0.0)
    rng = np.random.default_rng(1)
    walk = np.cumsum(rng.normal(size=(200, 401)), axis=1)
    mae_w, mse_w = naive_scales(walk[:, :400], first=np.zeros(200, dtype=int))
    m, r = scaled_errors(walk[:, 400], walk[:, 399], np.arange(200), mae_w, mse_w)
    assert 0.8 < m < 1.2 and 0.7 < r < 1.3


def test_backtest_by_cutoff_scores_each_cutoff_and_the_bias_standard_error():
    """Per cutoff each method's WAPE and bias are those of its own rows; the bias's standard error is the standard
    deviation of the cutoffs' biases over sqrt(cutoffs); the engine's wins are counted per cutoff."""
    from retail_dagster.core.backtest import _leads_by_cutoff, by_cutoff

    rows = []
    for cut, lift in (("2026-01-05", 1.10), ("2026-01-19", 0.94), ("2026-02-02", 1.00)):
        for sku in ("A", "B"):
            for d in range(14):
                rows.append({"cutoff": pd.Timestamp(cut), "sku_id": sku, "location_id": "S1", "units": 10.0,
                             "p50": 10.0 * lift, "mean": 10.0 * lift, "Naive": 12.0, "in_stock": True})
    m = pd.DataFrame(rows)
    out = by_cutoff(m, {"engine": ("p50", "mean"), "Naive": ("Naive", "Naive")})
    biases = [out["engine"]["cutoffs"][c]["bias"] for c in ("2026-01-05", "2026-01-19", "2026-02-02")]
    assert biases == pytest.approx([0.10, -0.06, 0.0])
    assert out["engine"]["cutoffs"]["2026-01-19"]["wape_14d"] == pytest.approx(0.06)
    assert out["engine"]["bias_standard_error"] == pytest.approx(np.std(biases, ddof=1) / np.sqrt(3), abs=1e-4)
    assert out["Naive"]["cutoffs"]["2026-01-05"]["bias"] == pytest.approx(0.2)
    assert _leads_by_cutoff(out, "engine", "Naive", "wape_daily") == (3, 3)
    one = by_cutoff(m[m["cutoff"] == "2026-01-05"], {"engine": ("p50", "mean")})
    assert one["engine"]["bias_standard_error"] is None
    # the printed table ends with the engine's cutoffs, the error and its wins over the best baseline of each column
    from retail_dagster.core.backtest import _scores, format_backtest

    result = {"cutoffs": ["2026-01-05", "2026-01-19", "2026-02-02"], "horizon": 14, "series_scored": 2,
              "actuals": "observed sales", "model_mix": {}, "by_cutoff": out,
              "engine": {**_scores(m, "p50", None, None, mean="mean"), "seconds": 1.0},
              "baselines": {"Naive": {**_scores(m, "Naive", None, None), "seconds": 0.1}}}
    text = format_backtest(result)
    assert "engine by cutoff (WAPE day / 14d, bias): 2026-01-05 0.100 / 0.100, 0.100; 2026-01-19 0.060 / 0.060, " \
           "-0.060; 2026-02-02 0.000 / 0.000, 0.000" in text
    assert (f"standard error over the cutoffs {out['engine']['bias_standard_error']:.3f}; ahead daily on 3 of 3 "
            "cutoffs against Naive, 14-day on 3 of 3 cutoffs against Naive") in text
