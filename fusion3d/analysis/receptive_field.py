"""Static 3D receptive fields of a sub-network, by exact arithmetic (no forward pass): the analysis.

The graph vocabulary (``Op``, ``Par``, ``Mark``) and its arithmetic (``AxisRF``, ``RF``, ``compose``,
``trace``, ...) are ``fusion3d.models.rf_graph`` (re-exported here); every network describes itself with
``model.rf_graph(strategy)`` (``FusionTemplate``, the backbones; see ``fusion3d.models.template`` and
``fusion3d.models.backbone_base`` for what each slot kind contributes). This module measures those
graphs:

- ``rf_graph(model, strategy)``: the model's own graph, flattened (``None`` = the full network);
- ``receptive_fields``: one row per slot output and one for the head; ``head_rf``,
  ``strategy_rf_columns`` (the ``strategies.csv`` columns), ``rf_columns`` / ``with_rf_columns``;
- ``rf_distribution`` / ``expected_temporal_rf``: the head's receptive field under the learned drop
  probabilities (exact dynamic programming over slots);
- ``plot_rf_vs_accuracy`` (with ``partial_correlation`` / ``partial_spearman`` of ``analysis.stats``,
  re-exported here).

Sizes count input positions, padded ones included (``fusion3d.models.rf_graph``): the tiny template's
spatial r_max is 77 pixels on 32 x 32 crops. The row of a dense slot describes the block's running
feature map after that layer; the head row is one position of the map that is globally pooled.

A network without a receptive-field description (no ``rf_graph(strategy)`` method of its own) raises
``NoReceptiveField`` (a ``TypeError`` naming the network); ``rf_columns`` turns that one case, and only
it, into NaN columns.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fusion3d.analysis.stats import partial_correlation, partial_spearman
from fusion3d.models.rf_graph import (
    AXES,
    RF,
    AxisRF,
    Mark,
    NoReceptiveField,
    Op,
    Par,
    apply_axis,
    compose,
    flatten,
    merge_axis,
    trace,
)
from fusion3d.models.strategy import Strategy, StrategySpec, strategy_or_full
from fusion3d.models.units import FULL_UNIT, UNIT_TO_KEEP, UNITS
from fusion3d.utils import save_figure

# The algebra lives in fusion3d.models.rf_graph; these names are re-exported for older imports.
__all__ = [
    "AXES",
    "RF",
    "RF_COLUMN_NAMES",
    "AxisRF",
    "Mark",
    "NoReceptiveField",
    "Op",
    "Par",
    "apply_axis",
    "compose",
    "expected_temporal_rf",
    "head_rf",
    "merge_axis",
    "partial_correlation",
    "partial_spearman",
    "plot_rf_vs_accuracy",
    "receptive_fields",
    "rf_columns",
    "rf_distribution",
    "rf_graph",
    "strategy_rf_columns",
    "trace",
    "unit_probabilities",
    "with_rf_columns",
]


# ----------------------------------------------------------------------------- networks


def rf_graph(model: Any, strategy: StrategySpec | None = None) -> list:
    """The model's own receptive-field graph, ``model.rf_graph(strategy)``, flattened; ``strategy`` is
    any spec of ``as_strategy``, ``None`` the full network (S+ST everywhere). ``NoReceptiveField`` for a
    network without a description."""
    describe = getattr(model, "rf_graph", None)
    if not callable(describe):
        raise NoReceptiveField(model)
    return flatten(describe(strategy_or_full(strategy, model.num_slots)))


def receptive_fields(model: Any, strategy: StrategySpec | None = None) -> pd.DataFrame:
    """One row per slot output and one for the head: ``slot, kind, unit, t_min, t_max, s_min, s_max,
    w_min, w_max, t_jump, s_jump`` (``s`` = H, ``w`` = W; equal for square kernels). Sizes in input
    positions, padded ones included (module docstring)."""
    rows = []
    for mark, rf in trace(rf_graph(model, strategy)):
        rows.append(
            {
                "slot": mark.name,
                "kind": mark.kind,
                "unit": mark.unit,
                "t_min": rf.t.r_min,
                "t_max": rf.t.r_max,
                "s_min": rf.h.r_min,
                "s_max": rf.h.r_max,
                "w_min": rf.w.r_min,
                "w_max": rf.w.r_max,
                "t_jump": rf.t.jump,
                "s_jump": rf.h.jump,
            }
        )
    return pd.DataFrame(rows)


def head_rf(model: Any, strategy: StrategySpec | None = None) -> RF:
    """Receptive field at the head (of one position of the last feature map)."""
    return compose(rf_graph(model, strategy))


def strategy_rf_columns(model: Any, strategy: StrategySpec | None) -> dict[str, int]:
    """Columns for ``strategies.csv``: ``rf_t_min, rf_t_max, rf_s_min, rf_s_max`` at the head (s = H)."""
    rf = head_rf(model, strategy)
    return {"rf_t_min": rf.t.r_min, "rf_t_max": rf.t.r_max, "rf_s_min": rf.h.r_min, "rf_s_max": rf.h.r_max}


# ----------------------------------------------------------------------------- under the drop probabilities


def _slot_segments(model: Any) -> tuple[list[dict[str, list]], list]:
    """(per slot {unit: nodes}, suffix) from the graphs of the four uniform strategies split at the slot
    marks: segment i holds the nodes after slot i-1's mark up to slot i's mark (segment 0 includes the
    stem, which no unit changes). Relies on the ``rf_graph`` contract: a slot's nodes depend only on
    its unit."""
    names = list(model.slot_names)
    split: dict[str, list[list]] = {}
    for unit in UNITS:
        parts: list[list] = [[]]
        marks: list[str] = []
        for node in rf_graph(model, Strategy.uniform(unit, len(names))):
            if isinstance(node, Mark) and node.name in names:
                marks.append(node.name)
                parts.append([])
            else:
                parts[-1].append(node)
        if marks != names:
            raise ValueError(f"the rf graph's slot marks {marks} are not the model's slots {names}")
        split[unit] = parts
    suffix = split[FULL_UNIT][-1]
    if any(split[u][-1] != suffix for u in UNITS):
        raise ValueError("the rf graph after the last slot depends on the strategy (rf_graph contract)")
    return [{u: split[u][i] for u in UNITS} for i in range(len(names))], suffix


def unit_probabilities(drop_probs: Any) -> np.ndarray:
    """(num_slots, len(UNITS)) probabilities of the units ``UNITS`` (S, ST, S+ST, none, in that order)
    when each path is kept independently with keep_prob = 1 - drop_prob (the sampling convention of
    ``sample_strategy``)."""
    p = np.asarray(drop_probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 2:
        raise ValueError(f"drop probabilities must have shape (num_slots, 2), got {p.shape}")
    qs, qt = 1.0 - p[:, 0], 1.0 - p[:, 1]
    return np.stack(
        [(qs if ks else 1 - qs) * (qt if kt else 1 - qt) for ks, kt in (UNIT_TO_KEEP[u] for u in UNITS)],
        axis=1,
    )


def rf_distribution(
    model: Any, drop_probs: Any = None, axis: str = "t", stat: str = "max"
) -> dict[int, float]:
    """Exact distribution of the head's receptive field (``stat`` ``"max"`` or ``"min"`` along ``axis``)
    over strategies drawn with independent Bernoulli keeps (keep_prob = 1 - drop_prob per path;
    ``drop_probs`` (num_slots, 2) defaults to the model's learned ones).

    Dynamic programming over slots on the distribution of the one-axis state (lo, hi, jump, r_min):
    the state after a slot depends only on the state before it and the slot's unit, so the 4^L
    strategies collapse onto the few distinct states (for the temporal axis of the template, at most
    2L + 1 values of r_max). Exact up to float rounding of the probabilities."""
    if axis not in AXES or stat not in ("max", "min"):
        raise ValueError(f"axis must be one of {AXES} and stat 'max' or 'min', got {axis!r}, {stat!r}")
    a = AXES.index(axis)
    if drop_probs is None:
        drop_probs = model.drop_probs().numpy()
    probs = unit_probabilities(drop_probs)
    if len(probs) != model.num_slots:
        raise ValueError(f"{len(probs)} rows of drop probabilities for {model.num_slots} slots")
    segments, suffix = _slot_segments(model)
    dist: dict[AxisRF, float] = {AxisRF(): 1.0}
    for seg, pu in zip(segments, probs):
        new: dict[AxisRF, float] = defaultdict(float)
        for state, p in dist.items():
            for unit, q in zip(UNITS, pu):
                if q > 0.0:
                    new[apply_axis(seg[unit], state, a)] += p * q
        dist = new
    out: dict[int, float] = defaultdict(float)
    for state, p in dist.items():
        end = apply_axis(suffix, state, a)
        out[end.r_max if stat == "max" else end.r_min] += float(p)
    return dict(sorted(out.items()))


def expected_temporal_rf(model: Any, drop_probs: Any = None) -> float:
    """E[t_max at the head] over strategies drawn with independent Bernoulli keeps, keep_prob =
    1 - drop_prob per path (the distribution ``sample_strategy`` draws from). Exact (``rf_distribution``).
    For the template it equals t_max(stem) + 2 * sum over slots of keep_prob(T) (each kept 3x1x1 path
    adds 2 frames to the longest chain, whatever else is kept)."""
    return float(sum(v * p for v, p in rf_distribution(model, drop_probs, "t", "max").items()))


# ----------------------------------------------------------------------------- statistics and figure


def plot_rf_vs_accuracy(
    df: pd.DataFrame,
    path: str | Path,
    score_column: str,
    rf_column: str = "rf_t_max",
    macs_column: str = "macs",
    seed: int = 0,
) -> dict[str, float]:
    """Scatter of the head's temporal receptive field against ``score_column``, coloured by GMACs;
    the title gives the Pearson r and the partial r controlling for MACs. Receptive fields are integers,
    so points get a small seeded horizontal jitter (+-0.15 frames; the statistics use the exact values).
    Rows with a missing value are left out. Written atomically. Returns the statistics."""
    import matplotlib.pyplot as plt

    d = df[[rf_column, score_column, macs_column]].dropna()
    x = d[rf_column].to_numpy(dtype=np.float64)
    y = d[score_column].to_numpy(dtype=np.float64)
    g = d[macs_column].to_numpy(dtype=np.float64) / 1e9
    stats = {
        "n": int(len(d)),
        "pearson_r": partial_correlation(x, y),
        "partial_r_macs": partial_correlation(x, y, g),
        "spearman_rho": partial_correlation(x, y, method="spearman"),
        "partial_spearman_macs": partial_correlation(x, y, g, method="spearman"),
    }
    jitter = np.random.default_rng(seed).uniform(-0.15, 0.15, len(x))
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    sc = ax.scatter(x + jitter, y, c=g, cmap="viridis", s=18, alpha=0.8)
    fig.colorbar(sc, ax=ax, label="GMACs per clip")
    ax.set_xlabel(f"temporal receptive field at the head ({rf_column}, frames)")
    ax.set_ylabel(score_column)
    ax.set_title(
        f"{stats['n']} strategies: Pearson r = {stats['pearson_r']:.2f}, "
        f"partial r | MACs = {stats['partial_r_macs']:.2f}",
        fontsize=10,
    )
    ax.grid(alpha=0.3)
    try:
        save_figure(fig, path)
    finally:
        plt.close(fig)
    return stats


RF_COLUMN_NAMES: tuple[str, ...] = ("rf_t_min", "rf_t_max", "rf_s_min", "rf_s_max")


def rf_columns(model: Any, strategy: Any) -> dict:
    """The receptive-field columns of one strategy (``strategy_rf_columns``), NaN in the one documented
    case of a network without a receptive-field description (``NoReceptiveField``); every other error
    (a bad strategy, a module without a rule inside a described network) propagates."""
    try:
        return strategy_rf_columns(model, strategy)
    except NoReceptiveField:
        return {c: float("nan") for c in RF_COLUMN_NAMES}


def with_rf_columns(df: pd.DataFrame, model: Any) -> pd.DataFrame:
    """``df`` with its receptive-field columns computed from the strategy strings."""
    rows = [rf_columns(model, Strategy.from_string(s)) for s in df["strategy"]]
    return df.assign(**{c: [r[c] for r in rows] for c in RF_COLUMN_NAMES})
