"""Several template seeds (``run.seeds = K > 1``): training them, and scoring strategies with all of them.

Training: each seed is a normal, resumable run in its own sub-directory of ``run.out``
(``seed0/ .. seed<K-1>/``, trained with ``run.seed + i``; ``fusion3d.run.seeds``), trained one after
the other by ``fusion3d.engine.trainer.train``. The top directory holds the config and
``seeds.json``. Resuming re-enters every seed run; a finished one is skipped.

Each seed run carves its own fit / selection split from its own seed (the split is part of what a seed
varies), so a strategy's score under a seed's template is measured on videos that template never
trained on, and the combined score is the mean over the seeds of those per-template scores.

Scoring: ``SeedScorer`` holds one ``StrategyScorer`` per seed run and combines their rows
(``fusion3d.run.strategies.combine_seed_rows``); ``MeanGates`` draws the strategy plan from the drop
probabilities averaged over the seeds.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch

from fusion3d.config import Config, from_dict, save_config
from fusion3d.engine.scoring import StrategyScorer
from fusion3d.engine.trainer import train
from fusion3d.errors import FusionError
from fusion3d.models.network import SlotNetwork
from fusion3d.run.layout import RunDir
from fusion3d.run.seeds import read_seeds, write_seeds
from fusion3d.run.strategies import combine_seed_rows, table_columns

# ----------------------------------------------------------------------------- training


def is_multi_seed(cfg: Config, resume: str | None, explicit: set[str] | None = None) -> bool:
    """Whether ``fusion3d train`` trains several template seeds: ``run.seeds > 1``, or a resume of a run
    directory that holds seed runs (and ``run.seeds`` was not set on purpose)."""
    if cfg.run.seeds > 1:
        return True
    explicit_k = explicit is not None and "run.seeds" in explicit
    return resume is not None and not explicit_k and read_seeds(cfg.run.out) is not None


def seed_config(cfg: Config, i: int, seed: int) -> Config:
    """The config of seed run ``i``: a normal single-seed run in ``run.out/seed<i>`` with ``run.seed = seed``."""
    sub = copy.deepcopy(cfg)
    sub.run.out = str(RunDir(cfg.run.out).seed_run(i))
    sub.run.seed, sub.run.seeds = int(seed), 1
    return sub


def _finished(run: RunDir, cfg: Config, max_epochs: int | None, explicit: set[str] | None) -> bool:
    """Whether seed run ``run`` has nothing left to train (its summary says it reached its end)."""
    if not run.summary.is_file():
        return False
    try:
        summary = json.loads(run.summary.read_text())
        done, total = int(summary["epochs_done"]), int(summary["total_epochs"])
    except (ValueError, KeyError, TypeError):
        return False
    if explicit is None or {"train.epochs", "train.warmup_epochs"} & explicit:
        total = max(total, cfg.train.warmup_epochs + cfg.train.epochs)  # asked to train longer
    target = total if max_epochs is None else min(total, max_epochs)
    return done >= target


def train_seeds(
    cfg: Config,
    resume: str | None = None,
    init: str | None = None,
    max_epochs: int | None = None,
    overwrite: bool = False,
    explicit: set[str] | None = None,
    say=print,
) -> list[dict]:
    """Train (or continue) every template seed of ``cfg``; returns each seed run's summary.

    ``resume``: ``"auto"`` only (each seed run continues from its own checkpoint); the other arguments
    are ``fusion3d.engine.trainer.train``'s, applied to every seed run."""
    parent = RunDir(cfg.run.out)
    if parent.path.exists() and not parent.path.is_dir():
        raise FusionError(f"run.out {parent.path} is a file, not a run directory")
    recorded = read_seeds(parent.path)
    explicit_k = explicit is None or "run.seeds" in explicit
    k = cfg.run.seeds if (recorded is None or explicit_k) else len(recorded)
    if resume is None:
        if parent.is_run() and not overwrite:
            raise FusionError(
                f"{parent.path} already holds a run; continue it with --resume auto, or pass --overwrite to "
                f"move it aside (to {parent.path.name}.old-<time>) and start over"
            )
        if parent.is_run():
            say(f"moved the old run {parent.path} aside to {parent.move_aside()}")
        recorded = None
    else:
        if resume != "auto":
            raise FusionError(
                f"--resume {resume}: a run of {k} template seeds resumes with --resume auto (each seed run "
                "continues from its own checkpoint)"
            )
        if recorded is None and parent.is_run():
            raise FusionError(
                f"cannot resume {parent.path} with run.seeds={k}: it holds a single-seed run; train the "
                "seeds into a new run.out"
            )
        if recorded is not None and len(recorded) != k:
            raise FusionError(
                f"cannot resume {parent.path} with run.seeds={k}: the run has {len(recorded)} template seeds "
                f"({parent.seeds}); drop run.seeds or train into a new run.out"
            )
        if (
            recorded is not None
            and explicit
            and "run.seed" in explicit
            and cfg.run.seed != recorded[0]["seed"]
        ):
            raise FusionError(
                f"cannot resume {parent.path} with run.seed={cfg.run.seed}: its seeds start at "
                f"{recorded[0]['seed']}; drop run.seed or train into a new run.out"
            )
    if resume is not None and recorded is not None and parent.config.is_file():
        cfg = _resumed_config(parent, cfg, explicit)
    if recorded is None:
        parent.path.mkdir(parents=True, exist_ok=True)
        save_config(cfg, parent.config)
        recorded = write_seeds(parent.path, [cfg.run.seed + i for i in range(k)])
    summaries = []
    for i, entry in enumerate(recorded):
        sub = seed_config(cfg, i, entry["seed"])
        run = RunDir(sub.run.out)
        if _finished(run, sub, max_epochs, explicit if resume is not None else None):
            say(f"template seed {i} (run.seed={entry['seed']}): finished, skipped ({run.path})")
            summaries.append(json.loads(run.summary.read_text()))
            continue
        say(f"template seed {i} of {k} (run.seed={entry['seed']}) -> {run.path}")
        summaries.append(
            train(sub, resume="auto", init=init, max_epochs=max_epochs, overwrite=False, explicit=explicit)
        )
    _save_parent_config(parent, recorded)
    return summaries


