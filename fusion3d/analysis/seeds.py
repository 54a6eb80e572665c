"""Answers across template seeds: per-slot marginals with intervals over K independently trained templates.

The interval of a quantity measured once per seed (values ``x_1 .. x_K``):

- K >= 4: the 95% Student t-interval of the mean, ``mean +- t_{0.975, K-1} * sd / sqrt(K)`` (sd with
  ddof 1), clipped to the quantity's range (probabilities: [0, 1]);
- K = 2 or 3: the range ``[min, max]`` over the seeds. With so few seeds a t-interval is too wide to
  say anything (K = 2: t = 12.7) and too fragile to trust; the range is what was seen, not a 95%
  interval, and the report says so;
- K = 1: no interval (NaN).

``seed_marginals`` puts these next to the marginals of the mean drop probabilities
(``fusion3d.analysis.marginals.marginals_table``): for each drop probability and unit marginal ``X``
the columns ``X_mean`` (mean over seeds of the per-seed value), ``X_lo``, ``X_hi``, and per convention
``preferred_agreement_<conv>``, the share of seeds whose own preferred unit is the combined one.

Pure numpy / pandas; no torch, no files.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from fusion3d.analysis.marginals import CONVENTIONS, MARGINAL_UNITS, marginals_table

# Two-sided 95% quantiles of Student's t, t_{0.975, df}, for df = 1 .. 30.
T975 = (
    12.706204736174705,
    4.302652729749464,
    3.182446305284263,
    2.7764451051977934,
    2.570581835636314,
    2.4469118511449692,
    2.3646242515927844,
    2.3060041352041662,
    2.2621571627982055,
    2.2281388519862744,
    2.200985160082949,
    2.178812829663418,
    2.160368656461013,
    2.1447866879169273,
    2.131449545559323,
    2.1199052992210112,
    2.1098155778331806,
    2.10092204024096,
    2.093024054408263,
    2.0859634472658364,
    2.079613844727662,
    2.0738730679040147,
    2.0686576104190406,
    2.0638985616280205,
    2.059538552753294,
    2.055529438642871,
    2.0518305164802833,
    2.048407141795244,
    2.0452296421327034,
    2.0422724563012373,
)
MIN_SEEDS_T = 4  # from this many seeds on, the t-interval; below it, the range over the seeds


def t975(df: int) -> float:
    """t_{0.975, df}: the table for df <= 30, beyond it the Cornish-Fisher expansion (error < 1e-5)."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be at least 1, got {df}")
    if df <= len(T975):
        return T975[df - 1]
    z = 1.959963984540054
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


def interval_kind(k: int) -> str:
    """How the interval of ``k`` seeds is made, in words."""
    if k < 2:
        return "none (a single template seed)"
    if k < MIN_SEEDS_T:
        return f"range (min-max) over {k} template seeds; not a 95% interval"
    return f"95% t-interval of the mean over {k} template seeds (t with {k - 1} df)"


def seed_interval(values, low: float = -math.inf, high: float = math.inf) -> tuple:
    """(mean, lo, hi) over axis 0 of ``values`` (one row per seed; see the module docstring), the
    bounds clipped to [low, high]. Works elementwise on the remaining axes."""
    x = np.asarray(values, dtype=np.float64)
    if x.ndim == 0 or x.shape[0] < 1:
        raise ValueError("need one value per seed along axis 0")
    k = x.shape[0]
    mean = x.mean(0)
    if k == 1:
        nan = np.full_like(mean, np.nan)
        return mean, nan, nan
    if k < MIN_SEEDS_T:
        lo, hi = x.min(0), x.max(0)
    else:
        half = t975(k - 1) * x.std(0, ddof=1) / math.sqrt(k)
        lo, hi = mean - half, mean + half
    return mean, np.clip(lo, low, high), np.clip(hi, low, high)


def seed_marginals(drop_probs: Sequence, slot_names: Sequence[str] | None = None) -> pd.DataFrame:
    """The marginals table of the mean drop probabilities over the seeds, with intervals across seeds.

    ``drop_probs``: one ``(num_slots, 2)`` table (columns [S, T]) per template seed. The columns of
    ``marginals_table`` (of the mean drop probabilities), then ``seeds`` (K), and for every ``X`` of
    ``p_S, p_T, P_<unit>_<conv>``: ``X_mean, X_lo, X_hi`` (``seed_interval``, clipped to [0, 1]); then
    ``preferred_agreement_<conv>``: the share of seeds whose preferred unit equals ``preferred_unit_<conv>``.
    """
    tables = [np.asarray(p, dtype=np.float64) for p in drop_probs]
    if not tables:
        raise ValueError("need the drop probabilities of at least one seed")
    if any(t.shape != tables[0].shape for t in tables):
        raise ValueError(f"the seeds' drop probabilities differ in shape: {[t.shape for t in tables]}")
    per_seed = [marginals_table(t, slot_names) for t in tables]
    df = marginals_table(np.mean(tables, axis=0), slot_names)
    df["seeds"] = len(tables)
    quantities = ["p_S", "p_T"] + [f"P_{u}_{c}" for c in CONVENTIONS for u in MARGINAL_UNITS]
    for col in quantities:
        mean, lo, hi = seed_interval(np.stack([t[col].to_numpy() for t in per_seed]), 0.0, 1.0)
        df[f"{col}_mean"], df[f"{col}_lo"], df[f"{col}_hi"] = mean, lo, hi
    for conv in CONVENTIONS:
        combined = df[f"preferred_unit_{conv}"].to_numpy()
        same = np.stack([t[f"preferred_unit_{conv}"].to_numpy() == combined for t in per_seed])
        df[f"preferred_agreement_{conv}"] = same.mean(0)
    return df
