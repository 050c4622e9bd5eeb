"""A simulated store network that steps one day at a time: the world of the closed-loop pilot (no Dagster).

It starts where a generated demo data set's history stops (stock, replenishment pipelines and the policy's demand
estimates recorded by the generator in `truth/store_state` and `truth/warehouse_state`) and, for each pilot day D:

1. receives what arrives at D (replenishment from the warehouse, warehouse deliveries, transfers shipped earlier);
2. applies the day's decisions: the recommended regular prices take effect at D, transfers leave the sender at D
   (never more than it holds: any excess is cut and counted as a violation) and arrive after the lane's lead time;
3. draws demand from the true rate at the price in effect, rate = base rate (truth: seasonality, weather, events,
   traffic at base price) x (price / base price) ** true elasticity x promo lift ** on promotion, with common
   random numbers: every SKU-location-day has one gamma multiplier and one uniform, drawn once from the world's
   seed, and demand is the Poisson quantile of that uniform, so arms differ by their decisions alone and a higher
   rate never gives less demand;
4. sells min(demand, stock on hand), records lost units, replenishes by the generator's own baseline policy
   (weekly order-up-to from the warehouse, rationed when it runs short; the warehouse reorders from the supplier),
   identical in every arm, with supply disruptions drawn once from the seed (the same in every arm);
5. appends the day's sales, end-of-day inventory and store traffic to the observed tables, in the input contracts.

The agents see only `observed_tables()`: the tables a retailer has. Everything in `truth` stays here.
Arrays are (series,) or (days, series): store series are SKU-major (sku * stores + store), warehouse series
(sku * warehouses + warehouse) follow them in one location-series index.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .demo import LEAD_STORE_DAYS, LEAD_WAREHOUSE_DAYS, REVIEW_DAYS, DemoData
from .guardrails import GuardrailSettings, price_changed

_DISPERSION = 3.0  # the generator's gamma-Poisson shape


@dataclass(frozen=True)
class WorldSettings:
    seed: int = 7
    holding_rate_per_year: float = 0.25  # holding cost: 25% of unit cost per unit-year of stock on hand
    disruption_weekly_prob: float = 0.04  # chance per store series and week that its deliveries stop
    disruption_days: int = 10  # how long a disruption lasts
    guardrails: GuardrailSettings = GuardrailSettings()  # what the world's own audit of applied prices enforces


KPI_SUMS = ("revenue", "units_sold", "demand_units", "lost_units", "cogs", "transfer_units", "transfer_cost",
            "holding_cost", "gross_profit", "price_changes", "markdown_spend", "guardrail_violations",
            "price_revenue_at_start")


def _codes(values: pd.Series, labels: np.ndarray) -> np.ndarray:
    """Positions of `values` in `labels` (-1 where absent)."""
    idx = pd.Index(labels)
    return idx.get_indexer(values.astype(str))


class World:
    """The pilot's store network. `step(prices, transfers)` simulates the current day and moves to the next."""

    def __init__(self, demo: DemoData, start, days: int, settings: WorldSettings = WorldSettings()):
        self.settings = settings
        self.start = pd.Timestamp(start).normalize()
        self.days = int(days)
        self.dates = pd.date_range(self.start, periods=self.days, freq="D")
        t = demo.tables
        cat = t["catalog"].reset_index(drop=True)
        locs = t["locations"]
        self.catalog = cat
        self.sku_ids = cat["sku_id"].astype(str).to_numpy()
        self.store_ids = locs.loc[locs["kind"] == "store", "location_id"].astype(str).to_numpy()
        self.wh_ids = locs.loc[locs["kind"] == "warehouse", "location_id"].astype(str).to_numpy()
        S, L, W = len(self.sku_ids), len(self.store_ids), len(self.wh_ids)
        self.S, self.L, self.W = S, L, W
        self.N, self.NW = S * L, S * W
        # one location-series index over store series then warehouse series
        self.series_sku = np.concatenate([np.repeat(np.arange(S), L), np.repeat(np.arange(S), W)])
        self.series_loc = np.concatenate([np.tile(self.store_ids, S), np.tile(self.wh_ids, S)]).astype(object)
        self.store_sku = self.series_sku[: S * L]  # SKU position of each store series
        self.series_sku_ids = self.sku_ids[self.series_sku]
        self._loc_pos = {loc: i for i, loc in enumerate(self.store_ids)} | {
            loc: L + i for i, loc in enumerate(self.wh_ids)}
        self.unit_cost = cat["unit_cost"].to_numpy(float)
        self.series_unit_cost = self.unit_cost[self.series_sku]
        self.base_price = cat["base_price"].to_numpy(float)
        self.lanes = t["lanes"].copy()
        history_end = self.start - pd.Timedelta(days=1)
        sales = t["sales"]
        if sales["date"].max() != history_end:
            raise ValueError(f"the demo's history must end the day before the pilot starts ({history_end:%Y-%m-%d}); "
                             f"it ends {sales['date'].max():%Y-%m-%d}")
        self.first_date = pd.Timestamp(sales["date"].min())

        truth_sku = demo.truth["sku"].set_index("sku_id").loc[self.sku_ids]
        self.elasticity = truth_sku["elasticity"].to_numpy(float)
        self.promo_lift = truth_sku["promo_lift"].to_numpy(float)

        # ---- exogenous per day: base rate, promotions, traffic, disruptions, noise ---------------------------
        self.base_rate = self._store_day_matrix(demo.truth["demand"], "base_rate")
        self.promo_disc = self._promo_matrix(t["promotions"])
        traffic = demo.truth["traffic"]
        self.traffic = traffic[traffic["date"].isin(self.dates)].reset_index(drop=True)
        rng = np.random.default_rng([settings.seed, 4242])  # the world's own stream: the same in every arm
        self.noise_gamma = rng.standard_gamma(_DISPERSION, (self.days, self.N)) / _DISPERSION
        self.noise_uniform = rng.random((self.days, self.N))
        self.disrupted = np.zeros((self.days, self.N), dtype=bool)
        for w in range(-(-self.days // 7)):
            hit = rng.random(self.N) < settings.disruption_weekly_prob
            first = w * 7 + rng.integers(0, 7, self.N)
            day = np.arange(self.days)[:, None]
            self.disrupted |= hit[None, :] & (day >= first[None, :]) & (day < first[None, :] + settings.disruption_days)

        # ---- state where the history stops --------------------------------------------------------------------
        ss = self._align(demo.truth["store_state"], self.store_ids, L)
        ws = self._align(demo.truth["warehouse_state"], self.wh_ids, W)
        self.on_hand = np.concatenate([ss["on_hand"].to_numpy(float), ws["on_hand"].to_numpy(float)])
        self.estimate = ss["demand_estimate"].to_numpy(float)
        self.order_bias = ss["order_bias"].to_numpy(float)
        self.review_day = ss["review_day"].to_numpy(int)
        self.pipe_store = np.stack([ss[f"pipeline_{k}"].to_numpy(float) for k in range(LEAD_STORE_DAYS + 1)])
        self.pipe_wh = np.stack([ws[f"pipeline_{k}"].to_numpy(float) for k in range(LEAD_WAREHOUSE_DAYS + 1)])
        max_lead = int(self.lanes["lead_time_days"].max()) if len(self.lanes) else 1
        self.pipe_transfer = np.zeros((max_lead + 1, self.N + self.NW))
        store_wh = {s: i for i, s in enumerate(self.wh_ids)}
        serving = self.lanes[self.lanes["from_location"].isin(self.wh_ids)].sort_values("lead_time_days")
        serving = serving.drop_duplicates("to_location").set_index("to_location")["from_location"]
        wh_of_store = np.array([store_wh[serving.get(s, self.wh_ids[0])] for s in self.store_ids])
        self.wh_key = self.store_sku * W + wh_of_store[np.tile(np.arange(L), S)]

        # regular price in effect: the last non-promotional price sold at (as the pricing agent reads it)
        reg = sales[~sales["on_promotion"].astype(bool)].sort_values("date")
        last = reg.groupby(["sku_id", "location_id"], observed=True)["price"].last()
        idx = pd.MultiIndex.from_arrays([self.series_sku_ids[: self.N], self.series_loc[: self.N]])
        self.regular = last.reindex(idx).to_numpy(float)
        missing = np.isnan(self.regular)
        self.regular[missing] = self.base_price[self.store_sku][missing]
        self.start_regular = self.regular.copy()

        # observed tables: the history, then one frame per simulated day
        self._history = {name: t[name][t[name]["date"] <= history_end].reset_index(drop=True)
                         for name in ("sales", "inventory", "traffic")}
        self._static = {name: t[name] for name in ("catalog", "locations", "promotions", "events", "weather", "lanes")}
        self._appended: dict[str, list[pd.DataFrame]] = {"sales": [], "inventory": [], "traffic": []}
        self.day = 0  # index of the current (not yet simulated) pilot day
        self.violations: list[pd.DataFrame] = []

    # ---- setup helpers ---------------------------------------------------------------------------------------
    def _align(self, state: pd.DataFrame, loc_ids: np.ndarray, n_loc: int) -> pd.DataFrame:
        idx = pd.MultiIndex.from_arrays([np.repeat(self.sku_ids, n_loc), np.tile(loc_ids, self.S)])
        out = state.assign(sku_id=state["sku_id"].astype(str), location_id=state["location_id"].astype(str)) \
            .set_index(["sku_id", "location_id"]).reindex(idx)
        return out.fillna(0.0).reset_index(drop=True)

    def _store_day_matrix(self, frame: pd.DataFrame, column: str) -> np.ndarray:
        f = frame[(frame["date"] >= self.dates[0]) & (frame["date"] <= self.dates[-1])]
        day = ((f["date"] - self.dates[0]).dt.days).to_numpy()
        sku = _codes(f["sku_id"], self.sku_ids)
        loc = _codes(f["location_id"], self.store_ids)
        ok = (sku >= 0) & (loc >= 0)
        out = np.zeros((self.days, self.N))
        out[day[ok], sku[ok] * self.L + loc[ok]] = f[column].to_numpy(float)[ok]
        return out

    def _promo_matrix(self, promos: pd.DataFrame) -> np.ndarray:
        out = np.zeros((self.days, self.N))
        if promos is None or promos.empty:
            return out
        p = promos[(promos["end_date"] >= self.dates[0]) & (promos["start_date"] <= self.dates[-1])]
        sku = _codes(p["sku_id"], self.sku_ids)
        loc = _codes(p["location_id"], self.store_ids)
        ok = (sku >= 0) & (loc >= 0)
        series = (sku * self.L + loc)[ok]
        first = ((p["start_date"] - self.dates[0]).dt.days).to_numpy()[ok]
        last = ((p["end_date"] - self.dates[0]).dt.days).to_numpy()[ok]
        day = np.arange(self.days)[None, :]
        live = (day >= first[:, None]) & (day <= last[:, None])  # (promotions, days)
        disc = np.where(live, p["discount_pct"].to_numpy(float)[ok][:, None], 0.0)
        np.maximum.at(out.T, series, disc)
        return out

    # ---- what the agents may see -----------------------------------------------------------------------------
    @property
    def current_date(self) -> pd.Timestamp:
        return self.start + pd.Timedelta(days=self.day)

    def observed_tables(self) -> dict[str, pd.DataFrame]:
        """The input tables as a retailer has them at the start of the current day: facts through the day before,
        calendars (promotions, events, weather forecasts) ahead. No truth."""
        out = dict(self._static)
        for name, hist in self._history.items():
            parts = [hist, *self._appended[name]]
            out[name] = pd.concat(parts, ignore_index=True) if len(parts) > 1 else hist
        return out

    # ---- one day ---------------------------------------------------------------------------------------------
    def prices_in_effect(self, regular: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        disc = self.promo_disc[k]
        return np.round(regular * (1 - disc / 100.0), 2), disc > 0

    def true_rate(self, price: np.ndarray, on_promo: np.ndarray, k: int) -> np.ndarray:
        sku = self.store_sku
        return (self.base_rate[k] * (price / self.base_price[sku]) ** self.elasticity[sku]
                * np.where(on_promo, self.promo_lift[sku], 1.0))

    def demand_draw(self, rate: np.ndarray, k: int) -> np.ndarray:
        """Demand for day k at `rate`, from day k's fixed noise (common random numbers: monotone in the rate)."""
        from scipy.stats import poisson

        mu = rate * self.noise_gamma[k]
        out = np.zeros_like(mu)
        pos = mu > 0
        out[pos] = poisson.ppf(self.noise_uniform[k][pos], mu[pos])
        return out

    def _apply_prices(self, prices: pd.DataFrame | None) -> tuple[int, int]:
        """New regular prices from the price recommendations; returns (changes, guardrail violations found by the
        world's own audit: max change, margin floor over cost, MSRP, MAP)."""
        if prices is None or prices.empty:
            return 0, 0
        sku = _codes(prices["sku_id"], self.sku_ids)
        loc = _codes(prices["location_id"], self.store_ids)
        new = pd.to_numeric(prices["recommended_price"], errors="coerce").to_numpy(float)
        ok = (sku >= 0) & (loc >= 0) & np.isfinite(new) & (new > 0)
        series, new, sku = (sku * self.L + loc)[ok], new[ok], sku[ok]
        old = self.regular[series]
        changed = price_changed(old, new)
        g = self.settings.guardrails
        cat = self.catalog.iloc[sku]
        msrp = cat["msrp"].to_numpy(float)
        map_price = cat["map_price"].to_numpy(float) if "map_price" in cat else np.full(len(sku), np.nan)
        tol = 0.0051
        bad = changed & (
            (np.abs(new / old - 1) * 100 > g.max_daily_change_pct + 1e-6)
            | (new < self.unit_cost[sku] * (1 + g.margin_floor_pct / 100) - tol)
            | (np.isfinite(msrp) & (new > msrp + tol))
            | (np.isfinite(map_price) & (new < map_price - tol)))
        if bad.any():
            self.record_violation("price", self.sku_ids[sku[bad]], self.store_ids[loc[ok][bad]],
                                  [f"{o:.2f} -> {n:.2f}" for o, n in zip(old[bad], new[bad])])
        self.regular[series] = new
        return int(changed.sum()), int(bad.sum())

    def _ship(self, transfers: pd.DataFrame | None) -> tuple[np.ndarray, float, int]:
        """Ship the day's transfers; returns (units shipped out of each location series, cost, violations)."""
        out = np.zeros(self.N + self.NW)
        if transfers is None or transfers.empty:
            return out, 0.0, 0
        lanes = self.lanes.set_index(["from_location", "to_location"])
        tr = transfers[["sku_id", "from_location", "to_location", "units"]].copy()
        tr["units"] = pd.to_numeric(tr["units"], errors="coerce").fillna(0).clip(lower=0).round()
        key = pd.MultiIndex.from_arrays([tr["from_location"].astype(str), tr["to_location"].astype(str)])
        lane = lanes.reindex(key)
        sku = _codes(tr["sku_id"], self.sku_ids)
        frm = tr["from_location"].astype(str).map(self._loc_pos).fillna(-1).to_numpy(int)
        to = tr["to_location"].astype(str).map(self._loc_pos).fillna(-1).to_numpy(int)
        valid = (sku >= 0) & (frm >= 0) & (to >= 0) & (frm != to) & lane["cost_per_unit"].notna().to_numpy()
        invalid = ~valid & (tr["units"].to_numpy() > 0)
        if invalid.any():
            self.record_violation("transfer", tr["sku_id"].astype(str).to_numpy()[invalid],
                                  tr["from_location"].astype(str).to_numpy()[invalid],
                                  [f"no lane to {t}" for t in tr["to_location"].astype(str).to_numpy()[invalid]])
        violations = int(invalid.sum())
        units = np.where(valid, tr["units"].to_numpy(float), 0.0)
        src = self._series_index(sku, frm)
        dst = self._series_index(sku, to)
        # never ship more than the sender holds: cut every transfer of an over-committed sender pro rata
        asked = np.bincount(src[valid], weights=units[valid], minlength=self.N + self.NW)
        avail = np.maximum(self.on_hand, 0)
        ratio = np.where(asked > avail, avail / np.maximum(asked, 1e-9), 1.0)
        cut = np.floor(units * np.where(valid, ratio[np.maximum(src, 0)], 0.0))
        short = cut < units - 1e-9
        if short.any():
            self.record_violation("transfer", tr["sku_id"].astype(str).to_numpy()[short],
                                  tr["from_location"].astype(str).to_numpy()[short],
                                  [f"asked {u:.0f}, sender had {a:.0f}" for u, a in
                                  zip(units[short], avail[np.maximum(src, 0)][short])])
        violations += int(short.sum())
        units = cut
        lead = lane["lead_time_days"].fillna(1).to_numpy(int)
        cost = float((units * lane["cost_per_unit"].fillna(0).to_numpy(float)).sum())
        np.add.at(out, src[valid], units[valid])
        self.on_hand -= out
        np.add.at(self.pipe_transfer, (np.maximum(lead[valid] - 1, 0), dst[valid]), units[valid])
        return out, cost, violations

    def record_violation(self, kind: str, skus, locations, details, date=None) -> None:
        """Log refused or cut decisions, one row each, dated `date` (default: the day being simulated)."""
        self.violations.append(pd.DataFrame({"date": self.current_date if date is None else date, "kind": kind,
                                             "sku_id": skus,
                                             "location_id": locations, "detail": details}))

    def violation_log(self) -> pd.DataFrame:
        """Every decision the world refused or cut: prices outside the hard guardrails, transfers without a lane
        or beyond the sender's stock."""
        cols = ["date", "kind", "sku_id", "location_id", "detail"]
        return pd.concat(self.violations, ignore_index=True) if self.violations else pd.DataFrame(columns=cols)

    def _series_index(self, sku: np.ndarray, loc_pos: np.ndarray) -> np.ndarray:
        """Location-series index of (sku position, location position); -1 where either is unknown."""
        store = loc_pos < self.L
        out = np.where(store, sku * self.L + loc_pos, self.N + sku * self.W + (loc_pos - self.L))
        return np.where((sku >= 0) & (loc_pos >= 0), out, -1)

    def step(self, prices: pd.DataFrame | None = None, transfers: pd.DataFrame | None = None) -> dict[str, float]:
        """Simulate the current day with the day's decisions (None = none: prices held, nothing shipped); append
        its facts to the observed tables and return its KPIs."""
        if self.day >= self.days:
            raise ValueError(f"the pilot has {self.days} days; all are simulated")
        k, date = self.day, self.current_date
        t_abs = (date - self.first_date).days  # the replenishment calendar goes on from the history's
        N = self.N
        start_on_hand = self.on_hand.copy()
        receipts = np.concatenate([self.pipe_store[0], self.pipe_wh[0]])
        transfer_in = self.pipe_transfer[0].copy()
        store_oh = self.on_hand[:N]
        # 1. arrivals
        store_oh += self.pipe_store[0]
        self.pipe_store = np.roll(self.pipe_store, -1, axis=0)
        self.pipe_store[-1] = 0
        self.on_hand[N:] += self.pipe_wh[0]
        self.pipe_wh = np.roll(self.pipe_wh, -1, axis=0)
        self.pipe_wh[-1] = 0
        self.on_hand += self.pipe_transfer[0]
        self.pipe_transfer = np.roll(self.pipe_transfer, -1, axis=0)
        self.pipe_transfer[-1] = 0
        # 2. decisions
        changes, price_violations = self._apply_prices(prices)
        shipped_out, transfer_cost, transfer_violations = self._ship(transfers)
        available = store_oh.copy()
        # 3. demand at the price in effect
        price, on_promo = self.prices_in_effect(self.regular, k)
        price_start, _ = self.prices_in_effect(self.start_regular, k)
        rate = self.true_rate(price, on_promo, k)
        demand = self.demand_draw(rate, k)
        # 4. sales, then the baseline replenishment
        sold = np.minimum(demand, np.maximum(store_oh, 0))
        store_oh -= sold
        self.estimate = 0.9 * self.estimate + 0.1 * np.maximum(sold, rate * (sold < demand))
        cover = REVIEW_DAYS + LEAD_STORE_DAYS + 4
        inbound = self.pipe_store.sum(axis=0) + self.pipe_transfer[:, :N].sum(axis=0)
        order = np.where((self.review_day == t_abs % REVIEW_DAYS) & ~self.disrupted[k],
                         np.maximum(np.round(self.estimate * cover * self.order_bias) - store_oh - inbound, 0), 0)
        wh_oh = self.on_hand[N:]
        requested = np.bincount(self.wh_key, weights=order, minlength=self.NW)
        ratio = np.where(requested > 0, np.minimum(1.0, wh_oh / np.maximum(requested, 1e-9)), 0.0)
        delivered = np.floor(order * ratio[self.wh_key])
        wh_oh -= np.bincount(self.wh_key, weights=delivered, minlength=self.NW)
        self.pipe_store[LEAD_STORE_DAYS - 1] += delivered
        if t_abs % REVIEW_DAYS == 0:
            need = np.bincount(self.wh_key, weights=self.estimate, minlength=self.NW) * (
                LEAD_WAREHOUSE_DAYS + 2 * REVIEW_DAYS + 7)
            self.pipe_wh[LEAD_WAREHOUSE_DAYS - 1] += np.maximum(
                np.round(need - wh_oh - self.pipe_wh.sum(axis=0) - self.pipe_transfer[:, N:].sum(axis=0)), 0)
        self.last_flows = {  # per location series: start + receipts + transfer_in - transfer_out - sold
            "start": start_on_hand, "receipts": receipts, "transfer_in": transfer_in,  # - delivered = end
            "transfer_out": shipped_out, "sold": np.concatenate([sold, np.zeros(self.NW)]),
            "delivered": np.concatenate([np.zeros(N),
                                         np.bincount(self.wh_key, weights=delivered, minlength=self.NW)]),
            "end": self.on_hand.copy(), "available_for_sale": available, "demand": demand, "rate": rate,
            "price": price}
        # 5. the day's facts, in the input contracts
        self._record(date, price, on_promo, sold)
        inventory_value = float((np.maximum(self.on_hand, 0) * self.series_unit_cost).sum())
        revenue = float((sold * price).sum())
        cogs = float((sold * self.series_unit_cost[:N]).sum())
        holding = inventory_value * self.settings.holding_rate_per_year / 365.0
        self.day += 1
        return {
            "date": date, "revenue": revenue, "units_sold": float(sold.sum()), "demand_units": float(demand.sum()),
            "lost_units": float((demand - sold).sum()), "cogs": cogs, "transfer_units": float(shipped_out.sum()),
            "transfer_cost": transfer_cost, "holding_cost": holding,
            "gross_profit": revenue - cogs - transfer_cost - holding, "inventory_value": inventory_value,
            "price_changes": float(changes),
            "markdown_spend": float((sold * np.maximum(price_start - price, 0)).sum()),
            "price_revenue_at_start": float((sold * price_start).sum()),
            "guardrail_violations": float(price_violations + transfer_violations),
            "price_violations": float(price_violations), "transfer_violations": float(transfer_violations),
        }

    def _record(self, date, price, on_promo, sold) -> None:
        N = self.N
        skus = self.series_sku_ids
        self._appended["sales"].append(pd.DataFrame({
            "date": date, "sku_id": skus[:N], "location_id": self.series_loc[:N], "units": sold,
            "price": price, "on_promotion": on_promo}))
        in_transit = np.concatenate([self.pipe_store.sum(axis=0), self.pipe_wh.sum(axis=0)]) \
            + self.pipe_transfer.sum(axis=0)
        self._appended["inventory"].append(pd.DataFrame({
            "date": date, "sku_id": skus, "location_id": self.series_loc, "on_hand": np.maximum(self.on_hand, 0),
            "in_transit": in_transit}))
        self._appended["traffic"].append(self.traffic[self.traffic["date"] == date].reset_index(drop=True))


def summarize_kpis(daily: pd.DataFrame) -> dict[str, float]:
    """Totals of an arm's daily KPIs: sums, fill rate, average inventory value, unit-weighted price index."""
    tot = {k: float(daily[k].sum()) for k in KPI_SUMS if k in daily}
    tot["fill_rate"] = tot["units_sold"] / tot["demand_units"] if tot.get("demand_units") else 1.0
    tot["avg_inventory_value"] = float(daily["inventory_value"].mean())
    tot["price_index"] = tot["revenue"] / tot["price_revenue_at_start"] if tot.get("price_revenue_at_start") else 1.0
    return tot
