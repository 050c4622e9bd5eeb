"""How figures and tables are shown in the Dagster UI: rounded floats, small markdown tables, per-engine counts."""

from __future__ import annotations

import math

import dagster as dg
import numpy as np
import pandas as pd


def readable(x: float) -> float:
    """A float rounded to what a person reads: 2 decimals from 1 up, 3 significant digits below (USD per SKU)."""
    x = float(x)
    if not math.isfinite(x) or x == 0:
        return x
    if abs(x) >= 1:
        return round(x, 2)
    return round(x, 2 - int(math.floor(math.log10(abs(x)))))


def num(x: float) -> dg.MetadataValue:
    """Float metadata, rounded for reading (the frames keep full precision)."""
    return dg.MetadataValue.float(readable(x))


def md_table(frame: pd.DataFrame, max_rows: int = 10) -> dg.MetadataValue:
    """The first `max_rows` rows of a frame as a markdown table (floats to 4 significant digits, dates as days)."""
    if frame.empty:
        return dg.MetadataValue.md("_none_")
    head = frame.head(max_rows)
    lines = ["| " + " | ".join(map(str, head.columns)) + " |", "|" + "---|" * len(head.columns)]
    for row in head.itertuples(index=False):
        cells = [f"{v:.4g}" if isinstance(v, (float, np.floating)) else
                 (f"{v:%Y-%m-%d}" if isinstance(v, pd.Timestamp) else str(v)) for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    if len(frame) > max_rows:
        lines.append(f"\n_{len(frame) - max_rows} more rows_")
    return dg.MetadataValue.md("\n".join(lines))


def engine_counts(frame: pd.DataFrame) -> dg.MetadataValue:
    """Rows per engine (local, bedrock, local_fallback): a run whose LLM answers all fell back is visible."""
    counts = frame["engine"].astype(str).value_counts() if "engine" in frame.columns and len(frame) else {}
    return dg.MetadataValue.json({str(k): int(v) for k, v in dict(counts).items()})
