"""Compiled (numba) prediction of a trained LightGBM regressor: what the forecast's recursion calls 14 times a run.

Replaces `LGBMRegressor.predict` where mlforecast calls it (one row per series and step). LightGBM walks each row
down every tree in C++, a hard-to-predict branch per level (~55 ns per tree and row on one thread). The kernel
here scores a row the QuickScorer way (Lucchese et al., SIGIR 2015): for each feature it visits, in increasing
threshold order, only the nodes the row's value fails (x > threshold), and each clears, in its tree's 64-bit
leaf set, the leaves of that node's left subtree; the leftmost leaf left in a tree is the one the walk down it
would reach (any leaf left of it sits in the left subtree of a node the walk went right at). About 3x faster
than LightGBM's predict on one thread (20,000 rows, 350 trees of 63 leaves: 0.42 -> 0.13 s a call;
benchmarks/tree_predict_bench.py). Trees with more than 64 leaves are predicted by LightGBM.

Same bits as LightGBM's predict because every step is LightGBM's own (include/LightGBM/tree.h, c_api.cpp,
gbdt_prediction.cpp, the objectives' ConvertOutput):
- the input is converted by lightgbm's own `_data_from_pandas` (column order, pandas categoricals) and widened to
  float64 as its C API widens float32; values with |x| <= kZeroThreshold (1e-35f) read as 0.0, as the C API drops
  them from the row it hands the predictor (a zeroed buffer);
- thresholds and leaf values are read from `model_to_string()`, which prints them with 17 significant digits, so
  they parse back to the same doubles; a node's decision is `NumericalDecision` (missing types None/Zero/NaN,
  default_left) or `CategoricalDecision` (NaN and negative categories right, the category bitset): nodes with a
  plain numerical test (x <= threshold, NaN sent their one fixed way) go in the sorted lists, the others
  (categorical, missing type Zero) are tested one by one with those functions;
- the raw score is 0.0 plus each tree's leaf value in tree order, over the iterations LightGBM's predict uses
  (`best_iteration` when set, as the scikit-learn wrapper passes it); tweedie/poisson then take `exp` of it, called
  inside numba, i.e. libm's `exp`, the one LightGBM calls.
Anything else (linear trees, other objectives, multiclass, random forests, prediction parameters, inputs other
than a DataFrame or a float array) is predicted by LightGBM itself. `test_tree_predict` checks the bits against
LightGBM. Imported only when the forecast predicts with LightGBM; compiled functions are cached on disk next to
this file (numba's cache).
"""

from __future__ import annotations

import contextlib
import math
import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from numba import njit

ENABLED = True  # False: the forecast predicts with LightGBM's own predict (tests compare the two)
KERNELS_READY = False  # the kernels are loaded in this process (warm() or a first prediction has run them)
K_ZERO_THRESHOLD = float(np.float32(1e-35))  # LightGBM's kZeroThreshold: the float literal 1e-35f as a double
MAX_LEAVES = 64  # a tree's leaves are the bits of one uint64
# objective (first word of the model string's objective line) -> output transform: 0 the raw score, 1 its exp
OBJECTIVE_TRANSFORM = {"regression": 0, "poisson": 1, "tweedie": 1}
# prediction parameters that change what LightGBM's predict returns: an estimator with one set keeps LightGBM's
PREDICT_PARAMS = ("predict_raw_score", "is_predict_raw_score", "predict_rawscore", "raw_score",
                  "predict_leaf_index", "is_predict_leaf_index", "leaf_index", "predict_contrib",
                  "is_predict_contrib", "contrib", "pred_early_stop", "start_iteration_predict",
                  "num_iteration_predict")
_ALL = np.uint64(0xFFFFFFFFFFFFFFFF)
# lowest set bit of w: _DEBRUIJN[((w & -w) * _DEBRUIJN_MUL) >> 58]
_DEBRUIJN_MUL = 0x03F79D71B4CB0A89
_DEBRUIJN = np.zeros(64, dtype=np.uint64)
for _bit in range(64):
    _DEBRUIJN[((1 << _bit) * _DEBRUIJN_MUL & 0xFFFFFFFFFFFFFFFF) >> 58] = _bit


