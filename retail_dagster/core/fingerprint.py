"""Content fingerprints of data frames, so an audit record can say exactly which inputs a decision was made from.

The fingerprint depends on column names, dtypes and values (in row order), not on the index or on how the
frame was stored: the same frame read back from Parquet, CSV-and-validated or built in memory hashes the same.

It is one sha256 over the schema, the row count and each column's values as bytes, column after column:
- fixed-width columns (floats, ints, bools, datetimes) give their little-endian value bytes, floats with -0.0
  written as 0.0 and every NaN as the one canonical NaN (equal values, equal bytes);
- other columns (ids held as `str` objects, categoricals, mixed objects) give their distinct values, in order of
  first appearance, as text (`repr`, so "1" and 1 differ), then one int32 code per row (-1 for a missing value).

So hashing costs about one pass over each column's bytes at sha256's speed: a group's 9-million-row sales history
at 10,000 SKUs x 10 stores fingerprints in ~0.35 s of CPU, where hashing every value first (pandas'
`hash_pandas_object`, this module's format before session 10) took ~2 s. The digests of the two formats differ:
model and elasticity caches keyed by the old ones are retrained once, with the same data and settings.
"""

from __future__ import annotations

import hashlib
from typing import Mapping

import numpy as np
import pandas as pd

from .ids import factorize

_FIXED_KINDS = "biufmM"  # bool, int, uint, float, timedelta64, datetime64: numpy arrays of fixed-width values


def _column_parts(values: np.ndarray) -> list:
    """The byte strings (or buffers) one column contributes, in order."""
    if values.dtype.kind in _FIXED_KINDS:
        values = np.ascontiguousarray(values, dtype=values.dtype.newbyteorder("<"))  # big-endian hosts agree
        if values.dtype.kind == "f":
            values = values + 0.0  # a copy, and -0.0 + 0.0 == +0.0
            nan = np.isnan(values)
            if nan.any():
                values[nan] = np.nan
        return [values.view(np.uint8)]
    try:
        codes, uniques = factorize(values)
    except TypeError:  # unhashable cells (dicts, lists): their text
        codes, uniques = factorize(np.array([str(v) for v in values], dtype=object))
    text = "\x1f".join(map(repr, uniques)).encode("utf-8")
    width = "<i4" if len(uniques) < 2 ** 31 - 1 else "<i8"
    return [f"{len(uniques)}\x1e".encode(), text, np.ascontiguousarray(codes, dtype=width).view(np.uint8)]


def _column_values(col: pd.Series) -> np.ndarray:
    values = col.to_numpy()  # datetime64[ns] and numpy dtypes as themselves; extension dtypes as objects
    if values.dtype.kind not in _FIXED_KINDS and values.dtype != object:
        values = values.astype(object)
    return values


def _digest(frame: pd.DataFrame, mask: np.ndarray | None = None) -> str:
    """sha256 of the schema, the row count and the columns' bytes of `frame[mask]` (the frame is never filtered
    as a whole: each column is, as it is hashed)."""
    digest = hashlib.sha256()
    schema = "\x1f".join(f"{c}\x1e{t}" for c, t in zip(map(str, frame.columns), map(str, frame.dtypes)))
    digest.update(schema.encode("utf-8"))
    rows = len(frame) if mask is None else int(mask.sum())
    digest.update(f"\x1d{rows}\x1d".encode())
    for j in range(frame.shape[1]):
        values = _column_values(frame.iloc[:, j])
        if mask is not None:
            values = values[mask]
        digest.update(b"\x1c")
        for part in _column_parts(values):
            digest.update(part)
    return digest.hexdigest()


def frame_fingerprint(frame: pd.DataFrame) -> str:
    """sha256 hex of (columns, dtypes, row values). Order-sensitive, index-insensitive, stable across processes
    and machines (no Python hash seed is involved)."""
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