def _resumed_config(parent: RunDir, cfg: Config, explicit: set[str] | None) -> Config:
    """The top ``config.yaml`` with the keys this call set on purpose (a seed run that has no checkpoint
    yet starts from it; the others take their checkpoint's config, ``engine.resume``)."""
    import yaml

    from fusion3d.config import set_key

    base = from_dict(yaml.safe_load(parent.config.read_text()))
    for key in sorted(explicit or ()):
        value = cfg
        for part in key.split("."):
            value = getattr(value, part)
        set_key(base, key, copy.deepcopy(value))
    base.run.out = cfg.run.out
    return base


def _save_parent_config(parent: RunDir, recorded: list[dict]) -> None:
    """The top ``config.yaml``: the first seed run's config (as trained, resumed overrides included) with
    the top directory's ``run.out``, the first seed and ``run.seeds``."""
    import yaml

    first = RunDir(parent.path / recorded[0]["dir"])
    if not first.config.is_file():
        return
    cfg = from_dict(yaml.safe_load(first.config.read_text()))
    cfg.run.out, cfg.run.seed, cfg.run.seeds = str(parent.path), recorded[0]["seed"], len(recorded)
    save_config(cfg, parent.config)


# ----------------------------------------------------------------------------- scoring


class MeanGates:
    """The drop probabilities of several templates, averaged: draws strategies exactly as a template
    with these probabilities would (``SlotNetwork.sample_strategy`` / ``most_probable_strategy``)."""

    sample_strategy = SlotNetwork.sample_strategy
    most_probable_strategy = SlotNetwork.most_probable_strategy

    def __init__(self, models):
        self._p = torch.stack([m.drop_probs() for m in models]).mean(0)
        depth = [m.depth_drop_probs() for m in models]
        self._d = None if any(d is None for d in depth) else torch.stack(depth).mean(0)
        self.num_slots = int(self._p.shape[0])
        self.slot_names = list(models[0].slot_names)

    def drop_probs(self) -> torch.Tensor:
        return self._p.clone()

    def depth_drop_probs(self) -> torch.Tensor | None:
        return None if self._d is None else self._d.clone()


class SeedScorer:
    """One ``StrategyScorer`` per seed run; ``score`` gives the combined row. ``model`` is the first seed's
    template (cost and receptive fields), ``plan_model`` the averaged gates the plan is drawn from."""

    def __init__(
        self,
        run_dirs: list[Path],
        recalibrate: bool = True,
        recal_clips: int | None = None,
        batch_size: int | None = None,
        device: str | None = None,
        progress: bool = False,
    ):
        self.scorers: list[StrategyScorer] = []
        try:
            for d in run_dirs:
                self.scorers.append(StrategyScorer(d, recalibrate, recal_clips, batch_size, device, progress))
        except FileNotFoundError as e:
            raise FusionError(f"a template seed's run is missing or untrained ({e})") from None
        first = self.scorers[0]
        names = [list(s.model.slot_names) for s in self.scorers]
        if any(n != names[0] for n in names):
            raise FusionError(
                f"the seed runs {', '.join(map(str, run_dirs))} hold templates of different slots"
            )
        self.cfg, self.state, self.model = first.cfg, first.state, first.model
        self.device, self.eval_batch_size = first.device, first.eval_batch_size
        self.plan_model = MeanGates([s.model for s in self.scorers])
        self.columns = table_columns(len(self.scorers))
        self.measurement = {key: [s.measurement[key] for s in self.scorers] for key in first.measurement}

    def score(self, strategy, source: str) -> dict:
        return combine_seed_rows([s.score(strategy, source) for s in self.scorers])

    def score_many(self, items: list, **kwargs) -> list[dict]:
        """``score`` for a group of (strategy, source) pairs: each seed's scorer scores the group on its
        own prefix tree (``StrategyScorer.score_many``), then the rows are combined strategy by strategy."""
        per_seed = [s.score_many(items, **kwargs) for s in self.scorers]
        return [combine_seed_rows(list(rows)) for rows in zip(*per_seed)]

    def restore(self) -> None:
        for s in self.scorers:
            s.restore()
