"""Effects with intervals: ordinary least squares with standard errors and t intervals, and the normal
and t quantiles it needs (pure numpy, no scipy)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["OLSEffects", "normal_quantile", "ols_effects", "t_quantile"]


def _as_array(x: Any) -> np.ndarray:
    """float64 array; a torch tensor is detached and moved to the CPU first (no torch import)."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def _bisect(f: Callable[[float], float], lo: float, hi: float, iters: int = 200) -> float:
    """Root of an increasing ``f`` with f(lo) < 0 < f(hi), to the last bit."""
    for _ in range(iters):
        mid = (lo + hi) / 2
        if mid in (lo, hi):
            break
        if f(mid) < 0:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def normal_quantile(q: float) -> float:
    """Standard normal quantile Phi^{-1}(q), by bisection on Phi(x) = erfc(-x / sqrt 2) / 2
    (accurate to round-off; e.g. 0.975 -> 1.959963984540054)."""
    if not 0 < q < 1:
        raise ValueError(f"q must be in (0, 1), got {q}")
    if q < 0.5:
        return -normal_quantile(1 - q)
    return _bisect(lambda x: 0.5 * math.erfc(-x / math.sqrt(2)) - q, 0.0, 40.0)


def _t_two_sided_mass(t: float, dof: int) -> float:
    """P(|T| < t) for Student's t with integer ``dof`` (Abramowitz & Stegun 26.7.3-26.7.4: finite
    series in cos(theta), theta = atan(t / sqrt(dof)))."""
    theta = math.atan(t / math.sqrt(dof))
    s, c2 = math.sin(theta), math.cos(theta) ** 2
    if dof % 2 == 0:  # sin(theta) * (1 + c2/2 + 1*3/(2*4) c2^2 + ... up to c2^((dof-2)/2))
        term, total = 1.0, 1.0
        for k in range(1, dof // 2):
            term *= c2 * (2 * k - 1) / (2 * k)
            total += term
        return s * total
    if dof == 1:
        return 2 * theta / math.pi
    # (2/pi) (theta + sin cos (1 + 2/3 c2 + 2*4/(3*5) c2^2 + ... up to c2^((dof-3)/2)))
    term, total = 1.0, 1.0
    for k in range(1, (dof - 1) // 2):
        term *= c2 * (2 * k) / (2 * k + 1)
        total += term
    return 2 / math.pi * (theta + s * math.cos(theta) * total)


def t_quantile(q: float, dof: int) -> float:
    """Quantile of Student's t with ``dof`` degrees of freedom.

    Integer ``dof <= 1000``: exact, by bisection on the closed-form CDF for integer dof (A&S
    26.7.3-4), e.g. t_{0.975} = 12.706 (1), 4.303 (2), 2.571 (5), 2.042 (30). Larger or
    non-integer ``dof``: the Cornish-Fisher expansion around the normal quantile (A&S 26.7.5, terms
    to 1/dof^4): error ~1e-14 at dof 1000, but for the 0.975 quantile 3e-4 at dof 5, 5e-5 at 7, 3e-8
    at 30 (non-integer small dof only; ``ols_effects`` always has an integer dof).
    """
    if not 0 < q < 1:
        raise ValueError(f"q must be in (0, 1), got {q}")
    if not dof > 0:
        raise ValueError(f"dof must be > 0, got {dof}")
    if q < 0.5:
        return -t_quantile(1 - q, dof)
    if q == 0.5:
        return 0.0
    if float(dof).is_integer() and dof <= 1000:
        d = int(dof)
        target = 2 * q - 1  # P(|T| < t)
        hi = 1.0
        while _t_two_sided_mass(hi, d) < target:
            hi *= 2
        return _bisect(lambda t: _t_two_sided_mass(t, d) - target, 0.0, hi)
    z = normal_quantile(q)
    g1 = (z**3 + z) / 4
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
    g4 = (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160
    return z + g1 / dof + g2 / dof**2 + g3 / dof**3 + g4 / dof**4


@dataclass(frozen=True)
class OLSEffects:
    """Least-squares fit ``y ~ intercept + X``: one entry per term (``names[0] == "intercept"``).

    ``se`` = sqrt(s^2 diag((A'A)^-1)) with s^2 = RSS / dof, dof = n - p (p terms, intercept
    included); ``low``/``high`` = coef -/+ t_{(1+level)/2, dof} * se (``t_crit``). With dof = 0 the
    fit is exact and se, low, high are NaN.
    """

    names: tuple[str, ...]
    coef: np.ndarray
    se: np.ndarray
    low: np.ndarray
    high: np.ndarray
    dof: int
    t_crit: float
    residual_sd: float
    n: int

    def as_dict(self) -> dict[str, dict[str, float]]:
        """``{name: {"coef", "se", "low", "high"}}`` with plain floats (JSON-ready)."""
        return {
            name: {"coef": float(c), "se": float(s), "low": float(lo), "high": float(hi)}
            for name, c, s, lo, hi in zip(self.names, self.coef, self.se, self.low, self.high)
        }


def ols_effects(X: Any, y: ArrayLike, names: Sequence[str] | None = None, level: float = 0.95) -> OLSEffects:
    """Ordinary least squares with an intercept, e.g. accuracy on per-slot T indicators: the
    coefficient of an indicator is the accuracy change from switching that slot on, others fixed.

    ``X``: (n,) or (n, k) predictors WITHOUT an intercept column (it is added), or anything with
    ``.columns`` and ``.to_numpy()`` (a DataFrame; column names become ``names``). ``names``: k
    labels (default ``x0..x{k-1}``). Intervals use Student's t with dof = n - (k + 1) (exact
    quantile, ``t_quantile``). Raises ``ValueError`` for NaN, lengths that differ, fewer points than
    terms, or a rank-deficient design (collinear columns, e.g. an indicator that never varies):
    such coefficients are not identifiable, and a minimum-norm answer would look like an effect.
    """
    if names is None and hasattr(X, "columns"):
        names = [str(c) for c in X.columns]
    Xa = np.asarray(X.to_numpy() if hasattr(X, "to_numpy") else X, dtype=np.float64)
    if Xa.ndim == 1:
        Xa = Xa[:, None]
    ya = _as_array(y).ravel()
    n, k = Xa.shape
    if len(ya) != n:
        raise ValueError(f"X has {n} rows, y has {len(ya)} values")
    if np.isnan(Xa).any() or np.isnan(ya).any():
        raise ValueError("ols_effects: NaN in X or y")
    names = [f"x{j}" for j in range(k)] if names is None else [str(s) for s in names]
    if len(names) != k:
        raise ValueError(f"{len(names)} names for {k} columns")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    A = np.column_stack([np.ones(n), Xa])
    p = k + 1
    if n < p:
        raise ValueError(f"{n} points cannot fit {p} terms")
    if np.linalg.matrix_rank(A) < p:
        raise ValueError("ols_effects: design matrix (with intercept) is rank deficient")
    Q, R = np.linalg.qr(A)
    coef = np.linalg.solve(R, Q.T @ ya)
    dof = n - p
    if dof == 0:
        nan = np.full(p, np.nan)
        return OLSEffects(("intercept", *names), coef, nan, nan.copy(), nan.copy(), 0, math.nan, math.nan, n)
    resid = ya - A @ coef
    s2 = float(resid @ resid) / dof
    r_inv = np.linalg.inv(R)
    se = np.sqrt(s2 * np.sum(r_inv**2, axis=1))  # diag((A'A)^-1) = row norms of R^-1 squared
    t_crit = t_quantile((1 + level) / 2, dof)
    return OLSEffects(
        ("intercept", *names), coef, se, coef - t_crit * se, coef + t_crit * se, dof, t_crit, math.sqrt(s2), n
    )
