"""Content fingerprints of data frames, so an audit record can say exactly which inputs a decision was made from.

The fingerprint depends on column names, dtypes and values (in row order), not on the index or on how the
frame was stored: the same frame read back from Parquet, CSV-and-validated or built in memory hashes the same.
"""

from __future__ import annotations

import hashlib
from typing import Mapping

import numpy as np
import pandas as pd

from .ids import distinct_objects


_BLOCK_ROWS = 1 << 16  # rows per block fed to sha256: the block's (rows x columns) matrix stays in cache


def _hash_objects(values: np.ndarray) -> np.ndarray | None:
    """pandas' value hashes of an object column, computed once per distinct object (core.ids): every row gets
    exactly the value pandas gives it. None when the column is small or mostly distinct objects."""
    split = distinct_objects(values)
    if split is None:
        return None
    codes, objects = split
    return pd.util.hash_pandas_object(pd.Series(objects, dtype=object), index=False).to_numpy()[codes]


def _hash_column(col: pd.Series) -> np.ndarray:
    """One uint64 per value, vectorized by pandas; unhashable cells (dicts, lists) fall back to str."""
    try:
        fast = _hash_objects(col.to_numpy()) if col.dtype == object else None
        return fast if fast is not None else pd.util.hash_pandas_object(col, index=False).to_numpy()
    except TypeError:
        return pd.util.hash_pandas_object(col.astype(str), index=False).to_numpy()


def _digest(frame: pd.DataFrame, mask: np.ndarray | None = None) -> str:
    """sha256 of the schema, the row count and the row-major matrix of value hashes of `frame[mask]`.

    Each value's hash depends on the value alone, so the selected rows' hashes are the hashes of the selected
    values: the frame is never filtered or copied as a whole, and the matrix is fed to sha256 in row blocks
    (the same bytes, in the same order, as one row-major matrix)."""
    digest = hashlib.sha256()
    schema = "\x1f".join(f"{c}\x1e{t}" for c, t in zip(map(str, frame.columns), map(str, frame.dtypes)))
    digest.update(schema.encode("utf-8"))
    cols = []
    for j in range(frame.shape[1]):
        col = frame.iloc[:, j]
        cols.append(_hash_column(col if mask is None else col[mask]))
    rows = len(frame) if mask is None else int(mask.sum())
    digest.update(f"\x1d{rows}\x1d".encode())
    if cols:
        for start in range(0, rows, _BLOCK_ROWS):
            block = np.stack([c[start:start + _BLOCK_ROWS] for c in cols], axis=1)
            # little-endian bytes so big-endian hosts agree; hashed from the array's buffer (no bytes copy)
            digest.update(np.ascontiguousarray(block, dtype="<u8"))
    return digest.hexdigest()


def frame_fingerprint(frame: pd.DataFrame) -> str:
    """sha256 hex of (columns, dtypes, row values). Order-sensitive, index-insensitive, stable across processes.

    pandas' hash uses a fixed key, so the same values give the same digest in every process and on every
    machine with the same pandas major version.
    """
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"frame_fingerprint expects a pandas DataFrame, got {type(frame).__name__}")
    return _digest(frame)


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
        mask = None
        if "date" in frame.columns:
            mask = ((frame["date"] >= start) & (frame["date"] < end)).to_numpy()
        elif "start_date" in frame.columns and "end_date" in frame.columns:
            mask = ((frame["start_date"] < end) & (frame["end_date"] >= start)).to_numpy()
        digest.update(f"\x1c{name}\x1c{_digest(frame, mask)}".encode())
    return digest.hexdigest()


__all__ = ["frame_fingerprint", "fingerprints", "window_fingerprint"]
