"""Demand-sensing forecast engine: a global LightGBM (mlforecast, Tweedie) per SKU group with calendar, price,
promotion, event, weather and traffic features, statsforecast models for intermittent series and fallbacks, a
category x location profile for new series, and negative-binomial quantiles calibrated on a recent holdout. A
second LightGBM, the level model, predicts each series' mean over each week of the next 14 days directly; each
series' weekly totals move 60% of the way to it (level_weight, level_splits), the daily shape staying the daily
model's.

Dagster-free: `forecast_for_date(tables, date, sku_group, settings, cache_dir)` is what the asset calls. A model
for anchor A sees only data < A: LightGBM is fitted on days < A - calibration_days, the last calibration_days
before A are its out-of-sample holdout (dispersion of the quantiles, choice of the intermittent-segment model).
Stocked-out days (end-of-day on hand 0) are censored: dropped from the training targets, imputed in the lags. So
are the days a store was closed (it sold next to nothing: M5's Christmas), and a store closed on a day of a past
year is expected closed on it again (a forecast of 0).
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import time
import warnings
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from .asof import HORIZON_DAYS, PlanningInputs, planning_inputs
from .files import atomic_write_local
from . import ids
from .ids import pair_positions

ANCHOR_ORIGIN = pd.Timestamp("2000-01-03")  # a Monday: retraining anchors fall on a fixed weekly grid
OUTPUT_COLUMNS = ["sku_id", "location_id", "target_date", "horizon_day", "mean", "p05", "p10", "p50", "p90", "p95",
                  "model"]
NEW_SERIES_MODEL = "new_series_profile"
RAW = "@raw"  # suffix of LightGBM's own (unblended) mean in the calibration's means
# statistical models that may be averaged into LightGBM's mean (ForecastSettings.blend_model): name -> (class, kwargs)
STAT_BLEND_MODELS = {
    "sses": ("SeasonalExponentialSmoothingOptimized", {"season_length": 7}),
}
FALLBACK_MODEL = "seasonal_window_average"
# statsforecast intermittent models: output name -> (class name, kwargs)
INTERMITTENT_MODELS = {
    "tsb": ("TSB", {"alpha_d": 0.1, "alpha_p": 0.1}),
    "croston_sba": ("CrostonSBA", {}),
    "adida": ("ADIDA", {}),
    "imapa": ("IMAPA", {}),
}


def _default_lgbm_params() -> dict:
    return {
        "n_estimators": 350, "learning_rate": 0.05, "num_leaves": 63, "min_child_samples": 50,
        "feature_fraction": 0.8, "bagging_fraction": 0.8, "bagging_freq": 1, "lambda_l2": 1.0,
        "tweedie_variance_power": 1.2, "max_bin": 127,
    }


@dataclass
class ForecastSettings:
    """Settings of the demand forecast engine (all have defaults)."""

    horizon_days: int = HORIZON_DAYS  # target dates D..D+horizon-1
    retrain_every_days: int = 7  # anchors every N days from 2000-01-03; a model serves its anchor..anchor+N-1
    train_window_days: int = 364  # days of history the model is trained on (before the calibration holdout)
    calibration_days: int = 14  # holdout right before the anchor: quantile calibration and model choice
    max_train_rows: int = 1_200_000  # cap on training rows: a deterministic hash sample of series beyond it
    min_history_days: int = 28  # series with less history get the category x location profile
    active_days: int = 56  # a series is active with sales rows in the last N days (or stock on hand/in transit)
    objective: str = "tweedie"  # LightGBM objective: "tweedie" or "poisson"
    lgbm_params: dict = field(default_factory=_default_lgbm_params)
    quantiles: tuple[float, ...] = (0.05, 0.1, 0.5, 0.9, 0.95)
    target_coverage: float = 0.8  # p10..p90 coverage the dispersion is calibrated to on the holdout
    use_intermittent_models: bool = True  # let statsforecast models win the intermittent segment on the holdout
    # ... only by this share of the global model's intermittent holdout WAPE: a near-tie keeps the global model, so a
    # small edit of the history (a capped outlier, one more week) does not flip a whole segment's model
    intermittent_margin: float = 0.02
    drop_stockout_days: bool = True  # drop stocked-out (censored) days from training; impute them in the lags
    # what a censored day's demand is imputed as (lags, the level model's targets): "mean" the series' mean over the
    # uncensored days of the previous 4 weeks (at least the day's sales); "conditional" the Poisson expectation of
    # demand given that it reached the day's sales, E[D | D >= sold], around a 4-week mean that counts the censored
    # days at their imputed value (the uncensored days alone are the days demand stayed under the stock: low).
    # "mean" by default (README, session 16): on the demo it moved the bias against demand -6.0% -> -5.7% and the
    # most stocked-out series' -28% -> -22%, but cost WAPE against sales and left the pilot's profit where it was
    censored_imputation: str = "mean"
    max_event_types: int = 8  # one feature per most frequent event type
    price_response: bool = True  # de-price the history with fitted elasticities, re-price at the planned price
    elasticity_clip: tuple[float, float] = (-3.0, -0.2)  # range of the elasticities the forecast applies
    refit_on_holdout: bool = False  # after calibration, refit LightGBM on data through the anchor (2x train time)
    lgbm_members: int = 1  # LightGBM models averaged (each its own recursion), differing by seed
    early_stopping_rounds: int = 0  # > 0: stop LightGBM when the holdout's one-step error has not improved for N
    long_windows: tuple[int, ...] = ()  # extra rolling means of the last N days (e.g. 56, 112): the level
    point_levels: tuple[float, ...] = (0.45, 0.5, 0.55)  # NB levels p50 may take: the least holdout error wins
    # dispersion per series: each series' dispersion index (dispersion_index: its moment dispersion over the last
    # dispersion_index_days uncensored days, relative to series of a similar mean, clipped to dispersion_index_clip)
    # scales the pooled NB dispersion to a power chosen on the holdout: for the band (p05..p95) the power with the
    # least quantile loss at p10 and p90 (the multiplier re-calibrated to target_coverage for each); for p50 its own
    # power on the pooled curve, chosen with the point level (least absolute error). A lumpy series (sold in packs
    # or bursts) gets a wider band and a lower median than a steady one of the same mean. (0.0,): off
    band_dispersion_powers: tuple[float, ...] = (0.0, 0.5, 1.0)
    point_dispersion_powers: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
    dispersion_index_days: int = 56
    dispersion_index_clip: tuple[float, float] = (0.5, 2.0)
    # forecast combination: LightGBM's mean averaged with a statistical model's (STAT_BLEND_MODELS; "sses": seasonal
    # exponential smoothing, one smoothed level per weekday), the member's weight chosen per group on the calibration
    # holdout from `blend_weights` by the error of each series' holdout total. The blend sets the mean and the band;
    # p50 stays the median around LightGBM's own mean (the blend steadies totals, not single days)
    blend_model: str = "sses"
    blend_weights: tuple[float, ...] = (0.0,)
    # the level model: a second LightGBM that predicts each series' mean demand over the next horizon_days directly
    # (one row per series and origin day, features read before the origin), trained on the same de-priced history,
    # its origins spanning train_window_days before the anchor (a whole year: every season once; level_span_days).
    # Each series' horizon total is moved this share of the way from the daily model's total to the level model's;
    # the daily shape stays the daily model's. 0: off. 0.6 since the year of origins (0.5 before: 0.4 / 0.7 worse)
    level_weight: float = 0.6
    # ... per part of the horizon cut at these days (7: week 1 and week 2, each its own target; (): the whole horizon)
    level_splits: tuple[int, ...] = (7,)
    level_origin_step: int = 3  # training origins every N days (more rows cost time, not accuracy)
    # cap on the level model's training rows (series x origins x parts): a deterministic hash sample of the series
    # beyond it, every origin kept (a large group's level is learned from fewer series, not fewer days)
    level_max_rows: int = 240_000
    # the mean's bias on the calibration holdout, corrected per segment: the mean of each segment named here
    # ("intermittent": the Syntetos-Boylan intermittent series, "regular": the rest) is scaled by that segment's
    # holdout ratio sum(actual) / sum(mean) (stocked-out and closed days left out) to the power bias_correction_weight,
    # clipped to bias_correction_clip. The intermittent segment's model is chosen by WAPE, which rewards a low mean
    # (on M5 the chosen models' means sat 2-35% under the actuals); p50 and the band are fitted on the corrected mean.
    # Off by default (README, session 16): on M5 every variant that took dev4's bias inside +-1% cost 14-day WAPE on
    # every window and pushed hold12 and wide12 past +1% (intermittent at weight 0.5: dev4 14-day 0.2350 -> 0.2377,
    # hold12 0.2511 -> 0.2540, bias +0.1% -> +1.0%); the regular segment's holdout ratio is the last two weeks' swing,
    # which does not persist (both segments at weight 1, wide12 14-day 0.2365 -> 0.2459)
    bias_correction_segments: tuple[str, ...] = ()
    bias_correction_weight: float = 0.5
    bias_correction_clip: tuple[float, float] = (0.8, 1.25)
    seed: int = 7
    # LightGBM threads; 0: the run's share of the cores (OMP_NUM_THREADS), else 1, which is robust on a shared box
    # (OpenMP spin-waits when oversubscribed). Deterministic row-wise training gives the same model for any count.
    num_threads: int = 0

    def threads(self) -> int:
        """LightGBM threads for this process (num_threads, or the run's share of the cores when 0)."""
        from .loading import run_threads

        return self.num_threads if self.num_threads > 0 else run_threads(default=1)

    def fingerprint(self) -> str:
        """Identifies the settings a cached model was trained with (threads do not change the model)."""
        d = {k: v for k, v in asdict(self).items() if k != "num_threads"}
        if not any(w > 0 for w in d["blend_weights"]):  # no blend: the same key as before the option existed
            del d["blend_model"], d["blend_weights"]
        return hashlib.sha1(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:12]

    @property
    def model_name(self) -> str:
        return f"lgbm_{self.objective}"


# PlanningInputs carries `inventory_history` (date < D), which is what finds the stocked-out (censored) days
ForecastInputs = PlanningInputs


def forecast_inputs(tables: dict[str, pd.DataFrame], date, sku_group: str | None,
                    horizon_days: int = HORIZON_DAYS) -> PlanningInputs:
    """The as-of inputs for planning `date`: nothing dated >= D except the calendars."""
    return planning_inputs(tables, date, sku_group, horizon_days)


def anchor_date(date, retrain_every_days: int = 7) -> pd.Timestamp:
    """The latest training anchor <= date on the fixed grid (every N days from 2000-01-03)."""
    d = pd.Timestamp(date).normalize()
    k = (d - ANCHOR_ORIGIN).days // retrain_every_days
    return ANCHOR_ORIGIN + pd.Timedelta(days=k * retrain_every_days)


def _stores(inputs: PlanningInputs) -> pd.Index:
    loc = inputs.locations
    return pd.Index(loc.loc[loc["kind"] == "store", "location_id"].astype(str))


def active_series(inputs: PlanningInputs, active_days: int = 56) -> pd.DataFrame:
    """Store SKU-locations to forecast: sales rows in the last `active_days` before D, or stock on hand/in transit."""
    stores = _stores(inputs)
    s = inputs.sales
    s = s.loc[(s["date"] >= inputs.date - pd.Timedelta(days=active_days)).to_numpy(), ["sku_id", "location_id"]]
    recent = s[s["location_id"].isin(stores).to_numpy()]
    if len(recent):  # one row per pair before the concat (the result is deduplicated and sorted anyway)
        sku, skus = ids.factorize(recent["sku_id"])
        loc, locs = ids.factorize(recent["location_id"])
        recent = recent.iloc[np.sort(np.unique((sku + 1) * (len(locs) + 1) + (loc + 1), return_index=True)[1])]
    snap = inputs.inventory_snapshot
    stocked = snap.loc[((snap["on_hand"] + snap["in_transit"]) > 0) & snap["location_id"].isin(stores)
                       & snap["sku_id"].isin(inputs.catalog["sku_id"]), ["sku_id", "location_id"]]
    out = pd.concat([recent, stocked], ignore_index=True).drop_duplicates()
    return out.sort_values(["sku_id", "location_id"]).reset_index(drop=True).astype(object)


# ---- panel: dense (series x day) arrays turned into mlforecast long frames -------------------------------------

@dataclass
class FeatureMeta:
    """What the feature builder must keep identical between training and prediction."""

    categories: list[str]
    locations: list[str]
    event_types: list[str]


def _feature_meta(inputs: PlanningInputs, settings: ForecastSettings, asof: pd.Timestamp) -> FeatureMeta:
    """Categories, stores and the most frequent event types known at `asof` (events dated before asof + horizon,
    as in inputs sliced at asof)."""
    ev = inputs.events
    ev = ev[(ev["date"] < asof + pd.Timedelta(days=settings.horizon_days)).to_numpy()]
    types = []
    if len(ev):
        counts = ev["event_type"].astype(str).value_counts()
        counts = counts.sort_index(kind="stable").sort_values(ascending=False, kind="stable")
        types = sorted(counts.index[: settings.max_event_types].tolist())
    return FeatureMeta(categories=sorted(inputs.catalog["category"].astype(str).unique().tolist()),
                       locations=sorted(_stores(inputs).tolist()), event_types=types)


def _series_codes(frame: pd.DataFrame, series: pd.DataFrame) -> np.ndarray:
    """Row position of each (sku_id, location_id) of `frame` in `series` (-1 when absent)."""
    idx = pd.MultiIndex.from_frame(series[["sku_id", "location_id"]])
    return pair_positions(frame["sku_id"].to_numpy(), frame["location_id"].to_numpy(), idx)


def _cumsum0(a: np.ndarray) -> np.ndarray:
    """Cumulative sum along the days with a leading 0 column: window sums are c[:, b] - c[:, a]."""
    c = np.zeros((a.shape[0], a.shape[1] + 1))
    np.cumsum(a, axis=1, out=c[:, 1:])
    return c


def _rolling_sum(a: np.ndarray, window: int) -> np.ndarray:
    """Sum over the `window` previous columns (t-window..t-1), per row."""
    c = _cumsum0(a)
    t = np.arange(a.shape[1])
    return c[:, t] - c[:, np.maximum(t - window, 0)]


def _hash_sample(series: pd.DataFrame, k: int) -> np.ndarray:
    """Sorted row positions of a deterministic sample of at most k series (by a hash of sku_id|location_id: the same
    series for any run and any order of the rows); all rows when there are no more than k."""
    if len(series) <= k:
        return np.arange(len(series))
    key = (series["sku_id"] + "|" + series["location_id"]).to_numpy(dtype=str)
    return np.sort(np.argsort(pd.util.hash_array(key), kind="stable")[:k])


CLOSED_SHARE, CLOSED_MIN_DAILY = 0.05, 20.0


def _closed_days(y: np.ndarray, location: np.ndarray) -> np.ndarray:
    """(N, days) bool: the series' store was closed that day (e.g. M5's Christmas): its series sold, together, under
    CLOSED_SHARE of the store's median daily total over the days of `y`, a median of at least CLOSED_MIN_DAILY units
    (a quiet day of a small store is not a closure). NaN (unobserved) counts as 0. A closed day says nothing about
    demand: the history censors it like a stocked-out day, calibration leaves it out. Days before the store's first
    sale or after its last are not closures."""
    if not y.size:
        return np.zeros(y.shape, dtype=bool)
    codes, stores = pd.factorize(location)
    order = np.argsort(codes, kind="stable")
    starts = np.searchsorted(codes[order], np.arange(len(stores)))
    tot = np.add.reduceat(np.nan_to_num(y[order]), starts, axis=0, dtype=np.float64)  # (stores, days)
    sold = tot > 0
    trading = (np.cumsum(sold, axis=1) > 0) & (np.cumsum(sold[:, ::-1], axis=1)[:, ::-1] > 0)  # first..last sale
    med = np.array([[np.median(t[k]) if k.any() else 0.0] for t, k in zip(tot, trading)])
    return ((tot < CLOSED_SHARE * med) & (med >= CLOSED_MIN_DAILY) & trading)[codes]


def _annual_closures(inputs: PlanningInputs, series: pd.DataFrame, dates: pd.DatetimeIndex) -> np.ndarray:
    """(N, len(dates)) bool: the series' store is expected closed that day: it was closed (_closed_days) on the same
    month and day of a past year, a day the events calendar names for the store's region with a yearly event
    (Christmas, say: at most twice a year, so not a SNAP day). A closed day without such an event (a gap in the
    sales feed, a one-off) is censored in the history but not projected. Read from the data before inputs.date
    only: one weighted bincount of the store x day totals (no groupby: this runs at every predict)."""
    out = np.zeros((len(series), len(dates)), dtype=bool)
    stores = pd.Index(pd.unique(series["location_id"].to_numpy()))
    s = inputs.sales
    d = s["date"].to_numpy()
    code = stores.get_indexer(s["location_id"].to_numpy())
    k = (d < inputs.date.to_datetime64()) & (code >= 0)
    if not k.any() or not len(dates):
        return out
    d, code = d[k], code[k]
    d0 = d.min()
    day = ((d - d0) // np.timedelta64(1, "D")).astype(np.int64)
    n = int(day.max()) + 1
    tot = np.bincount(code * n + day, weights=s["units"].to_numpy(dtype=np.float64)[k],
                      minlength=len(stores) * n).reshape(len(stores), n)
    closed = _closed_days(tot, np.arange(len(stores)))
    past = pd.DatetimeIndex(d0 + np.arange(n) * np.timedelta64(1, "D"))
    closed &= _yearly_event_days(inputs, stores, past)
    md, fut = past.month * 100 + past.day, dates.month * 100 + dates.day
    per_store = np.stack([np.isin(fut, md[c]) for c in closed])
    return per_store[stores.get_indexer(series["location_id"].to_numpy())]


def _yearly_event_days(inputs: PlanningInputs, stores: pd.Index, days: pd.DatetimeIndex) -> np.ndarray:
    """(stores, days) bool: the events calendar names an event for the store's region (or ALL) that day, of a name
    seen at most twice a year in the calendar before inputs.date (a holiday; not a SNAP day)."""
    out = np.zeros((len(stores), len(days)), dtype=bool)
    ev = inputs.events
    if ev is None or not len(ev) or not len(days):
        return out
    ev = ev[ev["date"] < inputs.date]
    years = max((ev["date"].max() - ev["date"].min()).days / 365.25, 1.0) if len(ev) else 1.0
    count = ev["event_name"].value_counts()
    ev = ev[ev["event_name"].map(count).to_numpy() <= 2 * years]
    region = inputs.locations.set_index("location_id")["region"].astype(str)
    reg = region.reindex(stores).to_numpy()
    t = days.get_indexer(ev["date"])
    ok = t >= 0
    er = ev["region"].astype(str).to_numpy()[ok]
    for i, r in enumerate(reg):
        out[i, t[ok][(er == r) | (er == "ALL")]] = True
    return out


@dataclass
class Panel:
    """Dense arrays for N series over history days [start, asof) and future days [asof, asof+h)."""

    series: pd.DataFrame  # sku_id, location_id, category (row order = array rows)
    dates: pd.DatetimeIndex  # history then future
    n_hist: int
    y: np.ndarray  # (N, n_hist) observed units (0 where no sales row)
    y_feat: np.ndarray  # (N, n_hist) units with stocked-out days imputed (what lags see)
    censored: np.ndarray  # (N, n_hist) bool: end-of-day on hand 0
    first_t: np.ndarray  # (N,) first history column of the series (may be n_hist: no history)
    exog: dict[str, np.ndarray]  # name -> (N, T) float32, T = history + future
    static: dict[str, np.ndarray]  # name -> (N,)
    price_mult: np.ndarray | None = None  # (N, T) demand multiplier of the day's price, (price/base)^elasticity

    def long(self, part: str, keep_last: int | None = None) -> tuple[pd.DataFrame, np.ndarray]:
        """mlforecast frame (unique_id = row number) for 'hist' or 'future'; also the censored flag per row."""
        N = len(self.series)
        if part == "hist":
            t0 = 0 if keep_last is None else max(self.n_hist - keep_last, 0)
            cols = np.arange(t0, self.n_hist)
            mask = cols[None, :] >= self.first_t[:, None]
        else:
            cols = np.arange(self.n_hist, len(self.dates))
            mask = np.ones((N, len(cols)), dtype=bool)
        r, c = np.nonzero(mask)
        tc = cols[c]
        out = {"unique_id": r.astype(np.int64), "ds": self.dates.values[tc]}
        if part == "hist":
            out["y"] = self.y_feat[r, tc].astype(np.float32)
        for k, v in self.static.items():
            out[k] = v[r]
        for k, v in self.exog.items():
            out[k] = v[r, tc]
        cens = self.censored[r, tc] if part == "hist" else np.zeros(len(r), dtype=bool)
        return pd.DataFrame(out), cens


def _impute_censored(y: np.ndarray, censored: np.ndarray, imputation: str = "mean", window: int = 28,
                     passes: int = 2) -> np.ndarray:
    """(N, T) float32 `y` with its censored days imputed from the `window` days before each (see
    ForecastSettings.censored_imputation); "conditional" re-estimates the mean `passes` times with the censored days
    at their imputed value (EM steps for a Poisson demand censored at the day's sales)."""
    if imputation not in ("mean", "conditional"):
        raise ValueError(f"censored_imputation: {imputation!r} (mean, conditional)")
    y = y.astype(np.float64)
    unc = (~censored).astype(np.float64)
    den = _rolling_sum(unc, window)
    lam = np.where(den > 0, _rolling_sum(y * unc, window) / np.maximum(den, 1), y)
    if imputation == "mean":
        return np.where(censored, np.maximum(y, lam), y).astype(np.float32)
    from scipy.special import gammainc

    r, c = np.nonzero(censored)
    s = y[r, c]
    n_days = np.maximum(_rolling_sum(np.ones((1, y.shape[1])), window), 1)  # days in each window (fewer at the start)

    def expected(lam: np.ndarray) -> np.ndarray:
        # E[D | D >= s] = lam * P(D >= s - 1) / P(D >= s) for Poisson(lam), s >= 1 (P(D >= k) = gammainc(k, lam));
        # lam itself when s = 0. Far in the tail the ratio is 0/0: the day's sales plus a little
        lm = np.maximum(lam[r, c], 1e-9)
        hi = gammainc(np.maximum(s, 1.0), lm)
        lo = np.where(s >= 2, gammainc(np.maximum(s - 1, 1.0), lm), 1.0)
        cond = np.where(hi > 1e-12, lm * lo / np.maximum(hi, 1e-300), s + 1.0)
        return np.where(s > 0, np.maximum(cond, s), lm)

    z = y.copy()
    for _ in range(passes):  # EM: impute, then re-estimate each window's mean with the imputed days in it
        z[r, c] = expected(lam)
        lam = np.where(den > 0, _rolling_sum(z, window) / n_days, y)
    z[r, c] = expected(lam)
    return z.astype(np.float32)


def _build_panel(inputs: ForecastInputs, series: pd.DataFrame, asof: pd.Timestamp, start: pd.Timestamp,
                 horizon: int, meta: FeatureMeta, elasticity: np.ndarray | None = None,
                 planned_price: np.ndarray | None = None, imputation: str = "mean") -> Panel:
    """Features for `series` from `start` to asof-1 (history) and asof..asof+horizon-1 (future), known at `asof`.

    `elasticity` (N,): de-price the history, y / (price/base)^elasticity, so that lags and targets are demand at
    the base price (`price_mult` re-prices a forecast). `planned_price` (N,): the regular price in effect over the
    horizon (NaN = the current one), e.g. a price the pricing agent considers; planned discounts apply on top.
    """
    N = len(series)
    n_hist = max((asof - start).days, 0)
    dates = pd.date_range(start, periods=n_hist + horizon, freq="D")
    T = len(dates)
    catalog = inputs.catalog.set_index("sku_id")

    # sales (observed units, price, promo flag) before `asof`, as column arrays (no copy of the frame); one
    # factorization of the ids serves every per-series statistic below
    s = inputs.sales
    before = (s["date"] < asof).to_numpy()
    s_code = _series_codes(s, series)[before]
    s_date = s["date"].to_numpy()[before]
    s_price = s["price"].to_numpy(dtype=np.float64)[before]
    s_promo = s["on_promotion"].to_numpy(dtype=bool)[before]
    # the first sale of each series
    first_t = np.full(N, n_hist, dtype=np.int64)
    known = s_code >= 0
    if known.any():
        first = np.full(N, np.iinfo(np.int64).max, dtype=np.int64)
        np.minimum.at(first, s_code[known], s_date[known].astype("datetime64[ns]").view(np.int64))
        seen = first < np.iinfo(np.int64).max
        first_t[seen] = np.clip((first[seen].astype("datetime64[ns]") - start.to_datetime64())
                                // np.timedelta64(1, "D"), 0, n_hist)
    # regular price at `asof`: the series' last known price off promotion, the last row of its latest day (catalog
    # base price when never seen)
    reg = catalog.loc[series["sku_id"], "base_price"].to_numpy(dtype=np.float64).copy()
    off_promo = known & ~s_promo
    reg[s_code[off_promo]] = np.nan  # rows off promotion but no price: unknown, as pandas' last() of NaNs
    off = np.flatnonzero(off_promo & ~np.isnan(s_price))
    if len(off):
        order = off[np.lexsort((off, s_date[off], s_code[off]))]  # by series, then date, then row
        last = order[np.append(s_code[order][1:] != s_code[order][:-1], True)]
        reg[s_code[last]] = s_price[last]
    if planned_price is not None:
        reg = np.where(np.isfinite(planned_price) & (planned_price > 0), planned_price, reg)

    keep = known & (s_date >= start.to_datetime64())
    code, t = s_code[keep], ((s_date[keep] - start.to_datetime64()) // np.timedelta64(1, "D")).astype(int)
    y = np.zeros((N, n_hist), dtype=np.float32)
    y[code, t] = s["units"].to_numpy()[before][keep]
    price = np.full((N, T), np.nan, dtype=np.float64)
    price[code, t] = s_price[keep]
    promo_flag = np.zeros((N, T), dtype=bool)
    promo_flag[code, t] = s_promo[keep]

    censored = np.zeros((N, n_hist), dtype=bool)
    inv = inputs.inventory_history
    if inv is not None and len(inv):
        iw = inv[(inv["date"] >= start) & (inv["date"] < asof)]
        ic = _series_codes(iw, series)
        k = ic >= 0
        it = ((iw["date"].to_numpy()[k] - start.to_datetime64()) // np.timedelta64(1, "D")).astype(int)
        censored[ic[k], it] = iw["on_hand"].to_numpy()[k] <= 0
    censored &= np.arange(n_hist)[None, :] >= first_t[:, None]
    censored |= _closed_days(y, series["location_id"].to_numpy())

    # impute censored days for the lag features (censored_imputation)
    y_feat = _impute_censored(y, censored, imputation) if censored.any() else y

    # planned promotions (known for the whole window), expanded to days
    disc = np.zeros((N, T), dtype=np.float32)
    pr = inputs.promotions
    end = dates[-1] if T else start
    if len(pr):
        pr = pr[(pr["end_date"] >= start) & (pr["start_date"] <= end)]
        pc = _series_codes(pr, series)
        pr, pc = pr[pc >= 0], pc[pc >= 0]
        if len(pr):
            a = np.maximum((pr["start_date"] - start).dt.days.to_numpy(), 0)
            b = np.minimum((pr["end_date"] - start).dt.days.to_numpy(), T - 1)
            n = np.maximum(b - a + 1, 0)
            rows = np.repeat(pc, n)
            cols = np.repeat(a, n) + (np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n))
            np.maximum.at(disc, (rows, cols), np.repeat(pr["discount_pct"].to_numpy(np.float32), n))
    # future price: current regular price with the planned discount; history: observed price, gaps carried forward
    price[:, n_hist:] = reg[:, None] * (1 - disc[:, n_hist:] / 100.0)
    price = pd.DataFrame(price).ffill(axis=1).bfill(axis=1).to_numpy()
    base = catalog.loc[series["sku_id"], "base_price"].to_numpy(dtype=np.float64)
    price_ratio = np.where(np.isfinite(price) & (price > 0), price / base[:, None], 1.0)
    on_promo = ((disc > 0) | promo_flag).astype(np.float32)
    price_mult = None
    if elasticity is not None:
        price_mult = np.exp(np.asarray(elasticity, np.float64)[:, None] * np.log(price_ratio))
        y_feat = (y_feat / price_mult[:, :n_hist]).astype(np.float32)
    price_ratio = price_ratio.astype(np.float32)

    # store-day features: region calendars (events, weather) and traffic
    locs = inputs.locations.set_index("location_id")
    store_ids = pd.Index(sorted(series["location_id"].unique()))
    store_of = store_ids.get_indexer(series["location_id"])
    region_of_store = locs.loc[store_ids, "region"].astype(str).to_numpy()
    regions = pd.Index(sorted(set(region_of_store)))
    reg_of_store = regions.get_indexer(region_of_store)
    date_pos = pd.Series(np.arange(T), index=dates)

    def region_day(frame: pd.DataFrame, value: str, agg: str = "mean") -> np.ndarray:
        out = np.full((len(regions), T), np.nan, dtype=np.float32)
        if frame is None or not len(frame):
            return out
        f = frame[(frame["date"] >= start) & (frame["date"] <= end)]
        ri, ti = regions.get_indexer(f["region"].astype(str)), date_pos.reindex(f["date"]).to_numpy()
        k = (ri >= 0) & ~np.isnan(ti)
        out[ri[k], ti[k].astype(int)] = f[value].to_numpy(dtype=np.float32)[k]
        return out

    exog: dict[str, np.ndarray] = {}
    if elasticity is None:  # with de-pricing, price enters through price_mult only (no second price effect)
        exog["price_ratio"] = price_ratio
    exog["discount_pct"] = disc
    exog["on_promotion"] = on_promo
    temp = region_day(inputs.weather, "temperature_c")[reg_of_store][store_of]
    rain = region_day(inputs.weather, "precipitation_mm")[reg_of_store][store_of]
    exog["temperature_c"], exog["precipitation_mm"] = temp, rain

    ev = inputs.events
    if len(meta.event_types):
        ev = ev[(ev["date"] >= start) & (ev["date"] <= end)]
        ti = date_pos.reindex(ev["date"]).to_numpy().astype(int) if len(ev) else np.zeros(0, int)
        for j, etype in enumerate(meta.event_types):
            m = (ev["event_type"].astype(str) == etype).to_numpy()
            grid = np.zeros((len(regions) + 1, T), dtype=np.float32)  # last row: region 'ALL'
            ri = regions.get_indexer(ev["region"].astype(str).to_numpy()[m])
            ri = np.where(ev["region"].astype(str).to_numpy()[m] == "ALL", len(regions), ri)
            k = ri >= 0
            np.add.at(grid, (ri[k], ti[m][k]), 1.0)
            by_region = grid[:-1] + grid[-1][None, :]
            exog[f"event_{j}"] = by_region[reg_of_store][store_of]

    # traffic: observed history; for the future (unknown) the store's mean by day of week over the last 8 weeks.
    # Scaled by the store's median so the feature is an index comparable across stores.
    traffic = np.full((len(store_ids), T), np.nan, dtype=np.float32)
    tr = inputs.traffic
    if tr is not None and len(tr):
        tr = tr[(tr["date"] < asof) & tr["location_id"].isin(store_ids)]
        recent = tr[tr["date"] >= asof - pd.Timedelta(days=56)]
        if len(recent):
            si = store_ids.get_indexer(tr["location_id"])
            tw = (tr["date"] >= start).to_numpy()
            ti = ((tr["date"].to_numpy()[tw] - start.to_datetime64()) // np.timedelta64(1, "D")).astype(int)
            traffic[si[tw], ti] = tr["visitors"].to_numpy(dtype=np.float32)[tw]
            prof = recent.assign(dow=recent["date"].dt.dayofweek).groupby(["location_id", "dow"])["visitors"].mean()
            prof = prof.unstack().reindex(index=store_ids, columns=range(7))
            fut_dow = dates[n_hist:].dayofweek
            traffic[:, n_hist:] = prof.to_numpy(dtype=np.float32)[:, fut_dow]
            med = recent.groupby("location_id")["visitors"].median().reindex(store_ids).to_numpy(dtype=np.float32)
            traffic = traffic / np.where(med > 0, med, np.nan)[:, None]
    exog["traffic_index"] = traffic[store_of]

    cats = pd.Index(meta.categories)
    static = {
        "category_code": cats.get_indexer(series["category"].astype(str)).astype(np.int32),
        "location_code": pd.Index(meta.locations).get_indexer(series["location_id"]).astype(np.int32),
        "log_base_price": np.log(base).astype(np.float32),
    }
    return Panel(series=series.reset_index(drop=True), dates=dates, n_hist=n_hist, y=y, y_feat=y_feat,
                 censored=censored, first_t=first_t, exog=exog, static=static, price_mult=price_mult)


# ---- quantiles: negative binomial around the mean, dispersion fitted on a holdout -------------------------------

def _nb_grid(mu, phi) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Snap (mu, phi) to a 0.25% log grid and keep the unique pairs: scipy's NB functions are slow per row, and
    a group has few distinct (mean, dispersion) pairs on that grid. Returns grid mu, grid phi, row -> pair."""
    lm = np.round(np.log(np.maximum(np.asarray(mu, dtype=np.float64), 1e-9)) * 400).astype(np.int64)
    lp = np.round(np.log(np.clip(np.asarray(phi, dtype=np.float64), 1e-4, 1e4)) * 400).astype(np.int64)
    keys, inv = np.unique((lm + 2 ** 20) * 2 ** 20 + (lp + 2 ** 19), return_inverse=True)
    return np.exp((keys // 2 ** 20 - 2 ** 20) / 400), np.exp((keys % 2 ** 20 - 2 ** 19) / 400), inv.ravel()


def nb_quantiles(mu: np.ndarray, phi: np.ndarray, qs) -> np.ndarray:
    """Mid-quantiles of NB(mean mu, var mu + phi mu^2), mass of k spread over [k-.5, k+.5]: (len(mu), len(qs)).

    Spreading the integer masses makes quantiles continuous so a p10..p90 band can hold ~80% of integer actuals
    instead of jumping to 90%+ on slow movers.
    """
    from scipy import stats

    if len(np.atleast_1d(mu)) == 0:
        return np.zeros((0, len(qs)))
    gm, gp, inv = _nb_grid(mu, phi)
    n = 1.0 / gp
    p = n / (n + gm)
    out = np.empty((len(gm), len(qs)))
    for j, q in enumerate(qs):
        k = stats.nbinom.ppf(q, n, p)
        below = np.where(k > 0, stats.nbinom.cdf(k - 1, n, p), 0.0)
        mass = np.maximum(stats.nbinom.pmf(k, n, p), 1e-12)
        out[:, j] = np.clip(k - 0.5 + (q - below) / mass, np.maximum(k - 0.5, 0), k + 0.5)
    return np.maximum(out, 0.0)[inv]


def nb_median(mu: np.ndarray, phi: np.ndarray, level: float = 0.5) -> np.ndarray:
    """Median (or the integer quantile at `level`) of NB(mean mu, var mu + phi mu^2), on nb_quantiles' grid."""
    from scipy import stats

    if len(np.atleast_1d(mu)) == 0:
        return np.zeros(0)
    gm, gp, inv = _nb_grid(mu, phi)
    n = 1.0 / gp
    return stats.nbinom.ppf(level, n, n / (n + gm))[inv]


@dataclass
class Dispersion:
    """NB dispersion phi as a function of log(mean) (piecewise linear), times a calibrated multiplier."""

    log_mu: np.ndarray
    phi: np.ndarray
    multiplier: float = 1.0
    holdout_coverage: float | None = None
    power: float = 0.0  # of the series' dispersion index (dispersion_index), when one is given
    holdout_quantile_loss: dict | None = None  # power -> mean quantile loss at the band's ends on the holdout

    def __call__(self, mu: np.ndarray, index: np.ndarray | None = None) -> np.ndarray:
        x = np.log(np.maximum(mu, 1e-6))
        phi = np.interp(x, self.log_mu, self.phi) * self.multiplier
        return phi * index ** self.power if index is not None and self.power else phi


def fit_dispersion(mu: np.ndarray, y: np.ndarray, target: float = 0.8, lo: float = 0.1, hi: float = 0.9,
                   n_bins: int = 8, seed: int = 0, index: np.ndarray | None = None,
                   powers: tuple[float, ...] = (0.0,)) -> Dispersion:
    """Moment estimate of phi per mean bin, then a multiplier so that [lo, hi] covers `target` of the holdout.

    With each row's series dispersion `index`, phi is that curve times index ** power for each of `powers`: the
    curve is estimated with the index's share taken out, the multiplier calibrated, and the power with the least
    quantile loss at lo and hi on the holdout wins (ties: the smaller power)."""
    mu, y = np.maximum(np.asarray(mu, float), 1e-6), np.asarray(y, float)
    if len(mu) < 50:
        return Dispersion(np.array([0.0]), np.array([0.5]))
    if index is None:
        powers = (0.0,)
    edges = np.unique(np.quantile(mu, np.linspace(0, 1, n_bins + 1)))
    b = np.clip(np.searchsorted(edges, mu, side="right") - 1, 0, max(len(edges) - 2, 0))
    cnt = np.bincount(b)
    mm = np.bincount(b, mu) / np.maximum(cnt, 1)
    se = np.bincount(b, (y - mu) ** 2) / np.maximum(cnt, 1)
    ok = cnt > 0
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(len(mu), min(len(mu), 60_000), replace=False))
    best = None
    losses = {}
    for power in sorted(set(powers)):
        w = np.asarray(index, float) ** power if power else np.ones(len(mu))
        m2 = np.bincount(b, mu ** 2 * w) / np.maximum(cnt, 1)  # var - mean = phi_bin * mean^2 * index^power
        phi = np.clip((se - mm) / np.maximum(m2, 1e-9), 0.02, 20.0)
        disp = Dispersion(np.log(mm[ok]), phi[ok], power=float(power))
        ws = index[idx] if power else None
        fit = None
        for m in np.geomspace(0.25, 4.0, 17):
            disp.multiplier = float(m)
            q = nb_quantiles(mu[idx], disp(mu[idx], ws), [lo, hi])
            cov = float(np.mean((y[idx] >= q[:, 0]) & (y[idx] <= q[:, 1])))
            if fit is None or abs(cov - target) < abs(fit[1] - target) - 1e-9:
                fit = (float(m), cov, q)
        disp.multiplier, disp.holdout_coverage, q = fit
        d = y[idx, None] - q
        loss = float(np.mean(np.maximum(np.array([lo, hi]) * d, (np.array([lo, hi]) - 1) * d)))
        losses[float(power)] = round(loss, 6)
        if best is None or loss < best[0]:
            best = (loss, disp)
    best[1].holdout_quantile_loss = losses
    return best[1]


# ---- statsforecast helpers ------------------------------------------------------------------------------------

def _statsforecast(history: pd.DataFrame, h: int, names: list[str]) -> pd.DataFrame:
    """Forecast long `history` (unique_id, ds, y) with statsforecast models; columns = our model names."""
    import statsforecast.models as sfm
    from statsforecast import StatsForecast

    models = []
    for name in names:
        if name == FALLBACK_MODEL:
            models.append(sfm.SeasonalWindowAverage(season_length=7, window_size=4, alias=name))
        else:
            cls, kw = {**INTERMITTENT_MODELS, **STAT_BLEND_MODELS}[name]
            models.append(getattr(sfm, cls)(**kw, alias=name))
    sf = StatsForecast(models=models, freq="D", n_jobs=1)
    out = sf.forecast(df=history, h=h)
    return out.reset_index() if "unique_id" not in out.columns else out


def dispersion_index(y: np.ndarray, censored: np.ndarray, first_t: np.ndarray, days: int = 56,
                     clip: tuple[float, float] = (0.5, 2.0), bins: int = 8) -> np.ndarray:
    """(N,) each series' dispersion relative to series of a similar mean, from its history `y` (N, T): the moment
    NB dispersion (var - mean) / mean^2 of its last `days` days (uncensored, from its first day `first_t`) over the
    median of its bin of log mean (`bins` quantile bins across the series), clipped to `clip`. 1 for a series with
    fewer than 14 such days or no sales, and for all when fewer than 20 series qualify."""
    n = y.shape[1]
    w = np.arange(max(n - days, 0), n)
    v = y[:, w].astype(np.float64)
    ok = (w[None, :] >= first_t[:, None]) & ~censored[:, w]
    c = ok.sum(axis=1)
    m = np.where(ok, v, 0.0).sum(axis=1) / np.maximum(c, 1)
    var = np.where(ok, (v - m[:, None]) ** 2, 0.0).sum(axis=1) / np.maximum(c - 1, 1)
    good = (c >= 14) & (m > 0)
    out = np.ones(len(m))
    if good.sum() < 20:
        return out
    phi = np.maximum(var[good] - m[good], 0.0) / m[good] ** 2
    lm = np.log(m[good])
    edges = np.unique(np.quantile(lm, np.linspace(0, 1, bins + 1)))
    b = np.clip(np.searchsorted(edges, lm, side="right") - 1, 0, max(len(edges) - 2, 0))
    ref = np.array([np.median(phi[b == k]) if (b == k).any() else np.nan for k in range(max(len(edges) - 1, 1))])
    rel = np.nan_to_num(phi / np.maximum(ref[b], 1e-3), nan=1.0)
    # on a 5% grid (few distinct NB shapes to evaluate), inside the clip
    out[good] = np.clip(np.exp(np.round(np.log(np.maximum(rel, 1e-6)) * 20) / 20), *clip)
    return out


def _intermittent(y_feat: np.ndarray, first_t: np.ndarray, days: int = 56) -> np.ndarray:
    """Syntetos-Boylan: average demand interval > 1.32 over the last `days` days of history."""
    n = y_feat.shape[1]
    w = np.arange(max(n - days, 0), n)
    seen = w[None, :] >= first_t[:, None]
    nz = ((y_feat[:, w] > 0) & seen).sum(axis=1)
    return seen.sum(axis=1) > 1.32 * np.maximum(nz, 0.5)


# ---- the model ---------------------------------------------------------------------------------------------------

LAGS = [1, 2, 3, 7, 14, 21, 28]
SF_HISTORY_DAYS = 182  # history the statsforecast models are fitted on
LOOKBACK_DAYS = 70  # history the lag features need at prediction time (max lag 28 + 28-day windows, with slack)


def _lookback(settings: ForecastSettings) -> int:
    """History the lag features need at prediction time."""
    return max([LOOKBACK_DAYS] + [w + 14 for w in settings.long_windows])


def level_span_days(settings: ForecastSettings) -> int:
    """Days before the anchor the serving level model reads: train_window_days of origins (a whole year of them by
    default: the seasons of the year each once, January's after-holiday weeks included), the longest trailing mean
    before the first origin, the horizon after the last."""
    return settings.train_window_days + LEVEL_WINDOWS[-1] + settings.horizon_days


def training_span_days(settings: ForecastSettings) -> int:
    """Days of history before the anchor that training reads (the daily model's window, holdout and lags; the
    level model's span when it is on): what a data source hands the agent, what a training fingerprint covers."""
    span = settings.calibration_days + settings.train_window_days + _lookback(settings)
    return max(span, level_span_days(settings)) if settings.level_weight > 0 else span


def _mlforecast(settings: ForecastSettings):
    import lightgbm as lgb
    from mlforecast import MLForecast
    from mlforecast.lag_transforms import RollingMean, RollingStd, SeasonalRollingMean

    params = dict(settings.lgbm_params)
    if settings.objective == "poisson":
        params.pop("tweedie_variance_power", None)
    models = {}
    for k in range(max(settings.lgbm_members, 1)):  # members differ by seed (bagging, feature sampling)
        models["lgbm" if k == 0 else f"lgbm{k}"] = lgb.LGBMRegressor(
            objective=settings.objective, random_state=settings.seed + 101 * k, deterministic=True,
            force_row_wise=True, n_jobs=settings.threads(), verbose=-1, **params)
    return MLForecast(
        models=models, freq="D", lags=LAGS,
        lag_transforms={1: [RollingMean(7), RollingMean(28), RollingStd(28)]
                        + [RollingMean(w) for w in settings.long_windows],
                        7: [SeasonalRollingMean(season_length=7, window_size=4)],
                        14: [RollingMean(28)]},
        date_features=["dayofweek", "month", "day"], num_threads=1,
    )


STATIC_FEATURES = ["category_code", "location_code", "log_base_price"]


class DemandForecaster:
    """Fit on the inputs as of a training anchor A (data < A only); predict any planning date D >= A."""

    def __init__(self, settings: ForecastSettings | None = None):
        self.settings = settings or ForecastSettings()
        self.meta: FeatureMeta | None = None
        self.fcst = None  # fitted MLForecast (None: too little data, statsforecast fallback for all series)
        self.dispersion: dict[str, Dispersion] = {}
        self.intermittent_model = self.settings.model_name
        self.elasticity: pd.Series | None = None  # sku_id -> own-price elasticity (price_response)
        self.point_level: dict[str, float] = {}  # model -> NB level of its point forecast p50 (point_levels)
        self.point_power: dict[str, float] = {}  # model -> power of the dispersion index in p50 (point_dispersion_*)
        self.blend_weight = 0.0  # weight of settings.blend_model in the main model's mean (chosen on the holdout)
        self.level = None  # the level model (LightGBM on the next horizon_days' mean), None when off or no data
        self.mean_scale: dict[str, float] = {}  # segment -> factor of its mean (bias_correction_segments)
        self.info: dict = {}

    # -- training --
    def fit(self, inputs: ForecastInputs, anchor: pd.Timestamp | None = None) -> "DemandForecaster":
        """Train as of `anchor` A (default: inputs.date) on data < A only. Inputs of a later date fit exactly as
        the same inputs sliced at A (`forecast_inputs(tables, A)`), without that copy: every read below stops at A
        (or at the cut before it), and calendars are read inside the windows that end there."""
        st = self.settings
        t_start = time.perf_counter()
        A = inputs.date if anchor is None else pd.Timestamp(anchor).normalize()
        if A > inputs.date:
            raise ValueError(f"anchor {A:%Y-%m-%d} is after the inputs' date {inputs.date:%Y-%m-%d}")
        cut = A - pd.Timedelta(days=st.calibration_days)  # train < cut, calibrate on [cut, A)
        self.meta = _feature_meta(inputs, st, A)
        series = self._history_series(inputs, A)
        # deterministic sample of series when the group is larger than the training budget
        days = st.train_window_days + _lookback(st)
        series = series.iloc[_hash_sample(series, max(st.max_train_rows // max(st.train_window_days, 1), 1))]
        series = series.reset_index(drop=True)
        start = cut - pd.Timedelta(days=days)
        if st.price_response:
            self.elasticity = _fit_elasticities(inputs, cut, st)
        self.info = {"anchor": f"{A:%Y-%m-%d}", "trained_through": f"{cut - pd.Timedelta(days=1):%Y-%m-%d}",
                     "calibrated_through": f"{A - pd.Timedelta(days=1):%Y-%m-%d}",
                     "train_series": len(series), "train_rows": 0}
        el = self._elasticity_of(series)
        through_anchor = st.refit_on_holdout or st.early_stopping_rounds > 0
        if through_anchor:
            # one feature frame through A-1: training rows < cut, the holdout's one-step rows stop the boosting,
            # the refit reuses the frame. Calibration predicts the holdout from a short panel as of `cut`.
            fcst, X, cens = self._lgbm_features(_build_panel(inputs, series, A, start, st.calibration_days, self.meta,
                                                             elasticity=el, imputation=st.censored_imputation))
            self.fcst = self._fit_lgbm(fcst, X, cens, cut, valid_end=A)
            calib_start = cut - pd.Timedelta(days=max(_lookback(st), SF_HISTORY_DAYS, st.active_days))
            panel = _build_panel(inputs, series, cut, calib_start, st.calibration_days, self.meta, elasticity=el,
                                 imputation=st.censored_imputation)
        else:
            panel = _build_panel(inputs, series, cut, start, st.calibration_days, self.meta, elasticity=el,
                                 imputation=st.censored_imputation)
            self.fcst = self._fit_lgbm(*self._lgbm_features(panel), cut)
        self.level = self._fit_level(panel) if st.level_weight > 0 else None
        self._calibrate(inputs, panel, cut, A)
        del panel
        if self.level is not None:
            # calibrated with the level model of data < cut; the one that serves also learns the holdout weeks (its
            # targets end before A): dev4 14-day WAPE 0.2404 -> 0.2400; and its origins span a whole year (the
            # daily model's panel gives ten months of them): wide12 0.5036 / 0.2404 -> 0.5014 / 0.2372
            self.level = self._fit_level(_build_panel(inputs, series, A, A - pd.Timedelta(days=level_span_days(st)),
                                                      st.horizon_days, self.meta, elasticity=el,
                                                      imputation=st.censored_imputation)) or self.level
        if st.refit_on_holdout and self.fcst is not None:
            # the calibration (dispersion, intermittent model) stays; LightGBM also learns the holdout weeks
            best = self.info.get("best_iteration") or st.lgbm_params.get("n_estimators")
            self.fcst = self._fit_lgbm(fcst, X, cens, A, n_estimators=best) or self.fcst
            self.info["trained_through"] = f"{A - pd.Timedelta(days=1):%Y-%m-%d}"
        self.info["train_seconds"] = round(time.perf_counter() - t_start, 3)
        return self

    def _lgbm_features(self, panel: Panel):
        """(MLForecast, its preprocessed feature frame, censored flag per row) of the panel's history."""
        hist, cens = panel.long("hist")
        if not len(hist):
            return None, None, None
        fcst = _mlforecast(self.settings)
        X = fcst.preprocess(hist, static_features=STATIC_FEATURES, dropna=False, keep_last_n=_lookback(self.settings))
        return fcst, X, cens

    def _fit_lgbm(self, fcst, X: pd.DataFrame | None, cens: np.ndarray | None, cut: pd.Timestamp,
                  valid_end: pd.Timestamp | None = None, n_estimators: int | None = None):
        """Fit LightGBM on the rows of the last train_window_days before `cut` (None: too little data). With
        `valid_end` and early_stopping_rounds, the rows [cut, valid_end) stop the boosting (best_iteration)."""
        st = self.settings
        if X is None:
            return None
        feats = list(fcst.ts.features_order_)
        ds, y = X["ds"].to_numpy(), X["y"].to_numpy()
        ok = X["lag28"].notna().to_numpy()
        if st.drop_stockout_days:
            ok &= ~cens
        keep = ok & (ds >= (cut - pd.Timedelta(days=st.train_window_days)).to_datetime64()) & (ds < cut.to_datetime64())
        self.info["train_rows"] = int(keep.sum())
        in_train = X["lag28"].notna().to_numpy() & (ds < cut.to_datetime64())
        self.info["dropped_stockout_rows"] = int((cens & in_train).sum())
        if keep.sum() < 500 or y[keep].sum() <= 0:  # all-zero labels: Tweedie cannot fit
            return None
        if n_estimators:
            for m in fcst.models.values():
                m.set_params(n_estimators=int(n_estimators))
        kwargs = {}
        if valid_end is not None and st.early_stopping_rounds > 0:
            import lightgbm as lgb

            val = ok & (ds >= cut.to_datetime64()) & (ds < valid_end.to_datetime64())
            if val.sum() >= 100 and y[val].sum() > 0:
                kwargs = {name: {"eval_set": [(X.loc[val, feats], y[val])],
                                 "callbacks": [lgb.early_stopping(st.early_stopping_rounds, verbose=False)]}
                          for name in fcst.models}
        with warnings.catch_warnings():  # eval_set: deprecated in LightGBM 4.7 for eval_X/eval_y (not in 4.3)
            warnings.filterwarnings("ignore", message=".*eval_set.*")
            fcst.fit_models(X.loc[keep, feats], y[keep], models_fit_kwargs=kwargs)
        if kwargs:
            self.info["best_iteration"] = int(fcst.models_["lgbm"].best_iteration_ or 0) or None
        return fcst

    def _fit_level(self, panel: Panel):
        """The level model: LightGBM on each series' mean (de-priced) demand over the next horizon_days, one row per
        established series and origin day of the panel's history (every level_origin_step days, the latest first;
        every origin kept, a hash sample of the series beyond level_max_rows), features from before the origin
        (_level_features). None when there are too few rows."""
        import lightgbm as lgb

        st = self.settings
        H, n = st.horizon_days, panel.n_hist
        origins = np.arange(n - H, LEVEL_WINDOWS[-1] - 1, -max(st.level_origin_step, 1))
        if not len(origins):
            return None
        parts = _level_parts(H, st.level_splits)
        rows = _hash_sample(panel.series, max(st.level_max_rows // (len(origins) * len(parts)), 1))
        r = np.repeat(rows, len(origins))
        o = np.tile(origins, len(rows))
        keep = o - panel.first_t[r] >= st.min_history_days
        r, o = r[keep], o[keep]
        if len(r) < 500:
            return None
        c = _cumsum0(panel.y_feat)
        y = np.concatenate([(c[r, o + b] - c[r, o + a]) / (b - a) for a, b in parts])
        if y.sum() <= 0:
            return None
        model = lgb.LGBMRegressor(objective="tweedie", random_state=st.seed, deterministic=True, force_row_wise=True,
                                  n_jobs=st.threads(), verbose=-1, **LEVEL_PARAMS)
        model.fit(_level_features(panel, r, o, parts), y)
        self.info["level_model"] = {"rows": int(len(y)), "series": len(rows), "origins": int(len(origins)),
                                    "parts": len(parts), "weight": st.level_weight}
        return model

    def _predict_level(self, panel: Panel, rows: np.ndarray) -> np.ndarray:
        """(N, parts) each series' total over each part of the panel's future days (_level_parts) by the level
        model (re-priced like the daily model's), NaN outside `rows`."""
        st = self.settings
        h = len(panel.dates) - panel.n_hist
        parts = _level_parts(h, st.level_splits)
        out = np.full((len(panel.series), len(parts)), np.nan)
        r = np.flatnonzero(rows)
        if not len(r):
            return out
        self.level.set_params(n_jobs=st.threads())
        mult = np.broadcast_to(_future_mult(panel), (len(panel.series), h))
        mean = self.level.predict(_level_features(panel, r, np.full(len(r), panel.n_hist), parts))
        mean = np.maximum(mean, 0.0).reshape(len(parts), len(r))
        for j, (a, b) in enumerate(parts):
            out[r, j] = mean[j] * mult[r, a:b].sum(axis=1)
        return out

    def _elasticity_of(self, series: pd.DataFrame) -> np.ndarray | None:
        """Per row of `series`: its SKU's elasticity (the median one for SKUs the model has not seen)."""
        if self.elasticity is None:
            return None
        e = self.elasticity.reindex(series["sku_id"].to_numpy()).to_numpy(dtype=np.float64)
        fill = float(np.nanmedian(self.elasticity.to_numpy())) if self.elasticity.notna().any() else -1.0
        return np.where(np.isfinite(e), e, fill)

    @staticmethod
    def _history_series(inputs: PlanningInputs, before: pd.Timestamp) -> pd.DataFrame:
        """The store series with a sales row dated before `before`, sorted, with their category."""
        s = inputs.sales
        s = s.loc[(s["location_id"].isin(_stores(inputs)) & (s["date"] < before)).to_numpy(),
                  ["sku_id", "location_id"]].drop_duplicates()
        s = s.merge(inputs.catalog[["sku_id", "category"]], on="sku_id", how="inner")
        return s.sort_values(["sku_id", "location_id"]).reset_index(drop=True).astype(object)

    def _calibrate(self, inputs: ForecastInputs, panel: Panel, cut: pd.Timestamp, anchor: pd.Timestamp) -> None:
        """Predict the holdout [cut, A) from data < cut: fit NB dispersions and pick the intermittent model."""
        st = self.settings
        h = st.calibration_days
        est = panel.first_t <= panel.n_hist - st.min_history_days
        if not est.any():
            return
        inter = _intermittent(panel.y_feat, panel.first_t)
        # every model on every established series: calibrating the statsforecast models on the intermittent series
        # only (cheaper) widened their bands and lowered their medians: daily WAPE 0.512 -> 0.515 on 12 M5 cutoffs
        means = self._predict_means(panel, est, blend_member=max(st.blend_weights) > 0)
        s = inputs.sales
        s = s[(s["date"] >= cut) & (s["date"] < anchor)]
        ser = panel.series
        code = _series_codes(s, ser)
        k = code >= 0
        t = ((s["date"].to_numpy()[k] - cut.to_datetime64()) // np.timedelta64(1, "D")).astype(int)
        y = np.full((len(ser), h), np.nan)
        y[code[k], t] = s["units"].to_numpy()[k]
        inv = inputs.inventory_history
        if inv is not None and len(inv):
            iw = inv[(inv["date"] >= cut) & (inv["date"] < anchor) & (inv["on_hand"] <= 0)]
            ic = _series_codes(iw, ser)
            m = ic >= 0
            it = ((iw["date"].to_numpy()[m] - cut.to_datetime64()) // np.timedelta64(1, "D")).astype(int)
            y[ic[m], it] = np.nan  # stocked-out days say little about demand: leave them out of calibration
        y[_closed_days(y, ser["location_id"].to_numpy())] = np.nan  # so do the days a store was closed
        self._choose_blend(means, y, est)
        index = np.broadcast_to(self._dispersion_index(panel)[:, None], y.shape)
        if self.level is not None:
            level = self._predict_level(panel, est)
            for name in list(means):
                means[name] = _apply_level(means[name], level, st.level_weight, st.level_splits)
        report = {}
        for name, mu in means.items():
            if name.endswith(RAW):
                continue
            ok = ~np.isnan(y) & ~np.isnan(mu) & est[:, None]
            if ok.sum() == 0:
                continue
            ii = ok & inter[:, None]
            report[name] = {"wape": _wape(y[ok], mu[ok]),
                            "wape_intermittent": _wape(y[ii], mu[ii]) if ii.any() else None}
        main = st.model_name if st.model_name in report else FALLBACK_MODEL
        best = main
        if st.use_intermittent_models:
            cands = [n for n in report if report[n]["wape_intermittent"] is not None]
            if cands:
                best = min(cands, key=lambda n: (report[n]["wape_intermittent"], n != main))
                base = report.get(main, {}).get("wape_intermittent")
                if best != main and base is not None and \
                        report[best]["wape_intermittent"] > base * (1 - st.intermittent_margin):
                    best = main
        self.intermittent_model = best
        self._correct_bias(means, y, est, inter, main, best)
        for name in dict.fromkeys([main, best]):  # the models that serve get a dispersion (the others never would)
            if name in report:
                ok = ~np.isnan(y) & ~np.isnan(means[name]) & est[:, None]
                d = self.dispersion[name] = fit_dispersion(means[name][ok], y[ok], st.target_coverage, seed=st.seed,
                                                           index=index[ok], powers=st.band_dispersion_powers)
                report[name].update(coverage=d.holdout_coverage, band_power=d.power,
                                    band_quantile_loss={str(k): v for k, v in (d.holdout_quantile_loss or {}).items()})
        if main == st.model_name and main in means:
            uses_main = ~inter if best != main else np.ones(len(ser), dtype=bool)
            ok = ~np.isnan(y) & ~np.isnan(means[main]) & (est & uses_main)[:, None]
            self._fit_point_level(main, means.get(main + RAW, means[main])[ok], y[ok], index[ok])
            if best != main:
                ok = ~np.isnan(y) & ~np.isnan(means[best]) & (est & inter)[:, None]
                self._fit_point_level(best, means[best][ok], y[ok], index[ok])
        self.info["holdout"] = report
        self.info["intermittent_model"] = best
        self.info["holdout_intermittent_share"] = float(inter[est].mean())

    def _correct_bias(self, means: dict[str, np.ndarray], y: np.ndarray, est: np.ndarray, inter: np.ndarray,
                      main: str, best: str) -> None:
        """Each corrected segment's holdout ratio sum(y) / sum(mean) of the model that serves it, as a factor
        (settings.bias_correction_*) in self.mean_scale; the serving models' means in `means` are scaled in place
        (their own rows only), so that p50 and the band are fitted on what predict will serve."""
        st = self.settings
        self.mean_scale = {}
        lo, hi = st.bias_correction_clip
        report = {}
        for seg in st.bias_correction_segments:
            rows = _segment_rows(seg, est, inter)
            name = best if seg == "intermittent" else main
            if name not in means:
                continue
            mu = means[name]
            ok = ~np.isnan(y) & ~np.isnan(mu) & rows[:, None]
            sy, sm = float(y[ok].sum()), float(mu[ok].sum())
            if ok.sum() < 200 or sy < 50 or sm <= 0:  # too little of the segment on the holdout to say
                continue
            f = float(np.clip((sy / sm) ** st.bias_correction_weight, lo, hi))
            self.mean_scale[seg] = f
            report[seg] = {"model": name, "holdout_ratio": round(sy / sm, 4), "factor": round(f, 4)}
            for key in (name, name + RAW):
                if key in means:
                    means[key] = means[key].copy()
                    means[key][rows] *= f
        self.info["bias_correction"] = report

    def _scale_means(self, mu: np.ndarray, est: np.ndarray, inter: np.ndarray) -> np.ndarray:
        """`mu` with each segment's rows scaled by its holdout factor (self.mean_scale)."""
        scale = getattr(self, "mean_scale", {})  # models cached before the option have none
        if not scale:
            return mu
        f = np.ones(len(mu))
        for seg, factor in scale.items():
            f[_segment_rows(seg, est, inter)] = factor
        return mu * f[:, None]

    def _choose_blend(self, means: dict[str, np.ndarray], y: np.ndarray, est: np.ndarray) -> None:
        """Pick the blend member's weight on the holdout (least absolute error of the series' totals over their
        observed days; ties keep the smaller weight) and blend `means`' main model in place (its own mean kept under
        main + RAW)."""
        st = self.settings
        main = st.model_name
        stat = means.pop(st.blend_model, None)
        if stat is None or main not in means:
            return
        raw = means[main]
        obs = ~np.isnan(y) & ~np.isnan(raw) & est[:, None]
        yt = np.where(obs, y, 0.0).sum(axis=1)
        errs = {}
        for w in sorted(set(st.blend_weights)):
            mu = np.where(obs, _blend(raw, stat, w), 0.0).sum(axis=1)
            errs[w] = float(np.abs(mu - yt)[obs.any(axis=1)].sum())
        self.blend_weight = float(min(errs, key=lambda w: (errs[w], w)))
        means[main + RAW] = raw
        means[main] = _blend(raw, stat, self.blend_weight)
        self.info["blend"] = {"model": st.blend_model, "weight": self.blend_weight,
                              "holdout_total_abs_error": {str(w): round(e, 3) for w, e in errs.items()}}

    def _dispersion_index(self, panel: Panel) -> np.ndarray:
        """(N,) dispersion_index of the panel's series over the history before its origin, with the settings'."""
        st = self.settings
        return dispersion_index(panel.y_feat, panel.censored, panel.first_t, st.dispersion_index_days,
                                st.dispersion_index_clip)

    def _fit_point_level(self, name: str, mu: np.ndarray, y: np.ndarray, index: np.ndarray | None = None) -> None:
        """The NB level of model `name`'s point forecast, and the power of the series' dispersion `index` (per row)
        in its dispersion, with the least absolute error on its holdout rows: a median calibration (the NB shape is
        an assumption; on M5 the plain median sits below most actuals, and series of the same mean differ in their
        lumpiness). A candidate replaces the best so far only if it errs less: the first level and power 0 win ties."""
        st = self.settings
        powers = st.point_dispersion_powers if index is not None else (0.0,)
        if (len(st.point_levels) > 1 or len(powers) > 1) and len(mu) and name in self.dispersion:
            phi = self.dispersion[name](mu)  # the pooled curve: p50 takes its own power of the index, not the band's
            best = None
            for a in sorted(set(powers)):
                ph = phi * index ** a if a else phi
                for q in st.point_levels:
                    err = float(np.abs(nb_median(mu, ph, q) - y).sum())
                    if best is None or err < best[0]:
                        best = (err, q, a)
            self.point_level[name], self.point_power[name] = float(best[1]), float(best[2])
        self.info["point_level"] = dict(self.point_level)
        self.info["point_power"] = dict(self.point_power)

    # -- prediction --
    def _predict_means(self, panel: Panel, rows: np.ndarray, which: list[str] | None = None,
                       blend_member: bool = False) -> dict[str, np.ndarray]:
        """(N, h) mean forecasts per model name for panel rows in `rows` (NaN elsewhere). `blend_member`: also the
        blend member's (settings.blend_model), on the same de-priced history as LightGBM's lags, re-priced the same
        way."""
        st = self.settings
        h = len(panel.dates) - panel.n_hist
        out: dict[str, np.ndarray] = {}
        sub = np.flatnonzero(rows)
        if not len(sub):
            return out
        p = _subpanel(panel, sub)
        hist, _ = p.long("hist", keep_last=_lookback(st))
        fut, _ = p.long("future")
        fut = fut.drop(columns=list(p.static))
        if self.fcst is not None and (which is None or st.model_name in which):
            from .tree_predict import compiled_models  # numba is loaded already: mlforecast imports it

            for m in self.fcst.models_.values():  # this process's share of the cores, not the trainer's
                m.set_params(n_jobs=st.threads())
            # LightGBM's predictions, bit for bit, from the compiled kernel (core.tree_predict) when it pays: the
            # models are swapped for the call only
            with warnings.catch_warnings(), compiled_models(self.fcst, st.threads(), rows=len(sub)):
                warnings.filterwarnings("ignore", message="Found null values", category=UserWarning)
                pred = self.fcst.predict(h, new_df=hist, X_df=fut)
            arr = np.full((len(panel.series), h), np.nan)
            ti = ((pred["ds"].to_numpy() - panel.dates[panel.n_hist].to_datetime64()) // np.timedelta64(1, "D"))
            members = pred[[c for c in pred.columns if c.startswith("lgbm")]].to_numpy(dtype=np.float64)
            arr[sub[pred["unique_id"].to_numpy()], ti.astype(int)] = np.maximum(members.mean(axis=1), 0)
            out[st.model_name] = arr * _future_mult(panel)
        names = [FALLBACK_MODEL] if self.fcst is None else []
        if st.use_intermittent_models:
            names += list(INTERMITTENT_MODELS)
        if which is not None:
            names = [n for n in names if n in which]
        if blend_member and self.fcst is not None:
            names.append(st.blend_model)
        if names:
            sf_hist, _ = p.long("hist", keep_last=SF_HISTORY_DAYS)
            pred = _statsforecast(sf_hist[["unique_id", "ds", "y"]], h, names)
            ti = ((pred["ds"].to_numpy() - panel.dates[panel.n_hist].to_datetime64()) // np.timedelta64(1, "D"))
            for n in names:
                arr = np.full((len(panel.series), h), np.nan)
                arr[sub[pred["unique_id"].to_numpy().astype(int)], ti.astype(int)] = np.maximum(pred[n].to_numpy(), 0)
                out[n] = arr * _future_mult(panel)
        return out

    def predict(self, inputs: ForecastInputs, prices: pd.DataFrame | None = None) -> pd.DataFrame:
        """Forecast frame (OUTPUT_COLUMNS) for every active store series of `inputs` over D..D+h-1.

        `prices` (sku_id, location_id, price): the regular price in effect over the horizon for those series (the
        others keep their current price), e.g. to ask what demand a price change would bring; planned promotion
        discounts apply on top. The forecast responds through the fitted elasticities (price_response).
        """
        st = self.settings
        D, h = inputs.date, st.horizon_days
        act = active_series(inputs, st.active_days)
        act = act.merge(inputs.catalog[["sku_id", "category"]], on="sku_id", how="inner")
        act = act.reset_index(drop=True)
        planned = None
        if prices is not None and len(prices):
            missing = {"sku_id", "location_id", "price"} - set(prices.columns)
            if missing:
                raise ValueError(f"prices: missing columns {sorted(missing)} (need sku_id, location_id, price)")
            pp = prices.drop_duplicates(["sku_id", "location_id"], keep="last")
            planned = np.full(len(act), np.nan)
            code = _series_codes(pp, act)
            planned[code[code >= 0]] = pp["price"].to_numpy(dtype=np.float64)[code >= 0]
        # statsforecast models read half a year of history; LightGBM and the profiles need only LOOKBACK_DAYS
        blend = getattr(self, "blend_weight", 0.0) > 0 and self.fcst is not None
        uses_sf = self.fcst is None or self.intermittent_model != st.model_name or blend
        lookback = max(_lookback(st), SF_HISTORY_DAYS if uses_sf else 0, st.dispersion_index_days)
        panel = _build_panel(inputs, act, D, D - pd.Timedelta(days=lookback), h, self.meta,
                             elasticity=self._elasticity_of(act), planned_price=planned,
                             imputation=getattr(st, "censored_imputation", "mean"))
        hist_days = panel.n_hist - panel.first_t
        est = hist_days >= st.min_history_days
        inter = _intermittent(panel.y_feat, panel.first_t) & est
        N = len(act)
        mu = np.full((N, h), np.nan)
        model = np.full(N, NEW_SERIES_MODEL, dtype=object)
        main = st.model_name if self.fcst is not None else FALLBACK_MODEL
        use_inter = inter & (self.intermittent_model != main)
        means = self._predict_means(panel, est & ~use_inter, which=[main], blend_member=blend)
        own = None  # the main model's own mean where it is blended: p50 is its median
        if main in means:
            m = est & ~use_inter
            if st.blend_model in means:
                own = np.maximum(means[main], 0)
                means[main] = _blend(means[main], means.pop(st.blend_model), self.blend_weight)
            mu[m], model[m] = means[main][m], main
        if use_inter.any():
            means = self._predict_means(panel, use_inter, which=[self.intermittent_model])
            if self.intermittent_model in means:
                mu[use_inter] = means[self.intermittent_model][use_inter]
                model[use_inter] = self.intermittent_model
        if self.level is not None:
            level = self._predict_level(panel, est)
            mu = _apply_level(mu, level, st.level_weight, st.level_splits)
            if own is not None:
                own = _apply_level(own, level, st.level_weight, st.level_splits)
        mu = self._scale_means(mu, est, inter)
        if own is not None:
            own = self._scale_means(own, est, inter)
        todo = np.isnan(mu).any(axis=1)
        if todo.any():
            mu[todo] = (_profile_forecast(panel, est & ~todo, todo) * _future_mult(panel))[todo]
            model[todo] = NEW_SERIES_MODEL
        mu = np.nan_to_num(np.maximum(mu, 0.0), nan=0.0, posinf=0.0)
        closed = _annual_closures(inputs, act, panel.dates[panel.n_hist:])
        mu[closed] = 0.0  # the store's annual closures (and their quantiles, below)

        # quantiles: each model's dispersion (times its power of each series' dispersion index, read from the history
        # before D); profiles borrow the main model's, widened (their level is a guess)
        # p50 reads each model's pooled dispersion (php) times its own power of the index (point_power), not the band's
        index = np.broadcast_to(self._dispersion_index(panel)[:, None], mu.shape)
        phi, php = np.empty_like(mu), np.empty_like(mu)
        default = self.dispersion.get(main) or Dispersion(np.array([0.0]), np.array([0.5]))
        for name in np.unique(model):
            m = model == name
            d = self.dispersion.get(name, default)
            widen = 1.5 if name == NEW_SERIES_MODEL else 1.0
            phi[m] = d(mu[m], index[m]) * widen
            php[m] = d(mu[m]) * widen
        qs = sorted(set(st.quantiles) | {0.1, 0.5, 0.9})
        q = nb_quantiles(mu.ravel(), phi.ravel(), qs)
        # p50 is the plain median of the count distribution (an integer): the point forecast that minimizes absolute
        # error (WAPE). It always lies inside the mid-quantile band; the clip only guards rounding.
        j50, j10, j90 = qs.index(0.5), qs.index(0.1), qs.index(0.9)
        mp = mu
        if own is not None:  # the main model's rows: LightGBM's own mean, with the main dispersion
            m = model == main
            mp = mu.copy()
            mp[m] = own[m]
            php[m] = default(mp[m])
        med = np.empty(mu.size)
        rest = np.ones(mu.size, dtype=bool)  # rows without a calibrated level and power: the plain median
        powers = getattr(self, "point_power", {})  # models cached before the option have none
        for name, level in getattr(self, "point_level", {}).items():  # the holdout's best level and power per model
            point = np.repeat(model == name, h)
            a = powers.get(name, 0.0)
            if point.any():
                ph = php.ravel()[point] * (index.ravel()[point] ** a if a else 1.0)
                med[point] = nb_median(mp.ravel()[point], ph, level)
                rest &= ~point
        med[rest] = nb_median(mp.ravel()[rest], php.ravel()[rest])
        q[:, j50] = np.clip(med, q[:, j10], q[:, j90])
        q[closed.ravel()] = 0.0
        out = pd.DataFrame({
            "sku_id": np.repeat(act["sku_id"].to_numpy(), h),
            "location_id": np.repeat(act["location_id"].to_numpy(), h),
            "target_date": np.tile(panel.dates[panel.n_hist:].values, N),
            "horizon_day": np.tile(np.arange(1, h + 1, dtype=np.int64), N),
            "mean": mu.ravel(),
        })
        for j, qq in enumerate(qs):
            out[f"p{int(round(qq * 100)):02d}"] = q[:, j]
        out["model"] = np.repeat(model, h)
        cols = [c for c in out.columns if c not in ("model",)] + ["model"]
        return out[cols].astype({"sku_id": object, "location_id": object, "model": object})


def _segment_rows(segment: str, est: np.ndarray, inter: np.ndarray) -> np.ndarray:
    """The established series of a bias-correction segment (ForecastSettings.bias_correction_segments)."""
    if segment not in ("intermittent", "regular"):
        raise ValueError(f"bias_correction_segments: unknown segment {segment!r} (intermittent, regular)")
    return est & (inter if segment == "intermittent" else ~inter)


def _blend(raw: np.ndarray, stat: np.ndarray, w: float) -> np.ndarray:
    """(1 - w) * raw + w * stat where the member has a forecast, raw elsewhere."""
    return raw if w <= 0 else np.where(np.isnan(stat), raw, (1 - w) * raw + w * stat)


LEVEL_WINDOWS = (7, 14, 28, 56, 112)  # the level model's trailing means (days before the origin)
LEVEL_PARAMS = {"n_estimators": 300, "learning_rate": 0.05, "num_leaves": 31, "min_child_samples": 100,
                "subsample": 0.8, "subsample_freq": 1, "colsample_bytree": 0.8, "max_bin": 127}


def _level_parts(h: int, splits: tuple[int, ...]) -> list[tuple[int, int]]:
    """The parts [a, b) of a horizon of h days cut at `splits` (days inside it): (7,) with 14 days: week 1, week 2."""
    edges = [0] + sorted({int(d) for d in splits if 0 < d < h}) + [h]
    return list(zip(edges[:-1], edges[1:]))


def _level_features(panel: Panel, r: np.ndarray, o: np.ndarray, parts: list[tuple[int, int]]) -> pd.DataFrame:
    """Features of the level model for series rows `r` at origin columns `o` (the first forecast day), one block of
    rows per part [a, b) of `parts` (in that order), the target being the mean over days [o+a, o+b): trailing means
    of the (de-priced, imputed) demand before o over LEVEL_WINDOWS (from the series' first day when shorter), the
    share of zero days in the last 28, the means of every calendar/exogenous feature over [o+a, o+b) (known in
    advance: planned discounts, events, weather, traffic index), the part's first day `a`, the origin's calendar and
    the static features. Every cumulative sum is taken once for all parts."""
    y = panel.y_feat
    c = _cumsum0(y)
    z = _cumsum0((y <= 0).astype(np.float64))
    first = panel.first_t[r]
    hist = {}
    for w in LEVEL_WINDOWS:
        s = np.maximum(o - w, first)
        hist[f"mean_{w}"] = (c[r, o] - c[r, s]) / np.maximum(o - s, 1)
    s = np.maximum(o - 28, first)
    hist["zero_share_28"] = (z[r, o] - z[r, s]) / np.maximum(o - s, 1)
    d = panel.dates[o]
    rest = {"month": d.month.to_numpy(), "day": d.day.to_numpy(), "dayofweek": d.dayofweek.to_numpy()}
    rest.update({k: v[r] for k, v in panel.static.items()})
    sums = {k: (_cumsum0(np.where(np.isfinite(v), v, 0.0)), _cumsum0(np.isfinite(v).astype(np.float64)))
            for k, v in panel.exog.items()}
    T = len(panel.dates)
    frames = []
    for a, b in parts:
        lo, hi = np.minimum(o + a, T), np.minimum(o + b, T)
        f = dict(hist)
        for k, (cv, cn) in sums.items():
            n = cn[r, hi] - cn[r, lo]
            f[f"next_{k}"] = np.where(n > 0, (cv[r, hi] - cv[r, lo]) / np.maximum(n, 1), np.nan)
        f["part_start"] = np.full(len(r), a, dtype=np.int32)
        frames.append(pd.DataFrame(f | rest))
    return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)


def _apply_level(mu: np.ndarray, level: np.ndarray, weight: float, splits: tuple[int, ...] = ()) -> np.ndarray:
    """Scale each series' (row's) days so that the total of each part of the horizon (_level_parts of `splits`)
    moves `weight` of the way to the level model's total of that part (`level`: (N, parts), or (N,) for one part);
    a part without a level total (NaN) or with a zero total keeps its days."""
    level = level.reshape(len(mu), -1)
    out = mu.copy()
    for j, (a, b) in enumerate(_level_parts(mu.shape[1], splits)):
        tot = np.nansum(mu[:, a:b], axis=1)  # 0 for a row of NaN
        ok = np.isfinite(level[:, j]) & (tot > 0)
        f = np.ones(len(mu))
        f[ok] = ((1 - weight) * tot[ok] + weight * level[ok, j]) / tot[ok]
        out[:, a:b] *= f[:, None]
    return out


def _future_mult(panel: Panel) -> np.ndarray | float:
    """(N, h) price multiplier of the forecast days (1.0 without price response)."""
    return 1.0 if panel.price_mult is None else panel.price_mult[:, panel.n_hist:]


def _fit_elasticities(inputs: ForecastInputs, cut: pd.Timestamp, settings: ForecastSettings) -> pd.Series:
    """Own-price elasticity per SKU from sales < cut (the pooled fixed-effects estimate of core.elasticity),
    clipped to settings.elasticity_clip: what the forecast applies to a price different from the base price."""
    from .elasticity import ElasticitySettings, estimate_elasticities

    first = cut - pd.Timedelta(days=settings.train_window_days)
    s = inputs.sales  # the window is passed as a mask: the estimator reads the kept rows column by column
    window = ((s["date"] < cut) & (s["date"] >= first) & s["location_id"].isin(_stores(inputs))).to_numpy()
    inv = inputs.inventory_history
    if inv is not None:  # the estimator reads only the stocked-out days: select them, not the whole window
        inv = inv.loc[((inv["date"] < cut) & (inv["date"] >= first) & (inv["on_hand"] <= 0)).to_numpy(),
                      ["date", "sku_id", "location_id", "on_hand"]]
    est = estimate_elasticities(s, inputs.catalog, inv, inputs.events[inputs.events["date"] < cut],
                                settings=ElasticitySettings(history_days=None, max_iter=15, tol=0.2),
                                locations=inputs.locations, unpooled=False, rows=window)
    lo, hi = settings.elasticity_clip
    return pd.Series(np.clip(est["elasticity"].to_numpy(dtype=np.float64), lo, hi),
                     index=est["sku_id"].to_numpy(dtype=object))


def _subpanel(panel: Panel, rows: np.ndarray) -> Panel:
    return Panel(series=panel.series.iloc[rows].reset_index(drop=True), dates=panel.dates, n_hist=panel.n_hist,
                 y=panel.y[rows], y_feat=panel.y_feat[rows], censored=panel.censored[rows],
                 first_t=panel.first_t[rows], exog={k: v[rows] for k, v in panel.exog.items()},
                 static={k: v[rows] for k, v in panel.static.items()},
                 price_mult=None if panel.price_mult is None else panel.price_mult[rows])


def _profile_forecast(panel: Panel, donors: np.ndarray, targets: np.ndarray, prior_days: float = 7.0) -> np.ndarray:
    """Category x location profile for series with little history: donors' mean level by day of week, shrunk
    towards the series' own mean over the days it has been on sale."""
    h = len(panel.dates) - panel.n_hist
    N = len(panel.series)
    w = np.arange(max(panel.n_hist - 56, 0), panel.n_hist)
    dow_hist = panel.dates[w].dayofweek.to_numpy()
    dow_fut = panel.dates[panel.n_hist:].dayofweek.to_numpy()
    cat = panel.static["category_code"]
    loc = panel.static["location_code"]
    yv = panel.y_feat[:, w].astype(np.float64)
    seen = w[None, :] >= panel.first_t[:, None]
    # donor mean per (category, location) and per category, by day of week
    n_c = int(cat.max(initial=0)) + 2
    n_l = int(loc.max(initial=0)) + 2
    lvl_cl = np.zeros((n_c, n_l, 7))
    cnt_cl = np.zeros((n_c, n_l, 7))
    d = np.flatnonzero(donors)
    if len(d):
        rr, tt = np.nonzero(seen[d])
        np.add.at(lvl_cl, (cat[d][rr], loc[d][rr], dow_hist[tt]), yv[d][rr, tt])
        np.add.at(cnt_cl, (cat[d][rr], loc[d][rr], dow_hist[tt]), 1.0)
    lvl_c, cnt_c = lvl_cl.sum(axis=1), cnt_cl.sum(axis=1)
    all_l, all_c = lvl_c.sum(axis=0), cnt_c.sum(axis=0)
    mean_cl = lvl_cl / np.maximum(cnt_cl, 1)
    mean_c = lvl_c / np.maximum(cnt_c, 1)
    mean_all = all_l / np.maximum(all_c, 1)
    prof = np.where(cnt_cl[cat, loc] >= 7, mean_cl[cat, loc],
                    np.where(cnt_c[cat] >= 7, mean_c[cat], mean_all[None, :]))  # (N, 7)
    prof_fut = prof[:, dow_fut]  # (N, h)
    # shrink towards the series' own level over the days it was on sale
    n_own = seen.sum(axis=1)
    own = (yv * seen).sum(axis=1)
    prof_mean = prof.mean(axis=1)
    level = (own + prior_days * prof_mean) / (n_own + prior_days)
    scale = np.where(prof_mean > 0, level / np.maximum(prof_mean, 1e-9), 0.0)
    out = prof_fut * scale[:, None]
    if not len(d):  # nothing to learn a profile from: the series' own mean
        out = np.repeat((own / np.maximum(n_own, 1))[:, None], h, axis=1)
    return np.where(targets[:, None], out, np.nan) if N else np.zeros((0, h))


def _wape(y: np.ndarray, f: np.ndarray) -> float | None:
    s = float(np.abs(y).sum())
    return float(np.abs(f - y).sum() / s) if s > 0 else None


def train_forecaster(inputs: ForecastInputs, settings: ForecastSettings | None = None,
                     anchor: pd.Timestamp | None = None) -> DemandForecaster:
    """Fit the engine on `inputs` as of the training anchor (default inputs.date): everything < anchor."""
    return DemandForecaster(settings).fit(inputs, anchor)


# ---- cache and the entry point ----------------------------------------------------------------------------------

def _cache_path(cache_dir: str, sku_group: str, anchor: pd.Timestamp) -> str:
    return os.path.join(cache_dir, sku_group, f"{anchor:%Y-%m-%d}.pkl")


def _atomic_pickle(obj, path: str) -> None:
    atomic_write_local(path, pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))


def load_or_train(tables: dict[str, pd.DataFrame], date, sku_group: str, settings: ForecastSettings,
                  cache_dir: str | None,
                  inputs: ForecastInputs | None = None) -> tuple[DemandForecaster, bool, pd.Timestamp]:
    """The model for planning `date`: the cached one for its anchor, else trained on data < anchor (and cached).
    `inputs`: `forecast_inputs(tables, date, sku_group)` when the caller has them (the training reads them up to
    the anchor, without slicing a copy at the anchor)."""
    anchor = anchor_date(date, settings.retrain_every_days)
    path = _cache_path(cache_dir, sku_group, anchor) if cache_dir else None
    if path and os.path.exists(path):
        try:
            with open(path, "rb") as f:
                payload = pickle.load(f)
            if payload.get("fingerprint") == settings.fingerprint():
                return payload["model"], False, anchor
        except (pickle.UnpicklingError, EOFError, AttributeError, KeyError):
            pass  # unreadable or stale cache: retrain and overwrite
    if inputs is None:
        inputs = forecast_inputs(tables, date, sku_group, settings.horizon_days)
    model = train_forecaster(inputs, settings, anchor)
    if path:
        _atomic_pickle({"fingerprint": settings.fingerprint(), "model": model}, path)
    return model, True, anchor


def forecast_for_date(tables: dict[str, pd.DataFrame], date, sku_group: str, settings: ForecastSettings | None = None,
                      cache_dir: str | None = None, prices: pd.DataFrame | None = None) -> tuple[pd.DataFrame, dict]:
    """Demand forecast of one SKU group for planning date D (targets D..D+h-1) and metadata about the run.

    `prices` (sku_id, location_id, price): regular prices in effect over the horizon (default: the current ones);
    see DemandForecaster.predict."""
    settings = settings or ForecastSettings()
    t0 = time.perf_counter()
    inputs = forecast_inputs(tables, date, sku_group, settings.horizon_days)
    model, trained_now, anchor = load_or_train(tables, date, sku_group, settings, cache_dir, inputs)
    t1 = time.perf_counter()
    forecast = model.predict(inputs, prices=prices)
    t2 = time.perf_counter()
    mix = forecast.drop_duplicates(["sku_id", "location_id"])["model"].value_counts().sort_index()
    info = {
        "date": f"{inputs.date:%Y-%m-%d}", "sku_group": sku_group, "anchor": f"{anchor:%Y-%m-%d}",
        "trained_through": model.info.get("trained_through"),
        "calibrated_through": model.info.get("calibrated_through"), "trained_now": trained_now,
        "train_seconds": round(model.info.get("train_seconds", 0.0) if trained_now else 0.0, 3),
        "load_or_train_seconds": round(t1 - t0, 3), "predict_seconds": round(t2 - t1, 3),
        "series": int(forecast[["sku_id", "location_id"]].drop_duplicates().shape[0]),
        "model_mix": {str(k): int(v) for k, v in mix.items()},
        "intermittent_model": model.intermittent_model,
        "holdout": model.info.get("holdout", {}), "train_rows": model.info.get("train_rows"),
        "notes": list(inputs.notes),
    }
    return forecast, info
