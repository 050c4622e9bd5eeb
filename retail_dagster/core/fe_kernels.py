"""Compiled (numba) passes of the elasticity fit's backfitting (core.elasticity).

Each kernel fuses what numpy did in several passes over the rows (a product, a `np.bincount`, a gather, an update)
into one or two. They add in row order, as `np.bincount` does, and evaluate every product in numpy's order, so they
give the same bits as the numpy expressions they replace (the docstrings name them; `test_elasticity` checks it).
Imported only by a fit: a daily run with a cached estimate never loads numba. Compiled functions are cached on disk
next to this file (numba's cache), so a new process does not compile them again.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def cell_sums(c, n, w):  # pragma: no cover - compiled
    """np.bincount(c, w, n)."""
    out = np.zeros(n)
    for i in range(c.shape[0]):
        out[c[i]] += w[i]
    return out


@njit(cache=True, nogil=True)
def scale_by_cell(mu, c, f):  # pragma: no cover - compiled
    """mu *= f[c], in place."""
    for i in range(c.shape[0]):
        mu[i] *= f[c[i]]


@njit(cache=True, nogil=True)
def demean(c, n, mu, xt, pt):  # pragma: no cover - compiled
    """One effect's step of the alternating demeaning, in place:
        w = np.maximum(np.bincount(c, mu, n), 1e-300)
        xt -= (np.bincount(c, mu * xt, n) / w)[c]
        pt -= (np.bincount(c, mu * pt, n) / w)[c]"""
    w = np.zeros(n)
    sx = np.zeros(n)
    sp = np.zeros(n)
    for i in range(c.shape[0]):
        k = c[i]
        w[k] += mu[i]
        sx[k] += mu[i] * xt[i]
        sp[k] += mu[i] * pt[i]
    for k in range(n):
        if w[k] < 1e-300:
            w[k] = 1e-300
        sx[k] = sx[k] / w[k]
        sp[k] = sp[k] / w[k]
    for i in range(c.shape[0]):
        xt[i] -= sx[c[i]]
        pt[i] -= sp[c[i]]


@njit(cache=True, nogil=True)
def newton_sums(e_row, n_e, g_row, n_g, y, mu, x, p, xt, pt):  # pragma: no cover - compiled
    """The data's part of the (elasticity, promo) Newton step, with r = y - mu:
        np.bincount(e_row, r * x, n_e), np.bincount(e_row, mu * xt * xt, n_e), np.bincount(e_row, mu * xt * pt, n_e),
        np.bincount(g_row, r * p, n_g), np.bincount(g_row, mu * pt * pt, n_g)"""
    s_e = np.zeros(n_e)
    h_ee = np.zeros(n_e)
    h_eg = np.zeros(n_e)
    s_g = np.zeros(n_g)
    h_gg = np.zeros(n_g)
    for i in range(e_row.shape[0]):
        r = y[i] - mu[i]
        a = mu[i] * xt[i]
        b = mu[i] * pt[i]
        e, g = e_row[i], g_row[i]
        s_e[e] += r * x[i]
        h_ee[e] += a * xt[i]
        h_eg[e] += a * pt[i]
        s_g[g] += r * p[i]
        h_gg[g] += b * pt[i]
    return s_e, h_ee, h_eg, s_g, h_gg


@njit(cache=True, nogil=True)
def step_exponent(de, e_row, x, dg, g_row, p, out):  # pragma: no cover - compiled
    """de[e_row] * x + dg[g_row] * p, written into `out` and returned (numpy takes the exp: the same function as
    before)."""
    for i in range(e_row.shape[0]):
        out[i] = de[e_row[i]] * x[i] + dg[g_row[i]] * p[i]
    return out
