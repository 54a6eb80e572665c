"""Training one strategy alone, from scratch, with a run's recipe (shared by ``retrain``,
``agreement``, ``demo`` and ``bench``).

The strategy is trained with the run's config (same data, model preset, optimiser, schedule and
total number of epochs: warm-up + v-DropPath epochs become one phase with that strategy's hard
gates) and evaluated on ``data.eval_subset``, the split final numbers are reported on (never the
selection split strategies were chosen on). Each lives in ``RUN/retrain/<label>/`` (a run
directory of its own, resumable) and adds or replaces its row in ``RUN/retrain.csv``.

``run_retrain_seeds`` trains it with K training seeds: the run's ``run.seed`` s0 under the plain
label, and s0+1 .. s0+K-1 under ``<label>#seed<s>`` (``fusion3d.run.retrains``), each with its own
run directory and row; the rows' ``seed`` and ``base_label`` columns say which is which.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd

from fusion3d.engine.trainer import train
from fusion3d.models import build_model, count_macs, count_params
from fusion3d.models.strategy import resolve_strategy
from fusion3d.run.layout import RunDir
from fusion3d.run.loading import run_classes, run_config, run_strategy_spec
from fusion3d.run.retrains import read_retrain, seed_label, with_seed_columns
from fusion3d.utils import atomic_write_text, file_lock


def run_retrain(run_dir: str | Path, spec: str, overrides: list[str] = (), seed: int | None = None) -> dict:
    """Train the strategy ``spec`` alone with the run's recipe; returns its row of ``retrain.csv``.
    ``seed``: a training seed other than the recipe's ``run.seed`` (the label gets ``#seed<seed>``)."""
    run = RunDir(run_dir)
    base = run_config(run.path)
    label, value = run_strategy_spec(run.path, spec)
    cfg = run_config(run.path, [f"model.strategy={value}", *overrides])
    if cfg.model.name != base.model.name:  # another network with the run's recipe (Table-6 analog)
        label = f"{label}@{cfg.model.name}"
    name, reseed = label, []
    if seed is not None and int(seed) != cfg.run.seed:
        name, reseed = seed_label(label, seed), [f"run.seed={int(seed)}"]
    cfg = run_config(  # one network trained alone, also from a run of several template seeds
        run.path,
        [f"run.out={run.retrain_run(name)}", f"model.strategy={value}", "run.seeds=1", *overrides, *reseed],
    )
    summary = train(cfg, resume="auto")
    model = build_model(
        dataclasses.replace(cfg.model, pretrained_2d=""), cfg.model.num_classes or len(run_classes(run.path))
    )  # for costs only
    strategy = resolve_strategy(value, model.num_slots)
    d = cfg.data
    row = {
        "label": name,
        "model": cfg.model.name,
        "strategy": str(strategy),
        "id": strategy.id,
        "top1": summary.get("val_top1"),
        "top5": summary.get("val_top5"),
        "epochs": summary["epochs_done"],
        "macs": count_macs(model, (3, d.clip_len, d.crop_size, d.crop_size), strategy),
        "params": count_params(model, strategy),
        "measured_on": f"{d.eval_subset} subset, {d.test_clips} clip(s) x {d.test_crops} crop(s), per-video top-1",
        "complete": summary["complete"],
        "seed": cfg.run.seed,
        "base_label": label,
    }
    with file_lock(run.lock("retrain")):  # retrains of one run may finish together
        if run.retrain.is_file():  # rows from before the seed columns get them (the run's seed)
            table = with_seed_columns(read_retrain(run.retrain), base.run.seed)
        else:
            table = pd.DataFrame(columns=list(row))
        table = pd.concat([table[table["label"] != name], pd.DataFrame([row])], ignore_index=True)
        atomic_write_text(run.retrain, table.to_csv(index=False))
    return row


def run_retrain_seeds(
    run_dir: str | Path, spec: str, overrides: list[str] = (), seeds: int = 1
) -> list[dict]:
    """``run_retrain`` with ``seeds`` training seeds, s0 = the recipe's ``run.seed`` (with
    ``overrides``) .. s0 + seeds - 1; returns their rows in seed order. A finished seed is not
    trained again (its run resumes complete and its row is replaced by the same one)."""
    if int(seeds) < 1:
        raise ValueError(f"--seeds must be at least 1, got {seeds}")
    s0 = run_config(run_dir, list(overrides)).run.seed
    return [run_retrain(run_dir, spec, overrides, seed=s0 + i if i else None) for i in range(int(seeds))]
