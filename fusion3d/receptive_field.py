"""Static 3D receptive fields of a sub-network, by exact arithmetic (no forward pass).

Graph vocabulary
----------------
- ``Op(kernel, stride, dilation, padding)``: a convolution or a pooling window (kt, kh, kw) with its
  stride, dilation and padding (``padding=None`` means ``(k - 1) * d // 2``, "same" for odd kernels).
  Pointwise layers (BatchNorm, ReLU, gates, the channel-average skip) are not ops: they do not widen
  a receptive field.
- a *sequence*: a list or tuple of nodes, applied in order (the empty sequence is the identity).
- ``Par(branches)``: parallel paths from one input whose outputs are summed or concatenated; a branch
  is a sequence (possibly empty: an identity / skip branch).
- ``Mark(name, unit, kind)``: records the receptive field at that point (slot outputs, the head).
  Only marks at the top level of a graph (nested lists flattened, not inside a ``Par``) are recorded.

Receptive field of one axis (``AxisRF``)
-----------------------------------------
For output position ``i`` of a feature map, the input positions it may depend on lie in
``[i * jump + lo, i * jump + hi]`` (input coordinates; negative or past-the-end coordinates are
padding). ``r_max = hi - lo + 1`` is the size of that hull: the extent of every path through the
graph together. ``r_min`` is the size of the receptive field of the *shortest* path (the path with
the smallest receptive field; for a dense block, the identity branch). Composition with an op of
kernel ``k``, stride ``s``, dilation ``d``, padding ``p``:

    r' = r + (k - 1) * d * jump      (both r_min and r_max)
    jump' = jump * s
    lo' = lo - p * jump,  hi' = hi + ((k - 1) * d - p) * jump

and for a ``Par``: ``lo = min``, ``hi = max``, ``r_min = min`` over the branches (the branches must end
with the same jump, else ``ValueError``). When every branch is centred on the same position (odd
kernels with "same" padding, as everywhere in the template) ``r_max`` is simply the max over the
branches. Padding never changes a size: the sizes count input positions *including padded ones*,
so a receptive field can be larger than the clip (the tiny template's spatial r_max is 77 pixels
on 32 x 32 crops); clip it to the input size yourself if you need the visible part.

The template (``template_graph``)
----------------------------------
stem conv (+ MaxPool), then per slot:

- dense layer: ``Par([identity, new-channel branch])``: the block output concatenates the layer's
  input with its new channels. The new-channel branch is the kept path (S: 1x1x1, T: 3x1x1) followed
  by the shared 1x3x3 conv; with both paths kept, ``Par([S, T])`` then the shared conv. Unit ``none``
  adds no branch (only the identity): its new channels are zeros.
- transition: ``Par`` over the kept paths (1x1x1 / 3x1x1), or the identity (the channel-average skip)
  when both are dropped, then the AvgPool (1, 2, 2).

The row of a dense slot describes the block's running feature map after that layer (what the next
layer sees), not the layer's new channels alone. The receptive field "at the head" is that of the
last feature map: the global average pool mixes every position, so one logit depends on the whole
clip; the head row reports the receptive field of one position of the map that is pooled.

Other networks (backbones) can describe themselves with a method ``rf_graph(strategy)`` returning a
top-level sequence with one ``Mark`` after each slot (in slot order, named by slot) and a final mark
named ``head``; ``rf_graph`` (this module) uses that method when the model has one. Contract: the
nodes between two slot marks depend only on that slot's unit (``expected_temporal_rf`` relies on it).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fusion3d.models.strategy import UNITS, Strategy, as_strategy
from fusion3d.utils import save_figure

AXES = ("t", "h", "w")


def _triple(v: Any, what: str) -> tuple[int, int, int]:
    t = (int(v),) * 3 if isinstance(v, (int, np.integer)) else tuple(int(a) for a in v)
    if len(t) != 3:
        raise ValueError(f"{what} must be an int or 3 ints, got {v!r}")
    return t  # type: ignore[return-value]


# ----------------------------------------------------------------------------- graph vocabulary


@dataclass(frozen=True)
class Op:
    """A conv or pooling window: ``kernel`` (kt, kh, kw), ``stride``, ``dilation``, ``padding``
    (``None``: ``(k - 1) * d // 2`` per axis). Ints are broadcast to the three axes."""

    kernel: tuple[int, int, int]
    stride: tuple[int, int, int] = (1, 1, 1)
    dilation: tuple[int, int, int] = (1, 1, 1)
    padding: tuple[int, int, int] | None = None
    name: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        k = _triple(self.kernel, "kernel")
        s = _triple(self.stride, "stride")
        d = _triple(self.dilation, "dilation")
        p = tuple((kk - 1) * dd // 2 for kk, dd in zip(k, d)) if self.padding is None else _triple(self.padding, "padding")
        if min(k) < 1 or min(s) < 1 or min(d) < 1 or min(p) < 0:
            raise ValueError(f"invalid op: kernel {k}, stride {s}, dilation {d}, padding {p}")
        object.__setattr__(self, "kernel", k)
        object.__setattr__(self, "stride", s)
        object.__setattr__(self, "dilation", d)
        object.__setattr__(self, "padding", p)

    @classmethod
    def from_module(cls, m: Any) -> Op:
        """From an ``nn.Conv3d``, ``FactorConv3d``, ``MaxPool3d`` or ``AvgPool3d``."""
        d = getattr(m, "dilation", 1)
        pad = getattr(m, "padding", 0)
        if isinstance(pad, str):
            raise ValueError(f"string padding {pad!r} is not supported; use explicit padding")
        return cls(kernel=m.kernel_size, stride=m.stride if m.stride is not None else m.kernel_size, dilation=d,
                   padding=pad, name=type(m).__name__)


def _as_branch(b: Any) -> tuple:
    if isinstance(b, (Op, Par, Mark)):
        return (b,)
    return tuple(b)


@dataclass(frozen=True)
class Par:
    """Parallel branches from one input (summed or concatenated); an empty branch is the identity."""

    branches: tuple[tuple, ...]
    name: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        branches = tuple(_as_branch(b) for b in self.branches)
        if not branches:
            raise ValueError("a Par needs at least one branch (use an empty branch for the identity)")
        object.__setattr__(self, "branches", branches)


@dataclass(frozen=True)
class Mark:
    """A named point of a graph where the receptive field is recorded (slot outputs, the head)."""

    name: str
    unit: str = ""
    kind: str = ""


# ----------------------------------------------------------------------------- arithmetic


@dataclass(frozen=True)
class AxisRF:
    """Receptive field along one axis: hull ``[i * jump + lo, i * jump + hi]`` of output position i,
    and ``r_min``, the size of the shortest path's receptive field."""

    lo: int = 0
    hi: int = 0
    jump: int = 1
    r_min: int = 1

    @property
    def r_max(self) -> int:
        return self.hi - self.lo + 1

    def apply(self, k: int, s: int, d: int, p: int) -> AxisRF:
        ext = (k - 1) * d
        j = self.jump
        return AxisRF(self.lo - p * j, self.hi + (ext - p) * j, j * s, self.r_min + ext * j)


def merge_axis(branches: Sequence[AxisRF]) -> AxisRF:
    """The ``Par`` rule: hull of the branches (lo = min, hi = max), r_min = min; jumps must agree."""
    jumps = {b.jump for b in branches}
    if len(jumps) != 1:
        raise ValueError(f"parallel branches end with different jumps {sorted(jumps)}: their outputs cannot be "
                         "summed or concatenated position by position")
    return AxisRF(min(b.lo for b in branches), max(b.hi for b in branches), branches[0].jump,
                  min(b.r_min for b in branches))


@dataclass(frozen=True)
class RF:
    """Receptive field along the three axes (T, H, W) of a feature map, in input positions."""

    t: AxisRF = AxisRF()
    h: AxisRF = AxisRF()
    w: AxisRF = AxisRF()

    def axis(self, name: str) -> AxisRF:
        return getattr(self, name)


def _flatten(graph: Any) -> list:
    """Top-level nodes with nested sequences flattened (a ``Par`` is one node)."""
    if isinstance(graph, (Op, Par, Mark)):
        return [graph]
    out: list = []
    for n in graph:
        out.extend(_flatten(n))
    return out


def apply_axis(graph: Any, rf: AxisRF, axis: int) -> AxisRF:
    """Compose ``graph`` onto the receptive field ``rf`` of one axis (0 = T, 1 = H, 2 = W)."""
    for node in _flatten(graph):
        if isinstance(node, Op):
            rf = rf.apply(node.kernel[axis], node.stride[axis], node.dilation[axis], node.padding[axis])
        elif isinstance(node, Par):
            rf = merge_axis([apply_axis(b, rf, axis) for b in node.branches])
    return rf


def compose(graph: Any, start: RF | None = None) -> RF:
    """The receptive field at the end of ``graph`` (from the input, or from ``start``)."""
    start = start or RF()
    return RF(*(apply_axis(graph, start.axis(a), i) for i, a in enumerate(AXES)))


def trace(graph: Any, start: RF | None = None) -> list[tuple[Mark, RF]]:
    """(mark, receptive field) at every top-level ``Mark`` of ``graph``, in order."""
    rf = start or RF()
    out = []
    for node in _flatten(graph):
        if isinstance(node, Mark):
            out.append((node, rf))
        else:
            rf = compose([node], rf)
    return out


# ----------------------------------------------------------------------------- networks


def _strategy(model: Any, strategy: Strategy | str | Sequence[str] | None) -> Strategy:
    if strategy is None:
        return Strategy.uniform("S+ST", model.num_slots)
    return as_strategy(strategy, model.num_slots)


def template_graph(model: Any, strategy: Strategy | str | Sequence[str] | None = None) -> list:
    """The graph of a ``FusionTemplate`` sub-network (module docstring); ``None`` = the full template
    (every path, as in ``fusion3d.models.flops``). Kernel, stride and padding are read from the modules."""
    from fusion3d.models.template import DenseBlock, TransitionSlot

    strategy = _strategy(model, strategy)
    keeps = iter(zip(strategy.units, strategy.keep()))
    graph: list = [Op.from_module(model.stem.conv)]
    if hasattr(model.stem, "pool"):
        graph.append(Op.from_module(model.stem.pool))

    def kept_paths(slot: Any, ks: bool, kt: bool) -> list[tuple]:
        return [(Op.from_module(p.conv),) for keep, p in ((ks, slot.path_s), (kt, slot.path_t)) if keep]

    for part in model.features:
        if isinstance(part, DenseBlock):
            for layer in part.children():
                unit, (ks, kt) = next(keeps)
                paths = kept_paths(layer, ks, kt)
                if paths:
                    new = (*paths[0], Op.from_module(layer.shared.conv)) if len(paths) == 1 else (
                        Par(paths), Op.from_module(layer.shared.conv))
                    graph.append(Par(((), new)))
                graph.append(Mark(layer.name, unit, "dense"))
        elif isinstance(part, TransitionSlot):
            unit, (ks, kt) = next(keeps)
            paths = kept_paths(part, ks, kt)
            if paths:
                graph.append(Par(paths))
            graph.extend([Op.from_module(part.pool), Mark(part.name, unit, "transition")])
        else:
            raise TypeError(f"unexpected feature module {type(part).__name__}")
    graph.append(Mark("head", "", "head"))
    return graph


def rf_graph(model: Any, strategy: Strategy | str | Sequence[str] | None = None) -> list:
    """The model's own ``rf_graph(strategy)`` if it has one, else ``template_graph``."""
    own = getattr(model, "rf_graph", None)
    if callable(own):
        return _flatten(own(_strategy(model, strategy)))
    from fusion3d.models.template import FusionTemplate

    if not isinstance(model, FusionTemplate):
        raise TypeError(f"{type(model).__name__} has no rf_graph(strategy) method and is not a FusionTemplate: "
                        "its receptive field cannot be derived")
    return template_graph(model, strategy)


def receptive_fields(model: Any, strategy: Strategy | str | Sequence[str] | None = None) -> pd.DataFrame:
    """One row per slot output and one for the head: ``slot, kind, unit, t_min, t_max, s_min, s_max,
    w_min, w_max, t_jump, s_jump`` (``s`` = H, ``w`` = W; equal for square kernels). Sizes in input
    positions, padded ones included (module docstring)."""
    rows = []
    for mark, rf in trace(rf_graph(model, strategy)):
        rows.append({"slot": mark.name, "kind": mark.kind, "unit": mark.unit,
                     "t_min": rf.t.r_min, "t_max": rf.t.r_max, "s_min": rf.h.r_min, "s_max": rf.h.r_max,
                     "w_min": rf.w.r_min, "w_max": rf.w.r_max, "t_jump": rf.t.jump, "s_jump": rf.h.jump})
    return pd.DataFrame(rows)


def head_rf(model: Any, strategy: Strategy | str | Sequence[str] | None = None) -> RF:
    """Receptive field at the head (of one position of the last feature map)."""
    return compose(rf_graph(model, strategy))


def strategy_rf_columns(model: Any, strategy: Strategy | str | Sequence[str] | None) -> dict[str, int]:
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
    suffix = split["S+ST"][-1]
    if any(split[u][-1] != suffix for u in UNITS):
        raise ValueError("the rf graph after the last slot depends on the strategy (rf_graph contract)")
    return [{u: split[u][i] for u in UNITS} for i in range(len(names))], suffix


def unit_probabilities(drop_probs: Any) -> np.ndarray:
    """(num_slots, 4) probabilities of the units ``UNITS`` (S, ST, S+ST, none) when each path is kept
    independently with keep_prob = 1 - drop_prob (the sampling convention of ``sample_strategy``)."""
    p = np.asarray(drop_probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 2:
        raise ValueError(f"drop probabilities must have shape (num_slots, 2), got {p.shape}")
    qs, qt = 1.0 - p[:, 0], 1.0 - p[:, 1]
    return np.stack([qs * (1 - qt), qt * (1 - qs), qs * qt, (1 - qs) * (1 - qt)], axis=1)


def rf_distribution(model: Any, drop_probs: Any = None, axis: str = "t", stat: str = "max") -> dict[int, float]:
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


def _ranks(a: np.ndarray) -> np.ndarray:
    if a.ndim == 1:
        return pd.Series(a).rank(method="average").to_numpy(dtype=np.float64)
    return np.column_stack([_ranks(a[:, j]) for j in range(a.shape[1])])


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    den = np.sqrt((a @ a) * (b @ b))
    return float(a @ b / den) if den > 0 else float("nan")


def partial_correlation(x: Any, y: Any, z: Any = None, method: str = "pearson") -> float:
    """Correlation of ``x`` and ``y`` after regressing ``z`` (n,) or (n, k) out of both, with an
    intercept (least squares): the Pearson correlation of the residuals. ``method="spearman"`` does the
    same on ranks (average ranks for ties; every column of ``z`` ranked too). ``z=None``: the plain
    correlation. NaN when a residual is constant (below 1e-10 of the variable's own spread)."""
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


def partial_spearman(x: Any, y: Any, z: Any = None) -> float:
    """``partial_correlation(x, y, z, method="spearman")``."""
    return partial_correlation(x, y, z, method="spearman")


def plot_rf_vs_accuracy(df: pd.DataFrame, path: str | Path, score_column: str, rf_column: str = "rf_t_max",
                        macs_column: str = "macs", seed: int = 0) -> dict[str, float]:
    """Scatter of the head's temporal receptive field against ``score_column``, coloured by GMACs;
    the title gives the Pearson r and the partial r controlling for MACs. Receptive fields are integers,
    so points get a small seeded horizontal jitter (+-0.15 frames; the statistics use the exact values).
    Rows with a missing value are left out. Written atomically. Returns the statistics."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = df[[rf_column, score_column, macs_column]].dropna()
    x = d[rf_column].to_numpy(dtype=np.float64)
    y = d[score_column].to_numpy(dtype=np.float64)
    g = d[macs_column].to_numpy(dtype=np.float64) / 1e9
    stats = {"n": int(len(d)), "pearson_r": partial_correlation(x, y),
             "partial_r_macs": partial_correlation(x, y, g),
             "spearman_rho": partial_correlation(x, y, method="spearman"),
             "partial_spearman_macs": partial_correlation(x, y, g, method="spearman")}
    jitter = np.random.default_rng(seed).uniform(-0.15, 0.15, len(x))
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    sc = ax.scatter(x + jitter, y, c=g, cmap="viridis", s=18, alpha=0.8)
    fig.colorbar(sc, ax=ax, label="GMACs per clip")
    ax.set_xlabel(f"temporal receptive field at the head ({rf_column}, frames)")
    ax.set_ylabel(score_column)
    ax.set_title(f"{stats['n']} strategies: Pearson r = {stats['pearson_r']:.2f}, "
                 f"partial r | MACs = {stats['partial_r_macs']:.2f}", fontsize=10)
    ax.grid(alpha=0.3)
    try:
        save_figure(fig, path)
    finally:
        plt.close(fig)
    return stats