@dataclass
class ParsedTrees:
    """A booster's trees as flat arrays. Internal nodes of all trees are numbered in tree order; a child < 0 is
    the leaf ~child (leaves numbered in tree order too); a one-leaf tree's root is ~its leaf."""

    n_features: int
    transform: int  # OBJECTIVE_TRANSFORM's code
    root: np.ndarray  # int64 (n_trees,)
    feature: np.ndarray  # int64 (n_nodes,)
    threshold: np.ndarray  # float64 (n_nodes,): numerical threshold, or the categorical split's bitset number
    child: np.ndarray  # int64 (2 * n_nodes,): left child at 2 * node, right child at 2 * node + 1
    special_left: np.ndarray  # uint8 (n_nodes,): where a NaN (missing type Zero: also a 0.0) goes, 1 left
    zero_missing: np.ndarray  # uint8 (n_nodes,): missing type Zero
    categorical: np.ndarray  # uint8 (n_nodes,)
    cat_boundaries: np.ndarray  # int64: bitset k is cat_threshold[cat_boundaries[k]:cat_boundaries[k + 1]]
    cat_threshold: np.ndarray  # uint32
    leaf_value: np.ndarray  # float64 (n_leaves,)

    @property
    def n_trees(self) -> int:
        return len(self.root)


def _numbers(values: list[str], dtype) -> np.ndarray:
    """The space-separated numbers of `values`, one array. Doubles go through float(), which rounds correctly, as
    LightGBM's own parser does: the 17 printed digits come back as the same double."""
    words = " ".join(values).split()
    return np.array([float(w) for w in words] if dtype is np.float64 else words, dtype=dtype)


def parse_model_string(model: str) -> ParsedTrees | None:
    """Flat arrays of every tree of a LightGBM model string (`Booster.model_to_string()`), or None when the model
    has something the kernel does not reproduce."""
    head, sep, trees = model.partition("\nTree=")
    if not sep:
        return None
    header = dict(line.split("=", 1) for line in head.splitlines() if "=" in line)
    flags = {line.strip() for line in head.splitlines() if "=" not in line}
    objective = header.get("objective", "").split()  # e.g. "tweedie tweedie_variance_power:1.2"
    if not objective or objective[0] not in OBJECTIVE_TRANSFORM or objective[0] == "regression" and \
            len(objective) > 1:  # "regression sqrt" squares its output: not reproduced
        return None
    if header.get("num_class") != "1" or header.get("num_tree_per_iteration") != "1" or "average_output" in flags:
        return None
    fields: dict[str, list[str]] = {}  # line key -> its value in each tree that has the line, in tree order
    for line in ("Tree=" + trees.split("\nend of trees", 1)[0]).split("\n"):
        key, _, value = line.partition("=")
        fields.setdefault(key, []).append(value)

    def field(key: str) -> list[str]:
        return fields.get(key, [])

    num_leaves = _numbers(field("num_leaves"), np.int64)
    n_trees = len(num_leaves)
    if (n_trees != len(field("Tree")) or (num_leaves > MAX_LEAVES).any()
            or any(v.strip() != "0" for v in field("is_linear"))):
        return None
    n_internal = num_leaves - 1
    node_start = np.concatenate([[0], np.cumsum(n_internal)])  # global numbers: tree t's nodes from node_start[t]
    leaf_start = np.concatenate([[0], np.cumsum(num_leaves)])
    decision = _numbers(field("decision_type"), np.int64)
    threshold = _numbers(field("threshold"), np.float64)
    feature = _numbers(field("split_feature"), np.int64)
    local = np.stack([_numbers(field("left_child"), np.int64),
                      _numbers(field("right_child"), np.int64)], axis=1)
    leaf_value = _numbers(field("leaf_value"), np.float64)
    n_nodes = int(node_start[-1])
    if not len(decision) == len(threshold) == len(feature) == len(local) == n_nodes or \
            len(leaf_value) != leaf_start[-1]:
        return None
    tree_of = np.repeat(np.arange(n_trees), n_internal)[:, None]
    child = np.where(local >= 0, local + node_start[:-1][tree_of], ~((~local) + leaf_start[:-1][tree_of]))
    categorical = (decision & 1) > 0
    missing = (decision >> 2) & 3
    if (missing > 2).any():
        return None
    # where a NaN goes: missing type None reads it as 0.0 (compared with the threshold); Zero reads it as 0.0, its
    # missing value, and NaN send it the default way (default_left)
    special = np.where(missing == 0, 0.0 <= threshold, (decision & 2) > 0)
    cat_boundaries, cat_threshold = np.zeros(1, dtype=np.int64), np.zeros(0, dtype=np.int64)
    num_cat = _numbers(field("num_cat"), np.int64)
    if categorical.any():  # a categorical node's threshold numbers its bitset within its tree: number them globally
        bounds = [_numbers([v], np.int64) for v in field("cat_boundaries")]
        bits = field("cat_threshold")
        if len(bounds) != (num_cat > 0).sum() or len(bits) != len(bounds) or \
                any(len(b) != n + 1 for b, n in zip(bounds, num_cat[num_cat > 0])):
            return None
        cat_threshold = _numbers(bits, np.int64)
        ends = np.cumsum([b[-1] for b in bounds])
        cat_boundaries = np.concatenate([[0]] + [b[1:] + e - b[-1] for b, e in zip(bounds, ends)])
        cat_base = np.concatenate([[0], np.cumsum(num_cat)])[:-1]
        threshold = np.where(categorical, threshold + cat_base[tree_of[:, 0]], threshold)
    roots = np.where(num_leaves > 1, node_start[:-1], ~leaf_start[:-1])
    return ParsedTrees(
        n_features=int(header["max_feature_idx"]) + 1, transform=OBJECTIVE_TRANSFORM[objective[0]],
        root=roots.astype(np.int64), feature=feature, threshold=np.ascontiguousarray(threshold, dtype=np.float64),
        child=np.ascontiguousarray(child.ravel(), dtype=np.int64), special_left=special.astype(np.uint8),
        zero_missing=(missing == 1).astype(np.uint8), categorical=categorical.astype(np.uint8),
        cat_boundaries=cat_boundaries.astype(np.int64), cat_threshold=cat_threshold.astype(np.uint32),
        leaf_value=leaf_value)


