"""Reading and writing a folder of input tables (CSV or Parquet), locally or on S3, validated on the way in."""

from __future__ import annotations

import io
import os
from typing import Any, Mapping, Optional

import numpy as np
import pandas as pd

from .files import atomic_write_local
from .contracts import TABLE_NAMES, ContractError, Problem, validate_tables


def is_s3(path: str) -> bool:
    return str(path).startswith("s3://")


def split_s3(uri: str) -> tuple[str, str]:
    rest = uri[len("s3://"):]
    bucket, _, key = rest.partition("/")
    return bucket, key.strip("/")


def make_s3_client(endpoint_url: str | None = None, region_name: str | None = None):
    """A boto3 S3 client; endpoint from the argument or AWS_ENDPOINT_URL_S3 (tests point it at moto)."""
    import boto3

    endpoint_url = endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or None
    return boto3.client("s3", endpoint_url=endpoint_url,
                        region_name=region_name or os.environ.get("AWS_DEFAULT_REGION", "us-east-1"))


def _read_bytes(data: bytes, name: str) -> pd.DataFrame:
    if name.endswith(".parquet"):
        return pd.read_parquet(io.BytesIO(data))
    return pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=True)


def find_table_files(path: str, s3_client: Any = None) -> dict[str, str]:
    """Map table name -> file (Parquet preferred over CSV) in a local folder or an s3:// prefix."""
    return _table_files(_file_names(path, s3_client))


