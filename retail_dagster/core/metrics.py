"""Forecast accuracy metrics: vectorized WAPE, bias, interval coverage, scaled errors (MASE, RMSSE: the M5
competition's per-series error family), and a scorer for forecast frames vs sales."""

from __future__ import annotations

import numpy as np
import pandas as pd


def _arr(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def wape(y, f) -> float:
    """Weighted absolute percentage error: sum|f - y| / sum|y| (NaN when the actuals sum to 0)."""
    y, f = _arr(y), _arr(f)
    denom = np.abs(y).sum()
    return float(np.abs(f - y).sum() / denom) if denom > 0 else float("nan")


def bias(y, f) -> float:
    """Relative bias: sum(f - y) / sum(y); positive = over-forecast."""
    y, f = _arr(y), _arr(f)
    denom = y.sum()
    return float((f - y).sum() / denom) if denom != 0 else float("nan")


def coverage(y, lo, hi) -> float:
    """Share of actuals inside the closed interval [lo, hi]."""
    y, lo, hi = _arr(y), _arr(lo), _arr(hi)
    return float(np.mean((y >= lo) & (y <= hi))) if len(y) else float("nan")


def naive_scales(history: np.ndarray, first: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per row of `history` (series x days, oldest first): the in-sample one-step naive errors that scale MASE
    (mean |y_t - y_t-1|) and RMSSE (mean (y_t - y_t-1)^2), over the days from the series' first sale on (as in
    M5: leading zeros before a product sells do not count). `first`: first column to use per row (overrides).
    NaN where fewer than two days are left or the series never changed."""
    h = np.asarray(history, dtype=np.float64)
    n, T = h.shape
    if first is None:
        nz = h > 0
        first = np.where(nz.any(axis=1), np.argmax(nz, axis=1), T)
    d = np.diff(h, axis=1)
    use = np.arange(1, T)[None, :] > np.asarray(first)[:, None]
    cnt = use.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mae = np.where(use, np.abs(d), 0.0).sum(axis=1) / cnt
        mse = np.where(use, d * d, 0.0).sum(axis=1) / cnt
    bad = (cnt < 1) | ~(mse > 0)
    return np.where(bad, np.nan, mae), np.where(bad, np.nan, mse)


def scaled_errors(y, f, series, mae_scale, mse_scale) -> tuple[float, float]:
    """(MASE, RMSSE) averaged over series: per series mean|f - y| / mae_scale and sqrt(mean (f - y)^2 / mse_scale).
    `series` gives each row's series number (index into the scales); series with a NaN scale are left out."""
    y, f = _arr(y), _arr(f)
    series = np.asarray(series, dtype=np.int64)
    n = len(mae_scale)
    cnt = np.bincount(series, minlength=n)
    ae = np.bincount(series, np.abs(f - y), minlength=n)
    se = np.bincount(series, (f - y) ** 2, minlength=n)
    ok = (cnt > 0) & np.isfinite(mae_scale) & np.isfinite(mse_scale)
    if not ok.any():
        return float("nan"), float("nan")
    mase = ae[ok] / cnt[ok] / np.asarray(mae_scale)[ok]
    rmsse = np.sqrt(se[ok] / cnt[ok] / np.asarray(mse_scale)[ok])
    return float(mase.mean()), float(rmsse.mean())


def _none_if_nan(x: float) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)


def score_forecasts(forecast: pd.DataFrame, sales: pd.DataFrame, point: str = "mean", lo: str = "p10",
                    hi: str = "p90") -> dict:
    """Score a forecast frame (sku_id, location_id, target_date, point/lo/hi columns) against observed sales.

    Only target dates with actuals count (a SKU-location-day absent from sales while other series have sales that
    day counts as 0 units sold, dates past the last sales date are not scored). Returns wape_daily, wape_14d (WAPE
    of each SKU-location's total over the matched days), bias, coverage_p10_p90 and n (matched rows).
    """
    out = {"wape_daily": None, "wape_14d": None, "bias": None, "coverage_p10_p90": None, "n": 0}
    if forecast is None or not len(forecast) or sales is None or not len(sales):
        return out
    last = sales["date"].max()
    fc = forecast[forecast["target_date"] <= last]
    if not len(fc):
        return out
    days = pd.Index(sales.loc[sales["date"] >= fc["target_date"].min(), "date"].unique())
    fc = fc[fc["target_date"].isin(days)]
    act = sales.loc[sales["date"].isin(days), ["date", "sku_id", "location_id", "units"]]
    m = fc.merge(act.rename(columns={"date": "target_date"}), on=["sku_id", "location_id", "target_date"],
                 how="left")
    m["units"] = m["units"].fillna(0.0)
    y, f = m["units"].to_numpy(float), m[point].to_numpy(float)
    tot = m.groupby(["sku_id", "location_id"], sort=False)[["units", point]].sum()
    out.update(
        wape_daily=_none_if_nan(wape(y, f)),
        wape_14d=_none_if_nan(wape(tot["units"], tot[point])),
        bias=_none_if_nan(bias(y, f)),
        coverage_p10_p90=_none_if_nan(coverage(y, m[lo], m[hi])) if lo in m and hi in m else None,
        n=int(len(m)),
    )
    return out
