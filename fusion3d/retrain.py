"""``fusion3d retrain RUN --strategy ...``: train one strategy alone, from scratch, same recipe.

The strategy is trained with the run's config (same data, model preset, optimiser, schedule and
total number of epochs: warm-up + v-DropPath epochs become one phase with that strategy's hard
gates) and evaluated on ``data.eval_subset``, the split final numbers are reported on (never the
selection split strategies were chosen on). Each retrain lives in ``RUN/retrain/<label>/`` (a run
directory of its own, resumable) and adds or replaces its row in ``RUN/retrain.csv``: the Table-2
analog (S / ST / S+ST / Opt).

With ``model.name=<backbone>`` among the overrides the same recipe trains a backbone instead
(``fusion3d retrain RUN --strategy S model.name=resnet18_3d``, or a design from ``fusion3d derive``):
its label gets ``@<backbone>`` appended, so ``retrain.csv`` holds the Table-6 analog next to the
Table-2 analog. A label that is a unit name (S, ST, S+ST) means that unit at every slot of whatever
network is trained.
"""

from __future__ import annotations

import fcntl
import json
from pathlib import Path

import pandas as pd

from fusion3d.config import load_config
from fusion3d.models.strategy import UNITS, Strategy, resolve_strategy
from fusion3d.utils import atomic_write_text

RETRAIN_CSV = "retrain.csv"


def strategy_for(run_dir: Path, spec: str) -> tuple[str, str]:
    """(label, strategy value for ``model.strategy``) from ``S|ST|S+ST|opt|top:K|PATH.json``."""
    if spec in UNITS:
        return spec, spec
    if spec == "opt":
        path = run_dir / "opt_strategy.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist: run `fusion3d analyze {run_dir}` first")
        return "opt", str(Strategy.load(path))
    if spec.startswith("top:"):
        k = int(spec.split(":", 1)[1])
        path = run_dir / "top_strategies.csv"
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist: run `fusion3d analyze {run_dir}` first")
        top = pd.read_csv(path)
        if not 1 <= k <= len(top):
            raise ValueError(f"--strategy {spec}: {path} has ranks 1..{len(top)}")
        return f"top{k}", str(top.iloc[k - 1]["strategy"])
    path = Path(spec)
    if path.is_file():
        return path.stem, str(Strategy.load(path))
    raise ValueError(f"--strategy {spec!r}: expected S, ST, S+ST, opt, top:K or an existing strategy JSON file")


def run_retrain(run_dir: str | Path, spec: str, overrides: list[str] = ()) -> dict:
    """Train the strategy ``spec`` alone with the run's recipe; returns its row of ``retrain.csv``."""
    from fusion3d.models import build_model, count_macs, count_params
    from fusion3d.train import train

    run_dir = Path(run_dir)
    config = run_dir / "config.yaml"
    if not config.is_file():
        raise FileNotFoundError(f"{config} does not exist: {run_dir} is not a run directory")
    label, value = strategy_for(run_dir, spec)
    base = load_config(config)
    cfg = load_config(config, [f"model.strategy={value}", *overrides])
    if cfg.model.name != base.model.name:  # another network with the run's recipe (Table-6 analog)
        label = f"{label}@{cfg.model.name}"
    cfg = load_config(config, [f"run.out={run_dir / 'retrain' / label}", f"model.strategy={value}", *overrides])
    summary = train(cfg, resume="auto")
    classes = json.loads((run_dir / "splits.json").read_text())["classes"]
    model = build_model(cfg.model, cfg.model.num_classes or len(classes))
    strategy = resolve_strategy(value, model.num_slots)
    d = cfg.data
    row = {
        "label": label, "model": cfg.model.name, "strategy": str(strategy), "id": strategy.id, "top1": summary.get("val_top1"),
        "top5": summary.get("val_top5"), "epochs": summary["epochs_done"],
        "macs": count_macs(model, (3, d.clip_len, d.crop_size, d.crop_size), strategy),
        "params": count_params(model, strategy),
        "measured_on": f"{d.eval_subset} subset, {d.test_clips} clip(s) x {d.test_crops} crop(s), per-video top-1",
        "complete": summary["complete"],
    }
    path = run_dir / RETRAIN_CSV
    with open(run_dir / f".{RETRAIN_CSV}.lock", "w") as lock:  # retrains of one run may finish together
        fcntl.flock(lock, fcntl.LOCK_EX)
        table = pd.read_csv(path) if path.is_file() else pd.DataFrame(columns=list(row))
        table = pd.concat([table[table["label"] != label], pd.DataFrame([row])], ignore_index=True)
        atomic_write_text(path, table.to_csv(index=False))
    return row
