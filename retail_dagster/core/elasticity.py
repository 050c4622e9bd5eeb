"""Own-price elasticity per SKU from sales history: a fixed-effects Poisson log-log fit with empirical-Bayes pooling.

Model per SKU-location-day (days that ended with zero stock on hand are dropped: their sales are censored):
    E[units] = exp(level[SKU-location x 91-day block] + season[category x region x 14-day block]
                   + weekday[category x day of week] + traffic[location x day] + event[group x event type]
                   + elasticity[SKU] * log(price) + promo[category] * on_promotion)
The level absorbs a series' size and slow trend, the season term the swings a category shares (so a regular price
step inside a level block is informative), the promo term the lift a promotion adds beyond its price cut. The Poisson
(pseudo) likelihood copes with the many zero-sale days a log(units) regression cannot. Fitted by backfitting:
closed-form updates of the multiplicative fixed effects and a joint Newton step for (elasticity, promo) through the
Schur complement of their arrow-shaped Hessian; every step is a `np.bincount` over rows, no loop over series.

Pooling: the unpooled fit gives every SKU its own promo lift (only its own data speaks). The pooled estimate shares
the promo lift within a category and shrinks each SKU's elasticity towards its category's pooled fit (empirical
Bayes, DerSimonian-Laird between-SKU variance), the category towards the overall mean, in proportion to the
estimate's noise. Elasticity is a SKU property here (shared by its locations); store-level variation is not modelled.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from . import ids

OUTPUT_COLUMNS = ["sku_id", "elasticity", "elasticity_se", "n_obs", "shrinkage_weight", "unpooled_elasticity"]


@dataclass(frozen=True)
class ElasticitySettings:
    """Settings of the elasticity estimator."""

    level_days: int = 91  # SKU-location level blocks (absorb slow trends); price steps inside them identify
    season_days: int = 14  # category x region seasonality blocks (absorb seasonal swings shared by a category)
    history_days: int | None = 365  # use at most the last N days of sales (None = all)
    max_iter: int = 60  # backfitting iterations
    tol: float = 0.05  # stop when no parameter moves more than this fraction of its standard error
    clip: tuple[float, float] = (-5.0, -0.2)  # plausible range of the reported elasticity
    min_location_skus: int = 8  # fit a location x day traffic effect only with at least this many SKUs there
    min_tau: float = 0.05  # floor of the between-SKU standard deviation used for shrinkage
    prior_elasticity: float = -1.5  # used only when there is no price variation anywhere
    prior_se: float = 1.0
    min_information: float = 0.05  # below this Fisher information (units x log-price^2) a SKU gets no own estimate
    ridge_sd: float = 3.0  # sd of the weak prior that keeps every fitted parameter finite
    max_step: float = 1.0  # Newton step limit (log units)
    effect_sweeps: int = 1  # closed-form fixed-effect sweeps per Newton step
    demean_sweeps: int = 1  # alternating-projection sweeps when profiling the fixed effects out of the Newton step


def _present(codes: np.ndarray) -> np.ndarray | None:
    """Which values of the non-negative integer `codes` occur (a bool per value 0..max), or None when the range is
    too wide for a table (then np.unique's sort is the cheaper way)."""
    if not len(codes):
        return None
    top = int(codes.max())
    if codes.min() < 0 or top > 4 * len(codes) + 4096:
        return None
    seen = np.zeros(top + 1, dtype=bool)
    seen[codes] = True
    return seen


def _sorted_unique(codes: np.ndarray) -> np.ndarray:
    """np.unique(codes), by a table of the values seen instead of a sort where the range allows."""
    seen = _present(codes)
    return np.unique(codes) if seen is None else np.flatnonzero(seen).astype(codes.dtype)


def _compact(codes: np.ndarray) -> tuple[np.ndarray, int]:
    """(rank of each code among the distinct codes, number of distinct codes): np.unique(codes, return_inverse=True)
    without its sort where the codes' range allows (one pass over the rows instead of an argsort of them)."""
    seen = _present(codes)
    if seen is None:
        uniq, inv = np.unique(codes, return_inverse=True)
        return inv.astype(np.int64), len(uniq)
    rank = np.cumsum(seen, dtype=np.int64) - 1
    return rank[codes], int(rank[-1] + 1)


@dataclass
class _Design:
    y: np.ndarray
    x: np.ndarray  # log price, centred per SKU
    promo: np.ndarray  # 0/1
    sku: np.ndarray  # index into the catalog's SKUs
    cat_of_sku: np.ndarray
    n_sku: int
    n_cat: int
    effects: list[tuple[np.ndarray, int, np.ndarray | None]]  # (codes, n, mask of codes whose factor is free)
    level: np.ndarray  # codes of the level fixed effect (first of effects)
    n_level: int


def _regions(loc: np.ndarray, loc_ids: np.ndarray,
             locations: pd.DataFrame | None) -> tuple[np.ndarray, np.ndarray, int]:
    """(region name per row, "ALL" when unknown; its code in order of first appearance; number of regions), from
    the rows' location codes (`loc`, in order of first appearance, indexing `loc_ids`): what mapping every row's
    location and factorizing the result gives, computed on the few distinct locations."""
    if locations is not None and "region" in locations.columns:
        region = pd.Series(loc_ids).map(locations.set_index("location_id")["region"]).fillna("ALL")
    else:
        region = pd.Series("ALL", index=range(len(loc_ids)), dtype=object)
    codes, uniques = pd.factorize(region.astype(str), sort=False)
    return region.to_numpy(dtype=object)[loc], codes.astype(np.int64)[loc], len(uniques)


def _event_codes(frame: pd.DataFrame, events: pd.DataFrame | None, region: np.ndarray,
                 group: np.ndarray) -> tuple[np.ndarray, int] | None:
    """Per row: (sku_group x event-day type) code and the number of types (type 0 = no event); None if no events.
    `region` is each row's region name."""
    if events is None or events.empty:
        return None
    ev = events[["date", "region", "event_type"]].copy()
    # an event for region ALL applies everywhere: expand to every region seen
    regions = sorted(set(pd.unique(region)) | set(ev["region"].unique()) - {"ALL"}) or ["ALL"]
    all_rows = ev[ev["region"] == "ALL"]
    ev = pd.concat([ev[ev["region"] != "ALL"]] + [all_rows.assign(region=r) for r in regions], ignore_index=True)
    # several events on one day and region form one combined type
    ev = ev.groupby(["date", "region"], sort=False)["event_type"].agg(lambda s: "+".join(sorted(set(s))))
    # each row's type, looked up once per distinct (date, region) pair
    d_codes, d_uniq = pd.factorize(frame["date"].to_numpy())
    r_codes, r_uniq = ids.factorize(region)
    width = max(len(r_uniq), 1)
    if (d_codes < 0).any() or (r_codes < 0).any():  # a missing date or region: look every row up
        p_codes, key = np.arange(len(frame)), pd.MultiIndex.from_arrays([frame["date"].to_numpy(), region])
    else:
        p_codes, pairs = pd.factorize(d_codes.astype(np.int64) * width + r_codes)
        key = pd.MultiIndex.from_arrays([d_uniq[pairs // width], r_uniq[pairs % width]])
    etype = pd.Series(ev.reindex(key).to_numpy()).fillna("")
    t_codes, t_uniq = pd.factorize(etype, sort=True)  # "" sorts first
    if len(t_uniq) <= 1 and (len(t_uniq) == 0 or t_uniq[0] == ""):
        return None
    offset = 0 if len(t_uniq) and t_uniq[0] == "" else 1
    t_codes = t_codes[p_codes] + offset  # 0 = no event
    n_t = len(t_uniq) + offset
    return group * n_t + t_codes, n_t


def _design(sales: pd.DataFrame, catalog: pd.DataFrame, inventory: pd.DataFrame | None,
            events: pd.DataFrame | None, locations: pd.DataFrame | None,
            settings: ElasticitySettings, rows: np.ndarray | None = None) -> tuple[_Design | None, pd.Series]:
    cat_sku = catalog["sku_id"].astype(str).to_numpy()
    sku_index = pd.Index(cat_sku)
    cat_codes, cat_uniq = pd.factorize(catalog["category"].astype(str))
    grp_codes, _ = pd.factorize(catalog["sku_group"].astype(str)) if "sku_group" in catalog else (cat_codes, None)
    # which rows the fit uses, decided on the columns as they are, then each needed column's kept values (each
    # filter step used to copy the whole window: gigabytes at 10,000 SKUs x 10 stores)
    sku_codes, sku_ids = ids.factorize(sales["sku_id"])
    sku_of_id = sku_index.get_indexer(sku_ids)  # catalog position of each distinct id, -1 when not in it
    keep = (sku_codes >= 0) & (sku_of_id[sku_codes] >= 0) if len(sku_ids) else np.zeros(len(sales), dtype=bool)
    loc_all, loc_uniq = ids.factorize(sales["location_id"])
    keep &= loc_all >= 0
    keep &= ((sales["price"] > 0) & sales["units"].notna()).to_numpy()
    if rows is not None:
        keep &= rows
    if settings.history_days is not None and len(sales) and (rows is None or rows.any()):
        last = sales["date"].max() if rows is None else sales["date"].to_numpy()[rows].max()  # as on sales[rows]
        keep &= (sales["date"] > last - pd.Timedelta(days=settings.history_days)).to_numpy()
    if inventory is not None and len(inventory) and keep.any():
        # a day that ended with nothing on hand sold what there was, not what was wanted: drop it (membership is
        # per row, so testing every row against every stocked-out day keeps exactly the same rows)
        inv = inventory.loc[(inventory["on_hand"] <= 0).to_numpy(), ["date", "sku_id", "location_id"]]
        if len(inv):
            keep &= ~ids.rows_in(sales, inv, ["date", "sku_id", "location_id"])
    sku = sku_of_id[sku_codes[keep]].astype(np.int64)
    n_obs = pd.Series(np.bincount(sku, minlength=len(cat_sku)), index=cat_sku)
    if not keep.any():
        return None, n_obs

    # the kept rows' values, column by column (no frame copy): the same numbers the frame's methods gave
    dates = sales["date"].to_numpy()[keep]
    day = ((dates - dates.min()) // np.timedelta64(1, "D")).astype(np.int64)  # whole days: dates are midnights
    n_day = int(day.max()) + 1
    loc, first_seen = pd.factorize(loc_all[keep])  # codes in order of first appearance among the kept rows
    loc_ids = loc_uniq[first_seen]
    loc, n_loc = loc.astype(np.int64), len(loc_ids)
    sl = sku * n_loc + loc
    cat = cat_codes[sku]
    level = sl * (n_day // settings.level_days + 1) + day // settings.level_days
    region, reg, n_reg = _regions(loc, loc_ids, locations)
    season = (cat * n_reg + reg) * (n_day // settings.season_days + 1) + day // settings.season_days
    y = sales["units"].to_numpy(dtype=float)[keep]
    logp = np.log(sales["price"].to_numpy(dtype=float)[keep])
    mean_logp = np.bincount(sku, logp, len(cat_sku)) / np.maximum(np.bincount(sku, minlength=len(cat_sku)), 1)
    x = logp - mean_logp[sku]
    promo = sales["on_promotion"].to_numpy()[keep].astype(float)
    dow = (dates.astype("datetime64[D]").view(np.int64) + 3) % 7  # Monday = 0 (1970-01-01 was a Thursday)

    raw = [(level, None), (season, None), (cat * 7 + dow, None)]
    skus_per_loc = np.bincount(_sorted_unique(sl) % n_loc, minlength=n_loc)
    if skus_per_loc.min() >= settings.min_location_skus:
        raw.append((loc * n_day + day, None))
    ev = _event_codes(pd.DataFrame({"date": dates}, copy=False), events, region, grp_codes[sku])
    if ev is not None:
        raw.append((ev[0], "event"))
    # the per-row intermediates are done with: free them before the effects are compacted (at 10,000 SKUs x 10
    # stores they are gigabytes, and a retraining run peaks here)
    del dates, day, loc, sl, region, dow, logp

    # rows in a fixed-effect cell with no sales carry no information (the cell's factor would be 0): drop them,
    # repeatedly, since dropping rows can empty another effect's cell
    keep = np.ones(len(y), dtype=bool)
    for _ in range(5):
        before = keep.sum()
        for codes, kind in raw:
            # dropped rows weigh 0 (the same sums as over the kept rows, without copying them)
            tot = np.bincount(codes, np.where(keep, y, 0.0), minlength=int(codes.max()) + 1)
            bad = tot[codes] <= 0
            if kind == "event":
                bad &= (codes % ev[1]) != 0  # never drop non-event days on this account
            keep &= ~bad
        if keep.sum() == before:
            break
    if not keep.any():
        return None, n_obs
    effects = []
    for codes, kind in raw:
        c, n = _compact(codes[keep])
        free = None
        if kind == "event":
            # event code 0 of each group (no event) is the reference: factor fixed at 1
            free = (_sorted_unique(codes[keep]) % ev[1]) != 0
        effects.append((c, n, free))
    d = _Design(y=y[keep], x=x[keep], promo=promo[keep], sku=sku[keep], cat_of_sku=cat_codes.astype(np.int64),
                n_sku=len(cat_sku), n_cat=len(cat_uniq), effects=effects, level=effects[0][0],
                n_level=effects[0][1])
    return d, pd.Series(np.bincount(d.sku, minlength=len(cat_sku)), index=cat_sku)


def _within(x: np.ndarray, p: np.ndarray, mu: np.ndarray, effects, sweeps: int,
            out: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """x and p with the (mu-weighted) fixed effects projected out by alternating demeaning: profiling the fixed
    effects out of the Newton step makes it converge in a few iterations instead of zig-zagging. The result is
    written into `out`, two arrays shaped like x that a fit reuses every iteration instead of allocating."""
    from .fe_kernels import demean

    xt, pt = out
    np.copyto(xt, x)
    np.copyto(pt, p)
    for _ in range(sweeps):
        for c, n, _ in effects:
            demean(c, n, mu, xt, pt)
    return xt, pt


@dataclass
class _Fit:
    elasticity: np.ndarray  # per elasticity group
    se: np.ndarray  # per elasticity group (inf where the data have no price variation)
    promo: np.ndarray  # per promo group
    iterations: int
    mu: np.ndarray  # fitted means (warm start for a refit with finer groups)
    raw_elasticity: np.ndarray  # including groups without enough information (held near the weak prior)


def _fit(d: _Design, e_of_sku: np.ndarray, n_e: int, g_of_e: np.ndarray, n_g: int,
         settings: ElasticitySettings, warm: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> _Fit:
    """Backfitting Poisson fit with one elasticity per group `e_of_sku` and one promo lift per group `g_of_e`.

    Elasticity groups nest in promo groups (SKU in category, category in category, SKU in SKU), which keeps the
    (elasticity, promo) Hessian arrow-shaped: a joint Newton step costs a few bincounts. `warm` = (elasticity,
    promo, mu) of a coarser fit mapped onto these groups: its fixed effects carry over through mu.
    """
    from .fe_kernels import cell_sums, newton_sums, scale_by_cell, step_exponent

    y, x, p = d.y, d.x, d.promo
    e_row = e_of_sku[d.sku]
    g_row = g_of_e[e_row]
    if warm is None:
        e, g = np.full(n_e, -1.0), np.full(n_g, np.log(1.2))
        mu = np.exp(e[e_row] * x + g[g_row] * p)
    else:
        e, g, mu = warm[0].copy(), warm[1].copy(), warm[2].copy()
    y_sums = [np.bincount(c, y, n) for c, n, _ in d.effects]
    # only effects whose every cell is free can be profiled out (the residuals of a fixed reference cell do not
    # sum to zero, so demeaning over it would move the fixed point)
    profiled = [eff for eff in d.effects if eff[2] is None]
    within_buf, step_buf = (np.empty_like(x), np.empty_like(x)), np.empty_like(x)  # reused by every iteration
    it = 0
    for it in range(1, settings.max_iter + 1):
        for _ in range(settings.effect_sweeps):
            for (c, n, free), ys in zip(d.effects, y_sums):
                f = ys / np.maximum(cell_sums(c, n, mu), 1e-300)
                if free is not None:
                    f = np.where(free, f, 1.0)
                scale_by_cell(mu, c, f)
        xt, pt = _within(x, p, mu, profiled, settings.demean_sweeps, out=within_buf)
        # gradient on the raw regressors (exact even while the fixed effects are still settling), curvature on
        # the profiled ones
        # a weak normal prior on each parameter keeps the fit finite where the likelihood has no maximum (a SKU
        # that only ever sold at one of its prices)
        s_e, h_ee, h_eg, s_g, h_gg = newton_sums(e_row, n_e, g_row, n_g, y, mu, x, p, xt, pt)
        s_e -= (e - settings.prior_elasticity) / settings.ridge_sd ** 2
        h_ee += 1.0 / settings.ridge_sd ** 2
        s_g -= (g - np.log(1.2)) / settings.ridge_sd ** 2
        h_gg += 1.0 / settings.ridge_sd ** 2
        ok_e = h_ee > 1e-8
        inv_ee = np.where(ok_e, 1.0 / np.where(ok_e, h_ee, 1.0), 0.0)
        a = h_gg - np.bincount(g_of_e, h_eg * h_eg * inv_ee, n_g)
        b = s_g - np.bincount(g_of_e, h_eg * inv_ee * s_e, n_g)
        ok_g = a > 1e-8 * np.maximum(h_gg, 1e-12)
        dg = np.where(ok_g, b / np.where(ok_g, a, 1.0), 0.0)
        de = (s_e - h_eg * dg[g_of_e]) * inv_ee
        dg = np.clip(dg, -settings.max_step, settings.max_step)
        de = np.clip(de, -settings.max_step, settings.max_step)
        e += de
        g += dg
        arg = step_exponent(de, e_row, x, dg, g_row, p, step_buf)
        mu *= np.exp(arg, out=arg)
        # converged when no parameter moved more than `tol` of its own standard error (a weakly identified SKU
        # would otherwise hold every other one up); the gradient is exact, so this also waits for the fixed effects
        moved = max(float((np.abs(de) * np.sqrt(h_ee)).max(initial=0)), float((np.abs(dg) * np.sqrt(a)).max(initial=0)))
        if moved < settings.tol:
            break
    # sandwich standard error, with the promo effect partialled out when each group has its own; floored by the
    # pure Poisson variance, since a few sparse rows can fit almost perfectly
    r = y - mu
    ridge = 1.0 / settings.ridge_sd ** 2
    h_ee, h_gg = h_ee - ridge, h_gg - ridge  # the data's own curvature: the shrinkage step brings the prior
    if n_g == n_e:
        h_gg_e = h_gg[g_of_e]
        beta = np.where(h_gg_e > 1e-8, h_eg / np.maximum(h_gg_e, 1e-300), 0.0)
        z = xt - beta[e_row] * pt
        bread = h_ee - beta * h_eg
    else:
        z = xt
        bread = h_ee
    meat = np.bincount(e_row, r * r * z * z, n_e)
    ok = bread > settings.min_information
    var = np.where(ok, np.maximum(meat, bread) / np.where(ok, bread, 1.0) ** 2, np.inf)
    raw = e.copy()
    # report the data's own estimate: undo the weak prior's pull with one Newton step on the data's curvature, so
    # the estimate and its (data-only) standard error agree when the shrinkage step weighs them
    e = np.where(ok, e + (e - settings.prior_elasticity) / settings.ridge_sd ** 2 / np.where(ok, bread, 1.0), np.nan)
    return _Fit(elasticity=e, se=np.sqrt(var), promo=g, iterations=it, mu=mu, raw_elasticity=raw)


def _dl_tau2(est: np.ndarray, var: np.ndarray, mean: np.ndarray | None, min_tau: float) -> float:
    """DerSimonian-Laird between-unit variance around known means (or around their precision-weighted mean)."""
    w = 1.0 / var
    if mean is None:
        if len(est) < 2:
            return min_tau ** 2
        m = (w * est).sum() / w.sum()
        q, df, denom = (w * (est - m) ** 2).sum(), len(est) - 1, w.sum() - (w * w).sum() / w.sum()
    else:
        q, df, denom = (w * (est - mean) ** 2).sum(), len(est), w.sum()
    tau2 = (q - df) / denom if denom > 0 else 0.0
    return max(float(tau2), min_tau ** 2)


def shrink(est: np.ndarray, se: np.ndarray, category: np.ndarray, cat_est: np.ndarray, cat_se: np.ndarray,
           settings: ElasticitySettings = ElasticitySettings()) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Empirical-Bayes shrinkage of per-SKU estimates towards their category's estimate, itself shrunk towards the
    overall mean.

    `est`/`se` per SKU, `cat_est`/`cat_se` per category (from a fit pooling the category's data); NaN/inf mark a
    missing estimate, which gets the prior mean. Returns (posterior mean, posterior sd, weight on the SKU's own
    estimate).
    """
    n_cat = len(cat_est)
    has_c = np.isfinite(cat_est) & np.isfinite(cat_se) & (cat_se > 0)
    if has_c.any():
        mc, vc = cat_est[has_c], cat_se[has_c] ** 2
        tau2_cat = _dl_tau2(mc, vc, None, settings.min_tau)
        wc = 1.0 / (vc + tau2_cat)
        m_all, v_all = float((wc * mc).sum() / wc.sum()), float(1.0 / wc.sum())
    else:
        tau2_cat, m_all, v_all = settings.prior_se ** 2, settings.prior_elasticity, 0.0
    k = np.zeros(n_cat)
    k[has_c] = tau2_cat / (tau2_cat + cat_se[has_c] ** 2)
    m_post = np.where(has_c, k * np.nan_to_num(cat_est) + (1 - k) * m_all, m_all)
    v_post = np.where(has_c, k * np.nan_to_num(cat_se, posinf=0.0) ** 2 + (1 - k) ** 2 * v_all, tau2_cat + v_all)

    has = np.isfinite(est) & np.isfinite(se) & (se > 0)
    prior_m, prior_v = m_post[category], v_post[category]
    tau2 = _dl_tau2(est[has], se[has] ** 2, prior_m[has], settings.min_tau) if has.any() else settings.min_tau ** 2
    v = np.where(has, se, 1.0) ** 2
    weight = np.where(has, tau2 / (tau2 + v), 0.0)
    post = weight * np.where(has, est, 0.0) + (1 - weight) * prior_m
    post_var = np.where(has, weight * v + (1 - weight) ** 2 * prior_v, tau2 + prior_v)
    return post, np.sqrt(post_var), weight


def estimate_elasticities(sales: pd.DataFrame, catalog: pd.DataFrame, inventory: pd.DataFrame | None = None,
                          events: pd.DataFrame | None = None, settings: ElasticitySettings = ElasticitySettings(),
                          locations: pd.DataFrame | None = None, unpooled: bool = True,
                          rows: np.ndarray | None = None) -> pd.DataFrame:
    """Own-price elasticity per catalog SKU.

    Columns: sku_id, elasticity (pooled, clipped to settings.clip), elasticity_se, n_obs (rows used),
    shrinkage_weight (weight on the SKU's own estimate, 0..1), unpooled_elasticity (the SKU's own fit with its own
    promo lift; NaN when its prices never moved). `locations` (with region) lets regional events count.
    `unpooled=False` skips the SKU's own fit (a third of the fitting time), which is only reported, never
    decides: its column is then NaN and the other columns are the same. `rows` (bool per sales row): fit on those
    rows only, exactly as on `sales[rows]`, without copying them first.
    """
    d, n_obs = _design(sales, catalog, inventory, events, locations, settings, rows)
    skus = catalog["sku_id"].astype(str).to_numpy()
    cat_codes, cat_uniq = pd.factorize(catalog["category"].astype(str))
    cat_codes = cat_codes.astype(np.int64)
    n_sku, n_cat = len(skus), len(cat_uniq)
    lo, hi = settings.clip
    if d is None:
        nan_c, inf_c = np.full(n_cat, np.nan), np.full(n_cat, np.inf)
        post, post_se, w = shrink(np.full(n_sku, np.nan), np.full(n_sku, np.inf), cat_codes, nan_c, inf_c, settings)
        own_e = np.full(n_sku, np.nan)
    else:
        ident = np.arange(n_sku)
        # category-level fit (the shrinkage target), SKU-level fit with the category's promo lift (the estimate
        # that gets shrunk), and the SKU's fully own fit (reported as unpooled)
        by_cat = _fit(d, cat_codes, n_cat, np.arange(n_cat), n_cat, settings)
        by_sku = _fit(d, ident, n_sku, cat_codes, n_cat, settings,
                      warm=(by_cat.raw_elasticity[cat_codes], by_cat.promo, by_cat.mu))
        own_e = np.full(n_sku, np.nan)
        if unpooled:
            own_e = _fit(d, ident, n_sku, ident, n_sku, settings,
                         warm=(by_sku.raw_elasticity, by_sku.promo[cat_codes], by_sku.mu)).elasticity
        post, post_se, w = shrink(by_sku.elasticity, by_sku.se, cat_codes, by_cat.elasticity, by_cat.se, settings)
    return pd.DataFrame({
        "sku_id": skus,
        "elasticity": np.clip(post, lo, hi),
        "elasticity_se": post_se,
        "n_obs": n_obs.reindex(skus).fillna(0).to_numpy().astype(np.int64),
        "shrinkage_weight": w,
        "unpooled_elasticity": own_e,
    })[OUTPUT_COLUMNS]
