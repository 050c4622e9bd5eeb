"""What was known at the start of a planning day: the as-of slice of the input tables (no leakage).

Partition date D is the business day being planned. Facts (sales, inventory, traffic) are known through D-1;
calendars (promotions, events, weather forecasts) for D..D+horizon-1.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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


def planning_inputs(tables: dict[str, pd.DataFrame], date, sku_group: str | None = None,
                    horizon_days: int = HORIZON_DAYS, history_days: int | None = None) -> PlanningInputs:
    """Slice validated tables to what was known at the start of `date` for one SKU group (None = all).

    `history_days` keeps only that many days of facts (sales, inventory, traffic) and calendars before D: what the
    agents look back at, without carrying years of rows through every asset.
    """
    d = pd.Timestamp(date).normalize()
    end = d + pd.Timedelta(days=horizon_days)
    if history_days is not None:
        first = d - pd.Timedelta(days=history_days)
        tables = {**tables, **{t: tables[t][tables[t]["date"] >= first]
                               for t in ("sales", "inventory", "traffic", "weather", "events") if t in tables}}
    catalog = tables["catalog"]
    if sku_group is not None:
        catalog = catalog[catalog["sku_group"] == sku_group]
        if catalog.empty:
            raise ValueError(f"SKU group '{sku_group}' has no SKUs in the catalog; groups: {sku_groups(tables['catalog'])}")
    skus = catalog["sku_id"]
    sales = tables["sales"]
    sales = sales[(sales["date"] < d) & sales["sku_id"].isin(skus)]
    inv = tables["inventory"]
    inv = inv[(inv["date"] < d) & inv["sku_id"].isin(skus)]
    notes = []
    if len(inv):
        last = inv["date"].max()
        snapshot = inv[inv["date"] == last]
        if last < d - pd.Timedelta(days=1):
            notes.append(f"latest inventory is from {last:%Y-%m-%d}, {(d - last).days} days before {d:%Y-%m-%d}")
    else:
        snapshot = inv
        notes.append(f"no inventory known before {d:%Y-%m-%d}")
    promos = tables["promotions"]
    promos = promos[(promos["start_date"] < end) & promos["sku_id"].isin(skus)]
    return PlanningInputs(
        date=d, sku_group=sku_group or "*", catalog=catalog.reset_index(drop=True),
        locations=tables["locations"].reset_index(drop=True),
        sales=sales.reset_index(drop=True), inventory_snapshot=snapshot.reset_index(drop=True),
        promotions=promos.reset_index(drop=True),
        events=tables["events"][tables["events"]["date"] < end].reset_index(drop=True),
        weather=tables["weather"][tables["weather"]["date"] < end].reset_index(drop=True),
        traffic=tables["traffic"][tables["traffic"]["date"] < d].reset_index(drop=True),
        lanes=tables["lanes"].reset_index(drop=True), horizon_days=horizon_days, notes=notes,
        inventory_history=inv.reset_index(drop=True),
    )
