"""The statistics of the package: pure functions on numpy arrays (no file I/O, no scipy).

Rank agreement between a predictor (template score, FLOPs) and a truth (stand-alone accuracy):

* correlations: :func:`kendall_tau_b`, :func:`spearman_rho`, :func:`pearson_r`,
  :func:`partial_correlation` / :func:`partial_spearman`, on :func:`average_ranks`;
* their null distributions: :func:`permutation_p_value` (seeded Monte Carlo),
  :func:`exact_permutation_p_value` (all ``n!`` orders), :func:`p_value` (picks one and says which),
  :func:`kendall_tau_null` and :func:`tau_critical_value` (what ``n`` points can support at all);
* their uncertainty: :func:`bootstrap_ci` (paired percentile bootstrap); :func:`agreement` bundles
  tau and rho with p-values and intervals;
* decision quality: :func:`top_k_overlap`, :func:`regret`, :func:`pareto_front`, :func:`spread_picks`;
* noise of accuracies: :func:`binomial_se` (percent convention), :func:`mean_se`;
* effects: ``fusion3d.analysis.regression`` (least squares with standard errors and t intervals).

Correlations return NaN rather than raising when they are undefined (a constant variable, fewer
than two points); malformed input (lengths that differ, bad parameters) raises ``ValueError``.
The permutation and bootstrap helpers evaluate :func:`kendall_tau_b`, :func:`spearman_rho` and
:func:`pearson_r` for all resamples at once (same values, to round-off); any other statistic is
called once per resample.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from fusion3d.analysis.regression import normal_quantile

Stat = Callable[[Any, Any], float]

__all__ = [
    "PValue",
    "agreement",
    "average_ranks",
    "binomial_se",
    "bootstrap_ci",
    "exact_permutation_p_value",
    "kendall_tau_b",
    "kendall_tau_null",
    "mean_se",
    "normal_quantile",
    "p_value",
    "pareto_front",
    "partial_correlation",
    "partial_spearman",
    "pearson_r",
    "permutation_p_value",
    "regret",
    "spearman_rho",
    "spread_picks",
    "tau_critical_value",
    "top_k_overlap",
]

# elements per vectorised block when a statistic is evaluated for many resamples at once
_BLOCK = 1 << 22


def _as_array(x: Any) -> np.ndarray:
    """float64 array; a torch tensor is detached and moved to the CPU first (no torch import)."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def _paired(x: ArrayLike, y: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    x, y = _as_array(x).ravel(), _as_array(y).ravel()
    if len(x) != len(y):
        raise ValueError(f"x has {len(x)} values, y has {len(y)}")
    return x, y


# ----------------------------------------------------------------------------- ranks and correlations


def average_ranks(x: ArrayLike) -> np.ndarray:
    """Ranks 1..n, ties get the mean of the ranks they span.

    NaN is not treated as missing: NaNs sort last and each gets its own rank (drop them first).
    """
    x = np.asarray(x, dtype=float)
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x))
    sx = x[order]
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and sx[j + 1] == sx[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def _ranks(a: np.ndarray) -> np.ndarray:
    """Average ranks of a 1-D array, or of each column of a 2-D one; NaN stays NaN and is left out
    of the ranking (``pandas.Series.rank(method="average")``)."""
    if a.ndim == 1:
        out = np.full(len(a), np.nan)
        ok = ~np.isnan(a)
        out[ok] = average_ranks(a[ok])
        return out
    return np.column_stack([_ranks(a[:, j]) for j in range(a.shape[1])])


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation without guards beyond a zero denominator (the partial-correlation kernel)."""
    a = a - a.mean()
    b = b - b.mean()
    den = np.sqrt((a @ a) * (b @ b))
    return float(a @ b / den) if den > 0 else float("nan")


def kendall_tau_b(x: ArrayLike, y: ArrayLike) -> float:
    """Kendall's tau-b (ties in either variable corrected): (C - D) / sqrt((n0 - n1)(n0 - n2)).

    NaN when either variable is constant or there are fewer than 2 points.
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) != len(y):
        raise ValueError(f"x has {len(x)} values, y has {len(y)}")
    n = len(x)
    if n < 2:
        return float("nan")
    i, j = np.triu_indices(n, 1)
    sx, sy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
    s = float(np.sum(sx * sy))
    tx, ty = float(np.sum(sx != 0)), float(np.sum(sy != 0))  # pairs not tied in x / in y
    if tx == 0 or ty == 0:
        return float("nan")
    return s / np.sqrt(tx * ty)


