"""Seeded, vectorized demo data generator with recorded ground truth, in memory or streamed to Parquet by SKU block.

Demand per SKU-location-day is a gamma-Poisson draw around
    rate = base * weekly(category) * yearly(category) * trend * event lift * weather effect * traffic noise
           * (price / base_price) ** elasticity * promo_lift ** on_promotion
Inventory is simulated day by day (a loop over days, vectorized over every series) with a periodic order-up-to
policy from the warehouses, so stock positions are consistent and sales are censored by stock. The calendars
(promotions, events, weather) and the truth run `horizon_days` past the last observed day so that decisions made
on the last day can be scored against what then happens.

Scale: SKUs only interact through the shared calendars (events, weather, store traffic), which are drawn once; every
SKU-level draw (catalog, prices, promotions, demand, the inventory simulation of its stores and warehouse rows) is
made per block of `block_skus` consecutive SKUs from its own generator seeded with (seed, block index). So a block's
rows depend only on (seed, block index, block_skus, network and calendar parameters): `generate_demo` (all blocks in
memory) and `write_demo_streaming` (one block at a time to Parquet) produce the same data, and the full blocks of a
smaller catalog are the first blocks of a larger one. Fact rows are ordered by sku_id, date, location_id.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import pandas as pd

from .asof import HORIZON_DAYS

DEFAULT_END_DATE = "2026-11-24"  # last observed day of the embedded demo; the demo plans the day after
BLOCK_SKUS = 500  # SKUs per generation block; part of the data's definition, like the seed


@dataclass(frozen=True)
class DemoSize:
    """The embedded demo network's size: the one place its defaults are set (generator, settings, CLI, resource)."""

    n_skus: int = 200
    n_stores: int = 6
    n_warehouses: int = 1
    n_days: int = 730
    seed: int = 7
    end_date: str = DEFAULT_END_DATE


# department (sku_group) -> categories
GROUPS: dict[str, list[str]] = {
    "grocery": ["produce", "bakery", "dairy"],
    "beverages": ["soft_drinks", "water", "coffee"],
    "household": ["cleaning", "garden"],
    "apparel": ["outerwear", "basics"],
    "electronics": ["accessories", "small_appliances"],
}

# category parameters: median price, mean elasticity, weekend lift, yearly amplitude, yearly peak day-of-year,
# temperature coefficient (per 10 degC above 15), rain coefficient (per log1p mm)
CATEGORY_PARAMS: dict[str, tuple[float, float, float, float, int, float, float]] = {
    "produce": (2.5, -1.3, 0.35, 0.15, 200, 0.10, -0.05),
    "bakery": (3.5, -1.1, 0.40, 0.05, 350, 0.00, -0.05),
    "dairy": (3.0, -0.9, 0.30, 0.05, 30, 0.00, 0.00),
    "soft_drinks": (2.0, -1.8, 0.45, 0.30, 200, 0.35, -0.08),
    "water": (1.2, -1.5, 0.40, 0.35, 205, 0.40, -0.10),
    "coffee": (8.0, -1.0, 0.20, 0.15, 15, -0.15, 0.05),
    "cleaning": (5.0, -1.2, 0.30, 0.05, 90, 0.00, 0.00),
    "garden": (15.0, -1.6, 0.60, 0.60, 140, 0.30, -0.20),
    "outerwear": (60.0, -2.0, 0.55, 0.70, 340, -0.45, 0.15),
    "basics": (15.0, -1.7, 0.50, 0.10, 240, 0.00, 0.00),
    "accessories": (20.0, -2.2, 0.45, 0.25, 350, 0.00, 0.00),
    "small_appliances": (70.0, -2.5, 0.50, 0.35, 352, 0.00, 0.00),
}

# event type -> lift by sku_group (missing = 1.0)
EVENT_LIFTS: dict[str, dict[str, float]] = {
    "holiday": {"grocery": 1.6, "beverages": 1.7, "household": 1.1, "apparel": 1.2, "electronics": 1.3},
    "shopping": {"grocery": 1.2, "beverages": 1.2, "household": 1.4, "apparel": 1.9, "electronics": 2.2},
    "sports": {"grocery": 1.3, "beverages": 1.8, "electronics": 1.2},
    "festival": {"grocery": 1.25, "beverages": 1.4, "apparel": 1.15},
    "closure": {g: 0.15 for g in GROUPS},
}

REGIONS = ["north", "south", "west"]
WEEKLY_SHAPE = np.array([-0.3, -0.4, -0.25, -0.1, 0.3, 1.0, 0.45])  # Mon..Sun

_GROUP_NAMES = list(GROUPS)
_CATEGORY_NAMES = [c for g in _GROUP_NAMES for c in GROUPS[g]]  # categories in group order
_N_CATEGORIES = np.array([len(GROUPS[g]) for g in _GROUP_NAMES])
_CATEGORY_OFFSET = np.concatenate([[0], np.cumsum(_N_CATEGORIES)[:-1]])
_CATEGORY_TABLE = np.array([CATEGORY_PARAMS[c] for c in _CATEGORY_NAMES])  # (n_categories, 7)
_ADJECTIVES = ["Classic", "Organic", "Premium", "Value", "Fresh", "Eco", "Family", "Deluxe"]

