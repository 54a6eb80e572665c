"""Fusion designs for other backbones from a template's marginals: mapping by relative depth and the
rules that pick a unit per block (pure functions, tested on closed forms; see ``fusion3d derive``)."""

from __future__ import annotations

import numpy as np

from fusion3d.models.units import DESIGN_UNITS

RULES: tuple[str, ...] = ("argmax", "budget", "paper", "ablation")


def relative_depths(n: int) -> np.ndarray:
    """Centre of each of ``n`` equal depth intervals: ``(i + 0.5) / n``."""
    return (np.arange(n) + 0.5) / n


def depth_mapping(num_slots: int, num_blocks: int) -> list[tuple[int, int, float]]:
    """For each block: (lower slot, upper slot, weight of the upper slot) of the linear interpolation
    at the block's relative depth; at the ends both slots are the first / last one."""
    if num_slots < 1 or num_blocks < 1:
        raise ValueError(f"need at least one slot and one block, got {num_slots} and {num_blocks}")
    src, out = relative_depths(num_slots), []
    for d in relative_depths(num_blocks):
        if d <= src[0]:
            out.append((0, 0, 0.0))
        elif d >= src[-1]:
            out.append((num_slots - 1, num_slots - 1, 0.0))
        else:
            lo = int(np.searchsorted(src, d, side="right") - 1)
            w = float((d - src[lo]) / (src[lo + 1] - src[lo]))
            out.append((lo, lo + 1, w))
    return out


def map_marginals(marginals: np.ndarray, num_blocks: int) -> np.ndarray:
    """(num_slots, U) unit marginals -> (num_blocks, U) by the depth mapping; rows renormalised."""
    marginals = np.asarray(marginals, dtype=float)
    rows = np.stack(
        [
            (1 - w) * marginals[lo] + w * marginals[hi]
            for lo, hi, w in depth_mapping(len(marginals), num_blocks)
        ]
    )
    total = rows.sum(1, keepdims=True)
    if np.any(total <= 0):
        raise ValueError("a block has zero probability for every design unit")
    return rows / total


def argmax_units(probs: np.ndarray, units=DESIGN_UNITS) -> list[str]:
    """The most probable unit per row (ties: the first in ``units`` order)."""
    return [units[int(i)] for i in np.argmax(np.asarray(probs), axis=1)]


def paper_units(num_blocks: int) -> list[str]:
    """The paper's ResNet rule: S+ST in the first half (blocks ``j < m // 2``) and the last three
    blocks, ST elsewhere."""
    return ["S+ST" if j < num_blocks // 2 or j >= num_blocks - 3 else "ST" for j in range(num_blocks)]


def budget_units(
    probs: np.ndarray, costs: np.ndarray, base_cost: float, budget: float, units=DESIGN_UNITS
) -> list[str]:
    """The design with the highest total log-probability whose MACs stay within ``budget``.

    ``costs[j, u]``: MACs block ``j`` costs with unit ``u`` (additive over blocks); ``base_cost``:
    everything else. Solved exactly (a multiple-choice knapsack) by dynamic programming over blocks
    that keeps only the Pareto-optimal (cost, log-probability) partial designs. Raises when even the
    cheapest design is above the budget."""
    probs, costs = np.asarray(probs, dtype=float), np.asarray(costs, dtype=float)
    logp = np.log(np.clip(probs, 1e-12, None))
    cheapest = base_cost + costs.min(1).sum()
    if cheapest > budget * (1 + 1e-12):
        raise ValueError(
            f"--flops-budget {budget / 1e9:.4g} G is below the cheapest design ({cheapest / 1e9:.4g} G MACs)"
        )
    limit = budget - base_cost + 1e-9 * max(abs(budget), 1.0)
    rest_min = np.concatenate([np.cumsum(costs.min(1)[::-1])[::-1][1:], [0.0]])  # cheapest completion
    states: list[tuple[float, float, tuple[int, ...]]] = [(0.0, 0.0, ())]
    for j in range(len(costs)):
        grown = [
            (c + costs[j, u], lp + logp[j, u], ch + (u,))
            for c, lp, ch in states
            for u in range(costs.shape[1])
            if c + costs[j, u] + rest_min[j] <= limit
        ]
        grown.sort(key=lambda t: (t[0], -t[1]))
        states = []
        for st in grown:  # keep a state only if it beats every cheaper one
            if not states or st[1] > states[-1][1]:
                states.append(st)
    best = max(states, key=lambda t: t[1])
    return [units[u] for u in best[2]]