def spearman_rho(x: ArrayLike, y: ArrayLike) -> float:
    """Spearman's rho: the Pearson correlation of the average ranks. NaN for a constant variable
    or fewer than 2 points."""
    rx, ry = average_ranks(x), average_ranks(y)
    if len(rx) != len(ry):
        raise ValueError(f"x has {len(rx)} values, y has {len(ry)}")
    if len(rx) < 2 or rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def pearson_r(x: ArrayLike, y: ArrayLike) -> float:
    """Pearson's r, clipped to [-1, 1]. NaN when fewer than 2 points or either variable is exactly
    constant (checked on the values, so a constant 0.1 does not yield a round-off correlation)."""
    x, y = _paired(x, y)
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(np.clip(_pearson(x, y), -1.0, 1.0))


def partial_correlation(
    x: ArrayLike, y: ArrayLike, z: ArrayLike | None = None, method: str = "pearson"
) -> float:
    """Correlation of ``x`` and ``y`` after regressing ``z`` (n,) or (n, k) out of both, with an
    intercept (least squares): the Pearson correlation of the residuals. ``method="spearman"`` does the
    same on ranks (average ranks for ties; every column of ``z`` ranked too). ``z=None``: the plain
    correlation. NaN when a residual is constant (below 1e-10 of the variable's own spread) or when
    there are no more points than regression parameters."""
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if len(x) != len(y):
        raise ValueError(f"x and y differ in length ({len(x)} vs {len(y)})")
    zz = np.empty((len(x), 0)) if z is None else np.asarray(z, dtype=np.float64).reshape(len(x), -1)
    if method == "spearman":
        x, y, zz = _ranks(x), _ranks(y), (_ranks(zz) if zz.shape[1] else zz)
    elif method != "pearson":
        raise ValueError(f"method must be 'pearson' or 'spearman', got {method!r}")
    design = np.column_stack([np.ones(len(x)), zz])
    if len(x) <= design.shape[1]:
        return float("nan")
    coef, *_ = np.linalg.lstsq(design, np.column_stack([x, y]), rcond=None)
    data = np.column_stack([x, y])
    res = data - design @ coef
    # a residual at round-off level (x or y explained by z) is constant: no correlation is defined
    scale = np.sqrt(((data - data.mean(0)) ** 2).sum(0))
    if np.any(np.sqrt((res**2).sum(0)) <= 1e-10 * np.maximum(scale, np.finfo(float).tiny)):
        return float("nan")
    return _pearson(res[:, 0], res[:, 1])


def partial_spearman(x: ArrayLike, y: ArrayLike, z: ArrayLike | None = None) -> float:
    """``partial_correlation(x, y, z, method="spearman")``."""
    return partial_correlation(x, y, z, method="spearman")


# ----------------------------------------------------------------------------- many resamples at once


