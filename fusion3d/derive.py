"""``fusion3d derive RUN --backbone NAME``: a fusion design for another backbone, from the template.

The paper hand-wrote its ResNet / ResNeXt / MobileNetV2 designs from what the DenseNet template
showed (METHOD.md section 8). Here the design is derived, as data, from a trained run's per-slot
marginals (``marginals.csv``, written by ``fusion3d analyze``):

1. **Mapping by relative depth.** Template slot ``i`` of ``n`` sits at relative depth
   ``(i + 0.5) / n``; backbone block ``j`` of ``m`` at ``(j + 0.5) / m``. Each block's unit
   marginals are the linear interpolation of the two template slots around its depth (the first or
   last slot's value beyond them), so every block gets marginals, blocks keep their depth order, and
   a backbone deeper than the template reads a smooth profile instead of repeated steps. The
   ``mapping`` table of the output names, per block, the two template slots and their weights.
2. **A unit per block.** The design chooses among S, ST and S+ST (``none`` would remove a residual
   branch, which is depth pruning rather than a fusion choice; its mass is dropped and the other
   three renormalised). Rules:

   - ``argmax``: the most probable unit of each block;
   - ``budget``: the most probable design (highest sum of per-block log-probabilities) whose MACs
     stay within ``--flops-budget`` (G MACs per clip at the input shape): a multiple-choice knapsack,
     solved exactly by dynamic programming over Pareto-optimal partial designs (``budget_units``);
   - ``paper``: the paper's hand-written rule for ResNets, "S+ST in the first half and the last
     three blocks, ST elsewhere", for comparison (it reads no marginals).

3. The design is written to ``RUN/derived/<backbone>_<rule>.json``: the strategy (``units``, ``string``,
   ``id``, ``slots`` = block names), ``macs`` and ``params`` at the input shape, the canonical
   S / ST / S+ST costs for comparison, the mapping table and the settings. It is a strategy file:
   ``fusion3d train CONFIG model.name=NAME model.strategy=RUN/derived/NAME_argmax.json`` trains it,
   ``fusion3d retrain RUN --strategy RUN/derived/NAME_argmax.json model.name=NAME`` trains it with
   the run's recipe.

The mapping and the rules are pure functions, tested on closed forms.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from fusion3d.utils import atomic_write_text

DESIGN_UNITS: tuple[str, ...] = ("S", "ST", "S+ST")
RULES: tuple[str, ...] = ("argmax", "budget", "paper")


# ----------------------------------------------------------------------------- pure functions


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
    rows = np.stack([(1 - w) * marginals[lo] + w * marginals[hi]
                     for lo, hi, w in depth_mapping(len(marginals), num_blocks)])
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


def budget_units(probs: np.ndarray, costs: np.ndarray, base_cost: float, budget: float,
                 units=DESIGN_UNITS) -> list[str]:
    """The design with the highest total log-probability whose MACs stay within ``budget``.

    ``costs[j, u]``: MACs block ``j`` costs with unit ``u`` (additive over blocks); ``base_cost``:
    everything else. Solved exactly (a multiple-choice knapsack) by dynamic programming over blocks
    that keeps only the Pareto-optimal (cost, log-probability) partial designs. Raises when even the
    cheapest design is above the budget."""
    probs, costs = np.asarray(probs, dtype=float), np.asarray(costs, dtype=float)
    logp = np.log(np.clip(probs, 1e-12, None))
    cheapest = base_cost + costs.min(1).sum()
    if cheapest > budget * (1 + 1e-12):
        raise ValueError(f"--flops-budget {budget / 1e9:.4g} G is below the cheapest design "
                         f"({cheapest / 1e9:.4g} G MACs)")
    limit = budget - base_cost + 1e-9 * max(abs(budget), 1.0)
    rest_min = np.concatenate([np.cumsum(costs.min(1)[::-1])[::-1][1:], [0.0]])  # cheapest completion
    states: list[tuple[float, float, tuple[int, ...]]] = [(0.0, 0.0, ())]
    for j in range(len(costs)):
        grown = [(c + costs[j, u], lp + logp[j, u], ch + (u,)) for c, lp, ch in states
                 for u in range(costs.shape[1]) if c + costs[j, u] + rest_min[j] <= limit]
        grown.sort(key=lambda t: (t[0], -t[1]))
        states = []
        for st in grown:  # keep a state only if it beats every cheaper one
            if not states or st[1] > states[-1][1]:
                states.append(st)
    best = max(states, key=lambda t: t[1])
    return [units[u] for u in best[2]]


# ----------------------------------------------------------------------------- the stage


def read_marginals(run_dir: Path, convention: str) -> tuple[list[str], np.ndarray]:
    """Slot names and (num_slots, 3) marginals of S / ST / S+ST from ``marginals.csv``."""
    path = run_dir / "marginals.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: run `fusion3d analyze {run_dir}` first")
    df = pd.read_csv(path).sort_values("index")
    cols = [f"P_{u}_{convention}" for u in DESIGN_UNITS]
    missing = [c for c in cols if c not in df]
    if missing:
        raise ValueError(f"{path} has no columns {missing} (convention {convention!r})")
    return df["slot"].tolist(), df[cols].to_numpy(float)


def derive(run_dir: str | Path, backbone: str, rule: str = "argmax", flops_budget: float | None = None,
           convention: str = "paper", input_shape: tuple[int, int, int] | None = None,
           width_mult: float = 1.0, out: str | Path | None = None) -> dict:
    """Derive a design for ``backbone`` from the run's marginals; writes and returns the design.
    ``input_shape``: (T, H, W) for the MACs (default: the run's clip length and crop size);
    ``flops_budget`` in G MACs (rule ``budget``)."""
    from fusion3d.config import load_config
    from fusion3d.models import Strategy, count_macs, count_params, create

    run_dir = Path(run_dir)
    if rule not in RULES:
        raise ValueError(f"--rule {rule!r}: choose one of {', '.join(RULES)}")
    if rule == "budget" and flops_budget is None:
        raise ValueError("--rule budget needs --flops-budget (G MACs per clip)")
    config = run_dir / "config.yaml"
    if not config.is_file():
        raise FileNotFoundError(f"{config} does not exist: {run_dir} is not a run directory")
    cfg = load_config(config)
    slots, marg = read_marginals(run_dir, convention)
    classes = json.loads((run_dir / "splits.json").read_text())["classes"] if (run_dir / "splits.json").is_file() else []
    num_classes = cfg.model.num_classes or max(len(classes), 1)
    kwargs = {"width_mult": width_mult} if width_mult != 1.0 else {}
    model = create(backbone, num_classes=num_classes, **kwargs)
    t, h, w = input_shape or (cfg.data.clip_len, cfg.data.crop_size, cfg.data.crop_size)
    shape = (model.in_channels, int(t), int(h), int(w))
    m = model.num_slots
    probs = map_marginals(marg, m)

    if rule == "argmax":
        units = argmax_units(probs)
    elif rule == "paper":
        units = paper_units(m)
    else:
        base_units = ["S"] * m
        base = count_macs(model, shape, Strategy(tuple(base_units)))
        costs = np.zeros((m, len(DESIGN_UNITS)))
        for j in range(m):
            for k, u in enumerate(DESIGN_UNITS):
                units_j = list(base_units)
                units_j[j] = u
                costs[j, k] = count_macs(model, shape, Strategy(tuple(units_j))) - base
        units = budget_units(probs, costs, float(base), float(flops_budget) * 1e9)
    strategy = Strategy(tuple(units))
    mapping = []
    for j, (lo, hi, wgt) in enumerate(depth_mapping(len(slots), m)):
        mapping.append({"block": model.slot_names[j], "depth": float(relative_depths(m)[j]),
                        "slot_low": slots[lo], "slot_high": slots[hi], "weight_high": round(wgt, 4),
                        **{f"P_{u}": round(float(probs[j, k]), 4) for k, u in enumerate(DESIGN_UNITS)},
                        "unit": units[j]})
    canonical = {u: {"macs": count_macs(model, shape, Strategy.uniform(u, m)),
                     "params": count_params(model, Strategy.uniform(u, m))} for u in DESIGN_UNITS}
    design = {
        **strategy.to_dict(model.slot_names), "backbone": backbone, "rule": rule, "convention": convention,
        "width_mult": width_mult, "num_classes": num_classes, "input_shape": list(shape),
        "macs": count_macs(model, shape, strategy), "params": count_params(model, strategy),
        "flops_budget_g": flops_budget, "canonical": canonical, "template_run": str(run_dir),
        "template_slots": slots, "mapping": mapping,
    }
    path = Path(out) if out else run_dir / "derived" / f"{backbone}_{rule}.json"
    atomic_write_text(path, json.dumps(design, indent=1) + "\n")
    design["path"] = str(path)
    return design
