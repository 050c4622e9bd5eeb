"""Small charts for asset metadata, as markdown images: the forecast's p10-p90 band and p50 against recent sales."""

from __future__ import annotations

import base64
from xml.sax.saxutils import escape

import numpy as np
import pandas as pd


_W, _PANEL_H, _LEFT, _RIGHT, _TOP, _BOTTOM = 600, 150, 44, 8, 20, 22  # pixels: width, panel height, margins


def _points(x: np.ndarray, y: np.ndarray) -> str:
    return " ".join(f"{a:.1f},{b:.1f}" for a, b in zip(x, y))


def _nice_max(v: float) -> float:
    """The smallest 1/2/5 x 10^k at or above v (the y axis' top)."""
    if not np.isfinite(v) or v <= 0:
        return 1.0
    k = 10.0 ** np.floor(np.log10(v))
    return float(next(m * k for m in (1, 2, 5, 10) if m * k >= v))


def forecast_band_svg(history: pd.DataFrame, forecast: pd.DataFrame, series: list[tuple[str, str]],
                      weeks: int = 8) -> bytes:
    """SVG with one panel per (sku_id, location_id): the last `weeks` weeks of sales (`units`), and the forecast's
    p10-p90 band with its p50. Written directly (no plotting library to import in a run's process): a few
    kilobytes of polylines that the UI's markdown shows as an image."""
    series = list(series)[:6] or [("", "")]
    if len(forecast):  # the last weeks before the forecast (and actuals over it, when known)
        start = pd.Timestamp(forecast["target_date"].min()) - pd.Timedelta(weeks=weeks)
        end = pd.Timestamp(forecast["target_date"].max())
        dates = history["date"].to_numpy()
        history = history[(dates >= start.to_datetime64()) & (dates <= end.to_datetime64())]
    else:
        start = end = None
    # one pass over the (large) history and forecast for the charted SKUs, then per series on the small rest
    skus = [sku for sku, _ in series]
    history = history[history["sku_id"].isin(skus)]
    forecast = forecast[forecast["sku_id"].isin(skus)]
    height = _PANEL_H * len(series)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{_W}" height="{height}" viewBox="0 0 {_W} {height}" '
           'font-family="sans-serif" font-size="10">', f'<rect width="{_W}" height="{height}" fill="white"/>']
    for i, (sku, loc) in enumerate(series):
        h = history[(history["sku_id"] == sku) & (history["location_id"] == loc)].sort_values("date")
        f = forecast[(forecast["sku_id"] == sku) & (forecast["location_id"] == loc)].sort_values("target_date")
        model = (str(f["model"].iloc[0]) if "model" in f else "") if len(f) else "no forecast"
        top, bottom = i * _PANEL_H + _TOP, (i + 1) * _PANEL_H - _BOTTOM
        lo = start if start is not None else (h["date"].min() if len(h) else pd.Timestamp(0))
        hi = end if end is not None else (h["date"].max() if len(h) else lo)
        span_days = max((hi - lo) / pd.Timedelta(days=1), 1.0)
        ymax = _nice_max(max(float(h["units"].max()) if len(h) else 0.0,
                             float(f["p90"].max()) if len(f) else 0.0))

        def xs(d) -> np.ndarray:
            days = (pd.to_datetime(pd.Series(d)).to_numpy() - lo.to_datetime64()) / np.timedelta64(1, "D")
            return _LEFT + (_W - _LEFT - _RIGHT) * days / span_days

        def ys(v) -> np.ndarray:
            return bottom - (bottom - top) * np.clip(np.asarray(v, dtype=float), 0, ymax) / ymax

        out.append(f'<text x="{_W / 2:.0f}" y="{top - 6}" text-anchor="middle">{escape(f"{sku} @ {loc} ({model})")}'
                   "</text>")
        out.append(f'<rect x="{_LEFT}" y="{top}" width="{_W - _LEFT - _RIGHT}" height="{bottom - top}" fill="none" '
                   'stroke="#999"/>')
        for frac in (0.0, 0.5, 1.0):  # y ticks: 0, half, top
            y = bottom - (bottom - top) * frac
            out.append(f'<text x="{_LEFT - 4}" y="{y + 3:.1f}" text-anchor="end">{ymax * frac:g}</text>')
        for frac, anchor in ((0.0, "start"), (0.5, "middle"), (1.0, "end")):  # x ticks: first, middle, last day
            day = lo + pd.Timedelta(days=round(span_days * frac))
            out.append(f'<text x="{_LEFT + (_W - _LEFT - _RIGHT) * frac:.1f}" y="{bottom + 14}" '
                       f'text-anchor="{anchor}">{day:%Y-%m-%d}</text>')
        if len(f):
            fx = xs(f["target_date"])
            band = np.concatenate([np.stack([fx, ys(f["p90"])], 1), np.stack([fx, ys(f["p10"])], 1)[::-1]])
            out.append(f'<polygon points="{_points(band[:, 0], band[:, 1])}" fill="#1f77b4" fill-opacity="0.25" '
                       'class="band"/>')
            out.append(f'<polyline points="{_points(fx, ys(f["p50"]))}" fill="none" stroke="#1f77b4" '
                       'stroke-width="1.5" class="p50"/>')
        if len(h):
            out.append(f'<polyline points="{_points(xs(h["date"]), ys(h["units"]))}" fill="none" stroke="#4d4d4d" '
                       'stroke-width="1" class="sales"/>')
    out.append(f'<text x="{_W - _RIGHT}" y="12" text-anchor="end"><tspan fill="#4d4d4d">\u2014 sales</tspan> '
               '<tspan fill="#1f77b4">\u2014 p50 and p10-p90 band</tspan></text>')
    out.append("</svg>")
    return "".join(out).encode("utf-8")


def image_markdown(image: bytes, alt: str = "forecast", mime: str = "image/png") -> str:
    """A markdown image with the image inlined as a data URI."""
    return f"![{alt}](data:{mime};base64,{base64.b64encode(image).decode('ascii')})"


def top_series(forecast: pd.DataFrame, n: int = 3) -> list[tuple[str, str]]:
    """The `n` series with the largest forecast volume (a sensible default for the chart)."""
    if not len(forecast):
        return []
    tot = forecast.groupby(["sku_id", "location_id"])["mean"].sum().sort_values(ascending=False, kind="stable")
    return [tuple(map(str, k)) for k in tot.index[:n]]
