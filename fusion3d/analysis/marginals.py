"""Layer-level preference: per-slot unit marginals from the learned drop probabilities (docs/method.md §6).

Each slot has two paths with drop probabilities ``p_S`` and ``p_T``. Two conventions give the keep
probability q of a path:

- ``"sampling"``: ``q = 1 - p``, the probability with which sampling keeps the path;
- ``"paper"``:    ``q = 1 - sqrt(p)``, the paper's Eq. 7 (p split into two equal Bernoulli factors).

With independent paths the unit of a slot has the marginals
``P(S) = q_S (1 - q_T)``, ``P(ST) = q_T (1 - q_S)``, ``P(S+ST) = q_S q_T``,
``P(none) = (1 - q_S)(1 - q_T)``, which sum to 1.

Depth gates (``model.depth_gate``): a slot also has a depth drop probability ``p_D``; the slot is kept
with probability ``q_D`` (``1 - p_D``, or ``1 - sqrt(p_D)`` under the paper convention) and a dropped
slot is unit none, so ``depth_marginals`` folds it in: ``P(none) = (1 - q_D) + q_D P_paths(none)`` and
each other unit's ``P = q_D P_paths(unit)``. ``plot_depth`` draws P(slot kept) per slot.

Pure numpy / pandas (matplotlib for the figure); no torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from fusion3d.models.units import UNITS

CONVENTIONS: tuple[str, ...] = ("sampling", "paper")
MARGINAL_UNITS: tuple[str, ...] = UNITS  # P(S), P(ST), P(S+ST), P(none)


def _as_array(x) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def keep_probs(drop_probs, convention: str = "paper") -> np.ndarray:
    """Keep probability of each path: ``1 - p`` ("sampling") or ``1 - sqrt(p)`` ("paper", Eq. 7).

    ``drop_probs`` is any array of probabilities in [0, 1] (e.g. the ``(num_slots, 2)`` table of
    ``FusionTemplate.drop_probs()``); the result has the same shape.
    """
    p = _as_array(drop_probs)
    if np.any((p < 0) | (p > 1)) or np.any(np.isnan(p)):
        raise ValueError("drop probabilities must lie in [0, 1]")
    if convention == "sampling":
        return 1.0 - p
    if convention == "paper":
        return 1.0 - np.sqrt(p)
    raise ValueError(f"convention must be one of {', '.join(CONVENTIONS)}, got {convention!r}")


def unit_marginals(q_s, q_t) -> dict[str, np.ndarray | float]:
    """``{"S", "ST", "S+ST", "none"}`` probabilities of a slot's unit from the keep probabilities of
    its S and T paths (scalars or arrays of the same shape)."""
    qs, qt = _as_array(q_s), _as_array(q_t)
    out = {"S": qs * (1 - qt), "ST": qt * (1 - qs), "S+ST": qs * qt, "none": (1 - qs) * (1 - qt)}
    if qs.ndim == 0 and qt.ndim == 0:
        return {k: float(v) for k, v in out.items()}
    return out


def marginals_table(drop_probs, slot_names: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per slot: the drop probabilities, both conventions' keep probabilities and unit
    marginals, and the preferred (most probable) unit under each convention.

    Columns: ``slot, index, p_S, p_T``, then for c in (sampling, paper): ``q_S_c, q_T_c, P_S_c,
    P_ST_c, P_S+ST_c, P_none_c``, then ``preferred_unit_sampling, preferred_unit_paper``.
    """
    p = _as_array(drop_probs)
    if p.ndim != 2 or p.shape[1] != 2:
        raise ValueError(f"drop_probs must have shape (num_slots, 2) with columns [S, T], got {p.shape}")
    n = p.shape[0]
    names = list(slot_names) if slot_names is not None else [f"slot{i}" for i in range(n)]
    if len(names) != n:
        raise ValueError(f"{len(names)} slot names for {n} slots")
    df = pd.DataFrame({"slot": names, "index": np.arange(n), "p_S": p[:, 0], "p_T": p[:, 1]})
    preferred = {}
    for conv in CONVENTIONS:
        q = keep_probs(p, conv)
        m = unit_marginals(q[:, 0], q[:, 1])
        df[f"q_S_{conv}"] = q[:, 0]
        df[f"q_T_{conv}"] = q[:, 1]
        for u in MARGINAL_UNITS:
            df[f"P_{u}_{conv}"] = m[u]
        stacked = np.stack([m[u] for u in MARGINAL_UNITS], axis=1)
        preferred[conv] = [MARGINAL_UNITS[i] for i in stacked.argmax(1)]
    for conv in CONVENTIONS:
        df[f"preferred_unit_{conv}"] = preferred[conv]
    return df