@njit(cache=True, nogil=True)
def _leaf_sets(root, child, leaf_value, n_nodes):  # pragma: no cover - compiled
    """Per internal node: its tree and the leaf set with its left subtree's leaves cleared (bit p = the tree's
    p-th leaf from the left); per tree, leaf values by that position (tree * 64 + p)."""
    n_trees = root.shape[0]
    node_tree = np.zeros(n_nodes, dtype=np.int64)
    node_mask = np.zeros(n_nodes, dtype=np.uint64)
    by_pos = np.zeros(n_trees * 64, dtype=np.float64)
    order = np.empty(n_nodes, dtype=np.int64)  # internal nodes, parents before children
    lo = np.zeros(n_nodes, dtype=np.int64)  # leftmost and rightmost leaf position under a node
    hi = np.zeros(n_nodes, dtype=np.int64)
    leaf_pos = np.zeros(leaf_value.shape[0], dtype=np.int64)
    stack = np.empty(2 * n_nodes + 2, dtype=np.int64)
    for t in range(n_trees):
        if root[t] < 0:
            by_pos[t * 64] = leaf_value[~root[t]]
            continue
        sp, pos, n_order = 1, 0, 0
        stack[0] = root[t]
        k0 = root[t]  # a tree's nodes are numbered from its root on: `order` holds them from index k0
        while sp > 0:  # depth first, left before right: leaves come in left-to-right order
            sp -= 1
            nd = stack[sp]
            if nd < 0:
                leaf_pos[~nd] = pos
                by_pos[t * 64 + pos] = leaf_value[~nd]
                pos += 1
            else:
                node_tree[nd] = t
                order[k0 + n_order] = nd
                n_order += 1
                stack[sp] = child[2 * nd + 1]
                stack[sp + 1] = child[2 * nd]
                sp += 2
        for j in range(k0 + n_order - 1, k0 - 1, -1):  # children before parents
            nd = order[j]
            left, right = child[2 * nd], child[2 * nd + 1]
            a = leaf_pos[~left] if left < 0 else lo[left]  # the left subtree's leaves are positions a..b
            b = leaf_pos[~left] if left < 0 else hi[left]
            lo[nd] = a
            hi[nd] = leaf_pos[~right] if right < 0 else hi[right]
            node_mask[nd] = ~((_ALL >> np.uint64(63 - (b - a))) << np.uint64(a))
    return node_tree, node_mask, by_pos


