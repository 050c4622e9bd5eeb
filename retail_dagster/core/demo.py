"""Seeded, vectorized demo data generator with recorded ground truth.

Demand per SKU-location-day is a gamma-Poisson draw around
    rate = base * weekly(category) * yearly(category) * trend * event lift * weather effect * traffic noise
           * (price / base_price) ** elasticity * promo_lift ** on_promotion
Inventory is simulated day by day (a loop over days, vectorized over every series) with a periodic order-up-to
policy from the warehouses, so stock positions are consistent and sales are censored by stock. The calendars
(promotions, events, weather) and the truth run `horizon_days` past the last observed day so that decisions made
on the last day can be scored against what then happens.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

DEFAULT_END_DATE = "2026-11-24"  # last observed day of the embedded demo; the demo plans the day after
HORIZON_DAYS = 14

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


@dataclass
class DemoData:
    tables: dict[str, pd.DataFrame]  # the observed input tables, following the data contracts
    truth: dict[str, pd.DataFrame]  # ground truth for tests and benchmarks only


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


def generate_demo(n_skus: int = 200, n_stores: int = 6, n_warehouses: int = 1, n_days: int = 730,
                  seed: int = 7, end_date: str = DEFAULT_END_DATE, horizon_days: int = HORIZON_DAYS,
                  new_sku_share: float = 0.04) -> DemoData:
    """Generate a demo data set: `n_days` observed days ending `end_date`, calendars and truth `horizon_days` on."""
    rng = np.random.default_rng(seed)
    end = pd.Timestamp(end_date)
    obs_dates = pd.date_range(end=end, periods=n_days, freq="D")
    dates = pd.date_range(obs_dates[0], periods=n_days + horizon_days, freq="D")
    T = len(dates)

    # ---- catalog -------------------------------------------------------------------------------------------
    group_names = list(GROUPS)
    sku_group = np.array(group_names)[np.arange(n_skus) % len(group_names)]
    rng.shuffle(sku_group)
    category = np.array([GROUPS[g][rng.integers(len(GROUPS[g]))] for g in sku_group])
    cp = np.array([CATEGORY_PARAMS[c] for c in category])  # (n_skus, 7)
    base_price = np.round(cp[:, 0] * np.exp(rng.normal(0, 0.35, n_skus)), 1) + 0.99
    base_price = np.maximum(base_price, 0.99)
    margin = rng.uniform(0.30, 0.50, n_skus)
    unit_cost = np.round(base_price * (1 - margin), 2)
    msrp = np.round(base_price * rng.uniform(1.10, 1.30, n_skus), 2)
    map_price = np.where(rng.random(n_skus) < 0.3, np.round(unit_cost * rng.uniform(1.2, 1.4, n_skus), 2), np.nan)
    map_price = np.minimum(map_price, base_price * 0.85)
    case_pack = rng.choice([1, 2, 4, 6, 12], n_skus, p=[0.3, 0.15, 0.25, 0.2, 0.1])
    elasticity = np.clip(cp[:, 1] + rng.normal(0, 0.35, n_skus), -4.0, -0.3)
    promo_lift = np.exp(rng.normal(np.log(1.25), 0.08, n_skus))
    sku_ids = np.array([f"SKU{i:05d}" for i in range(n_skus)])
    adjectives = ["Classic", "Organic", "Premium", "Value", "Fresh", "Eco", "Family", "Deluxe"]
    description = np.array([f"{adjectives[i % len(adjectives)]} {c.replace('_', ' ')} item {i}"
                            for i, c in enumerate(category)], dtype=object)
    catalog = pd.DataFrame({
        "sku_id": sku_ids, "sku_group": sku_group, "category": category, "description": description,
        "unit_cost": unit_cost, "base_price": base_price, "msrp": msrp, "map_price": map_price,
        "case_pack": case_pack.astype("int64"),
    })

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
    for s in range(n_stores):
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

    # ---- calendars: events, weather, traffic noise ---------------------------------------------------------
    holidays = _holidays(dates)
    local = []
    for r in REGIONS:
        n_local = max(1, int(T / 365 * 5))
        days = rng.choice(T, n_local, replace=False)
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
    grp_index = {g: i for i, g in enumerate(group_names)}
    lift = np.ones((T, n_reg, len(group_names)))
    date_pos = pd.Series(np.arange(T), index=dates)
    for ev in events.itertuples():
        t = date_pos[ev.date]
        regs = range(n_reg) if ev.region == "ALL" else [reg_index[ev.region]]
        for g, gi in grp_index.items():
            l = EVENT_LIFTS[ev.event_type].get(g, 1.0)
            for r in regs:
                lift[t, r, gi] *= l

    # ---- series (sku x store) ------------------------------------------------------------------------------
    S, L = n_skus, n_stores
    sku_of = np.repeat(np.arange(S), L)
    store_of = np.tile(np.arange(L), S)
    N = S * L
    sku_rate = np.exp(rng.normal(-0.35, 1.1, S))
    series_rate = sku_rate[sku_of] * store_size[store_of] * np.exp(rng.normal(0, 0.3, N))
    trend_slope = rng.normal(0, 0.12, S)
    # new SKUs launched near the end of history
    launch = np.zeros(S, dtype=int)
    n_new = int(round(new_sku_share * S))
    if n_new:
        new = rng.choice(S, n_new, replace=False)
        launch[new] = n_days - rng.integers(5, 45, n_new)

    # traffic: store-day noise shared by visitors and demand, so traffic carries signal
    traffic_noise = np.exp(rng.normal(0, 0.12, (T, L)))
    weekday_traffic = np.array([0.9, 0.85, 0.9, 0.95, 1.1, 1.3, 1.1])
    store_reg_idx = np.array([reg_index[r] for r in store_region])
    mean_lift_store = lift[:, store_reg_idx, :].mean(axis=2)  # (T, L)
    rain_store = rain[:, store_reg_idx]
    visitors = (900 * store_size[None, :] * weekday_traffic[dow][:, None] * traffic_noise
                * np.sqrt(mean_lift_store) * np.exp(-0.04 * np.log1p(rain_store)))

    # ---- prices and promotions -----------------------------------------------------------------------------
    # regular price: chain-wide step changes per SKU, plus a small regional zone factor
    steps = np.ones((T, S))
    n_changes = rng.poisson(3.0, S)
    for k in range(int(n_changes.max(initial=0))):
        has = n_changes > k
        when = rng.integers(1, T, S)
        factor = np.exp(rng.normal(0, 0.08, S))
        rows = np.arange(T)[:, None] >= when[None, :]
        steps *= np.where(rows & has[None, :], factor[None, :], 1.0)
    zone = np.array([1.0, 0.97, 1.03])
    regular = base_price[None, :] * steps  # (T, S)
    regular = np.clip(regular, np.maximum(unit_cost * 1.15, np.nan_to_num(map_price, nan=0)), msrp)
    # promotions: slots of 42 days, a promo in a slot with prob 0.35, applied to all stores or to one region
    slot = 42
    n_slots = T // slot
    promo_rows = []
    promo_disc = np.zeros((T, N), dtype=np.float32)
    has_promo = rng.random((n_slots, S)) < 0.35
    for j in range(n_slots):
        skus = np.flatnonzero(has_promo[j])
        if not len(skus):
            continue
        start = j * slot + rng.integers(0, slot - 14, len(skus))
        dur = rng.integers(3, 14, len(skus))
        disc = rng.choice([10, 15, 20, 25, 30], len(skus))
        region_only = rng.random(len(skus)) < 0.4
        region_pick = rng.integers(0, n_reg, len(skus))
        for k, sk in enumerate(skus):
            stores = np.flatnonzero(store_reg_idx == region_pick[k]) if region_only[k] else np.arange(L)
            if sk < S and launch[sk] > start[k]:
                continue
            for st in stores:
                promo_disc[start[k]:start[k] + dur[k], sk * L + st] = disc[k]
                promo_rows.append((sku_ids[sk], store_ids[st], dates[start[k]], dates[start[k] + dur[k] - 1],
                                   float(disc[k])))
    promotions = pd.DataFrame(promo_rows, columns=["sku_id", "location_id", "start_date", "end_date", "discount_pct"])
    price = regular[:, sku_of] * zone[store_reg_idx[store_of]][None, :] * (1 - promo_disc / 100.0)
    price = np.round(price, 2)
    on_promo = promo_disc > 0

    # ---- true demand ---------------------------------------------------------------------------------------
    gi_of_sku = np.array([grp_index[g] for g in sku_group])
    weekly_amp = cp[:, 2]
    weekly_shape = np.array([-0.3, -0.4, -0.25, -0.1, 0.3, 1.0, 0.45])  # Mon..Sun
    weekly = 1 + weekly_amp[None, :] * weekly_shape[dow][:, None] * 0.6  # (T, S)
    yearly = np.exp(cp[:, 3][None, :] * np.cos(2 * np.pi * (doy[:, None] - cp[:, 4][None, :]) / 365.25))
    years_from_start = np.arange(T) / 365.25
    trend = np.exp(trend_slope[None, :] * years_from_start[:, None])
    sku_day = (weekly * yearly * trend).astype(np.float32)  # (T, S)
    temp_store = temperature[:, store_reg_idx]  # (T, L)
    weather_eff = np.exp(cp[sku_of, 5][None, :] * ((temp_store[:, store_of] - 15) / 10)
                         + cp[sku_of, 6][None, :] * np.log1p(rain_store[:, store_of])).astype(np.float32)
    event_eff = lift[:, store_reg_idx[store_of], gi_of_sku[sku_of]].astype(np.float32)  # (T, N)
    price_eff = ((price / base_price[sku_of][None, :]) ** elasticity[sku_of][None, :]).astype(np.float32)
    promo_eff = np.where(on_promo, promo_lift[sku_of][None, :], 1.0).astype(np.float32)
    base_rate = (series_rate[None, :].astype(np.float32) * sku_day[:, sku_of] * weather_eff * event_eff
                 * traffic_noise[:, store_of].astype(np.float32))  # rate at base price, no promo
    rate = base_rate * price_eff * promo_eff
    active = np.arange(T)[:, None] >= launch[sku_of][None, :]
    rate = np.where(active, rate, 0.0).astype(np.float32)
    base_rate = np.where(active, base_rate, 0.0).astype(np.float32)
    k_disp = 3.0
    demand = rng.poisson(rate * rng.gamma(k_disp, 1 / k_disp, rate.shape).astype(np.float32)).astype(np.float32)

    # ---- inventory simulation (loop over observed days, vectorized over series) ----------------------------
    n_obs = n_days
    W = n_warehouses
    lead_store = 2
    lead_wh = 7
    review = 7
    review_day = store_of % review
    order_bias = np.exp(rng.normal(0, 0.45, N))  # some series systematically over-, some under-ordered
    est = np.maximum(rate[: min(28, n_obs)].mean(axis=0), 0.02)  # store's demand estimate (EWMA of sales)
    cover = review + lead_store + 4
    on_hand = np.round(est * cover * order_bias)
    pipe_store = np.zeros((lead_store + 1, N))
    wh_of_series = store_wh[store_of]
    wh_key = sku_of * W + wh_of_series
    wh_on_hand = np.round(np.bincount(wh_key, weights=est * 30, minlength=S * W))
    pipe_wh = np.zeros((lead_wh + 1, S * W))
    sales_units = np.zeros((n_obs, N), dtype=np.float32)
    oh_hist = np.zeros((n_obs, N), dtype=np.float32)
    it_hist = np.zeros((n_obs, N), dtype=np.float32)
    wh_oh_hist = np.zeros((n_obs, S * W), dtype=np.float32)
    wh_it_hist = np.zeros((n_obs, S * W), dtype=np.float32)
    disrupt = rng.random(N) < 0.05  # a few series lose supply in the final weeks
    # a misallocated delivery near the end leaves some stores with far more than they can sell soon
    overload = (rng.random(N) < 0.10) & ~disrupt
    overload_day = max(n_obs - 12, 0)
    for t in range(n_obs):
        on_hand += pipe_store[0]
        pipe_store = np.roll(pipe_store, -1, axis=0)
        pipe_store[-1] = 0
        wh_on_hand += pipe_wh[0]
        pipe_wh = np.roll(pipe_wh, -1, axis=0)
        pipe_wh[-1] = 0
        sold = np.minimum(demand[t], on_hand)
        on_hand -= sold
        sales_units[t] = sold
        est = 0.9 * est + 0.1 * np.maximum(sold, rate[t] * (sold < demand[t]))  # stock-aware estimate
        is_active = active[t]
        order = np.where((review_day == t % review) & is_active,
                         np.maximum(np.round(est * cover * order_bias) - on_hand - pipe_store.sum(axis=0), 0), 0)
        if t > n_obs - 21:
            order = np.where(disrupt, 0, order)
        if t == overload_day:
            extra = np.where(overload & is_active, np.round(est * rng.uniform(30, 60, N)), 0)
            extra = np.minimum(extra, np.floor(wh_on_hand[wh_key] / max(L, 1)))
            wh_on_hand -= np.bincount(wh_key, weights=extra, minlength=S * W)
            pipe_store[lead_store - 1] += extra
        requested = np.bincount(wh_key, weights=order, minlength=S * W)
        ratio = np.where(requested > 0, np.minimum(1.0, wh_on_hand / np.maximum(requested, 1e-9)), 0.0)
        shipped = np.floor(order * ratio[wh_key])
        wh_on_hand -= np.bincount(wh_key, weights=shipped, minlength=S * W)
        pipe_store[lead_store - 1] += shipped
        if t % review == 0:
            wh_need = np.bincount(wh_key, weights=est, minlength=S * W) * (lead_wh + 2 * review + 7)
            pipe_wh[lead_wh - 1] += np.maximum(np.round(wh_need - wh_on_hand - pipe_wh.sum(axis=0)), 0)
        oh_hist[t] = on_hand
        it_hist[t] = pipe_store.sum(axis=0)
        wh_oh_hist[t] = wh_on_hand
        wh_it_hist[t] = pipe_wh.sum(axis=0)

    # ---- observed tables -----------------------------------------------------------------------------------
    obs_active = active[:n_obs]
    t_idx, n_idx = np.nonzero(obs_active)
    sku_store_sku = sku_ids[sku_of]
    sku_store_loc = store_ids[store_of]
    sales = pd.DataFrame({
        "date": obs_dates.values[t_idx],
        "sku_id": sku_store_sku[n_idx],
        "location_id": sku_store_loc[n_idx],
        "units": sales_units[t_idx, n_idx].astype("float64"),
        "price": price[t_idx, n_idx].astype("float64"),
        "on_promotion": on_promo[t_idx, n_idx],
    })
    inv_store = pd.DataFrame({
        "date": obs_dates.values[t_idx], "sku_id": sku_store_sku[n_idx], "location_id": sku_store_loc[n_idx],
        "on_hand": oh_hist[t_idx, n_idx].astype("float64"), "in_transit": it_hist[t_idx, n_idx].astype("float64"),
    })
    sku_wh = np.repeat(np.arange(S), W)
    wh_col = np.tile(np.arange(W), S)
    wh_active = (np.arange(n_obs)[:, None] >= launch[sku_wh][None, :])
    tw, kw = np.nonzero(wh_active)
    inv_wh = pd.DataFrame({
        "date": obs_dates.values[tw], "sku_id": sku_ids[sku_wh[kw]], "location_id": wh_ids[wh_col[kw]],
        "on_hand": wh_oh_hist[tw, kw].astype("float64"), "in_transit": wh_it_hist[tw, kw].astype("float64"),
    })
    inventory = pd.concat([inv_store, inv_wh], ignore_index=True)
    traffic = pd.DataFrame({
        "date": np.repeat(obs_dates.values, L), "location_id": np.tile(store_ids, n_obs),
        "visitors": np.round(visitors[:n_obs].ravel()),
    })

    tables = {
        "catalog": catalog, "locations": locations, "sales": sales, "inventory": inventory,
        "promotions": promotions, "events": events, "weather": weather, "traffic": traffic, "lanes": lanes,
    }

    # ---- truth ---------------------------------------------------------------------------------------------
    ta, na = np.nonzero(active)
    truth_demand = pd.DataFrame({
        "date": dates.values[ta], "sku_id": sku_store_sku[na], "location_id": sku_store_loc[na],
        "demand": demand[ta, na].astype("float64"),  # realized demand before censoring
        "expected_demand": rate[ta, na].astype("float64"),  # mean demand at the price charged that day
        "base_rate": base_rate[ta, na].astype("float64"),  # mean demand at base price without promotion
        "price": price[ta, na].astype("float64"),
        "on_promotion": on_promo[ta, na],
    })
    truth_sku = pd.DataFrame({
        "sku_id": sku_ids, "sku_group": sku_group, "category": category, "elasticity": elasticity,
        "promo_lift": promo_lift, "launch_date": dates.values[launch],
        "temperature_coef_per_10c": cp[:, 5], "rain_coef_per_log1p_mm": cp[:, 6], "weekend_amplitude": cp[:, 2],
    })
    event_effects = pd.DataFrame([(e, g, EVENT_LIFTS[e].get(g, 1.0)) for e in EVENT_LIFTS for g in group_names],
                                 columns=["event_type", "sku_group", "lift"])
    truth = {"demand": truth_demand, "sku": truth_sku, "event_effects": event_effects,
             "weekday_shape": pd.DataFrame({"dayofweek": np.arange(7), "shape": weekly_shape})}
    return DemoData(tables=tables, truth=truth)


def write_demo(data: DemoData, out: str) -> list[str]:
    """Write the observed tables to `out/` and the truth to `out/truth/` as Parquet."""
    from .loading import write_tables

    files = write_tables(data.tables, out)
    files += write_tables(data.truth, f"{out.rstrip('/')}/truth")
    return files


def read_truth(path: str) -> dict[str, pd.DataFrame]:
    import os

    folder = os.path.join(path, "truth")
    return {f[:-8]: pd.read_parquet(os.path.join(folder, f)) for f in os.listdir(folder) if f.endswith(".parquet")}
