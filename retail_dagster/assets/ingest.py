"""Ingest assets: per (date, sku_group) partition, exactly what was known at the start of the planning day."""

from concurrent.futures import ThreadPoolExecutor
from typing import Iterator

import dagster as dg
import pandas as pd

from ..checks import INGEST_CHECKS, freshness_result
from ..core.asof import HORIZON_DAYS, PlanningInputs, planning_inputs
from ..core.fingerprint import frame_fingerprint
from ..core.loading import run_threads
from ..partitions import daily_by_group, split_partition
from ..resources.data_source import DataSourceResource
from ..resources.io_manager import read_only

INGEST_GROUP = "ingest"
FINGERPRINT_KEY = "fingerprint"

# output name -> (PlanningInputs attribute, description)
INGEST_OUTPUTS: dict[str, tuple[str, str]] = {
    "sales_history": ("sales", "Daily sales of the group's SKUs dated before the planning day (censored by stock)."),
    "inventory_history": ("inventory_history",
                          "Daily end-of-day stock before the planning day (marks stock-out days)."),
    "inventory_snapshot": ("inventory_snapshot", "Stock on hand and in transit at the end of the day before the "
                                                 "planning day, stores and warehouses."),
    "catalog_slice": ("catalog", "The group's SKUs: costs, prices, MSRP/MAP, case packs."),
    "promotions_calendar": ("promotions",
                            "Planned promotions known at the start of the day, through the 14-day horizon."),
    "events_calendar": ("events", "Holidays and local events through the 14-day horizon."),
    "weather_calendar": ("weather", "Observed weather before the day and the forecast for the 14-day horizon."),
    "store_traffic": ("traffic", "Daily store visitors before the planning day."),
    "store_network": ("locations", "Stores and warehouses with their regions and capacities."),
    "transfer_lanes": ("lanes", "Transfer lanes between locations: cost per unit, lead time, capacity."),
}


def _summary(frame: pd.DataFrame) -> dict:
    # the content hash is computed once here; the agents' audit records read it from this metadata
    meta: dict = {"rows": dg.MetadataValue.int(len(frame)),
                  FINGERPRINT_KEY: dg.MetadataValue.text(frame_fingerprint(frame))}
    for col in ("date", "start_date"):
        if col in frame.columns and len(frame):
            meta["first_date"] = dg.MetadataValue.text(f"{frame[col].min():%Y-%m-%d}")
            meta["last_date"] = dg.MetadataValue.text(f"{frame[col].max():%Y-%m-%d}")
            break
    return meta


@dg.multi_asset(
    outs={name: dg.AssetOut(description=desc, group_name=INGEST_GROUP, owners=["team:retail-data"],
                            tags={"layer": "ingest"}, is_required=True)
          for name, (_, desc) in INGEST_OUTPUTS.items()},
    partitions_def=daily_by_group,
    check_specs=INGEST_CHECKS,
    can_subset=False,
    name="planning_inputs",
    backfill_policy=dg.BackfillPolicy.multi_run(1),
    op_tags={"layer": "ingest"},
)
def ingest_planning_inputs(context: dg.AssetExecutionContext, data_source: DataSourceResource):
    """Read and validate the input tables once, then slice them to what was known at the start of the day.

    A data contract error fails this step, so nothing downstream is written for the partition; so does input
    that ends before the day before the planning day (the blocking `inputs_are_current` check).
    """
    from ..settings import SettingsError, check_settings

    try:  # the first step of every run: bad settings stop it before anything is written
        check_settings()
    except SettingsError as exc:
        raise dg.Failure(description=str(exc)) from None
    date, group = split_partition(context)
    # only the group's SKUs and the days the partition may use: history before D, calendars through the horizon
    tables = data_source.load(sku_group=group, since=date - pd.Timedelta(days=data_source.history_days),
                              until=date + pd.Timedelta(days=HORIZON_DAYS))
    inputs = planning_inputs(tables, date, group, horizon_days=HORIZON_DAYS, history_days=data_source.history_days)
    for note in inputs.notes:
        context.log.warning(note)
    # handed over read-only: the frames are this step's alone, so the IO manager keeps them for the run's later
    # steps without copying them
    frames = {name: read_only(getattr(inputs, attr)) for name, (attr, _) in INGEST_OUTPUTS.items()}
    for name, metadata in _summaries(frames):
        yield dg.Output(frames[name], output_name=name, metadata=metadata)
    yield freshness_result(inputs, data_source.max_staleness_days)


def _summaries(frames: dict[str, pd.DataFrame]) -> Iterator[tuple[str, dict]]:
    """(name, _summary) of each frame, in order. With two cores the content hashes (numpy and sha256 release the
    GIL) are computed in another thread, each while Dagster stores the outputs before it."""
    if run_threads() < 2:
        yield from ((name, _summary(frame)) for name, frame in frames.items())
        return
    with ThreadPoolExecutor(1) as pool:
        pending = {name: pool.submit(_summary, frame) for name, frame in frames.items()}
        yield from ((name, summary.result()) for name, summary in pending.items())


def inputs_from_frames(context, frames: dict[str, pd.DataFrame]) -> PlanningInputs:
    """The run partition's PlanningInputs from ingest asset values keyed by asset name; a table not given (an
    agent that does not read it) is empty."""
    date, group = split_partition(context)
    empty = pd.DataFrame()
    values = {attr: frames.get(name, empty) for name, (attr, _) in INGEST_OUTPUTS.items()}
    if "inventory_history" not in frames:
        values["inventory_history"] = None
    return PlanningInputs(date=date, sku_group=group, **values)