def _table_files(names: dict[str, str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for t in TABLE_NAMES:
        for ext in (".parquet", ".csv"):
            if t + ext in names:
                found[t] = names[t + ext]
                break
    return found


def duplicate_table_problems(names: dict[str, str]) -> list[Problem]:
    """A table present twice (catalog.parquet and catalog.csv): which one is meant is not ours to guess."""
    return [Problem(t, names[t + ".parquet"], "*",
                    f"two copies of the table: {t}.parquet and {t}.csv; keep one (they may differ, and only the "
                    "Parquet file would be read)")
            for t in TABLE_NAMES if t + ".parquet" in names and t + ".csv" in names]


def _file_names(path: str, s3_client: Any = None) -> dict[str, str]:
    """{file name: full path} of the files directly under a local folder or an s3:// prefix."""
    if is_s3(path):
        client = s3_client or make_s3_client()
        bucket, prefix = split_s3(path)
        keys = []
        paginator = client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket, Prefix=(prefix + "/") if prefix else ""):
            keys += [o["Key"] for o in page.get("Contents", [])]
        names = {k.rsplit("/", 1)[-1]: f"s3://{bucket}/{k}" for k in keys
                 if k.count("/") == (prefix.count("/") + 1 if prefix else 0)}
    else:
        if not os.path.isdir(path):
            raise FileNotFoundError(f"data folder not found: {path}")
        names = {f: os.path.join(path, f) for f in os.listdir(path)}
    return names


# fact tables keyed by SKU: a SKU-group slice reads only its SKUs' rows (Parquet row groups are pruned)
SKU_KEYED = ("sales", "inventory", "promotions")


DATED = ("sales", "inventory", "traffic", "weather", "events")


def _plain_strings(values: pd.Series) -> pd.Series:
    """Categorical (dictionary-encoded) ids as plain str objects, by one take over the categories."""
    cats = np.asarray(values.cat.categories.astype(str), dtype=object)
    codes = values.cat.codes.to_numpy()
    out = cats[np.maximum(codes, 0)]
    if (codes < 0).any():
        out = out.copy()
        out[codes < 0] = None
    return pd.Series(out, index=values.index, name=values.name)


def read_raw_table(file: str, s3_client: Any = None, skus: Optional[list[str]] = None,
                   columns: Optional[list[str]] = None, since: Optional[pd.Timestamp] = None) -> pd.DataFrame:
    """One table file as read (no validation); `skus` keeps only those SKUs' rows, `since` only rows dated on or
    after it (Parquet row groups are pruned by their statistics)."""
    if is_s3(file):
        client = s3_client or make_s3_client()
        bucket, key = split_s3(file)
        data = client.get_object(Bucket=bucket, Key=key)["Body"].read()
        frame = _read_bytes(data, key)
        if columns:
            frame = frame[[c for c in columns if c in frame.columns]]
    elif file.endswith(".parquet"):
        filters = ([("sku_id", "in", list(skus))] if skus is not None else []) + \
            ([("date", ">=", pd.Timestamp(since))] if since is not None else [])
        try:
            frame = pd.read_parquet(file, columns=columns, filters=filters or None)
            skus = since = None  # both applied by the reader
        except Exception:  # e.g. no such column, or a date stored as text: filter after validation-free read
            frame = pd.read_parquet(file, columns=columns)
    else:
        frame = pd.read_csv(file, dtype=str, keep_default_na=True, usecols=columns)
    if skus is not None and "sku_id" in frame.columns:
        frame = frame[frame["sku_id"].astype(str).isin(set(skus))]
    if since is not None and "date" in frame.columns:
        dates = pd.to_datetime(frame["date"], errors="coerce")
        frame = frame[dates.isna() | (dates >= pd.Timestamp(since))]  # unparseable dates stay for validation
    # dictionary-encoded ids come back categorical: plain strings keep joins simple
    for col in frame.columns:
        if isinstance(frame[col].dtype, pd.CategoricalDtype):
            frame[col] = _plain_strings(frame[col])
    return frame.reset_index(drop=True)


def load_tables(path: str, s3_client: Any = None, tables: tuple[str, ...] = TABLE_NAMES,
                sku_group: Optional[str] = None, since: Optional[pd.Timestamp] = None) -> dict[str, pd.DataFrame]:
    """Read and validate every input table under `path`. Raises ContractError listing every problem.

    With `sku_group`, the SKU-keyed fact tables hold only that group's SKUs (the catalog stays whole): what one
    partition needs, read without loading the other groups. With `since`, dated tables start on that day.
    """
    names = _file_names(path, s3_client)
    files = _table_files(names)
    raw: dict[str, pd.DataFrame] = {}
    problems: list[Problem] = duplicate_table_problems(names)
    if problems:
        raise ContractError(problems)
    skus = None
    if sku_group is not None and "catalog" in files:
        catalog = read_raw_table(files["catalog"], s3_client)
        if "sku_group" in catalog.columns and "sku_id" in catalog.columns:
            skus = catalog.loc[catalog["sku_group"].astype(str) == sku_group, "sku_id"].astype(str).tolist()
            if not skus:
                raise ContractError([Problem("catalog", files["catalog"], "sku_group",
                                             f"no SKU in group '{sku_group}'")])
    for t in tables:
        if t not in files:
            problems.append(Problem(t, os.path.join(str(path), f"{t}.parquet|.csv"), "*", "table file not found"))
            continue
        try:
            raw[t] = read_raw_table(files[t], s3_client, skus=skus if t in SKU_KEYED else None,
                                    since=since if t in DATED else None)
        except Exception as exc:  # unreadable file: report, do not crash with a bare parser error
            problems.append(Problem(t, files[t], "*", f"cannot read file: {type(exc).__name__}: {exc}"))
    if problems:
        raise ContractError(problems)
    return validate_tables(raw, files)


def write_tables(tables: Mapping[str, pd.DataFrame], path: str, s3_client: Any = None) -> list[str]:
    """Write tables as Parquet files `<path>/<table>.parquet` (local folder or s3:// prefix)."""
    written = []
    for name, frame in tables.items():
        if is_s3(path):
            client = s3_client or make_s3_client()
            bucket, prefix = split_s3(path)
            buf = io.BytesIO()
            frame.to_parquet(buf, index=False)
            key = f"{prefix}/{name}.parquet" if prefix else f"{name}.parquet"
            client.put_object(Bucket=bucket, Key=key, Body=buf.getvalue())
            written.append(f"s3://{bucket}/{key}")
        else:
            target = os.path.join(path, f"{name}.parquet")
            buf = io.BytesIO()
            frame.to_parquet(buf, index=False)
            atomic_write_local(target, buf.getvalue())
            written.append(target)
    return written


__all__ = ["load_tables", "write_tables", "find_table_files", "read_raw_table", "ContractError", "make_s3_client",
           "is_s3", "split_s3"]
