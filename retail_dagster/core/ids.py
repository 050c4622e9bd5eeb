"""Fast exact factorization of id columns (sku_id, location_id, ...) held as Python str objects.

The contract keeps ids as plain `str` objects (object dtype). Frames read from Parquet dictionary columns, or built
by one take over categories (core/contracts.py), repeat a few thousand distinct str objects over millions of rows.
Factorizing such a column by value hashes and compares every string; factorizing it by object address is an int64
factorization, several times faster, after which only the distinct objects are factorized by value. The result is
exactly `pd.factorize(values)` (codes in order of first appearance, -1 for missing values), whatever the column
holds: equal strings at different addresses get one code, and a column of mostly distinct objects simply takes
pandas' path.
"""

from __future__ import annotations

import ctypes

import numpy as np
import pandas as pd

_MIN_ROWS = 4096  # below this pandas' own factorization is as fast


def _addresses(values: np.ndarray) -> np.ndarray:
    """The PyObject pointers of a C-contiguous object array, viewed as integers (valid while `values` lives)."""
    return np.frombuffer((ctypes.c_ssize_t * len(values)).from_address(values.ctypes.data), dtype=np.intp)


def _factorize_runs(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exactly `pd.factorize(keys)` for integer keys. A column of long runs of one key (the sku_id of rows sorted by
    SKU) factorizes only its run heads: one compare pass instead of one hash lookup per row."""
    heads = np.flatnonzero(keys[1:] != keys[:-1]) + 1
    if len(heads) >= len(keys) // 8:
        return pd.factorize(keys)
    heads = np.concatenate([[0], heads])
    head_codes, distinct = pd.factorize(keys[heads])
    return np.repeat(head_codes, np.diff(np.append(heads, len(keys)))), distinct


def distinct_objects(values: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(codes, objects): `objects[codes]` is `values` element for element (the same objects), with `objects` the
    distinct objects in order of first appearance. None when the column is small, not object dtype, or mostly
    distinct objects (then the caller should use pandas directly)."""
    values = np.asarray(values)
    if values.dtype != object or values.ndim != 1 or len(values) < _MIN_ROWS:
        return None
    values = np.ascontiguousarray(values)
    codes, distinct = _factorize_runs(_addresses(values))
    if len(distinct) > len(values) // 8:
        return None
    objects = np.empty(len(distinct), dtype=object)
    objects[:] = [ctypes.cast(int(a), ctypes.py_object).value for a in distinct]
    return codes, objects


def factorize(values) -> tuple[np.ndarray, np.ndarray]:
    """Exactly `pd.factorize(values)` for a 1-d array or Series (codes as intp, -1 for missing; uniques as an
    ndarray), fast for object columns that repeat a few objects."""
    arr = values.to_numpy() if isinstance(values, (pd.Series, pd.Index)) else np.asarray(values)
    split = distinct_objects(arr)
    if split is None:
        codes, uniques = pd.factorize(arr)
        return codes.astype(np.intp, copy=False), np.asarray(uniques)
    obj_codes, objects = split
    value_codes, uniques = pd.factorize(objects)
    return value_codes.astype(np.intp, copy=False)[obj_codes], np.asarray(uniques)


def _pair_codes(left, right) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(key, present, left uniques, right uniques): one int64 per row for the (left, right) pair, valid where
    `present` (both values there); `key // width` and `key % width` index the uniques, width = len(right uniques)."""
    lc, lu = factorize(left)
    rc, ru = factorize(right)
    present = (lc >= 0) & (rc >= 0)
    return lc.astype(np.int64) * max(len(ru), 1) + rc, present, lu, ru


def pair_positions(left, right, index: pd.MultiIndex) -> np.ndarray:
    """`index.get_indexer(MultiIndex.from_arrays([left, right]))` for a 2-level `index` without missing values:
    the position of each (left, right) pair in `index`, -1 where absent or where either value is missing."""
    key, ok, lu, ru = _pair_codes(left, right)
    out = np.full(len(key), -1, dtype=np.intp)
    if not ok.any():
        return out
    width = max(len(ru), 1)
    pcodes, pairs = pd.factorize(key[ok])
    out[ok] = index.get_indexer(pd.MultiIndex.from_arrays([lu[pairs // width], ru[pairs % width]]))[pcodes]
    return out


def rows_in(frame: pd.DataFrame, other: pd.DataFrame, columns: list[str]) -> np.ndarray:
    """Exactly `MultiIndex.from_frame(frame[columns]).isin(MultiIndex.from_frame(other[columns]))`: whether each
    row's key appears among `other`'s rows, on one int64 per row (the MultiIndex path builds a Python tuple per
    row: gigabytes at 10,000 SKUs x 10 stores). Keys with a missing value, or too many distinct values for an
    int64, take the MultiIndex path."""
    n = len(frame)
    key = np.zeros(n + len(other), dtype=np.int64)
    span = 1
    for c in columns:
        codes, uniques = factorize(np.concatenate([frame[c].to_numpy(), other[c].to_numpy()]))
        width = max(len(uniques), 1)
        if (codes < 0).any() or span > np.iinfo(np.int64).max // width:
            return pd.MultiIndex.from_frame(frame[columns]).isin(pd.MultiIndex.from_frame(other[columns]))
        key = key * width + codes
        span *= width
    return np.isin(key[:n], key[n:])


def max_by_series(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    """Exactly `frame.groupby(["sku_id", "location_id"], as_index=False)[column].max()`: one row per series with
    both ids present, sorted by them, NaN values skipped; grouped on one int64 per row instead of the strings."""
    key, ok, skus, locs = _pair_codes(frame["sku_id"], frame["location_id"])
    width = max(len(locs), 1)
    top = pd.Series(frame[column].to_numpy()[ok]).groupby(key[ok]).max()
    key = top.index.to_numpy()
    out = pd.DataFrame({"sku_id": skus[key // width], "location_id": locs[key % width], column: top.to_numpy()})
    return out.sort_values(["sku_id", "location_id"]).reset_index(drop=True)


__all__ = ["distinct_objects", "factorize", "max_by_series", "pair_positions", "rows_in"]
