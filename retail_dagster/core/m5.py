"""Source adapter for the Kaggle M5 (Walmart) files: maps sales_train_*.csv, calendar.csv and sell_prices.csv onto
the project's input table contracts, so the engine and the backtest run on real retail data.

Assumptions (M5 lacks these facts): unit_cost = UNIT_COST_SHARE x base price (an assumed 40% gross margin),
base_price = the item's median weekly price, msrp = its highest price, case_pack 1, no promotions, inventory,
weather, traffic or lanes (empty tables with the contract columns); SNAP days become per-state events.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from .contracts import CONTRACTS, validate_tables

UNIT_COST_SHARE = 0.6  # assumed: M5 has no costs, unit cost = 60% of the base price
SALES_FILES = ("sales_train_evaluation.csv", "sales_train_validation.csv")
ID_COLUMNS = ["id", "item_id", "dept_id", "cat_id", "store_id", "state_id"]


def _empty(table: str) -> pd.DataFrame:
    return pd.DataFrame({c.name: pd.Series(dtype="datetime64[ns]" if c.kind == "date" else
                                           "float64" if c.kind in ("float", "int") else
                                           bool if c.kind == "bool" else object)
                         for c in CONTRACTS[table].columns})


def _nearest_fill(p: np.ndarray) -> np.ndarray:
    """Fill NaN along axis 1 with the nearest known value (earlier one on ties); rows stay NaN if all NaN."""
    n = p.shape[1]
    idx = np.arange(n)
    known = ~np.isnan(p)
    prev = np.maximum.accumulate(np.where(known, idx, -1), axis=1)
    nxt = np.minimum.accumulate(np.where(known, idx, n)[:, ::-1], axis=1)[:, ::-1]
    use_prev = (prev >= 0) & ((nxt >= n) | (idx - prev <= nxt - idx))
    src = np.where(use_prev, prev, np.where(nxt < n, nxt, 0))
    out = np.take_along_axis(p, src, axis=1)
    return np.where(known | (prev >= 0) | (nxt < n), out, np.nan)


def load_m5(directory: str, stores: list[str] | None = None, max_items: int | None = None,
            validate: bool = True) -> dict[str, pd.DataFrame]:
    """Read the M5 files in `directory` into contract tables (see the module docstring for the assumptions).

    `stores`: keep these store_ids only; `max_items`: keep the first N item_ids (sorted) to make a small set.
    """
    sales_file = next((os.path.join(directory, f) for f in SALES_FILES if os.path.exists(os.path.join(directory, f))),
                      None)
    if sales_file is None:
        raise FileNotFoundError(f"no {' or '.join(SALES_FILES)} in {directory}")
    for f in ("calendar.csv", "sell_prices.csv"):
        if not os.path.exists(os.path.join(directory, f)):
            raise FileNotFoundError(f"M5 file {f} not found in {directory}")

    header = pd.read_csv(sales_file, nrows=0).columns
    missing = [c for c in ID_COLUMNS[1:] if c not in header]
    if missing:
        raise ValueError(f"{sales_file}: missing columns {missing}")
    dcols = [c for c in header if c.startswith("d_")]
    wide = pd.read_csv(sales_file, usecols=ID_COLUMNS[1:] + dcols,
                       dtype={**{c: str for c in ID_COLUMNS[1:]}, **{c: np.float32 for c in dcols}})
    if stores is not None:
        wide = wide[wide["store_id"].isin(list(stores))]
    if max_items is not None:
        keep = sorted(wide["item_id"].unique())[:max_items]
        wide = wide[wide["item_id"].isin(keep)]
    wide = wide.sort_values(["item_id", "store_id"]).reset_index(drop=True)
    if wide.empty:
        raise ValueError(f"{sales_file}: no series left after the store/item filters (stores={stores})")

    cal = pd.read_csv(os.path.join(directory, "calendar.csv"), dtype=str)
    cal["date"] = pd.to_datetime(cal["date"])
    cal["wm_yr_wk"] = cal["wm_yr_wk"].astype(int)
    day = cal.set_index("d")
    unknown = [c for c in dcols if c not in day.index]
    if unknown:
        raise ValueError(f"{sales_file}: day columns not in calendar.csv, e.g. {unknown[:3]}")
    dates = day.loc[dcols, "date"].to_numpy()
    weeks = day.loc[dcols, "wm_yr_wk"].to_numpy()

    prices = pd.read_csv(os.path.join(directory, "sell_prices.csv"),
                         dtype={"store_id": str, "item_id": str, "wm_yr_wk": int, "sell_price": float})
    prices = prices[prices["store_id"].isin(wide["store_id"].unique()) & prices["item_id"].isin(wide["item_id"])]
    # price per series x week (all calendar weeks), nearest known week fills gaps, nothing before the first price
    week_list = np.sort(cal["wm_yr_wk"].unique())
    sidx = pd.MultiIndex.from_frame(wide[["item_id", "store_id"]])
    r = sidx.get_indexer(pd.MultiIndex.from_arrays([prices["item_id"], prices["store_id"]]))
    w = np.searchsorted(week_list, prices["wm_yr_wk"].to_numpy())
    ok = r >= 0
    pw = np.full((len(wide), len(week_list)), np.nan)
    pw[r[ok], w[ok]] = prices["sell_price"].to_numpy()[ok]
    first_week = np.where(np.isnan(pw).all(axis=1), len(week_list), np.argmax(~np.isnan(pw), axis=1))
    pw = _nearest_fill(pw)
    day_week = np.searchsorted(week_list, weeks)
    price = pw[:, day_week]  # (series, days)
    on_sale = day_week[None, :] >= first_week[:, None]

    units = wide[dcols].to_numpy(dtype=np.float64)
    rr, cc = np.nonzero(on_sale & ~np.isnan(units))
    sales = pd.DataFrame({
        "date": dates[cc], "sku_id": wide["item_id"].to_numpy()[rr], "location_id": wide["store_id"].to_numpy()[rr],
        "units": units[rr, cc], "price": price[rr, cc], "on_promotion": np.zeros(len(rr), dtype=bool),
    }).sort_values(["date", "sku_id", "location_id"], kind="stable").reset_index(drop=True)

    item_prices = prices.groupby("item_id")["sell_price"]
    items = wide.drop_duplicates("item_id")[["item_id", "cat_id", "dept_id"]].set_index("item_id")
    base = item_prices.median().reindex(items.index)
    top = item_prices.max().reindex(items.index)
    # items never priced at the kept stores have no sales rows either; price them at 1.0 to keep the catalog valid
    base, top = base.fillna(1.0), top.fillna(1.0)
    catalog = pd.DataFrame({
        "sku_id": items.index.to_numpy(dtype=object), "sku_group": items["cat_id"].to_numpy(dtype=object),
        "category": items["dept_id"].to_numpy(dtype=object), "description": items.index.to_numpy(dtype=object),
        "unit_cost": np.round(base.to_numpy() * UNIT_COST_SHARE, 2), "base_price": base.to_numpy(),
        "msrp": np.maximum(top.to_numpy(), base.to_numpy()), "map_price": np.nan, "case_pack": 1,
    })
    loc = wide.drop_duplicates("store_id")[["store_id", "state_id"]].sort_values("store_id")
    locations = pd.DataFrame({"location_id": loc["store_id"].to_numpy(dtype=object), "kind": "store",
                              "region": loc["state_id"].to_numpy(dtype=object), "capacity_units": np.nan})

    # events: named events apply to every state; SNAP days are per-state events
    ev = []
    for i in (1, 2):
        e = cal.dropna(subset=[f"event_name_{i}"])
        ev.append(pd.DataFrame({"date": e["date"], "region": "ALL", "event_name": e[f"event_name_{i}"],
                                "event_type": e[f"event_type_{i}"].fillna("event")}))
    for state in sorted(loc["state_id"].unique()):
        col = f"snap_{state}"
        if col in cal.columns:
            e = cal[cal[col].astype(str) == "1"]
            ev.append(pd.DataFrame({"date": e["date"], "region": state, "event_name": "SNAP", "event_type": "SNAP"}))
    events = pd.concat(ev, ignore_index=True).drop_duplicates(["date", "region", "event_name"])
    events = events.sort_values(["date", "region", "event_name"]).reset_index(drop=True)

    tables = {"catalog": catalog, "locations": locations, "sales": sales, "inventory": _empty("inventory"),
              "promotions": _empty("promotions"), "events": events, "weather": _empty("weather"),
              "traffic": _empty("traffic"), "lanes": _empty("lanes")}
    return validate_tables(tables) if validate else tables
