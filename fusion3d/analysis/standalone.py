"""Stand-alone accuracy over training seeds: per-label mean and standard error, and "X vs the best of
a set within one standard error".

A strategy trained alone with K training seeds has K rows (``fusion3d retrain --seeds K``), one
per seed, sharing a base label. ``seed_summary`` aggregates them per base label:

- ``n``: the number of seeds with a finite value;
- ``mean``; ``sd``: the sample standard deviation (ddof 1); ``se = sd / sqrt(n)``: the standard error
  of the mean (``sd`` and ``se`` are NaN with a single seed);
- ``min``, ``max``.

``compare_to_best`` compares one label with the best (highest mean) of a set of labels: the
difference of the means, its standard error ``sqrt(se_a^2 + se_b^2)`` (independent seeds), and a
verdict: "better" when the difference exceeds one combined standard error, "worse" when it is below
minus one, else "within 1 SE" (the bounds included). One standard error is a loose yardstick, not
a test: with 3 seeds per label a difference of 1 SE is far from significant.

Pure numpy / pandas; no torch, no files.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

SUMMARY_COLUMNS = ("n", "mean", "sd", "se", "min", "max")
VERDICTS = ("better", "within 1 SE", "worse")


def seed_summary(rows: pd.DataFrame, value: str = "top1", key: str = "base_label") -> pd.DataFrame:
    """One row per ``key`` (in order of first appearance) with ``n, mean, sd, se, min, max`` of the
    finite values of column ``value`` (see the module docstring)."""
    out = []
    for k, g in rows.groupby(key, sort=False):
        x = pd.to_numeric(g[value], errors="coerce").to_numpy(np.float64)
        x = x[np.isfinite(x)]
        n = len(x)
        sd = float(x.std(ddof=1)) if n > 1 else math.nan
        out.append(
            {
                key: k,
                "n": n,
                "mean": float(x.mean()) if n else math.nan,
                "sd": sd,
                "se": sd / math.sqrt(n) if n > 1 else math.nan,
                "min": float(x.min()) if n else math.nan,
                "max": float(x.max()) if n else math.nan,
            }
        )
    return pd.DataFrame(out, columns=[key, *SUMMARY_COLUMNS])


def compare_to_best(
    summary: pd.DataFrame, label: str, others: Sequence[str], key: str = "base_label", min_seeds: int = 2
) -> dict:
    """``label`` against the best (highest mean; the first on a tie) of ``others``, all rows of
    ``summary`` (``seed_summary``): ``mean, se, n`` of each, ``diff = mean - best_mean``,
    ``se_diff = sqrt(se^2 + best_se^2)`` and the ``verdict``. Every label needs ``min_seeds`` seeds
    (at least 2: a standard error needs two)."""
    if not others:
        raise ValueError("need at least one label to compare with")
    s = summary.set_index(key)
    names = [label, *others]
    missing = [x for x in names if x not in s.index]
    if missing:
        raise ValueError(f"no seeds of {missing}")
    few = [x for x in names if s.loc[x, "n"] < max(2, int(min_seeds))]
    if few:
        raise ValueError(f"{few} have fewer than {max(2, int(min_seeds))} seeds; a standard error needs two")
    best = max(others, key=lambda x: (s.loc[x, "mean"], -list(others).index(x)))
    a, b = s.loc[label], s.loc[best]
    diff = float(a["mean"] - b["mean"])
    se = math.sqrt(float(a["se"]) ** 2 + float(b["se"]) ** 2)
    verdict = VERDICTS[0] if diff > se else (VERDICTS[2] if diff < -se else VERDICTS[1])
    return {
        "label": label,
        "mean": float(a["mean"]),
        "se": float(a["se"]),
        "n": int(a["n"]),
        "best": best,
        "best_mean": float(b["mean"]),
        "best_se": float(b["se"]),
        "best_n": int(b["n"]),
        "diff": diff,
        "se_diff": se,
        "verdict": verdict,
    }
