"""What was known at the start of a planning day: the as-of slice of the input tables (no leakage).

Partition date D is the business day being planned. Facts (sales, inventory, traffic) are known through D-1;
calendars (promotions, events, weather forecasts) for D..D+horizon-1.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

HORIZON_DAYS = 14


@dataclass
class PlanningInputs:
    """Everything an agent may use to plan `date` for one SKU group."""

    date: pd.Timestamp
    sku_group: str
    catalog: pd.DataFrame  # the group's SKUs
    locations: pd.DataFrame  # all locations
    sales: pd.DataFrame  # date < D, the group's SKUs
    inventory_snapshot: pd.DataFrame  # the last stock position before D (stores and warehouses), group's SKUs
    promotions: pd.DataFrame  # planned promotions overlapping dates < D + horizon, the group's SKUs
    events: pd.DataFrame  # date < D + horizon
    weather: pd.DataFrame  # date < D + horizon (observed for the past, forecast for D..)
    traffic: pd.DataFrame  # date < D
    lanes: pd.DataFrame
    horizon_days: int = HORIZON_DAYS
    notes: list[str] = field(default_factory=list)
    inventory_history: pd.DataFrame | None = None  # date < D (stock-out days for censoring), group's SKUs

    def as_tables(self) -> dict[str, pd.DataFrame]:
        """The slice as a tables dict (contract names), e.g. for engines that take `tables`."""
        inv = self.inventory_history if self.inventory_history is not None else self.inventory_snapshot
        return {"catalog": self.catalog, "locations": self.locations, "sales": self.sales, "inventory": inv,
                "promotions": self.promotions, "events": self.events, "weather": self.weather,
                "traffic": self.traffic, "lanes": self.lanes}

    @property
    def target_dates(self) -> pd.DatetimeIndex:
        return pd.date_range(self.date, periods=self.horizon_days, freq="D")


def sku_groups(catalog: pd.DataFrame) -> list[str]:
    return sorted(catalog["sku_group"].astype(str).unique().tolist())


def first_plannable_date(sales: pd.DataFrame, min_history_days: int = 56) -> pd.Timestamp:
    """The first date with `min_history_days` of sales history before it."""
    return pd.Timestamp(sales["date"].min()) + pd.Timedelta(days=min_history_days)


def _rows(frame: pd.DataFrame, keep) -> pd.DataFrame:
    """`frame`'s rows where `keep` (a boolean array or Series), renumbered from 0. When every row is kept (the
    loader already read only the partition's rows) no data is copied: a shallow copy, so adding a column to the
    slice never touches the loader's cached table."""
    keep = np.asarray(keep, dtype=bool)
    if keep.all():
        out = frame.copy(deep=False)
        if not (isinstance(out.index, pd.RangeIndex) and out.index.start == 0 and out.index.step == 1):
            out.index = pd.RangeIndex(len(out))
    else:
        out = frame[keep].reset_index(drop=True)
    out.attrs = {}  # the loader's marks stay with the loader's tables (and out of Parquet metadata)
    return out


# frame.attrs key set by the loader on the SKU-keyed tables it read for one SKU group only: their SKU filter is done
GROUP_ATTR = "retail_dagster_sku_group"


def _in_group(frame: pd.DataFrame, skus: pd.Series, sku_group: str | None) -> np.ndarray:
    """Rows of `frame` whose sku_id is one of `skus` (all rows when the loader read only this group's SKUs)."""
    if sku_group is None or frame.attrs.get(GROUP_ATTR) == sku_group:
        return np.ones(len(frame), dtype=bool)
    values = frame["sku_id"]
    if isinstance(values.dtype, pd.CategoricalDtype):  # hash the categories, not every row
        return np.append(values.cat.categories.isin(skus), False)[values.cat.codes.to_numpy()]
    return values.isin(skus).to_numpy()


def planning_inputs(tables: dict[str, pd.DataFrame], date, sku_group: str | None = None,
                    horizon_days: int = HORIZON_DAYS, history_days: int | None = None) -> PlanningInputs:
    """Slice validated tables to what was known at the start of `date` for one SKU group (None = all).

    `history_days` keeps only that many days of facts (sales, inventory, traffic) and calendars before D: what the
    agents look back at, without carrying years of rows through every asset.
    """
    d = pd.Timestamp(date).normalize()
    end = d + pd.Timedelta(days=horizon_days)
    first = d - pd.Timedelta(days=history_days) if history_days is not None else None

    def dated(name: str, before: pd.Timestamp) -> np.ndarray:
        dates = tables[name]["date"].to_numpy()
        keep = dates < before.to_datetime64()
        if first is not None:
            keep &= dates >= first.to_datetime64()
        return keep

    catalog = tables["catalog"]
    if sku_group is not None:
        catalog = catalog[(catalog["sku_group"] == sku_group).to_numpy()]
        if catalog.empty:
            raise ValueError(f"SKU group '{sku_group}' has no SKUs in the catalog; "
                             f"groups: {sku_groups(tables['catalog'])}")
    skus = catalog["sku_id"]

    def in_group(frame: pd.DataFrame) -> np.ndarray:
        return _in_group(frame, skus, sku_group)

    sales = _rows(tables["sales"], dated("sales", d) & in_group(tables["sales"]))
    inv = _rows(tables["inventory"], dated("inventory", d) & in_group(tables["inventory"]))
    notes = []
    if len(inv):
        inv_dates = inv["date"].to_numpy()
        last = pd.Timestamp(inv_dates.max())
        snapshot = inv[inv_dates == last.to_datetime64()].reset_index(drop=True)
        if last < d - pd.Timedelta(days=1):
            notes.append(f"latest inventory is from {last:%Y-%m-%d}, {(d - last).days} days before {d:%Y-%m-%d}")
    else:
        snapshot = inv
        notes.append(f"no inventory known before {d:%Y-%m-%d}")
    promos = tables["promotions"]
    promos = _rows(promos, (promos["start_date"] < end).to_numpy() & in_group(promos))
    return PlanningInputs(
        date=d, sku_group=sku_group or "*", catalog=catalog.reset_index(drop=True),
        locations=tables["locations"].reset_index(drop=True),
        sales=sales, inventory_snapshot=snapshot,
        promotions=promos,
        events=_rows(tables["events"], dated("events", end)),
        weather=_rows(tables["weather"], dated("weather", end)),
        traffic=_rows(tables["traffic"], dated("traffic", d)),
        lanes=tables["lanes"].reset_index(drop=True), horizon_days=horizon_days, notes=notes,
        inventory_history=inv,
    )
