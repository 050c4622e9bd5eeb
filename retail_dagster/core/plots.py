"""Small PNG charts for asset metadata: forecast p10-p90 band and p50 against recent sales, as a markdown image."""

from __future__ import annotations

import base64
import io

import pandas as pd


def forecast_band_png(history: pd.DataFrame, forecast: pd.DataFrame, series: list[tuple[str, str]],
                      weeks: int = 8, dpi: int = 64) -> bytes:
    """PNG (matplotlib Agg) with one panel per (sku_id, location_id): the last `weeks` weeks of sales (`units`)
    and the forecast's p10-p90 band with its p50."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure  # a Figure without pyplot: no global state, thread-safe

    series = list(series)[:6] or [("", "")]
    fig = Figure(figsize=(6.0, 1.6 * len(series)), dpi=dpi)
    axes = fig.subplots(len(series), 1, squeeze=False)[:, 0]
    if len(forecast):  # the last weeks before the forecast (and actuals over it, when known)
        start = pd.Timestamp(forecast["target_date"].min()) - pd.Timedelta(weeks=weeks)
        end = pd.Timestamp(forecast["target_date"].max())
        dates = history["date"].to_numpy()
        history = history[(dates >= start.to_datetime64()) & (dates <= end.to_datetime64())]
    # one pass over the (large) history and forecast for the charted SKUs, then per series on the small rest
    skus = [sku for sku, _ in series]
    history = history[history["sku_id"].isin(skus)]
    forecast = forecast[forecast["sku_id"].isin(skus)]
    for ax, (sku, loc) in zip(axes, series):
        h = history[(history["sku_id"] == sku) & (history["location_id"] == loc)]
        f = forecast[(forecast["sku_id"] == sku) & (forecast["location_id"] == loc)].sort_values("target_date")
        h = h.sort_values("date")
        ax.plot(h["date"], h["units"], color="0.3", lw=1, label="sales")
        if len(f):
            ax.fill_between(f["target_date"], f["p10"], f["p90"], color="tab:blue", alpha=0.25, label="p10-p90")
            ax.plot(f["target_date"], f["p50"], color="tab:blue", lw=1.2, label="p50")
            model = str(f["model"].iloc[0]) if "model" in f else ""
        else:
            model = "no forecast"
        ax.set_title(f"{sku} @ {loc} ({model})", fontsize=8)
        ax.tick_params(labelsize=6)
        ax.set_ylim(bottom=0)
    axes[0].legend(fontsize=6, loc="upper left")
    fig.autofmt_xdate()
    # a fixed layout: tight_layout measures every label and cost as much as drawing the chart
    fig.subplots_adjust(left=0.07, right=0.98, top=1 - 0.3 / len(series), bottom=0.45 / len(series), hspace=0.75)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def png_markdown(png: bytes, alt: str = "forecast") -> str:
    """A markdown image with the PNG inlined as a data URI."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode('ascii')})"


def top_series(forecast: pd.DataFrame, n: int = 3) -> list[tuple[str, str]]:
    """The `n` series with the largest forecast volume (a sensible default for the chart)."""
    if not len(forecast):
        return []
    tot = forecast.groupby(["sku_id", "location_id"])["mean"].sum().sort_values(ascending=False, kind="stable")
    return [tuple(map(str, k)) for k in tot.index[:n]]
