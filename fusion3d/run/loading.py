"""Loading a run: config and checkpoint -> model, the checked selection split, the recalibration
clips, and strategy specs that refer to a run's results (``opt``, ``top:K``)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd

from fusion3d.config import from_dict, load_config
from fusion3d.data.clip_cache import build_clip_cache
from fusion3d.data.dataset import load_splits, make_loader
from fusion3d.engine.checkpoint import check_finite_weights, load_checkpoint
from fusion3d.errors import FusionError
from fusion3d.models import build_model
from fusion3d.models.strategy import UNITS, Strategy, as_strategy, resolve_strategy
from fusion3d.run.layout import RunDir
from fusion3d.run.seeds import seed_dirs

DEFAULT_RECAL_CLIPS = 200


def load_run(run_dir: str | Path):
    """(checkpoint dict, Config, template with the trained weights) of a run directory."""
    path = RunDir(run_dir).checkpoint
    seeds = [] if path.is_file() else seed_dirs(run_dir)
    if seeds:  # one network is asked for; a run of several seeds holds one per seed
        raise FusionError(
            f"{run_dir} is a run of {len(seeds)} template seeds, each with its own weights: point this at "
            f"one of them ({', '.join(str(d) for d in seeds[:2])}{' ...' if len(seeds) > 2 else ''})"
        )
    if not path.is_file() and Path(run_dir).is_dir() and not RunDir(run_dir).is_run():
        raise FileNotFoundError(
            f"{path} does not exist: {run_dir} is not a run directory (run `fusion3d train`)"
        )
    state = load_checkpoint(path)
    try:
        cfg = from_dict(state["config"])
        # the trained weights replace everything: no 2D inflation (its file may have moved since)
        model = build_model(dataclasses.replace(cfg.model, pretrained_2d=""), state["num_classes"])
    except (KeyError, TypeError) as e:
        raise FusionError(f"checkpoint {path} is not a fusion3d training checkpoint (no {e})") from None
    check_finite_weights(state["model"], f"checkpoint {path}")
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        raise FusionError(
            f"the weights in {path} do not fit the model its config describes ({first[-1].strip()[:160] if first else e})"
        ) from None
    return state, cfg, model


def run_config(run_dir: str | Path, overrides=()):
    """The run's saved config (``config.yaml``) with ``overrides`` applied."""
    run = RunDir(run_dir)
    if not run.config.is_file():
        raise FileNotFoundError(f"{run.config} does not exist: {run.path} is not a run directory")
    return load_config(run.config, list(overrides))


def run_classes(run_dir: str | Path) -> list[str]:
    """The class names recorded in ``splits.json`` (empty when the run has none). A run of several
    template seeds has none of its own: its seed runs share one dataset, and the first one's are used."""
    run = RunDir(run_dir)
    if not run.splits.is_file():
        seeds = seed_dirs(run_dir)
        return run_classes(seeds[0]) if seeds else []
    return json.loads(run.splits.read_text())["classes"]


def selection_cache(cfg, run_dir: str | Path, progress: bool = False):
    """(fit split, clip cache of the selection split) of a run. The selection split is rebuilt from
    the config and checked against the run's ``splits.json``: strategies (and other diagnostics) are
    never measured on videos the template may have trained on."""
    fit, selection = load_splits(cfg.data, cfg.run.seed)
    if len(selection) == 0:
        raise ValueError(
            "the run has no selection split (data.selection_fraction = 0 and no data.selection_subset): "
            "strategies must be scored on videos the template never trained on"
        )
    splits_file = RunDir(run_dir).splits
    if splits_file.is_file():
        recorded = json.loads(splits_file.read_text())
        if [r.path for r in selection.records] != recorded.get("selection"):
            raise FusionError(
                f"the selection split rebuilt from the config differs from {splits_file} (the dataset "
                "changed since training?): refusing to score strategies on videos the template may have "
                "trained on"
            )
    return fit, build_clip_cache(selection, cfg.data, progress=progress)