@dataclass
class ScoringTables:
    """What the kernel reads for the first `n_trees` trees of a ParsedTrees."""

    n_trees: int
    transform: int
    sorted_start: np.ndarray  # int64 (n_features + 1,): feature f's plain nodes are [start[f], start[f + 1])
    sorted_threshold: np.ndarray  # float64, increasing within a feature
    sorted_tree: np.ndarray  # uint32
    sorted_mask: np.ndarray  # uint64
    nan_start: np.ndarray  # int64 (n_features + 1,): plain nodes that send a NaN right
    nan_tree: np.ndarray
    nan_mask: np.ndarray
    other_start: np.ndarray  # int64 (n_features + 1,): categorical and missing-type-Zero nodes, tested one by one
    other_node: np.ndarray  # uint32: node number into the ParsedTrees arrays
    other_tree: np.ndarray
    other_mask: np.ndarray
    leaf_by_pos: np.ndarray  # float64 (n_trees * 64,)
    parsed: ParsedTrees


def scoring_tables(parsed: ParsedTrees, n_trees: int) -> ScoringTables:
    """The kernel's tables for the first `n_trees` trees."""
    node_tree, node_mask, by_pos = _leaf_sets(parsed.root, parsed.child, parsed.leaf_value, len(parsed.feature))
    used = node_tree < n_trees
    plain = used & (parsed.categorical == 0) & (parsed.zero_missing == 0)

    def segments(mask, *keys):
        """The nodes of `mask` grouped by feature (then ordered by `keys`, then node number), and where each
        feature's group starts."""
        nodes = np.flatnonzero(mask)
        order = nodes[np.lexsort((nodes,) + tuple(k[nodes] for k in keys) + (parsed.feature[nodes],))]
        return order, np.searchsorted(parsed.feature[order], np.arange(parsed.n_features + 1)).astype(np.int64)

    s_nodes, s_start = segments(plain, parsed.threshold)
    nan_nodes, nan_start = segments(plain & (parsed.special_left == 0))
    o_nodes, o_start = segments(used & ~plain)
    return ScoringTables(
        n_trees=n_trees, transform=parsed.transform, sorted_start=s_start,
        sorted_threshold=np.ascontiguousarray(parsed.threshold[s_nodes]),
        sorted_tree=node_tree[s_nodes].astype(np.uint32), sorted_mask=node_mask[s_nodes],
        nan_start=nan_start, nan_tree=node_tree[nan_nodes].astype(np.uint32), nan_mask=node_mask[nan_nodes],
        other_start=o_start, other_node=o_nodes.astype(np.uint32), other_tree=node_tree[o_nodes].astype(np.uint32),
        other_mask=node_mask[o_nodes], leaf_by_pos=by_pos[: n_trees * 64].copy(), parsed=parsed)