# the fact tables written block by block, and the small per-SKU tables that come with each block
FACT_TABLES = ("sales", "inventory", "truth/demand")
BLOCK_TABLES = ("catalog", "promotions", "sales", "inventory", "truth/demand", "truth/sku", "truth/store_state",
                "truth/warehouse_state")
LEAD_STORE_DAYS, LEAD_WAREHOUSE_DAYS, REVIEW_DAYS = 2, 7, 7  # the baseline replenishment policy's lead times


@dataclass
class DemoData:
    tables: dict[str, pd.DataFrame]  # the observed input tables, following the data contracts
    truth: dict[str, pd.DataFrame]  # ground truth for tests and benchmarks only


@dataclass
class _Ids:
    """An id column as integer codes into a small array of labels (becomes a pyarrow dictionary column)."""
    codes: np.ndarray
    labels: np.ndarray  # object array of str

    def take(self, mask: np.ndarray | None) -> "_Ids":
        return self if mask is None else _Ids(self.codes[mask], self.labels)

    def to_numpy(self) -> np.ndarray:
        return self.labels[self.codes]


def _holidays(dates: pd.DatetimeIndex) -> pd.DataFrame:
    years = sorted(set(dates.year))
    rows = []
    for y in years:
        nov1 = pd.Timestamp(y, 11, 1)
        thanksgiving = nov1 + pd.Timedelta(days=(3 - nov1.dayofweek) % 7 + 21)
        rows += [
            (pd.Timestamp(y, 1, 1), "New Year", "holiday"),
            (pd.Timestamp(y, 2, 11), "Big Game", "sports"),
            (pd.Timestamp(y, 7, 4), "Independence Day", "holiday"),
            (pd.Timestamp(y, 10, 31), "Halloween", "holiday"),
            (thanksgiving - pd.Timedelta(days=1), "Thanksgiving Eve", "holiday"),
            (thanksgiving, "Thanksgiving", "closure"),
            (thanksgiving + pd.Timedelta(days=1), "Black Friday", "shopping"),
            (thanksgiving + pd.Timedelta(days=4), "Cyber Monday", "shopping"),
            (pd.Timestamp(y, 12, 23), "Christmas Shopping", "holiday"),
            (pd.Timestamp(y, 12, 24), "Christmas Eve", "holiday"),
            (pd.Timestamp(y, 12, 25), "Christmas Day", "closure"),
            (pd.Timestamp(y, 12, 31), "New Year's Eve", "holiday"),
        ]
    ev = pd.DataFrame(rows, columns=["date", "event_name", "event_type"])
    ev["region"] = "ALL"
    return ev[(ev["date"] >= dates[0]) & (ev["date"] <= dates[-1])]


