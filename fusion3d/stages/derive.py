"""``fusion3d derive RUN --backbone NAME``: a fusion design for another backbone, from the template.

The paper hand-wrote its ResNet / ResNeXt / MobileNetV2 designs from what the DenseNet template
showed (docs/method.md §8). Here the design is derived, as data, from a trained run's per-slot
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
     stay within ``--macs-budget`` (G MACs per clip at the input shape): a multiple-choice knapsack,
     solved exactly by dynamic programming over Pareto-optimal partial designs (``budget_units``);
   - ``paper``: the paper's hand-written rule for ResNets, "S+ST in the first half and the last
     three blocks, ST elsewhere", for comparison (it reads no marginals);
   - ``ablation``: instead of the marginals, the per-slot ablation's scores (``ablation.csv``: all-S
     with that slot set to S, ST or S+ST), mapped by relative depth the same way, and the best-scoring
     unit of each block (ties: S, then ST, then S+ST);
   - ``auto`` (the default): ``ablation`` where the run has ``ablation.csv``, else ``argmax``. On the
     benchmark the ablation's per-slot answer agrees better with stand-alone training than the
     marginals' (docs/validity.md), and on the demo's motion run its ResNet-18 design trained alone
     beat the marginals' (68.9 +- 3.9% against 57.4 +- 3.5%, three seeds). The design records the
     rule it used; its file is named after that rule.

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

from fusion3d.analysis.design import (
    RULES,
    argmax_units,
    budget_units,
    depth_mapping,
    map_marginals,
    paper_units,
    relative_depths,
)
from fusion3d.models import Strategy, count_macs, count_params, create
from fusion3d.models.units import DESIGN_UNITS
from fusion3d.run.layout import RunDir
from fusion3d.run.loading import run_classes, run_config
from fusion3d.utils import atomic_write_text

# ----------------------------------------------------------------------------- the stage


def read_marginals(run_dir: Path, convention: str) -> tuple[list[str], np.ndarray]:
    """Slot names and (num_slots, 3) marginals of S / ST / S+ST from ``marginals.csv``."""
    path = RunDir(run_dir).marginals
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: run `fusion3d analyze {run_dir}` first")
    df = pd.read_csv(path).sort_values("index")
    cols = [f"P_{u}_{convention}" for u in DESIGN_UNITS]
    missing = [c for c in cols if c not in df]
    if missing:
        raise ValueError(f"{path} has no columns {missing} (convention {convention!r})")
    return df["slot"].tolist(), df[cols].to_numpy(float)


def read_ablation(run_dir: Path) -> tuple[list[str], np.ndarray]:
    """Slot names and (num_slots, 3) ablation scores of S / ST / S+ST from ``ablation.csv``."""
    path = RunDir(run_dir).ablation
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist: run `fusion3d sample {run_dir}` (without --no-ablation) and "
            f"`fusion3d analyze {run_dir}` first"
        )
    df = pd.read_csv(path)
    missing = [c for c in ("slot", *DESIGN_UNITS) if c not in df]
    if missing:
        raise ValueError(f"{path} has no columns {missing}")
    return df["slot"].tolist(), df[list(DESIGN_UNITS)].to_numpy(float)


def derive(
    run_dir: str | Path,
    backbone: str,
    rule: str = "auto",
    macs_budget: float | None = None,
    convention: str = "paper",
    input_shape: tuple[int, int, int] | None = None,
    width_mult: float = 1.0,
    out: str | Path | None = None,
    flops_budget: float | None = None,
) -> dict:
    """Derive a design for ``backbone`` from the run's marginals (or its ablation: ``rule``, see the
    module); writes and returns the design.
    ``input_shape``: (T, H, W) for the MACs (default: the run's clip length and crop size);
    ``macs_budget`` in G MACs (rule ``budget``; ``flops_budget`` is its deprecated name)."""
    if macs_budget is None:
        macs_budget = flops_budget
    run = RunDir(run_dir)
    run_dir = run.path
    if rule not in (*RULES, "auto"):
        raise ValueError(f"--rule {rule!r}: choose one of auto, {', '.join(RULES)}")
    if rule == "auto":
        rule = "ablation" if run.ablation.is_file() else "argmax"
    if rule == "budget" and macs_budget is None:
        raise ValueError("--rule budget needs --macs-budget (G MACs per clip)")
    cfg = run_config(run_dir)
    slots, marg = read_ablation(run_dir) if rule == "ablation" else read_marginals(run_dir, convention)
    classes = run_classes(run_dir)
    num_classes = cfg.model.num_classes or max(len(classes), 1)
    kwargs = {"width_mult": width_mult} if width_mult != 1.0 else {}
    model = create(backbone, num_classes=num_classes, **kwargs)
    t, h, w = input_shape or (cfg.data.clip_len, cfg.data.crop_size, cfg.data.crop_size)
    shape = (model.in_channels, int(t), int(h), int(w))
    m = model.num_slots
    probs = map_marginals(marg, m)

    if rule in ("argmax", "ablation"):  # for the ablation, per-block scores (rows renormalised)
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
        units = budget_units(probs, costs, float(base), float(macs_budget) * 1e9)
    strategy = Strategy(tuple(units))
    mapping = []
    for j, (lo, hi, wgt) in enumerate(depth_mapping(len(slots), m)):
        mapping.append(
            {
                "block": model.slot_names[j],
                "depth": float(relative_depths(m)[j]),
                "slot_low": slots[lo],
                "slot_high": slots[hi],
                "weight_high": round(wgt, 4),
                **{f"P_{u}": round(float(probs[j, k]), 4) for k, u in enumerate(DESIGN_UNITS)},
                "unit": units[j],
            }
        )
    canonical = {
        u: {
            "macs": count_macs(model, shape, Strategy.uniform(u, m)),
            "params": count_params(model, Strategy.uniform(u, m)),
        }
        for u in DESIGN_UNITS
    }
    design = {
        **strategy.to_dict(model.slot_names),
        "backbone": backbone,
        "rule": rule,
        "convention": convention,
        "width_mult": width_mult,
        "num_classes": num_classes,
        "input_shape": list(shape),
        "macs": count_macs(model, shape, strategy),
        "params": count_params(model, strategy),
        "macs_budget_g": macs_budget,
        "flops_budget_g": macs_budget,
        "canonical": canonical,
        "template_run": str(run_dir),
        "template_slots": slots,
        "mapping": mapping,
    }
    path = Path(out) if out else run.derived(backbone, rule)
    atomic_write_text(path, json.dumps(design, indent=1) + "\n")
    design["path"] = str(path)
    return design


# ----------------------------------------------------------------------------- the verb


def parse_input(text: str) -> tuple[int, int, int]:
    """``--input TxHxW`` (frames x height x width) as three positive ints."""
    parts = text.lower().split("x")
    try:
        shape = tuple(int(v) for v in parts)
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"--input {text!r}: expected TxHxW, three positive integers such as 8x112x112")
    return shape


def command(args) -> int:
    shape = parse_input(args.input) if args.input else None
    d = derive(
        args.run,
        args.backbone,
        rule=args.rule,
        macs_budget=args.macs_budget,
        convention=args.convention,
        input_shape=shape,
        width_mult=args.width_mult,
        out=args.out,
    )
    c = d["canonical"]
    how = f"{d['rule']}, chosen by --rule auto" if args.rule == "auto" else d["rule"]
    print(f"{d['backbone']} ({how}): {d['string']}")
    print(
        f"  {d['macs'] / 1e9:.3f} G MACs, {d['params'] / 1e6:.2f} M params at input {d['input_shape']}; all-S "
        f"{c['S']['macs'] / 1e9:.3f} G, all-ST {c['ST']['macs'] / 1e9:.3f} G, all-S+ST {c['S+ST']['macs'] / 1e9:.3f} G"
    )
    print(
        f"wrote {d['path']}; train it with: fusion3d retrain {args.run} --strategy {d['path']} "
        f"model.name={d['backbone']}"
        + (f" model.width_mult={args.width_mult}" if args.width_mult != 1.0 else "")
    )
    return 0