def depth_marginals(
    drop_probs, depth_probs, slot_names: Sequence[str] | None = None, convention: str = "sampling"
) -> pd.DataFrame:
    """Per-slot unit marginals with the depth gate folded in.

    ``drop_probs``: ``(n, 2)`` path drop probabilities, columns [S, T]; ``depth_probs``: ``(n,)`` depth
    drop probabilities. Keep probabilities follow ``convention`` (``keep_probs``; default "sampling",
    q = 1 - p, the probabilities ``sample_strategy`` draws with), the same for paths and depth gate.

    Columns: ``slot, index, p_S, p_T, p_D, P_kept`` (= q_D), then ``P_S, P_ST, P_S+ST, P_none`` with
    ``P_none = (1 - q_D) + q_D P_paths(none)`` and ``P_u = q_D P_paths(u)`` for the other units (each row
    sums to 1), and ``preferred_unit`` (the most probable unit).
    """
    p = _as_array(drop_probs)
    d = _as_array(depth_probs)
    if p.ndim != 2 or p.shape[1] != 2:
        raise ValueError(f"drop_probs must have shape (num_slots, 2) with columns [S, T], got {p.shape}")
    if d.shape != (p.shape[0],):
        raise ValueError(f"depth_probs must have shape ({p.shape[0]},), one per slot, got {d.shape}")
    n = p.shape[0]
    names = list(slot_names) if slot_names is not None else [f"slot{i}" for i in range(n)]
    if len(names) != n:
        raise ValueError(f"{len(names)} slot names for {n} slots")
    q = keep_probs(p, convention)
    qd = keep_probs(d, convention)
    paths = unit_marginals(q[:, 0], q[:, 1])
    df = pd.DataFrame(
        {"slot": names, "index": np.arange(n), "p_S": p[:, 0], "p_T": p[:, 1], "p_D": d, "P_kept": qd}
    )
    for u in MARGINAL_UNITS:
        df[f"P_{u}"] = (1.0 - qd) + qd * paths[u] if u == "none" else qd * paths[u]
    stacked = np.stack([df[f"P_{u}"].to_numpy() for u in MARGINAL_UNITS], axis=1)
    df["preferred_unit"] = [MARGINAL_UNITS[i] for i in stacked.argmax(1)]
    return df


def plot_depth(
    depth_probs,
    slot_names: Sequence[str],
    path: str | Path,
    title: str | None = None,
    redundant_runs: Sequence[Sequence[str]] = (),
    convention: str = "sampling",
) -> Path:
    """The depth figure: P(slot kept) (``1 - p_D``, or ``1 - sqrt(p_D)`` under the paper convention)
    per slot as bars, in depth order, with a line at 0.5 (below it the most probable strategy drops the
    slot). ``redundant_runs``: groups of slot names (e.g. CKA's redundant runs) shaded behind the bars.
    Written atomically (``fusion3d.utils.save_figure``); returns ``path``."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    from fusion3d.utils import save_figure

    qd = keep_probs(depth_probs, convention)
    names = list(slot_names)
    if qd.ndim != 1 or len(names) != len(qd):
        raise ValueError(f"{len(names)} slot names for depth probabilities of shape {qd.shape}")
    n = len(qd)
    fig = Figure(figsize=(min(16.0, 3.0 + 0.32 * n), 3.8), layout="constrained")
    ax = fig.add_subplot()
    index = {s: i for i, s in enumerate(names)}
    handles = []
    for run in redundant_runs:
        idx = [index[s] for s in run if s in index]
        if idx:
            ax.axvspan(min(idx) - 0.45, max(idx) + 0.45, color="#F2C894", alpha=0.55, lw=0, zorder=0)
    if any(any(s in index for s in run) for run in redundant_runs):
        handles.append(Patch(color="#F2C894", alpha=0.55, label="CKA redundant run"))
    colors = ["#4C72B0" if v >= 0.5 else "#C44E52" for v in qd]
    ax.bar(np.arange(n), qd, color=colors, zorder=2)
    ax.axhline(0.5, color="#555555", lw=0.8, ls="--", zorder=3)
    handles += [
        Patch(color="#4C72B0", label="kept (P >= 0.5)"),
        Patch(color="#C44E52", label="dropped (P < 0.5)"),
    ]
    ax.set_xticks(np.arange(n))
    ax.set_xticklabels(names, rotation=90, fontsize=8 if n <= 24 else 5)
    ax.set_xlim(-0.6, n - 0.4)
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("P(slot kept)" + (" = 1 - p_D" if convention == "sampling" else " = 1 - sqrt(p_D)"))
    ax.set_title(title or "Depth gate: probability that each slot is kept", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(handles=handles, fontsize=7, loc="lower left")
    save_figure(fig, Path(path))
    return Path(path)


def drop_summary(drop_probs) -> dict:
    """Summary of a (slots, 2) drop-probability table (columns S, T): mean p of each path and the
    number of slots whose S path is dropped more often than its T path."""
    p = _as_array(drop_probs)
    return {
        "p_s_mean": float(p[:, 0].mean()),
        "p_t_mean": float(p[:, 1].mean()),
        "slots_p_s_gt_p_t": int((p[:, 0] > p[:, 1]).sum()),
        "slots": int(p.shape[0]),
    }


def drop_table(slot_names, drop_probs, depth_probs=None) -> str:
    """Per-slot drop probabilities of the S and T paths (and of the depth gates, ``p_D``, when given),
    as a readable table."""
    p = _as_array(drop_probs)
    d = None if depth_probs is None else _as_array(depth_probs).tolist()
    width = max(len(n) for n in slot_names)
    lines = [f"{'slot':<{width}}  p_S    p_T    higher" + ("  p_D" if d is not None else "")]
    for i, (name, (ps, pt)) in enumerate(zip(slot_names, p.tolist())):
        lines.append(
            f"{name:<{width}}  {ps:.3f}  {pt:.3f}  {'S' if ps > pt else ('T' if pt > ps else '=')}"
            + (f"       {d[i]:.3f}" if d is not None else "")
        )
    lines.append(f"S-path drop prob above T-path in {drop_summary(p)['slots_p_s_gt_p_t']} of {len(p)} slots")
    if d is not None:
        lines.append(
            f"depth gate drop prob above 0.5 (slot none in the most probable strategy) in "
            f"{sum(v > 0.5 for v in d)} of {len(d)} slots"
        )
    return "\n".join(lines)
