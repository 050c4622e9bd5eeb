"""Plausibility of data that passes the contracts: sales days far outside their own series' level, found against
a trailing rolling median / MAD (a causal Hampel filter), capped before any model learns from them and reported by name.

A units value of 1e12 is a valid non-negative number, so the contracts let it through; one such day in a global
model's training set inflates every series of the group. Capping it per series keeps the poison where it is.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from . import ids

KEYS = ["sku_id", "location_id"]
OUTLIER_COLUMNS = ["sku_id", "location_id", "date", "units", "cap_units", "median_units"]


@dataclass(frozen=True)
class OutlierSettings:
    """How far a day must sit above its series' local level to count as an outlier (both tests must hold)."""

    window_days: int = 29  # trailing window of the local level, the day itself included (causal: a day is judged
    #                        by what came before it, so capping never changes with later data)
    mad_k: float = 15.0  # robust z-score: (units - median) / (1.4826 MAD) above this
    level_factor: float = 20.0  # and units above this many times the window's upper quartile (>= 1 unit)
    min_units: float = 50.0  # and above this many units: small counts are never outliers
    explained_factor: float = 10.0  # on promotion or event days both thresholds are this many times higher

    def fingerprint(self) -> str:
        return (f"w{self.window_days}-k{self.mad_k:g}-f{self.level_factor:g}-m{self.min_units:g}"
                f"-e{self.explained_factor:g}")


def explained_days(sales: pd.DataFrame, events: pd.DataFrame | None = None,
                   locations: pd.DataFrame | None = None) -> np.ndarray:
    """Rows a promotion (`on_promotion`) or an event in the location's region (or a network-wide event) explains:
    a Black Friday may sell thirty times a normal day."""
    mask = sales["on_promotion"].to_numpy(dtype=bool) if "on_promotion" in sales.columns \
        else np.zeros(len(sales), dtype=bool)
    if events is None or not len(events) or locations is None:
        return mask
    ev = events[["date", "region"]].drop_duplicates()
    everywhere = ev.loc[ev["region"].isna() | ev["region"].astype(str).str.lower().isin(["", "all", "*"]), "date"]
    keyed = ev.dropna()
    # (day, region) as one integer per row: a vectorised membership test instead of tuple indexes over every row
    regions = pd.Index(pd.concat([locations["region"], keyed["region"]]).astype(str).unique())
    loc_region = pd.Series(regions.get_indexer(locations["region"].astype(str)), index=locations["location_id"])
    loc_code, loc_uniq = ids.factorize(sales["location_id"].to_numpy())
    row_region = loc_region.reindex(loc_uniq).fillna(-1).to_numpy(dtype=np.int64)[loc_code]
    days = sales["date"].to_numpy().astype("datetime64[D]").astype(np.int64)
    n = len(regions) + 1
    row_key = days * n + row_region
    ev_key = (keyed["date"].to_numpy().astype("datetime64[D]").astype(np.int64) * n
              + regions.get_indexer(keyed["region"].astype(str)))
    hit = (row_region >= 0) & np.isin(row_key, ev_key)
    return mask | hit | np.isin(days, everywhere.to_numpy().astype("datetime64[D]").astype(np.int64))


