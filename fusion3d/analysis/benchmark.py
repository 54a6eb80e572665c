"""The known-answer benchmark in numbers (pure): the design of a ground-truth table, what a table says
about itself (spread, noise ceiling, per-slot effects of a T path), and how an analyzer's answers
score against it.

A table holds one row per (strategy, seed): the strategy trained alone with a fixed recipe, its
top-1 on a large test set. The ground truth of a strategy is its mean top-1 over seeds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from fusion3d.analysis.regression import ols_effects
from fusion3d.analysis.stats import agreement, binomial_se, kendall_tau_b, regret, spearman_rho, top_k_overlap
from fusion3d.models.strategy import Strategy
from fusion3d.models.units import TEMPORAL_UNITS, UNITS

TABLE_COLUMNS = (
    "strategy",
    "id",
    "design",
    "seed",
    "top1",
    "top5",
    "macs",
    "params",
    "test_videos",
    "seconds",
)


# ----------------------------------------------------------------------------- the design


def structured_design(num_slots: int) -> list[tuple[Strategy, str]]:
    """(strategy, design label) of the fixed part of a table: the canonical strategies; for each slot
    "T only here" (ST there, S elsewhere) and "T everywhere but here" (S there, ST elsewhere); T only
    in the early half and only in the late half."""
    n = num_slots
    out = [(Strategy.uniform(u, n), f"all-{u}") for u in ("S", "ST", "S+ST")]
    for i in range(n):
        out.append((Strategy(tuple("ST" if j == i else "S" for j in range(n))), f"T-only@{i}"))
    for i in range(n):
        out.append((Strategy(tuple("S" if j == i else "ST" for j in range(n))), f"T-but@{i}"))
    half = n // 2
    out.append((Strategy(tuple("ST" if j < half else "S" for j in range(n))), "T-early-half"))
    out.append((Strategy(tuple("S" if j < half else "ST" for j in range(n))), "T-late-half"))
    return out


def design(
    num_slots: int, num_random: int, seed: int, cost: Callable[[Strategy], float]
) -> list[tuple[Strategy, str]]:
    """The strategies of a table: :func:`structured_design` plus ``num_random`` random strategies
    spread over cost. Random strategies draw each slot's unit uniformly from S, ST, S+ST, none
    (seeded); of 50 x ``num_random`` draws (duplicates of earlier strategies removed), the ones
    nearest to ``num_random`` evenly spaced cost quantiles are kept, so cheap and expensive
    strategies are both represented. ``cost`` maps a strategy to its MACs."""
    fixed = structured_design(num_slots)
    seen = {s.id for s, _ in fixed}
    rng = np.random.default_rng([int(seed), 1212])
    pool: list[Strategy] = []
    for _ in range(50 * max(1, num_random)):
        s = Strategy(tuple(UNITS[k] for k in rng.integers(0, len(UNITS), num_slots)))
        if s.id not in seen:
            seen.add(s.id)
            pool.append(s)
    costs = np.array([cost(s) for s in pool], dtype=float)
    order = np.argsort(costs, kind="stable")
    picked: list[int] = []
    for q in np.linspace(0, len(order) - 1, num_random):
        k = int(round(q))
        while order[k] in picked:  # the next free one (pool sizes make this rare)
            k = (k + 1) % len(order)
        picked.append(int(order[k]))
    return fixed + [(pool[i], "random") for i in picked]


# ----------------------------------------------------------------------------- what a table says


def ground_truth(table: pd.DataFrame) -> pd.DataFrame:
    """Per strategy (one row, design order): mean top-1 / top-5 over seeds, their range over seeds
    (``top1_min``, ``top1_max``), the number of seeds, MACs, parameters and the standard error of the
    mean (see :func:`strategy_se`)."""
    g = table.groupby("id", sort=False)
    out = g.agg(
        strategy=("strategy", "first"),
        design=("design", "first"),
        top1=("top1", "mean"),
        top5=("top5", "mean"),
        top1_min=("top1", "min"),
        top1_max=("top1", "max"),
        seeds=("seed", "nunique"),
        macs=("macs", "first"),
        params=("params", "first"),
        test_videos=("test_videos", "first"),
    )
    out["se"] = strategy_se(table).reindex(out.index).to_numpy()
    return out.reset_index()


def strategy_se(table: pd.DataFrame) -> pd.Series:
    """Standard error (points) of each strategy's mean top-1 over its ``k`` seeds:
    ``sqrt(binomial_se(mean, test videos)^2 + seed_var / k)``.

    The binomial term is the test set's sampling noise (shared by the seeds: the same test videos);
    ``seed_var`` is the optimisation's seed-to-seed variance, the MEDIAN over the table of each
    strategy's variance between its seeds. The median keeps a few strategies whose optimisation
    sometimes fails (one seed at chance, the other not) from inflating every strategy's error;
    those show in their own ``top1_min`` / ``top1_max``. With one seed per strategy only the
    binomial term is left."""
    g = table.groupby("id", sort=False)
    means = g["top1"].mean()
    k = g["top1"].count()
    n = g["test_videos"].first()
    binom = binomial_se(np.clip(means.to_numpy(), 0.0, 100.0), n.to_numpy())
    per_strategy_var = g["top1"].var(ddof=1).dropna()
    seed_var = float(per_strategy_var.median()) if len(per_strategy_var) else 0.0
    return pd.Series(np.sqrt(binom**2 + seed_var / k.to_numpy()), index=means.index)


def noise_ceiling(table: pd.DataFrame) -> dict:
    """How well the ground truth agrees with itself: Kendall tau and Spearman rho between the
    rankings of two disjoint halves of the table's seeds, each half's mean top-1 (the sorted seeds
    split in two; with two seeds, seed A against seed B), on the strategies that have every seed.

    A half holds half the seeds the table's ground truth averages, so this is a conservative floor
    for the full table's reliability. ``single_seed_tau`` is the mean tau over every pair of single
    seeds (equal to ``kendall_tau`` with two seeds): adding seeds raises ``kendall_tau``, not it.
    ``attainable_tau`` is the tau a perfect predictor (the strategies' true accuracies) is expected
    to reach against the ground truth, the mean over every seed (``attainable_tau``)."""
    seeds = sorted(int(s) for s in table["seed"].unique())
    if len(seeds) < 2:
        return {
            "seeds": seeds,
            "halves": None,
            "kendall_tau": None,
            "attainable_tau": None,
            "spearman_rho": None,
            "single_seed_tau": None,
            "n": 0,
        }
    wide = table.pivot_table(index="id", columns="seed", values="top1", aggfunc="mean").dropna()
    half = len(seeds) // 2
    a_seeds, b_seeds = seeds[:half], seeds[half : 2 * half]  # an odd last seed is left out of the split
    x, y = wide[a_seeds].mean(axis=1).to_numpy(float), wide[b_seeds].mean(axis=1).to_numpy(float)
    pairs = [
        kendall_tau_b(wide[i].to_numpy(float), wide[j].to_numpy(float))
        for k, i in enumerate(seeds)
        for j in seeds[k + 1 :]
    ]
    tau = kendall_tau_b(x, y)
    return {
        "seeds": seeds,
        "halves": [a_seeds, b_seeds],
        "kendall_tau": _num(tau),
        "attainable_tau": _num(attainable_tau(tau, half, len(seeds))),
        "spearman_rho": _num(spearman_rho(x, y)),
        "single_seed_tau": _num(float(np.nanmean(pairs))),
        "n": int(len(wide)),
    }


def attainable_tau(split_half_tau: float, half_seeds: int, seeds: int) -> float:
    """The Kendall tau a perfect predictor is expected to reach against a ground truth that averages
    ``seeds`` seeds, from the tau between two halves of ``half_seeds`` seeds each.

    Under a bivariate-normal model (true accuracy plus independent seed noise): a Kendall tau maps to
    a Pearson correlation by Greiner's relation ``r = sin(pi tau / 2)``; the reliability of a mean
    over ``m`` times as many seeds follows Spearman-Brown, ``R = m r / (1 + (m - 1) r)``; the mean's
    correlation with the truth is ``sqrt(R)``, mapped back to a tau by ``(2 / pi) asin``. A split-half
    tau <= 0 gives 0 (nothing to rank); NaN gives NaN. An approximation: seed noise that is far from
    normal (an optimisation that sometimes fails) makes it optimistic."""
    if split_half_tau is None or not np.isfinite(split_half_tau):
        return float("nan")
    r = np.sin(np.pi * float(split_half_tau) / 2.0)
    if r <= 0.0:
        return 0.0
    m = float(seeds) / float(half_seeds)
    reliability = m * r / (1.0 + (m - 1.0) * r)
    return float(2.0 / np.pi * np.arcsin(np.sqrt(min(reliability, 1.0))))


def t_indicators(strategies: Sequence[str]) -> np.ndarray:
    """(strategies, slots) 0/1: whether each slot keeps its T path (unit ST or S+ST)."""
    return np.array([[u in TEMPORAL_UNITS for u in Strategy.from_string(s)] for s in strategies], dtype=float)


def slot_effects(gt: pd.DataFrame) -> pd.DataFrame:
    """Ground-truth effect of a T path at each slot, two ways:

    - ``single``: top-1 of "T only here" minus all-S (NaN where the table lacks those rows);
    - ``linear``: the coefficient of slot i's T indicator in a least-squares fit of mean top-1 on
      every slot's T indicator over all strategies of the table, with its 95% interval.
    """
    n = len(Strategy.from_string(gt["strategy"].iloc[0]))
    by_design = gt.set_index("design")["top1"]
    base = by_design.get("all-S", np.nan)
    coef, low, high = linear_t_effects(gt["strategy"], gt["top1"].to_numpy(float))
    rows = []
    for i in range(n):
        rows.append(
            {
                "slot": i,
                "single": float(by_design.get(f"T-only@{i}", np.nan) - base),
                "linear": coef[i],
                "linear_low": low[i],
                "linear_high": high[i],
            }
        )
    return pd.DataFrame(rows)


def linear_t_effects(strategies: Sequence[str], top1: np.ndarray) -> tuple[list, list, list]:
    """Per slot: the coefficient of its T indicator in a least-squares fit of ``top1`` on every slot's
    T indicator (with an intercept), and its 95% interval; NaN when the strategies cannot identify
    the effects (fewer strategies than terms, or a slot whose T indicator never varies)."""
    X = t_indicators(strategies)
    n = X.shape[1]
    try:
        fit = ols_effects(X, np.asarray(top1, dtype=float), names=[f"T@{i}" for i in range(n)])
    except ValueError:
        return [float("nan")] * n, [float("nan")] * n, [float("nan")] * n
    return (
        [float(v) for v in fit.coef[1:]],
        [float(v) for v in fit.low[1:]],
        [float(v) for v in fit.high[1:]],
    )


def depth_profile(gt: pd.DataFrame) -> dict:
    """Top-1 of T only in the early half vs only in the late half of the slots (points), and all-S /
    all-ST for reference; ``early_minus_late`` > 0 means temporal modelling pays off early."""
    by = gt.set_index("design")["top1"]
    early, late = by.get("T-early-half", np.nan), by.get("T-late-half", np.nan)
    return {
        "early_half_T": _num(early),
        "late_half_T": _num(late),
        "early_minus_late": _num(early - late),
        "all_S": _num(by.get("all-S", np.nan)),
        "all_ST": _num(by.get("all-ST", np.nan)),
    }


def describe_table(table: pd.DataFrame) -> dict:
    """What ``fusion3d bench list`` shows of a table."""
    gt = ground_truth(table)
    best = gt["top1"].max()
    se_best = float(gt.loc[gt["top1"].idxmax(), "se"])
    near = int((gt["top1"] >= best - se_best).sum())
    return {
        "strategies": int(len(gt)),
        "seeds": sorted(int(s) for s in table["seed"].unique()),
        "rows": int(len(table)),
        "top1_min": float(gt["top1"].min()),
        "top1_max": float(best),
        "spread": float(best - gt["top1"].min()),
        "se_best": se_best,
        "within_1se_of_best": near,
        "within_1se_of_best_share": near / len(gt),
        "test_videos": int(gt["test_videos"].iloc[0]),
        "noise_ceiling": noise_ceiling(table),
        "depth_profile": depth_profile(gt),
    }


# ----------------------------------------------------------------------------- scoring an analyzer


def score_predictors(
    gt: pd.DataFrame,
    predictors: dict[str, np.ndarray],
    permutations: int = 10000,
    n_boot: int = 2000,
    seed: int = 0,
    k: int = 5,
) -> dict:
    """For each predictor (one value per ground-truth row, higher = predicted better): Kendall tau and
    Spearman rho with the ground-truth mean top-1 (p-values exact for small n, bootstrap 95%
    intervals), top-``k`` overlap, and the regret of its pick in points and in standard errors of
    the table's best strategy."""
    truth = gt["top1"].to_numpy(float)
    se_best = float(gt.loc[gt["top1"].idxmax(), "se"])
    out = {}
    for name, values in predictors.items():
        x = np.asarray(values, dtype=float)
        ok = ~np.isnan(x)
        if ok.sum() < 3:
            out[name] = {"n": int(ok.sum()), "note": "fewer than 3 values: nothing to compare"}
            continue
        r = agreement(x[ok], truth[ok], permutations=permutations, seed=seed, n_boot=n_boot)
        reg = regret(x[ok], truth[ok], se_best if se_best > 0 else None)
        r.update(
            {
                "top_k": k,
                "top_k_overlap": top_k_overlap(x[ok], truth[ok], min(k, int(ok.sum()))),
                "pick": str(gt.loc[np.flatnonzero(ok)[reg["pick"]], "strategy"]),
                "regret_points": reg["regret"],
                "regret_se": reg["regret_se"],
            }
        )
        out[name] = r
    return out


def slot_agreement(effects: pd.DataFrame, preference: Sequence[float], column: str = "linear") -> dict:
    """Does a per-slot preference for T (e.g. the marginal keep probability of the T path) point where
    a T path pays off? Spearman rho over slots between ``preference`` and the ground-truth effect,
    and the early/late contrast of both (first half of the slots minus the second half)."""
    eff = effects[column].to_numpy(float)
    pref = np.asarray(preference, dtype=float)
    half = len(eff) // 2
    e_contrast = float(eff[:half].mean() - eff[half:].mean())
    p_contrast = float(pref[:half].mean() - pref[half:].mean())
    return {
        "spearman_rho": _num(spearman_rho(pref, eff)),
        "kendall_tau": _num(kendall_tau_b(pref, eff)),
        "effect_early_minus_late": e_contrast,
        "preference_early_minus_late": p_contrast,
        "profile_matches": bool(np.sign(e_contrast) == np.sign(p_contrast))
        if e_contrast and p_contrast
        else None,
        "effects": eff.tolist(),
        "preference": pref.tolist(),
        "effect_column": column,
    }


def _num(v) -> float | None:
    v = float(v)
    return None if math.isnan(v) else v