@dataclass
class _Network:
    """Everything shared by all SKUs: dates, stores and warehouses, calendars, and the small tables built from them."""
    seed: int
    n_skus: int
    n_obs: int
    dates: pd.DatetimeIndex  # observed days + horizon
    n_stores: int
    n_warehouses: int
    location_ids: np.ndarray  # stores then warehouses (also sorted as strings)
    store_size: np.ndarray  # (L,)
    store_reg_idx: np.ndarray  # (L,)
    store_wh: np.ndarray  # (L,) the warehouse serving each store
    lift: np.ndarray  # (T, regions, groups) event lift
    temperature: np.ndarray  # (T, regions)
    rain: np.ndarray  # (T, regions)
    traffic_noise: np.ndarray  # (T, L) store-day noise shared by visitors and demand
    new_sku_share: float
    block_skus: int
    tables: dict[str, pd.DataFrame]  # locations, lanes, events, weather, traffic
    truth: dict[str, pd.DataFrame]  # event_effects, weekday_shape

    @property
    def n_blocks(self) -> int:
        return -(-self.n_skus // self.block_skus)


def _network(n_skus: int, n_stores: int, n_warehouses: int, n_days: int, seed: int, end_date: str,
             horizon_days: int, new_sku_share: float, block_skus: int) -> _Network:
    if n_skus < 1 or n_stores < 1 or n_warehouses < 1 or n_days < 1 or block_skus < 1:
        raise ValueError(f"n_skus, n_stores, n_warehouses, n_days and block_skus must be >= 1, got {n_skus}, "
                         f"{n_stores}, {n_warehouses}, {n_days}, {block_skus}")
    rng = np.random.default_rng([seed, 0])  # shared calendars; SKU blocks use [seed, 1, block]
    end = pd.Timestamp(end_date)
    obs_dates = pd.date_range(end=end, periods=n_days, freq="D")
    dates = pd.date_range(obs_dates[0], periods=n_days + horizon_days, freq="D")
    T = len(dates)

    # ---- locations, lanes ----------------------------------------------------------------------------------
    store_ids = np.array([f"S{i:03d}" for i in range(n_stores)])
    wh_ids = np.array([f"W{i:02d}" for i in range(n_warehouses)])
    store_region = np.array(REGIONS)[np.arange(n_stores) % len(REGIONS)]
    wh_region = np.array(REGIONS)[np.arange(n_warehouses) % len(REGIONS)]
    store_size = np.exp(rng.normal(0, 0.45, n_stores))
    store_size = store_size / store_size.mean()
    store_wh = np.arange(n_stores) % n_warehouses  # each store is served by one warehouse
    locations = pd.DataFrame({
        "location_id": np.concatenate([store_ids, wh_ids]),
        "kind": ["store"] * n_stores + ["warehouse"] * n_warehouses,
        "region": np.concatenate([store_region, wh_region]),
        "capacity_units": np.concatenate([np.round(store_size * 40 * n_skus), np.full(n_warehouses, np.nan)]),
    })
    lane_rows = []
    for s in range(n_stores):  # loops over location pairs: a few hundred at most
        for w in range(n_warehouses):
            lane_rows.append((wh_ids[w], store_ids[s], round(rng.uniform(0.08, 0.2), 3), 1 + int(w != store_wh[s]),
                              np.nan))
        for s2 in range(n_stores):
            if s2 != s and (store_region[s2] == store_region[s] or rng.random() < 0.35):
                same = store_region[s2] == store_region[s]
                lane_rows.append((store_ids[s], store_ids[s2], round(rng.uniform(0.15, 0.35) * (1 if same else 2), 3),
                                  1 if same else 2, float(rng.integers(200, 600))))
    lanes = pd.DataFrame(lane_rows, columns=["from_location", "to_location", "cost_per_unit", "lead_time_days",
                                             "capacity_units"])
    lanes["lead_time_days"] = lanes["lead_time_days"].astype("int64")

    # ---- calendars: events, weather, traffic ---------------------------------------------------------------
    holidays = _holidays(dates)
    local = []
    for r in REGIONS:
        n_local = max(1, int(T / 365 * 5))
        days = rng.choice(T, min(n_local, T), replace=False)
        for d in days:
            etype = rng.choice(["sports", "festival"])
            local.append((dates[d], f"{r.title()} {etype} {dates[d]:%b %d}", etype, r))
    events = pd.concat([holidays, pd.DataFrame(local, columns=["date", "event_name", "event_type", "region"])],
                       ignore_index=True)[["date", "region", "event_name", "event_type"]]
    events = events.drop_duplicates(["date", "region", "event_name"]).sort_values(["date", "region"]).reset_index(
        drop=True)

    doy = dates.dayofyear.to_numpy()
    dow = dates.dayofweek.to_numpy()
    n_reg = len(REGIONS)
    temp_noise = np.zeros((T, n_reg))
    eps = rng.normal(0, 2.5, (T, n_reg))
    for t in range(1, T):  # AR(1) weather anomalies: a loop over days, not series
        temp_noise[t] = 0.7 * temp_noise[t - 1] + eps[t]
    reg_offset = np.array([-3.0, 5.0, 1.0])
    temperature = 12 + 11 * np.sin(2 * np.pi * (doy - 110) / 365.25)[:, None] + reg_offset[None, :] + temp_noise
    rain = (rng.random((T, n_reg)) < 0.33) * rng.gamma(0.8, 6.0, (T, n_reg))
    weather = pd.DataFrame({
        "date": np.repeat(dates.values, n_reg), "region": np.tile(REGIONS, T),
        "temperature_c": np.round(temperature.ravel(), 1), "precipitation_mm": np.round(rain.ravel(), 1),
    })

    # event lift per (day, region, group)
    reg_index = {r: i for i, r in enumerate(REGIONS)}
    lift = np.ones((T, n_reg, len(_GROUP_NAMES)))
    date_pos = pd.Series(np.arange(T), index=dates)
    for ev in events.itertuples():
        t = date_pos[ev.date]
        regs = list(range(n_reg)) if ev.region == "ALL" else [reg_index[ev.region]]
        for gi, g in enumerate(_GROUP_NAMES):
            lift[t, regs, gi] *= EVENT_LIFTS[ev.event_type].get(g, 1.0)

    # traffic: store-day noise shared by visitors and demand, so traffic carries signal
    traffic_noise = np.exp(rng.normal(0, 0.12, (T, n_stores)))
    weekday_traffic = np.array([0.9, 0.85, 0.9, 0.95, 1.1, 1.3, 1.1])
    store_reg_idx = np.array([reg_index[r] for r in store_region])
    mean_lift_store = lift[:, store_reg_idx, :].mean(axis=2)  # (T, L)
    visitors = (900 * store_size[None, :] * weekday_traffic[dow][:, None] * traffic_noise
                * np.sqrt(mean_lift_store) * np.exp(-0.04 * np.log1p(rain[:, store_reg_idx])))
    traffic = pd.DataFrame({
        "date": np.repeat(obs_dates.values, n_stores), "location_id": np.tile(store_ids, n_days),
        "visitors": np.round(visitors[:n_days].ravel()),
    })

    traffic_all = pd.DataFrame({  # the horizon's visitors too: a simulation going on past the history reads them
        "date": np.repeat(dates.values, n_stores), "location_id": np.tile(store_ids, T),
        "visitors": np.round(visitors.ravel()),
    })
    event_effects = pd.DataFrame([(e, g, EVENT_LIFTS[e].get(g, 1.0)) for e in EVENT_LIFTS for g in _GROUP_NAMES],
                                 columns=["event_type", "sku_group", "lift"])
    return _Network(
        seed=seed, n_skus=n_skus, n_obs=n_days, dates=dates, n_stores=n_stores, n_warehouses=n_warehouses,
        location_ids=np.concatenate([store_ids, wh_ids]).astype(object), store_size=store_size,
        store_reg_idx=store_reg_idx, store_wh=store_wh, lift=lift, temperature=temperature, rain=rain,
        traffic_noise=traffic_noise, new_sku_share=new_sku_share, block_skus=block_skus,
        tables={"locations": locations, "lanes": lanes, "events": events, "weather": weather, "traffic": traffic},
        truth={"event_effects": event_effects,
               "weekday_shape": pd.DataFrame({"dayofweek": np.arange(7), "shape": WEEKLY_SHAPE}),
               "traffic": traffic_all},
    )


def _to_sku_date_loc(a: np.ndarray, S: int, L: int) -> np.ndarray:
    """(days, S*L) array with series index sku*L + loc -> flat array ordered by sku, day, loc."""
    return a.reshape(a.shape[0], S, L).transpose(1, 0, 2).ravel()


def _block(net: _Network, b: int) -> dict[str, dict[str, np.ndarray | _Ids]]:
    """All rows of SKU block `b` (its SKUs at every store plus their warehouse rows), as columns per table."""
    rng = np.random.default_rng([net.seed, 1, b])
    lo = b * net.block_skus
    S = min(net.n_skus, lo + net.block_skus) - lo
    L, W = net.n_stores, net.n_warehouses
    dates = net.dates
    T, n_obs = len(dates), net.n_obs
    n_reg = len(REGIONS)
    dow = dates.dayofweek.to_numpy()
    doy = dates.dayofyear.to_numpy()

    # ---- catalog -------------------------------------------------------------------------------------------
    gi_of_sku = np.arange(S) % len(_GROUP_NAMES)  # balanced groups within the block
    rng.shuffle(gi_of_sku)
    n_cat = _N_CATEGORIES[gi_of_sku]
    cat_idx = _CATEGORY_OFFSET[gi_of_sku] + np.minimum((rng.random(S) * n_cat).astype(int), n_cat - 1)
    sku_group = np.array(_GROUP_NAMES, dtype=object)[gi_of_sku]
    category = np.array(_CATEGORY_NAMES, dtype=object)[cat_idx]
    cp = _CATEGORY_TABLE[cat_idx]  # (S, 7)
    base_price = np.round(cp[:, 0] * np.exp(rng.normal(0, 0.35, S)), 1) + 0.99
    base_price = np.maximum(base_price, 0.99)
    margin = rng.uniform(0.30, 0.50, S)
    unit_cost = np.round(base_price * (1 - margin), 2)
    msrp = np.round(base_price * rng.uniform(1.10, 1.30, S), 2)
    map_price = np.where(rng.random(S) < 0.3, np.round(unit_cost * rng.uniform(1.2, 1.4, S), 2), np.nan)
    map_price = np.minimum(map_price, base_price * 0.85)
    case_pack = rng.choice([1, 2, 4, 6, 12], S, p=[0.3, 0.15, 0.25, 0.2, 0.1]).astype("int64")
    elasticity = np.clip(cp[:, 1] + rng.normal(0, 0.35, S), -4.0, -0.3)
    promo_lift = np.exp(rng.normal(np.log(1.25), 0.08, S))
    sku_num = np.arange(lo, lo + S)
    sku_ids = np.array([f"SKU{i:05d}" for i in sku_num], dtype=object)
    description = np.array([f"{_ADJECTIVES[i % len(_ADJECTIVES)]} {c.replace('_', ' ')} item {i}"
                            for i, c in zip(sku_num, category)], dtype=object)

    # ---- series (sku x store) ------------------------------------------------------------------------------
    sku_of = np.repeat(np.arange(S), L)
    store_of = np.tile(np.arange(L), S)
    N = S * L
    sku_rate = np.exp(rng.normal(-0.35, 1.1, S))
    series_rate = sku_rate[sku_of] * net.store_size[store_of] * np.exp(rng.normal(0, 0.3, N))
    trend_slope = rng.normal(0, 0.12, S)
    launch = np.zeros(S, dtype=int)  # new SKUs are launched near the end of history
    n_new = int(round(net.new_sku_share * S))
    if n_new:
        new = rng.choice(S, n_new, replace=False)
        launch[new] = np.maximum(n_obs - rng.integers(5, 45, n_new), 0)

    # ---- prices and promotions -----------------------------------------------------------------------------
    # regular price: chain-wide step changes per SKU, plus a small regional zone factor
    steps = np.ones((T, S))
    n_changes = rng.poisson(3.0, S)
    day = np.arange(T)
    for k in range(int(n_changes.max(initial=0))):
        has = n_changes > k
        when = rng.integers(1, T, S)
        factor = np.exp(rng.normal(0, 0.08, S))
        steps *= np.where((day[:, None] >= when[None, :]) & has[None, :], factor[None, :], 1.0)
    zone = np.array([1.0, 0.97, 1.03])
    regular = np.clip(base_price[None, :] * steps, np.maximum(unit_cost * 1.15, np.nan_to_num(map_price, nan=0)),
                      msrp)  # (T, S)
    # promotions: slots of 42 days, a promo in a slot with prob 0.35, applied to all stores or to one region;
    # none before the SKU's launch
    slot = 42
    n_slots = T // slot
    has_promo = rng.random((n_slots, S)) < 0.35
    start = np.arange(n_slots)[:, None] * slot + rng.integers(0, slot - 14, (n_slots, S))
    dur = rng.integers(3, 14, (n_slots, S))
    disc = rng.choice(np.array([10, 15, 20, 25, 30], dtype=np.uint8), (n_slots, S))
    region_only = rng.random((n_slots, S)) < 0.4
    region_pick = rng.integers(0, n_reg, (n_slots, S))
    has_promo &= launch[None, :] <= start
    applies = has_promo[:, :, None] & (~region_only[:, :, None]
                                       | (net.store_reg_idx[None, None, :] == region_pick[:, :, None]))  # (slot,S,L)
    promo_disc = np.zeros((T, S, L), dtype=np.uint8)
    if n_slots:
        t_in = day[: n_slots * slot]
        j_of = t_in // slot
        live = (t_in[:, None] >= start[j_of]) & (t_in[:, None] < start[j_of] + dur[j_of])  # (t, S)
        promo_disc[: n_slots * slot] = np.where(applies[j_of] & live[:, :, None], disc[j_of][:, :, None], 0)
    promo_disc = promo_disc.reshape(T, N)
    ps, pl, pj = np.nonzero(applies.transpose(1, 2, 0))  # ordered by sku, store, slot
    promotions = {
        "sku_id": _Ids(ps.astype(np.int32), sku_ids), "location_id": _Ids(pl.astype(np.int32), net.location_ids),
        "start_date": dates.values[start[pj, ps]], "end_date": dates.values[start[pj, ps] + dur[pj, ps] - 1],
        "discount_pct": disc[pj, ps].astype("float64"),
    }
    price = np.round(regular[:, sku_of] * zone[net.store_reg_idx[store_of]][None, :] * (1 - promo_disc / 100.0), 2)
    on_promo = promo_disc > 0
    del promo_disc, steps

    # ---- true demand ---------------------------------------------------------------------------------------
    weekly = 1 + cp[:, 2][None, :] * WEEKLY_SHAPE[dow][:, None] * 0.6  # (T, S)
    yearly = np.exp(cp[:, 3][None, :] * np.cos(2 * np.pi * (doy[:, None] - cp[:, 4][None, :]) / 365.25))
    trend = np.exp(trend_slope[None, :] * (day / 365.25)[:, None])
    sku_day = (weekly * yearly * trend).astype(np.float32)  # (T, S)
    temp_store = ((net.temperature[:, net.store_reg_idx] - 15) / 10).astype(np.float32)  # (T, L)
    rain_store = np.log1p(net.rain[:, net.store_reg_idx]).astype(np.float32)
    cpf = cp.astype(np.float32)
    weather_eff = np.exp(cpf[sku_of, 5][None, :] * temp_store[:, store_of]
                         + cpf[sku_of, 6][None, :] * rain_store[:, store_of])  # (T, N)
    gi_series = gi_of_sku[sku_of]
    event_eff = net.lift.astype(np.float32)[:, net.store_reg_idx[store_of], gi_series]  # (T, N)
    base_rate = (series_rate[None, :].astype(np.float32) * sku_day[:, sku_of] * weather_eff * event_eff
                 * net.traffic_noise.astype(np.float32)[:, store_of])  # rate at base price, no promotion
    del weather_eff, event_eff
    price_eff = ((price / base_price[sku_of][None, :]) ** elasticity[sku_of][None, :]).astype(np.float32)
    rate = base_rate * price_eff
    del price_eff
    rate *= np.where(on_promo, promo_lift[sku_of][None, :].astype(np.float32), np.float32(1.0))
    active = day[:, None] >= launch[None, :]  # (T, S)
    inactive = ~active[:, sku_of]
    rate[inactive] = 0.0
    base_rate[inactive] = 0.0
    del inactive
    k_disp = 3.0
    demand = rng.poisson(rate * (rng.standard_gamma(k_disp, rate.shape, dtype=np.float32) / np.float32(k_disp)))
    demand = demand.astype(np.float32)

    # ---- inventory simulation (loop over observed days, vectorized over the block's series) ----------------
    SW = S * W
    lead_store, lead_wh, review = LEAD_STORE_DAYS, LEAD_WAREHOUSE_DAYS, REVIEW_DAYS
    review_day = store_of % review
    order_bias = np.exp(rng.normal(0, 0.45, N))  # some series systematically over-, some under-ordered
    est = np.maximum(rate[: min(28, n_obs)].mean(axis=0), 0.02)  # store's demand estimate (EWMA of sales)
    cover = review + lead_store + 4
    on_hand = np.round(est * cover * order_bias)
    pipe_store = np.zeros((lead_store + 1, N))
    wh_key = sku_of * W + net.store_wh[store_of]
    wh_on_hand = np.round(np.bincount(wh_key, weights=est * 30, minlength=SW))
    pipe_wh = np.zeros((lead_wh + 1, SW))
    sales_units = np.zeros((n_obs, N), dtype=np.float32)
    oh_hist = np.zeros((n_obs, N), dtype=np.float32)
    it_hist = np.zeros((n_obs, N), dtype=np.float32)
    wh_oh_hist = np.zeros((n_obs, SW), dtype=np.float32)
    wh_it_hist = np.zeros((n_obs, SW), dtype=np.float32)
    disrupt = rng.random(N) < 0.05  # a few series lose supply in the final weeks
    # a misallocated delivery near the end leaves some stores with far more than they can sell soon
    overload = (rng.random(N) < 0.10) & ~disrupt
    overload_extra = rng.uniform(30, 60, N)
    overload_day = max(n_obs - 12, 0)
    active_series = active[:, sku_of]
    for t in range(n_obs):
        on_hand += pipe_store[0]
        pipe_store[:-1] = pipe_store[1:]
        pipe_store[-1] = 0
        wh_on_hand += pipe_wh[0]
        pipe_wh[:-1] = pipe_wh[1:]
        pipe_wh[-1] = 0
        sold = np.minimum(demand[t], on_hand)
        on_hand -= sold
        sales_units[t] = sold
        est = 0.9 * est + 0.1 * np.maximum(sold, rate[t] * (sold < demand[t]))  # stock-aware estimate
        is_active = active_series[t]
        in_pipe = pipe_store.sum(axis=0)
        order = np.where((review_day == t % review) & is_active,
                         np.maximum(np.round(est * cover * order_bias) - on_hand - in_pipe, 0), 0)
        if t > n_obs - 21:
            order = np.where(disrupt, 0, order)
        if t == overload_day:
            extra = np.where(overload & is_active, np.round(est * overload_extra), 0)
            extra = np.minimum(extra, np.floor(wh_on_hand[wh_key] / L))
            wh_on_hand -= np.bincount(wh_key, weights=extra, minlength=SW)
            pipe_store[lead_store - 1] += extra
        requested = np.bincount(wh_key, weights=order, minlength=SW)
        ratio = np.where(requested > 0, np.minimum(1.0, wh_on_hand / np.maximum(requested, 1e-9)), 0.0)
        shipped = np.floor(order * ratio[wh_key])
        wh_on_hand -= np.bincount(wh_key, weights=shipped, minlength=SW)
        pipe_store[lead_store - 1] += shipped
        if t % review == 0:
            wh_need = np.bincount(wh_key, weights=est, minlength=SW) * (lead_wh + 2 * review + 7)
            pipe_wh[lead_wh - 1] += np.maximum(np.round(wh_need - wh_on_hand - pipe_wh.sum(axis=0)), 0)
        oh_hist[t] = on_hand
        it_hist[t] = pipe_store.sum(axis=0)
        wh_oh_hist[t] = wh_on_hand
        wh_it_hist[t] = pipe_wh.sum(axis=0)

    # ---- rows, ordered by sku_id, date, location_id --------------------------------------------------------
    def series_rows(n_days: int, n_loc: int) -> tuple[np.ndarray | None, _Ids, np.ndarray, _Ids]:
        keep = None if active[:n_days].all() else np.repeat(active[:n_days].T.ravel(), n_loc)
        sku = _Ids(np.repeat(np.arange(S, dtype=np.int32), n_days * n_loc), sku_ids).take(keep)
        date = np.tile(np.repeat(dates.values[:n_days], n_loc), S)
        loc = _Ids(np.tile(np.arange(n_loc, dtype=np.int32), S * n_days), net.location_ids).take(keep)
        return keep, sku, (date if keep is None else date[keep]), loc

    def col(a: np.ndarray, keep: np.ndarray | None, n_loc: int = L, dtype: str = "float64") -> np.ndarray:
        flat = _to_sku_date_loc(a, S, n_loc)
        return (flat if keep is None else flat[keep]).astype(dtype, copy=False)

    keep, sku, date, loc = series_rows(n_obs, L)
    sales = {"date": date, "sku_id": sku, "location_id": loc, "units": col(sales_units, keep),
             "price": col(price[:n_obs], keep), "on_promotion": col(on_promo[:n_obs], keep, dtype="bool")}
    keep_i, sku_i, date_i, loc_i = series_rows(n_obs, L + W)

    def both(st, wh):  # stores then warehouses per (sku, day): location codes 0..L-1 stores, L..L+W-1 warehouses
        return np.concatenate([st.reshape(n_obs, S, L), wh.reshape(n_obs, S, W)], axis=2).reshape(n_obs, -1)
    inventory = {"date": date_i, "sku_id": sku_i, "location_id": loc_i,
                 "on_hand": col(both(oh_hist, wh_oh_hist), keep_i, L + W),
                 "in_transit": col(both(it_hist, wh_it_hist), keep_i, L + W)}
    keep_t, sku_t, date_t, loc_t = series_rows(T, L)
    truth_demand = {
        "date": date_t, "sku_id": sku_t, "location_id": loc_t,
        "demand": col(demand, keep_t),  # realized demand before censoring
        "expected_demand": col(rate, keep_t),  # mean demand at the price charged that day
        "base_rate": col(base_rate, keep_t),  # mean demand at base price without promotion
        "price": col(price, keep_t), "on_promotion": col(on_promo, keep_t, dtype="bool"),
    }
    # the replenishment policy's state after the last observed day, so a simulation (core/world.py) can go on
    # from exactly where the history stops: pipeline column k arrives at the start of the k-th day after it
    store_state = {"sku_id": _Ids(sku_of.astype(np.int32), sku_ids),
                   "location_id": _Ids(store_of.astype(np.int32), net.location_ids),
                   "on_hand": on_hand.astype("float64"), "demand_estimate": est.astype("float64"),
                   "order_bias": order_bias, "review_day": review_day.astype("int64"),
                   **{f"pipeline_{k}": pipe_store[k].astype("float64") for k in range(lead_store + 1)}}
    wh_sku, wh_loc = np.divmod(np.arange(SW), W)
    warehouse_state = {"sku_id": _Ids(wh_sku.astype(np.int32), sku_ids),
                       "location_id": _Ids((L + wh_loc).astype(np.int32), net.location_ids),
                       "on_hand": wh_on_hand.astype("float64"),
                       **{f"pipeline_{k}": pipe_wh[k].astype("float64") for k in range(lead_wh + 1)}}
    catalog = {"sku_id": _Ids(np.arange(S, dtype=np.int32), sku_ids), "sku_group": sku_group,
               "category": category, "description": description, "unit_cost": unit_cost, "base_price": base_price,
               "msrp": msrp, "map_price": map_price, "case_pack": case_pack}
    truth_sku = {"sku_id": _Ids(np.arange(S, dtype=np.int32), sku_ids), "sku_group": sku_group,
                 "category": category, "elasticity": elasticity, "promo_lift": promo_lift,
                 "launch_date": dates.values[launch], "temperature_coef_per_10c": cp[:, 5],
                 "rain_coef_per_log1p_mm": cp[:, 6], "weekend_amplitude": cp[:, 2]}
    return {"catalog": catalog, "promotions": promotions, "sales": sales, "inventory": inventory,
            "truth/demand": truth_demand, "truth/sku": truth_sku, "truth/store_state": store_state,
            "truth/warehouse_state": warehouse_state}


def _blocks(net: _Network) -> Iterator[dict[str, dict[str, np.ndarray | _Ids]]]:
    for b in range(net.n_blocks):
        yield _block(net, b)


def _frame(parts: list[dict[str, np.ndarray | _Ids]]) -> pd.DataFrame:
    cols = {}
    for name in parts[0]:
        arrays = [p[name].to_numpy() if isinstance(p[name], _Ids) else p[name] for p in parts]
        cols[name] = np.concatenate(arrays) if len(arrays) > 1 else arrays[0]
    return pd.DataFrame(cols)


def generate_demo(n_skus: int = DemoSize.n_skus, n_stores: int = DemoSize.n_stores,
                  n_warehouses: int = DemoSize.n_warehouses, n_days: int = DemoSize.n_days,
                  seed: int = DemoSize.seed, end_date: str = DEFAULT_END_DATE, horizon_days: int = HORIZON_DAYS,
                  new_sku_share: float = 0.04, block_skus: int = BLOCK_SKUS) -> DemoData:
    """Generate a demo data set in memory: `n_days` observed days ending `end_date`, calendars and truth
    `horizon_days` on. For large sets use `write_demo_streaming` (same data, bounded memory)."""
    net = _network(n_skus, n_stores, n_warehouses, n_days, seed, end_date, horizon_days, new_sku_share, block_skus)
    parts: dict[str, list] = {t: [] for t in BLOCK_TABLES}
    for blk in _blocks(net):
        for t in BLOCK_TABLES:
            parts[t].append(blk[t])
    frames = {t: _frame(p) for t, p in parts.items()}
    tables = {"catalog": frames["catalog"], "locations": net.tables["locations"], "sales": frames["sales"],
              "inventory": frames["inventory"], "promotions": frames["promotions"], "events": net.tables["events"],
              "weather": net.tables["weather"], "traffic": net.tables["traffic"], "lanes": net.tables["lanes"]}
    truth = {"demand": frames["truth/demand"], "sku": frames["truth/sku"], "store_state": frames["truth/store_state"],
             "warehouse_state": frames["truth/warehouse_state"], **net.truth}
    return DemoData(tables=tables, truth=truth)


# ---- Parquet --------------------------------------------------------------------------------------------------
_ID_COLUMNS = {"sku_id", "location_id", "from_location", "to_location", "sku_group", "category", "kind", "region",
               "event_type"}  # low-cardinality strings, written as dictionary columns
_NO_DICTIONARY = {"expected_demand", "base_rate", "description", "visitors", "temperature_c", "elasticity",
                  "promo_lift"}  # near-unique values: dictionary pages would only be built and thrown away


def _used_labels(ids: _Ids) -> _Ids:
    """The same ids with only the labels they use: pyarrow writes a dictionary column's labels as the row group's
    dictionary page, used or not, and a reader tells a row group's SKUs by that dictionary."""
    used = np.unique(ids.codes)
    return _Ids(np.searchsorted(used, ids.codes).astype(np.int32), ids.labels[used])


def _arrow_table(cols: dict[str, np.ndarray | _Ids]):
    import pyarrow as pa

    arrays, names = [], []
    for name, v in cols.items():
        if isinstance(v, _Ids):
            arr = pa.DictionaryArray.from_arrays(pa.array(v.codes, pa.int32()), pa.array(v.labels, pa.string()))
        elif name in _ID_COLUMNS:
            arr = pa.array(v, pa.string()).dictionary_encode()
        elif np.issubdtype(np.asarray(v).dtype, np.datetime64):
            arr = pa.array(np.asarray(v).astype("datetime64[ns]"), pa.timestamp("ns"))
        else:
            arr = pa.array(v)
        arrays.append(arr)
        names.append(name)
    return pa.table(arrays, names=names)


# the observed SKU-keyed tables a partition reads by SKU group (loading.SKU_KEYED): written clustered by group
GROUP_CLUSTERED = ("sales", "inventory", "promotions")


class _ParquetSink:
    """One Parquet file written in row groups to `<target>.tmp`, renamed onto `target` by `commit`."""

    def __init__(self, target: str):
        self.target, self.tmp, self.writer, self.rows = target, target + ".tmp", None, 0

    def write(self, cols: dict[str, np.ndarray | _Ids]) -> None:
        import pyarrow.parquet as pq

        table = _arrow_table(cols)
        if self.writer is None:
            os.makedirs(os.path.dirname(self.target) or ".", exist_ok=True)
            self.writer = pq.ParquetWriter(self.tmp, table.schema, compression="snappy",
                                           use_dictionary=[c for c in table.column_names if c not in _NO_DICTIONARY])
        self.writer.write_table(table, row_group_size=1 << 20)
        self.rows += table.num_rows

    def write_by_group(self, cols: dict[str, np.ndarray | _Ids], group_of_row: np.ndarray) -> None:
        """Write `cols` as row groups of one SKU group each (groups in name order, rows in their order within a
        group): a reader of one group then decodes only its own row groups (`loading._row_groups_holding`)."""
        names, rank = np.unique(group_of_row, return_inverse=True)
        order = np.argsort(rank, kind="stable")
        bounds = np.searchsorted(rank[order], np.arange(len(names) + 1))
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            rows = order[lo:hi]
            self.write({c: _used_labels(v.take(rows)) if isinstance(v, _Ids) else v[rows] for c, v in cols.items()})

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

    def commit(self) -> None:
        os.replace(self.tmp, self.target)

    def discard(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if os.path.exists(self.tmp):
            os.remove(self.tmp)


def write_demo_streaming(out: str, n_skus: int = DemoSize.n_skus, n_stores: int = DemoSize.n_stores,
                         n_warehouses: int = DemoSize.n_warehouses, n_days: int = DemoSize.n_days,
                         seed: int = DemoSize.seed, end_date: str = DEFAULT_END_DATE, horizon_days: int = HORIZON_DAYS,
                         new_sku_share: float = 0.04, block_skus: int = BLOCK_SKUS) -> dict[str, int]:
    """Write the demo data set that `generate_demo` returns for the same arguments, one SKU block at a time, as
    `<out>/<table>.parquet` and `<out>/truth/<name>.parquet` (the layout of `write_demo`, read by `load_tables`).

    Memory holds one block's rows at a time. The tables a partition reads by SKU group (GROUP_CLUSTERED) hold
    each block's rows as row groups of one SKU group each, in group name order; within a group, rows keep the
    block's order (sku_id, date, location_id for sales and inventory). The demo's SKU ids interleave the groups, so
    no sku_id statistics could tell the groups apart: the reader skips a row group whose sku_id dictionary holds
    none of the group's SKUs, and a group's rows come back in the order an unclustered file would give them.
    The other tables are sorted by sku_id then date (then location_id), at least one row group per block.
    Ids are dictionary columns, dates timestamp[ns], prices float64. Every file is written to `<file>.tmp` and
    renamed into place once all blocks are written, so a failure leaves the previous files. Returns rows written
    per table ("truth/demand"...).
    """
    if str(out).startswith("s3://"):
        raise ValueError(f"write_demo_streaming writes to a local folder, not {out}: write locally, then upload")
    net = _network(n_skus, n_stores, n_warehouses, n_days, seed, end_date, horizon_days, new_sku_share, block_skus)
    small = {**net.tables, **{f"truth/{k}": v for k, v in net.truth.items()}}
    sinks = {t: _ParquetSink(os.path.join(out, *t.split("/")) + ".parquet") for t in (*BLOCK_TABLES, *small)}
    try:
        for t, frame in small.items():
            sinks[t].write({c: frame[c].to_numpy() for c in frame.columns})
        for blk in _blocks(net):
            catalog = blk["catalog"]
            sku_index, sku_group = pd.Index(catalog["sku_id"].to_numpy()), np.asarray(catalog["sku_group"])
            for t in BLOCK_TABLES:
                if t in GROUP_CLUSTERED:
                    ids = blk[t]["sku_id"]
                    sinks[t].write_by_group(blk[t], sku_group[sku_index.get_indexer(ids.labels)][ids.codes])
                else:
                    sinks[t].write(blk[t])
            del blk  # release the block's rows before generating the next one
        for s in sinks.values():
            s.close()
    except BaseException:
        for s in sinks.values():
            s.discard()
        raise
    for s in sinks.values():
        s.commit()
    return {t: s.rows for t, s in sinks.items()}


def write_demo(data: DemoData, out: str) -> list[str]:
    """Write the observed tables to `out/` and the truth to `out/truth/` as Parquet."""
    from .loading import write_tables

    files = write_tables(data.tables, out)
    files += write_tables(data.truth, f"{out.rstrip('/')}/truth")
    return files
