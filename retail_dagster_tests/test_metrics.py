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
