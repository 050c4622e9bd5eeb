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
    else:
        from .resources.data_source import DataSourceResource

        tables = DataSourceResource(kind=settings.source_kind(), path=settings.data_path()).load()
        from .core.asof import first_plannable_date, sku_groups

        start = first_plannable_date(tables["sales"], settings.MIN_HISTORY_DAYS)
        groups = tuple(sku_groups(tables["catalog"]))
    if start_override:
        start = pd.Timestamp(start_override)
    if groups_override:
        groups = tuple(dict.fromkeys(g.strip() for g in groups_override.split(",") if g.strip()))
    return start.strftime("%Y-%m-%d"), usable_groups(groups)


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