def _rows_per_block(cols: int) -> int:
    return max(1, _BLOCK // max(cols, 1))


def _batch_kendall(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """``kendall_tau_b`` of each row pair of two (m, n) arrays (bitwise the same values)."""
    m, n = xs.shape
    if n < 2:
        return np.full(m, np.nan)
    i, j = np.triu_indices(n, 1)
    out = np.empty(m)
    step = _rows_per_block(len(i))
    for a in range(0, m, step):
        sx = np.sign(xs[a : a + step, i] - xs[a : a + step, j])
        sy = np.sign(ys[a : a + step, i] - ys[a : a + step, j])
        s = np.sum(sx * sy, axis=1)
        t = np.sum(sx != 0, axis=1).astype(float) * np.sum(sy != 0, axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[a : a + step] = np.where(t > 0, s / np.sqrt(t), np.nan)
    return out


def _batch_ranks(a: np.ndarray) -> np.ndarray:
    """Average ranks of each row of a finite (m, n) array: #smaller + (#equal + 1) / 2."""
    m, n = a.shape
    out = np.empty((m, n))
    step = _rows_per_block(n * n)
    for s in range(0, m, step):
        b = a[s : s + step]
        less = np.sum(b[:, None, :] < b[:, :, None], axis=2)
        equal = np.sum(b[:, None, :] == b[:, :, None], axis=2)
        out[s : s + step] = less + (equal + 1) / 2
    return out


def _batch_corr(a: np.ndarray, b: np.ndarray, constant: np.ndarray) -> np.ndarray:
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    den = np.sqrt(np.sum(a * a, axis=1) * np.sum(b * b, axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.clip(np.sum(a * b, axis=1) / den, -1.0, 1.0)
    return np.where(constant | ~(den > 0), np.nan, r)


def _batch_spearman(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    if xs.shape[1] < 2:
        return np.full(len(xs), np.nan)
    rx, ry = _batch_ranks(xs), _batch_ranks(ys)
    return _batch_corr(rx, ry, (np.ptp(rx, axis=1) == 0) | (np.ptp(ry, axis=1) == 0))


def _batch_pearson(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    if xs.shape[1] < 2:
        return np.full(len(xs), np.nan)
    return _batch_corr(xs, ys, (np.ptp(xs, axis=1) == 0) | (np.ptp(ys, axis=1) == 0))


def _stat_rows(stat: Stat, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """``stat`` of each row pair of two (m, n) arrays: vectorised for the module's own correlations
    (ranks and Pearson only on finite data), otherwise one call per row."""
    if stat is kendall_tau_b:
        return _batch_kendall(xs, ys)
    finite = bool(np.all(np.isfinite(xs)) and np.all(np.isfinite(ys)))
    if stat is spearman_rho and finite:
        return _batch_spearman(xs, ys)
    if stat is pearson_r and finite:
        return _batch_pearson(xs, ys)
    return np.array([stat(a, b) for a, b in zip(xs, ys)], dtype=float)


def _stat_permuted(stat: Stat, x: np.ndarray, y: np.ndarray, perms: np.ndarray) -> np.ndarray:
    """``stat(x, y[p])`` for each row ``p`` of ``perms`` (block by block to bound memory)."""
    if len(perms) == 0:
        return np.empty(0)
    step = _rows_per_block(perms.shape[1] ** 2)
    return np.concatenate(
        [
            _stat_rows(stat, np.broadcast_to(x, (len(p), len(x))), y[p])
            for p in (perms[a : a + step] for a in range(0, len(perms), step))
        ]
    )


# ----------------------------------------------------------------------------- p-values


@dataclass(frozen=True)
class PValue:
    """A two-sided permutation p-value and how it was obtained.

    ``method`` is ``"exact"`` (all ``permutations = n!`` orders of ``y``) or ``"monte-carlo"``
    (``permutations`` seeded random orders, +1 correction). ``float(pv)`` gives ``p``.
    """

    p: float
    method: str
    permutations: int

    def __float__(self) -> float:
        return float(self.p)


def permutation_p_value(
    stat: Stat, x: ArrayLike, y: ArrayLike, permutations: int = 10000, seed: int = 0
) -> float:
    """Two-sided p-value of ``stat(x, y)`` under independence: the share of seeded random
    permutations of ``y`` whose |stat| reaches the observed one (with the +1 correction):
    ``(hits + 1) / (permutations + 1)``, where a permutation hits when |stat| >= |observed| - 1e-12.
    NaN when the observed statistic is NaN. The permutations are ``rng.permutation`` draws of
    ``numpy.random.default_rng(seed)``, one per permutation, in order."""
    observed = stat(x, y)
    if np.isnan(observed):
        return float("nan")
    xa, ya = _paired(x, y)
    rng = np.random.default_rng(seed)
    perms = np.array([rng.permutation(len(ya)) for _ in range(int(permutations))], dtype=np.intp)
    perms = perms.reshape(int(permutations), len(ya))
    hits = int(np.sum(np.abs(_stat_permuted(stat, xa, ya, perms)) >= abs(observed) - 1e-12))
    return (hits + 1) / (int(permutations) + 1)


def exact_permutation_p_value(stat: Stat, x: ArrayLike, y: ArrayLike, *, max_n: int = 8) -> float:
    """Exact two-sided permutation p-value: the share of all ``n!`` orders of ``y`` (the observed one
    included) with |stat| >= |observed| - 1e-12. No +1 correction is needed; the smallest possible
    value is the number of orders tied with the observed one over ``n!``. NaN when the observed
    statistic is NaN. Raises ``ValueError`` for ``n > max_n`` (8! = 40320 orders)."""
    xa, ya = _paired(x, y)
    n = len(ya)
    if n > max_n:
        raise ValueError(f"exact enumeration of {n}! orders refused (max_n={max_n})")
    observed = stat(x, y)
    if np.isnan(observed):
        return float("nan")
    perms = np.array(list(itertools.permutations(range(n))), dtype=np.intp).reshape(-1, n)
    hits = int(np.sum(np.abs(_stat_permuted(stat, xa, ya, perms)) >= abs(observed) - 1e-12))
    return hits / len(perms)


def p_value(
    stat: Stat, x: ArrayLike, y: ArrayLike, permutations: int = 10000, seed: int = 0, exact_max_n: int = 8
) -> PValue:
    """Two-sided permutation p-value, exact when ``n <= exact_max_n`` (all ``n!`` orders), else
    seeded Monte Carlo (``permutation_p_value``). The result says which."""
    n = len(_paired(x, y)[1])
    if n <= exact_max_n:
        return PValue(exact_permutation_p_value(stat, x, y, max_n=exact_max_n), "exact", math.factorial(n))
    return PValue(permutation_p_value(stat, x, y, permutations, seed), "monte-carlo", int(permutations))


def _inversion_counts(n: int) -> list[int]:
    """Number of permutations of ``n`` elements with k inversions, k = 0..n(n-1)/2 (exact ints), by
    the recursion I(m, k) = sum_{j=0}^{min(k, m-1)} I(m-1, k-j)."""
    counts = [1]
    for m in range(2, n + 1):
        prefix = [0, *itertools.accumulate(counts)]
        size = len(counts) + m - 1
        counts = [prefix[min(k, len(counts) - 1) + 1] - prefix[max(0, k - m + 1)] for k in range(size)]
    return counts


def kendall_tau_null(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact null distribution of Kendall's tau for ``n`` untied points: (tau values ascending,
    probabilities), from the inversion counts of the n! orders (a permutation with k inversions has
    S = C - D = n(n-1)/2 - 2k and tau = S / (n(n-1)/2))."""
    n = int(n)
    if n < 2:
        raise ValueError(f"n must be >= 2, got {n}")
    counts = _inversion_counts(n)
    total = math.factorial(n)
    pairs = n * (n - 1) // 2
    taus = np.array([(pairs - 2 * k) / pairs for k in range(pairs, -1, -1)])
    probs = np.array([c / total for c in reversed(counts)])
    return taus, probs


def tau_critical_value(n: int, alpha: float = 0.05, exact_max_n: int = 10) -> float:
    """The smallest |tau| whose two-sided p-value under independence is < ``alpha``, for ``n`` untied
    points: below it, ``n`` points cannot support a conclusion at level ``alpha``.

    ``n <= exact_max_n``: exact (``kendall_tau_null``), P(|tau| >= t) < alpha over the attainable t;
    ``math.inf`` when no attainable tau reaches it (n <= 4 at alpha = 0.05, so ``abs(tau) < crit``
    still reads "not significant"). Larger ``n``: the normal approximation
    z_{1 - alpha/2} * sqrt(2 (2n + 5) / (9 n (n - 1))), no continuity correction (not an attainable
    value). Exact values at alpha = 0.05: n=5 1.0, n=6 0.867, n=7 0.714, n=8 0.643, n=9 0.556,
    n=10 0.511.
    """
    n = int(n)
    if n < 2:
        raise ValueError(f"n must be >= 2, got {n}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if n > exact_max_n:
        return normal_quantile(1 - alpha / 2) * math.sqrt(2 * (2 * n + 5) / (9 * n * (n - 1)))
    counts, total, pairs = _inversion_counts(n), math.factorial(n), n * (n - 1) // 2
    abs_s = [abs(pairs - 2 * k) for k in range(pairs + 1)]
    for s in sorted(set(abs_s)):  # attainable |S|, smallest first; P(|S| >= s) only falls
        if sum(c for c, a in zip(counts, abs_s) if a >= s) / total < alpha:
            return s / pairs
    return math.inf


# ----------------------------------------------------------------------------- bootstrap and bundle


def bootstrap_ci(
    stat: Stat, x: ArrayLike, y: ArrayLike, n_boot: int = 2000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``stat`` over paired resamples: ``n_boot`` draws of ``n``
    indices with replacement from ``numpy.random.default_rng(seed)`` (one (n_boot, n) integer
    array), ``stat(x[idx], y[idx])`` for each, resamples where it is NaN skipped, then the
    (1 - level)/2 and (1 + level)/2 quantiles (numpy's linear interpolation). (nan, nan) when no
    resample gives a finite value. Deterministic under ``seed``."""
    xa, ya = _paired(x, y)
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    n = len(xa)
    if n == 0:
        return float("nan"), float("nan")
    idx = np.random.default_rng(seed).integers(0, n, size=(int(n_boot), n))
    step = _rows_per_block(n * n)
    vals = np.concatenate(
        [_stat_rows(stat, xa[idx[a : a + step]], ya[idx[a : a + step]]) for a in range(0, len(idx), step)]
    )
    vals = vals[np.isfinite(vals)]
    if len(vals) == 0:
        return float("nan"), float("nan")
    lo, hi = np.quantile(vals, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def agreement(
    x: ArrayLike,
    y: ArrayLike,
    permutations: int = 10000,
    seed: int = 0,
    n_boot: int = 2000,
    level: float = 0.95,
    exact_max_n: int = 8,
    alpha: float = 0.05,
) -> dict:
    """Kendall's tau-b and Spearman's rho of ``x`` (predictor) vs ``y`` (truth) with p-values and
    bootstrap intervals. Pairs with a NaN in either are dropped first; ``n`` counts those kept.

    Returns ``{"n", "tau_critical", "kendall_tau": {...}, "spearman_rho": {...}}`` where each inner
    dict holds ``value``, ``p``, ``p_method`` ("exact" / "monte-carlo"), ``ci_low``, ``ci_high``
    (``level`` interval) and ``tau_critical`` is ``tau_critical_value(n, alpha)`` (``math.inf`` for
    n < 2): an |tau| below it cannot be significant with ``n`` points.
    """
    xa, ya = _paired(x, y)
    keep = ~(np.isnan(xa) | np.isnan(ya))
    xa, ya = xa[keep], ya[keep]
    n = len(xa)
    out: dict = {"n": n, "tau_critical": tau_critical_value(n, alpha) if n >= 2 else math.inf}
    for name, stat in (("kendall_tau", kendall_tau_b), ("spearman_rho", spearman_rho)):
        pv = p_value(stat, xa, ya, permutations, seed, exact_max_n)
        lo, hi = bootstrap_ci(stat, xa, ya, n_boot, level, seed)
        out[name] = {
            "value": float(stat(xa, ya)),
            "p": pv.p,
            "p_method": pv.method,
            "ci_low": lo,
            "ci_high": hi,
        }
    return out


# ----------------------------------------------------------------------------- decisions


def top_k_overlap(pred: ArrayLike, truth: ArrayLike, k: int = 5) -> float:
    """|top-k by ``pred`` ∩ top-k by ``truth``| / k (higher is better in both).

    Ties are broken by position: among equal values the earlier index ranks higher (a stable sort
    of the negated values), so the result is deterministic. Raises ``ValueError`` for NaN, for
    lengths that differ and unless 1 <= k <= n.
    """
    p, t = _paired(pred, truth)
    if np.isnan(p).any() or np.isnan(t).any():
        raise ValueError("top_k_overlap: NaN in pred or truth")
    if not 1 <= k <= len(p):
        raise ValueError(f"k must be in [1, {len(p)}], got {k}")
    top_p = set(np.argsort(-p, kind="stable")[:k].tolist())
    top_t = set(np.argsort(-t, kind="stable")[:k].tolist())
    return len(top_p & top_t) / k


def regret(pred: ArrayLike, truth: ArrayLike, truth_se: float | None = None) -> dict:
    """What trusting ``pred`` costs: pick the argmax of ``pred`` (the first on ties), compare its
    truth with the best truth.

    Returns ``{"pick", "best", "picked_truth", "best_truth", "regret", "regret_se"}``: indices, truth
    values, ``regret = max(truth) - truth[pick]`` (>= 0, in the units of ``truth``, e.g. points) and
    ``regret / truth_se`` when ``truth_se`` (the standard error of one truth value, e.g.
    ``binomial_se``) is given, else None. The latter is not a test of the difference, which would
    need the SE of a difference (sqrt(2) x larger for two independent equal-SE values).
    """
    p, t = _paired(pred, truth)
    if len(p) == 0:
        raise ValueError("regret: empty input")
    if np.isnan(p).any() or np.isnan(t).any():
        raise ValueError("regret: NaN in pred or truth")
    pick, best = int(np.argmax(p)), int(np.argmax(t))
    r = float(t[best] - t[pick])
    if truth_se is not None and not truth_se > 0:
        raise ValueError(f"truth_se must be > 0, got {truth_se}")
    return {
        "pick": pick,
        "best": best,
        "picked_truth": float(t[pick]),
        "best_truth": float(t[best]),
        "regret": r,
        "regret_se": None if truth_se is None else r / float(truth_se),
    }


def pareto_front(flops: ArrayLike, acc: ArrayLike) -> list[int]:
    """Indices of the non-dominated points (lower cost and higher accuracy are better), sorted by cost.

    A point is dominated when another has cost <= and accuracy >= with at least one strict. Of
    exact duplicates (same cost and accuracy) the first index is kept. NaN points are ignored.
    """
    f, a = _as_array(flops), _as_array(acc)
    if f.shape != a.shape or f.ndim != 1:
        raise ValueError("flops and acc must be 1-D arrays of the same length")
    idx = [i for i in range(len(f)) if not (np.isnan(f[i]) or np.isnan(a[i]))]
    # by cost ascending, then accuracy descending, then index: a point is on the front iff its
    # accuracy beats every point seen before it
    idx.sort(key=lambda i: (f[i], -a[i], i))
    front, best = [], -np.inf
    for i in idx:
        if a[i] > best:
            front.append(i)
            best = a[i]
    return front


def spread_picks(scores: ArrayLike, m: int) -> list[int]:
    """Positions of ``m`` entries spread over the range of ``scores``: for ``m`` targets evenly
    spaced in value from the best score to the worst, the not yet picked entry nearest to each
    (ties: the earlier position). The best and the worst are always included; all when m >= n.
    Spacing in value rather than in rank matters when most strategies crowd at the top: a few poor
    ones then still get picked, and the test sees the whole range."""
    scores = np.asarray(scores, dtype=float)
    n = len(scores)
    if m < 1:
        raise ValueError(f"num must be >= 1, got {m}")
    if m >= n:
        return np.argsort(-scores, kind="stable").tolist()
    picked: list[int] = []
    for target in np.linspace(scores.max(), scores.min(), m):
        free = [i for i in range(n) if i not in picked]
        picked.append(min(free, key=lambda i: (abs(scores[i] - target), i)))
    return picked


# ----------------------------------------------------------------------------- noise of accuracies


def binomial_se(acc: ArrayLike, n: int | ArrayLike) -> float | np.ndarray:
    """Standard error of an accuracy measured on ``n`` independent items, in PERCENT (the package's
    convention for top-1): ``acc`` in [0, 100], result in percentage points,
    100 * sqrt(p (1 - p) / n) with p = acc / 100. An accuracy given as a fraction (0.75) would be
    read as 0.75 %; multiply by 100 first. Works elementwise on arrays; a float for scalars."""
    a = np.asarray(acc, dtype=float)
    nn = np.asarray(n, dtype=float)
    if np.any(a < 0) or np.any(a > 100):
        raise ValueError(f"acc must be a percentage in [0, 100], got {acc}")
    if np.any(nn <= 0):
        raise ValueError(f"n must be > 0, got {n}")
    p = a / 100
    se = 100 * np.sqrt(p * (1 - p) / nn)
    return float(se) if se.ndim == 0 else se


def mean_se(values: ArrayLike) -> tuple[float, float]:
    """(mean, standard error of the mean) = (mean, sd / sqrt(n)) with the n - 1 sample sd.
    The SE is NaN for fewer than 2 values; NaN values propagate (drop them first)."""
    v = _as_array(values).ravel()
    if len(v) == 0:
        return float("nan"), float("nan")
    mean = float(v.mean())
    if len(v) < 2:
        return mean, float("nan")
    return mean, float(v.std(ddof=1) / math.sqrt(len(v)))
