"""Content fingerprints of data frames, so an audit record can say exactly which inputs a decision was made from.

The fingerprint depends on column names, dtypes and values (in row order), not on the index or on how the
frame was stored: the same frame read back from Parquet, CSV-and-validated or built in memory hashes the same.
"""

from __future__ import annotations

import hashlib
from typing import Mapping

import numpy as np
import pandas as pd


def _column_hashes(frame: pd.DataFrame) -> np.ndarray:
    """One uint64 per row and column, vectorized by pandas; unhashable cells (dicts, lists) fall back to str."""
    out = np.empty((len(frame), frame.shape[1]), dtype=np.uint64)
    for j, name in enumerate(frame.columns):
        col = frame.iloc[:, j]
        try:
            out[:, j] = pd.util.hash_pandas_object(col, index=False).to_numpy()
        except TypeError:
            out[:, j] = pd.util.hash_pandas_object(col.astype(str), index=False).to_numpy()
    return out


def frame_fingerprint(frame: pd.DataFrame) -> str:
    """sha256 hex of (columns, dtypes, row values). Order-sensitive, index-insensitive, stable across processes.

    pandas' hash uses a fixed key, so the same values give the same digest in every process and on every
    machine with the same pandas major version.
    """
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"frame_fingerprint expects a pandas DataFrame, got {type(frame).__name__}")
    digest = hashlib.sha256()
    schema = "\x1f".join(f"{c}\x1e{t}" for c, t in zip(map(str, frame.columns), map(str, frame.dtypes)))
    digest.update(schema.encode("utf-8"))
    digest.update(f"\x1d{len(frame)}\x1d".encode())
    # little-endian bytes so big-endian hosts agree
    digest.update(_column_hashes(frame).astype("<u8", copy=False).tobytes())
    return digest.hexdigest()


def fingerprints(frames: Mapping[str, pd.DataFrame | None]) -> dict[str, str]:
    """{name: fingerprint} for every frame in the mapping (None values are skipped)."""
    return {name: frame_fingerprint(frame) for name, frame in frames.items() if frame is not None}


def window_fingerprint(tables: Mapping[str, pd.DataFrame | None], start, end, extra: str = "") -> str:
    """One sha256 over what a model trained on [start, end) saw: rows dated in the window (`date`), rows whose
    [start_date, end_date] overlaps it, undated tables whole, plus `extra` (the model's settings).

    Keys caches (trained forecast models, elasticities) by content, so a changed input retrains while the days of
    one retraining week, whose new rows all fall after `end`, keep sharing one model.
    """
    start, end = pd.Timestamp(start), pd.Timestamp(end)
    digest = hashlib.sha256(extra.encode("utf-8"))
    for name in sorted(tables):
        frame = tables[name]
        if frame is None:
            continue
        if "date" in frame.columns:
            frame = frame[(frame["date"] >= start) & (frame["date"] < end)]
        elif "start_date" in frame.columns and "end_date" in frame.columns:
            frame = frame[(frame["start_date"] < end) & (frame["end_date"] >= start)]
        digest.update(f"\x1c{name}\x1c{frame_fingerprint(frame)}".encode())
    return digest.hexdigest()


__all__ = ["frame_fingerprint", "fingerprints", "window_fingerprint"]