def _wide(sales: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(days x series matrix of units, NaN where no row; each sales row's day and series index)."""
    sku, _ = ids.factorize(sales["sku_id"].to_numpy())
    loc, locs = ids.factorize(sales["location_id"].to_numpy())
    code, uniq = pd.factorize(sku.astype(np.int64) * max(len(locs), 1) + loc)
    dates = pd.DatetimeIndex(sales["date"])
    first = dates.min()
    day = ((dates - first) // pd.Timedelta(days=1)).to_numpy()
    mat = np.full((int(day.max()) + 1, len(uniq)), np.nan)
    mat[day, code] = sales["units"].to_numpy(dtype=float)
    return mat, day, code


def _rolling(mat: np.ndarray, window: int, min_periods: int, how: str) -> np.ndarray:
    """Trailing rolling statistic down each column, in one pass: the columns are laid end to end with window-1
    NaN rows between them, so no window reaches into the previous series."""
    pad = np.full((window - 1, mat.shape[1]), np.nan)
    long = pd.Series(np.vstack([pad, mat]).ravel(order="F"))
    roll = long.rolling(window, min_periods=min_periods)
    out = (roll.median() if how == "median" else roll.quantile(0.75)).to_numpy()
    return out.reshape(mat.shape[0] + window - 1, mat.shape[1], order="F")[window - 1:]


def series_thresholds(sales: pd.DataFrame, settings: OutlierSettings | None = None,
                      explained: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(threshold, local median) for every sales row, in row order. Vectorised over all series at once."""
    st = settings or OutlierSettings()
    if sales.empty:
        return np.zeros(0), np.zeros(0)
    wide, d, c = _wide(sales)
    w, mp = st.window_days, max(3, st.window_days // 2)
    med = _rolling(wide, w, mp, "median")
    mad = _rolling(np.abs(wide - med), w, mp, "median")
    q75 = _rolling(wide, w, mp, "q75")
    robust = med + st.mad_k * 1.4826 * mad
    level = st.level_factor * np.maximum(q75, 1.0)
    with np.errstate(invalid="ignore"):
        thr = np.maximum(np.maximum(robust, level), st.min_units)
    thr[np.isnan(robust) | np.isnan(level)] = np.nan  # too few days in the window: judged below
    t = thr[d, c]
    m = med[d, c]
    # too few days to judge (short or new series): only the absolute floor, scaled by the series' own median
    short = ~np.isfinite(t)
    if short.any():
        ser_med = pd.Series(sales["units"].to_numpy(dtype=float)).groupby(c).transform("median").to_numpy()
        t[short] = np.maximum(st.level_factor * np.maximum(ser_med[short], 1.0), st.min_units)
        m[short] = ser_med[short]
    if explained is not None:
        t = np.where(explained, t * st.explained_factor, t)
    return t, m


def _thresholds_where_needed(sales: pd.DataFrame, settings: OutlierSettings | None,
                             explained: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """series_thresholds for the series that can hold an outlier, +inf (threshold) and NaN (median) elsewhere.

    Every threshold is at least `min_units`, so a series that never sells more than that has no outlier: its
    rolling statistics are not computed (most series of a retailer sell a few units a day). The series that do
    are judged on all their rows, exactly as series_thresholds judges them."""
    st = settings or OutlierSettings()
    units = sales["units"].to_numpy(dtype=float)
    thr, med = np.full(len(sales), np.inf), np.full(len(sales), np.nan)
    above = units > st.min_units
    if not above.any():
        return thr, med
    sku, _ = ids.factorize(sales["sku_id"].to_numpy())
    loc, locs = ids.factorize(sales["location_id"].to_numpy())
    code = sku.astype(np.int64) * max(len(locs), 1) + loc
    rows = np.isin(code, np.unique(code[above]))
    thr[rows], med[rows] = series_thresholds(sales[rows], st, explained[rows] if explained is not None else None)
    return thr, med


def find_outliers(sales: pd.DataFrame, settings: OutlierSettings | None = None,
                  explained: np.ndarray | None = None) -> pd.DataFrame:
    """Sales rows far above their own series' local level: sku_id, location_id, date, units, cap_units,
    median_units (the local median), largest first."""
    if sales.empty:
        return pd.DataFrame(columns=OUTLIER_COLUMNS)
    thr, med = _thresholds_where_needed(sales, settings, explained)
    units = sales["units"].to_numpy(dtype=float)
    bad = units > thr
    out = sales.loc[bad, ["sku_id", "location_id", "date", "units"]].assign(cap_units=thr[bad], median_units=med[bad])
    return out.sort_values("units", ascending=False, kind="stable").reset_index(drop=True)[OUTLIER_COLUMNS]


def cap_outliers(sales: pd.DataFrame, settings: OutlierSettings | None = None,
                 explained: np.ndarray | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(sales with each outlier's units capped at its threshold, the outliers found). Rows and order unchanged."""
    if sales.empty:
        return sales, pd.DataFrame(columns=OUTLIER_COLUMNS)
    thr, med = _thresholds_where_needed(sales, settings, explained)
    units = sales["units"].to_numpy(dtype=float)
    bad = units > thr
    if not bad.any():
        return sales, pd.DataFrame(columns=OUTLIER_COLUMNS)
    report = sales.loc[bad, ["sku_id", "location_id", "date", "units"]].assign(cap_units=thr[bad],
                                                                               median_units=med[bad])
    capped = sales.copy()
    capped["units"] = np.where(bad, np.round(np.nan_to_num(med, nan=0.0)), units).astype(sales["units"].dtype)
    report = report.sort_values("units", ascending=False, kind="stable").reset_index(drop=True)[OUTLIER_COLUMNS]
    return capped, report


def series_ceiling(sales: pd.DataFrame, settings: OutlierSettings | None = None) -> pd.DataFrame:
    """The most each series has plausibly sold (its history max after capping): sku_id, location_id,
    history_max. What a forecast is judged against."""
    capped, _ = cap_outliers(sales, settings)
    if capped.empty:
        return pd.DataFrame(columns=KEYS + ["history_max"])
    return capped.groupby(KEYS, as_index=False)["units"].max().rename(columns={"units": "history_max"})


def describe_outliers(outliers: pd.DataFrame, n: int = 5) -> str:
    """One line naming the series and days, for logs and the CLI."""
    if outliers.empty:
        return "no implausible sales"
    series = outliers.groupby(KEYS).size()
    ex = "; ".join(f"{r.sku_id}@{r.location_id} {pd.Timestamp(r.date):%Y-%m-%d} units={r.units:.4g} "
                   f"(local median {r.median_units:.4g}, cap {r.cap_units:.4g})"
                   for r in outliers.head(n).itertuples())
    more = f" and {len(outliers) - n} more" if len(outliers) > n else ""
    names = ", ".join(f"{sku}@{loc}" for sku, loc in series.index[:20]) + (" ..." if len(series) > 20 else "")
    return f"{len(outliers)} implausible sales row(s) in {len(series)} series ({names}): {ex}{more}"


__all__ = ["OutlierSettings", "find_outliers", "cap_outliers", "series_ceiling", "describe_outliers",
           "series_thresholds"]