def recal_positions(num_fit: int, num: int, seed: int) -> list[int]:
    """A seeded subset of ``num`` positions of the fit split (sorted), the recalibration videos."""
    k = min(int(num), num_fit)
    rng = np.random.default_rng([int(seed), 5151])
    return sorted(rng.choice(num_fit, size=k, replace=False).tolist())


def recal_loader(cfg, fit, recal_clips: int | None = None, progress: bool = False):
    """(loader, number of videos) of the fixed BatchNorm-recalibration clips: a seeded subset of the
    fit split (``recal_clips`` videos, default 200), one centre clip each, batches of
    ``train.batch_size`` (the batch size the template's statistics were trained at)."""
    positions = recal_positions(
        len(fit), DEFAULT_RECAL_CLIPS if recal_clips is None else recal_clips, cfg.run.seed
    )
    if not positions:
        raise ValueError(
            "no fit videos for BatchNorm recalibration (recal_clips = 0?); pass recalibrate=False"
        )
    recal_cfg = dataclasses.replace(cfg.data, test_clips=1, test_crops=1)
    cache = build_clip_cache(fit.subset(positions), recal_cfg, progress=progress)
    ds = cache.dataset(cfg.data.mean, cfg.data.std)
    workers = cache.read_workers(cfg.data.num_workers)
    return make_loader(
        ds, batch_size=cfg.train.batch_size, num_workers=workers, shuffle=False, seed=cfg.run.seed
    ), len(ds)


def run_strategy_spec(run_dir: str | Path, spec: str) -> tuple[str, str]:
    """(label, strategy value for ``model.strategy``) of a spec that may refer to the run:
    a unit (``S``, ``ST``, ``S+ST``, ``none``), ``opt`` (``opt_strategy.json``), ``top:K`` (rank K of
    ``top_strategies.csv``), or a strategy JSON file."""
    run = RunDir(run_dir)
    if spec in UNITS:
        return spec, spec
    if spec == "opt":
        if not run.opt.is_file():
            raise FileNotFoundError(f"{run.opt} does not exist: run `fusion3d analyze {run.path}` first")
        return "opt", str(Strategy.load(run.opt))
    if spec.startswith("top:"):
        try:
            k = int(spec.split(":", 1)[1])
        except ValueError:
            raise ValueError(f"--strategy {spec!r}: top:K takes a positive rank K, such as top:1") from None
        if not run.top.is_file():
            raise FileNotFoundError(f"{run.top} does not exist: run `fusion3d analyze {run.path}` first")
        top = pd.read_csv(run.top)
        if not 1 <= k <= len(top):
            raise ValueError(f"--strategy {spec}: {run.top} has ranks 1..{len(top)}")
        return f"top{k}", str(top.iloc[k - 1]["strategy"])
    path = Path(spec)
    if path.is_file():
        return path.stem, str(Strategy.load(path))
    raise ValueError(
        f"--strategy {spec!r}: expected S, ST, S+ST, opt, top:K or an existing strategy JSON file"
    )


def resolve_run_strategy(run_dir: str | Path, spec: str, model) -> tuple[Strategy, str]:
    """(strategy, where it came from) for ``opt``, ``most_probable``, a unit, a unit string or a JSON
    file; ``opt`` falls back to the model's most probable strategy when the run has no Opt yet."""
    run = RunDir(run_dir)
    if spec == "opt":
        if run.opt.is_file():
            return as_strategy(Strategy.load(run.opt), model.num_slots), "opt (opt_strategy.json)"
        return model.most_probable_strategy(), "most_probable (no opt_strategy.json: run `fusion3d analyze`)"
    if spec == "most_probable":
        return model.most_probable_strategy(), "most_probable"
    s = resolve_strategy(spec, model.num_slots)
    return s, f"all-{spec}" if spec in UNITS else spec