@njit(cache=True, nogil=True)
def _goes_left(x, node, threshold, special_left, zero_missing, categorical, cat_boundaries,
               cat_threshold):  # pragma: no cover - compiled
    """tree.h Decision for a value already zeroed below kZeroThreshold (so IsZero(x) is x == 0.0).
    CategoricalDecision: NaN and negative categories go right; static_cast<int> truncates towards zero, and a
    double beyond int's range becomes INT_MIN on x86 (negative: right; were it to saturate, INT_MAX would be
    beyond every bitset: right too); category c goes left when bit c of the node's bitset is set."""
    if categorical[node]:
        if x != x or x <= -1.0 or x >= 2147483648.0:
            return False
        c = int(x)
        k = int(threshold[node])
        lo = cat_boundaries[k]
        if c // 32 >= cat_boundaries[k + 1] - lo:
            return False
        return ((cat_threshold[lo + c // 32] >> np.uint32(c % 32)) & np.uint32(1)) == np.uint32(1)
    if x != x or (zero_missing[node] and x == 0.0):
        return special_left[node] == 1
    return x <= threshold[node]


@njit(cache=True, nogil=True)
def _scores(x, lo, hi, n_trees, transform, sorted_start, sorted_threshold, sorted_tree, sorted_mask, nan_start,
            nan_tree, nan_mask, other_start, other_node, other_tree, other_mask, leaf_by_pos, threshold,
            special_left, zero_missing, categorical, cat_boundaries, cat_threshold, out):  # pragma: no cover
    """out[i] = LightGBM's prediction of row i of x (n_rows, n_features), for i in lo..hi-1."""
    leaves = np.empty(max(n_trees, 1), dtype=np.uint64)
    for i in range(lo, hi):
        for t in range(n_trees):
            leaves[t] = _ALL
        for f in range(x.shape[1]):
            v = x[i, f]
            if abs(v) <= K_ZERO_THRESHOLD:
                v = 0.0
            if v != v:
                for k in range(np.uint64(nan_start[f]), np.uint64(nan_start[f + 1])):
                    leaves[nan_tree[k]] &= nan_mask[k]
            else:  # the nodes this value fails, x > threshold, are the first ones of the increasing list
                for k in range(np.uint64(sorted_start[f]), np.uint64(sorted_start[f + 1])):
                    if v <= sorted_threshold[k]:
                        break
                    leaves[sorted_tree[k]] &= sorted_mask[k]
            for k in range(np.uint64(other_start[f]), np.uint64(other_start[f + 1])):
                if not _goes_left(v, other_node[k], threshold, special_left, zero_missing, categorical,
                                  cat_boundaries, cat_threshold):
                    leaves[other_tree[k]] &= other_mask[k]
        s = 0.0  # LightGBM's order: 0.0, then tree 0, tree 1, ...
        for t in range(n_trees):
            w = leaves[t]
            s += leaf_by_pos[np.uint64(64 * t) + _DEBRUIJN[((w & (~w + np.uint64(1))) * np.uint64(_DEBRUIJN_MUL))
                                                           >> np.uint64(58)]]
        out[i] = math.exp(s) if transform == 1 else s


def lightgbm_matrix(X, pandas_categorical) -> np.ndarray:
    """(n_rows, n_features) float64, C order, of what LightGBM's predict reads from X (a DataFrame: lightgbm's own
    conversion; float32 widens exactly, as the C API's static_cast<double>)."""
    import pandas as pd
    from lightgbm.basic import _data_from_pandas

    if isinstance(X, pd.DataFrame):
        X = _data_from_pandas(X, feature_name="auto", categorical_feature="auto",
                              pandas_categorical=pandas_categorical)[0]
    if X.dtype not in (np.float32, np.float64):  # the C API reads any other dtype as float32 (_np2d_to_np1d)
        X = X.astype(np.float32)
    return np.ascontiguousarray(X, dtype=np.float64)


def predict_tables(tables: ScoringTables, x: np.ndarray, threads: int = 1) -> np.ndarray:
    """LightGBM's prediction of the rows of `x` (lightgbm_matrix), on `threads` threads: contiguous chunks of
    rows, each scored exactly as on one thread (the kernel releases the GIL)."""
    n = x.shape[0]
    out = np.empty(n, dtype=np.float64)
    p = tables.parsed
    args = (tables.n_trees, tables.transform, tables.sorted_start, tables.sorted_threshold, tables.sorted_tree,
            tables.sorted_mask, tables.nan_start, tables.nan_tree, tables.nan_mask, tables.other_start,
            tables.other_node, tables.other_tree, tables.other_mask, tables.leaf_by_pos, p.threshold,
            p.special_left, p.zero_missing, p.categorical, p.cat_boundaries, p.cat_threshold, out)
    global KERNELS_READY
    KERNELS_READY = True
    threads = max(1, min(int(threads), n // 256))  # a thread for fewer rows costs more than it saves
    if threads == 1:
        _scores(x, 0, n, *args)
        return out
    bounds = [n * k // threads for k in range(threads + 1)]
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for f in [pool.submit(_scores, x, a, b, *args) for a, b in zip(bounds[:-1], bounds[1:])]:
            f.result()
    return out


# Booster -> (its number of trees when parsed, ParsedTrees or None, {n_trees used: ScoringTables}); weak, so a
# model's tables go with it, and nothing is stored on the model itself (its pickle stays as it was)
_CACHE: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def booster_tables(booster) -> ScoringTables | None:
    """The kernel's tables for the trees LightGBM's predict would use (None: the model is not supported), parsed
    once per booster object and number of iterations."""
    total = booster.num_trees()
    hit = _CACHE.get(booster)
    if hit is None or hit[0] != total:
        hit = (total, parse_model_string(booster.model_to_string(num_iteration=-1)), {})
        _CACHE[booster] = hit
    parsed, by_count = hit[1], hit[2]
    if parsed is None:
        return None
    best = booster.best_iteration  # what Booster.predict uses when the wrapper passes num_iteration=None
    n_trees = min(best, parsed.n_trees) if best > 0 else parsed.n_trees
    if n_trees not in by_count:
        by_count[n_trees] = scoring_tables(parsed, n_trees)
    return by_count[n_trees]


def _readable(X) -> bool:
    """A pandas DataFrame (lightgbm's own conversion) or a 2-D float array (read as is, as scikit-learn's checks
    and the C API read it); anything else goes to LightGBM's predict."""
    import pandas as pd

    if isinstance(X, pd.DataFrame):
        return len(X.shape) == 2 and X.shape[0] > 0
    return isinstance(X, np.ndarray) and X.ndim == 2 and X.shape[0] > 0 and X.dtype in (np.float32, np.float64)


class CompiledRegressor:
    """Stands in for a fitted LGBMRegressor where mlforecast calls `model.predict(X)`: LightGBM's numbers from the
    compiled kernel, or from the estimator itself when its model or the call is not supported."""

    def __init__(self, estimator, threads: int = 1):
        self.estimator = estimator
        self.threads = threads
        params = estimator.get_params()
        self.supported = not any(params.get(p) for p in PREDICT_PARAMS)

    def __getattr__(self, name):  # anything else (feature names, params) is the estimator's
        if name.startswith("__") or name == "estimator":  # copy/pickle probing an instance not yet filled
            raise AttributeError(name)
        return getattr(self.estimator, name)

    def predict(self, X, **kwargs):
        booster = self.estimator.booster_
        tables = booster_tables(booster) if self.supported and not kwargs and _readable(X) else None
        if tables is None or X.shape[1] != tables.parsed.n_features:
            return self.estimator.predict(X, **kwargs)  # LightGBM's answer (or its error)
        return predict_tables(tables, lightgbm_matrix(X, booster.pandas_categorical), self.threads)


def _is_fitted_lightgbm(model) -> bool:
    from lightgbm import LGBMRegressor

    return isinstance(model, LGBMRegressor) and model.__sklearn_is_fitted__()


# rows x trees of one predict call from which loading the kernels in a process that has not loaded them is surely
# repaid within a forecast's 14 calls: loading the cached kernels took 0.4-0.6 s, and a call saves ~45 ns per tree
# and row (break-even near 0.8M; the bar leaves room for a slower disk or machine)
COLD_PREDICT_WORK = 2_000_000


@contextlib.contextmanager
def compiled_models(fcst, threads: int = 1, rows: int | None = None):
    """For the duration of the block, `fcst.models_` (an MLForecast's fitted models) maps each fitted
    LGBMRegressor's name to a CompiledRegressor of it; the original dictionary is put back afterwards, error or
    not, so the model that gets pickled never holds one. Does nothing when ENABLED is False, nor, for a call of
    `rows` rows, when it does not pay: the kernels are not loaded in this process yet (a run forked from the
    preloaded server has them: `warm`) and rows x trees is under COLD_PREDICT_WORK (LightGBM's predict then
    gives the same numbers)."""
    models = getattr(fcst, "models_", None)
    if not ENABLED or not isinstance(models, dict):
        yield
        return
    fitted = {name for name, m in models.items() if _is_fitted_lightgbm(m)}
    if rows is not None and not KERNELS_READY and \
            rows * max((models[n].booster_.num_trees() for n in fitted), default=0) < COLD_PREDICT_WORK:
        yield
        return
    fcst.models_ = {name: CompiledRegressor(m, threads) if name in fitted else m for name, m in models.items()}
    try:
        yield
    finally:
        fcst.models_ = models


# a two-split tweedie model in LightGBM's text format: x0 <= 0.5 goes to the second node (x1 <= 0.25: leaf 0, else
# leaf 2), else leaf 1; the second node's missing type is NaN with NaN sent left
_WARM_MODEL = ("tree\nversion=v4\nnum_class=1\nnum_tree_per_iteration=1\nmax_feature_idx=1\nobjective=tweedie\n\n"
               "Tree=0\nnum_leaves=3\nnum_cat=0\nsplit_feature=0 1\nthreshold=0.5 0.25\ndecision_type=0 10\n"
               "left_child=1 -1\nright_child=-2 -3\nleaf_value=0.5 1 2\nis_linear=0\n\nend of trees\n")


def warm() -> np.ndarray:
    """Load (or compile, on a fresh install) the kernels by scoring a tiny model given as text: the preloaded run
    server calls this once, so a forked run's first predict does not start numba (~0.4 s a run). LightGBM is not
    called: an OpenMP pool started in the server would be inherited by every fork. Returns the scores of four
    rows (one per path: each leaf, a NaN sent left)."""
    parsed = parse_model_string(_WARM_MODEL)
    x = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, np.nan]])
    return predict_tables(scoring_tables(parsed, parsed.n_trees), x)
