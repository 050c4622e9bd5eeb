"""date x sku_group partitions. Groups come from the data source's catalog; dates start where history allows.

Partition `2026-03-01|grocery` plans business day 2026-03-01 for the grocery group with data through 2026-02-28.
`end_offset=1` makes today's partition exist: the normal daily use is planning today from data through yesterday.
"""

from __future__ import annotations

import functools
import logging
import os

import dagster as dg
import pandas as pd

from . import settings
from .core.demo import GROUPS

DATE_DIM, GROUP_DIM = "date", "sku_group"


@functools.lru_cache(maxsize=1)
def partition_setup() -> tuple[str, tuple[str, ...]]:
    """(first partition date, SKU groups) for the configured data source."""
    start_override = os.environ.get("RETAIL_DAGSTER_START_DATE")
    groups_override = os.environ.get("RETAIL_DAGSTER_GROUPS")
    if settings.source_kind() == "demo":
        size = settings.demo_size_from_env()
        first = pd.Timestamp(size.end_date) - pd.Timedelta(days=size.n_days - 1)
        start = first + pd.Timedelta(days=settings.MIN_HISTORY_DAYS)
        groups = tuple(sorted(GROUPS)[: max(1, min(len(GROUPS), size.n_skus))])
    elif settings.source_kind() == "files":
        start, groups = _files_setup(settings.data_path())
    else:
        start, groups = _cached_setup(settings.source_kind(), settings.data_path())
    if start_override:
        start = pd.Timestamp(start_override)
    if groups_override:
        groups = tuple(dict.fromkeys(g.strip() for g in groups_override.split(",") if g.strip()))
    return start.strftime("%Y-%m-%d"), usable_groups(groups)


def _files_setup(path: str) -> tuple[pd.Timestamp, tuple[str, ...]]:
    """Groups from the catalog's `sku_group` column alone, the first date from the sales file's footer statistics:
    loading the code location never reads a fact table."""
    from .core.loading import first_sales_date, read_groups

    first = first_sales_date(path)
    if first is None:
        raise FileNotFoundError(f"no sales table under {path}: cannot place the first partition")
    return first + pd.Timedelta(days=settings.MIN_HISTORY_DAYS), tuple(read_groups(path))


def _cached_setup(kind: str, path: str) -> tuple[pd.Timestamp, tuple[str, ...]]:
    """Sources whose files must be reshaped whole to know their groups (M5): computed once, then read from a small
    JSON file in the model cache, stamped with the source files' names, sizes and mtimes."""
    import hashlib
    import json

    from .core.files import atomic_write_local

    stamp = [kind, os.path.abspath(path)]
    if os.path.isdir(path):
        stamp += sorted([f, os.path.getsize(os.path.join(path, f)), os.path.getmtime(os.path.join(path, f))]
                        for f in os.listdir(path) if os.path.isfile(os.path.join(path, f)))
    digest = hashlib.sha256(json.dumps(stamp, default=str).encode()).hexdigest()[:16]
    cache = os.path.join(settings.model_cache_path(), f"partitions-{kind}-{digest}.json")
    try:
        with open(cache) as fh:
            saved = json.load(fh)
        return pd.Timestamp(saved["start"]), tuple(saved["groups"])
    except (OSError, ValueError, KeyError):
        pass
    from .core.asof import first_plannable_date, sku_groups
    from .resources.data_source import DataSourceResource

    tables = DataSourceResource(kind=kind, path=path).load()
    start = first_plannable_date(tables["sales"], settings.MIN_HISTORY_DAYS)
    groups = tuple(sku_groups(tables["catalog"]))
    try:
        atomic_write_local(cache, json.dumps({"start": start.strftime("%Y-%m-%d"), "groups": list(groups),
                                              "stamp": stamp}, default=str).encode())
    except OSError:  # a read-only cache folder: computed again next time
        pass
    return start, groups


def usable_groups(groups) -> tuple[str, ...]:
    """The groups that can be partition keys; the others are left out with a warning (`validate` rejects them),
    so one badly named group never stops the definitions, and so every other group, from loading."""
    from .core.contracts import GROUP_NAME_RULE, is_valid_group_name

    bad = [g for g in groups if not is_valid_group_name(g)]
    if bad:
        logging.getLogger("retail_dagster").warning(
            "SKU group(s) %s left out of the partitions: %s. Rename them in the catalog.", bad, GROUP_NAME_RULE)
    return tuple(g for g in groups if is_valid_group_name(g))


def build_partitions_def() -> dg.MultiPartitionsDefinition:
    start, groups = partition_setup()
    return dg.MultiPartitionsDefinition({
        DATE_DIM: dg.DailyPartitionsDefinition(start_date=start, end_offset=1,
                                               timezone=os.environ.get("RETAIL_DAGSTER_TIMEZONE", "UTC")),
        GROUP_DIM: dg.StaticPartitionsDefinition(list(groups)),
    })


daily_by_group = build_partitions_def()


def partition_key(date: str, sku_group: str) -> dg.MultiPartitionKey:
    return dg.MultiPartitionKey({DATE_DIM: pd.Timestamp(date).strftime("%Y-%m-%d"), GROUP_DIM: sku_group})


def split_partition(context) -> tuple[pd.Timestamp, str]:
    """(planning date, sku group) of the run's partition."""
    key = context.partition_key
    dims = key.keys_by_dimension if isinstance(key, dg.MultiPartitionKey) else dict(
        zip([DATE_DIM, GROUP_DIM], str(key).split("|")))
    return pd.Timestamp(dims[DATE_DIM]), dims[GROUP_DIM]
