"""What a resumed training run takes from its checkpoint, and what it may take from this call.

A resumed run continues with the checkpoint's config. Keys the user set explicitly (on the command
line or in the config file given) that differ from it are either applied, when changing them
cannot change what was already trained (``SAFE_RESUME_KEYS``: more epochs, where and how fast it
runs, how much it logs), or refused by name; they are never silently ignored.
"""

from __future__ import annotations

from pathlib import Path

from fusion3d.config import Config, from_dict, set_key, to_dict
from fusion3d.engine.checkpoint import load_checkpoint
from fusion3d.errors import FusionError
from fusion3d.run.layout import RunDir

# Keys a resumed run may change: they extend the run or change how it runs, not what it learns.
SAFE_RESUME_KEYS = frozenset(
    {
        "train.epochs",
        "train.progress",
        "train.log_every",
        "train.eval_every",
        "train.tensorboard",
        "run.out",
        "run.device",
        "run.threads",
        "run.dist_timeout_s",
        "data.num_workers",
        "data.pin_memory",
        "data.persistent_workers",
        "data.prefetch_factor",
        "train.channels_last",
        "train.activation_checkpointing",  # memory against time; the gradients are the same
        "train.cudnn_benchmark",
        "train.checkpoint_every_steps",
        "data.cache_dir",
        "data.cache_compression",  # how the evaluation clips are stored, not which ones (exact round trip)
    }
)


def resume_path(run: RunDir, resume: str | None) -> Path | None:
    """The checkpoint ``--resume`` names: ``auto`` is the run directory's (None when it has none)."""
    if resume is None:
        return None
    if resume == "auto":
        return run.checkpoint if run.checkpoint.is_file() else None
    path = Path(resume)
    if not path.is_file():
        raise FileNotFoundError(f"--resume {resume}: checkpoint {path} does not exist")
    return path


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and prefix.count(".") < 1:
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def restore_config(
    cfg: Config, ckpt_path: Path, explicit: set[str] | None = None, say=print
) -> tuple[Config, dict]:
    """The checkpoint's config and its state, with this call's ``run.out`` and ``run.device``.

    ``explicit``: the keys this call set on purpose (None: a library call, where only the model
    section is compared). Each explicit key that differs from the checkpoint's value is applied when
    it is in ``SAFE_RESUME_KEYS`` (and ``say`` reports it), else the resume is refused naming it."""
    state = load_checkpoint(ckpt_path)
    if not isinstance(state, dict) or "config" not in state or "model" not in state:
        raise FusionError(f"cannot resume from {ckpt_path}: it is not a training checkpoint of fusion3d")
    saved = from_dict(state["config"])
    saved.run.out, saved.run.device = cfg.run.out, cfg.run.device
    if explicit is None:
        if to_dict(saved)["model"] != to_dict(cfg)["model"]:
            raise FusionError(f"cannot resume from {ckpt_path}: its model config differs from this run's")
        return saved, state
    mine, theirs = _flat(to_dict(cfg)), _flat(to_dict(saved))
    keys = sorted(k for k in mine if any(k == e or k.startswith(e + ".") for e in explicit))
    changed = [k for k in keys if mine[k] != theirs[k]]
    refused = [k for k in changed if k not in SAFE_RESUME_KEYS]
    if refused:
        what = "; ".join(f"{k}={mine[k]!r} (the run has {theirs[k]!r})" for k in refused)
        raise FusionError(
            f"cannot resume from {ckpt_path} with {what}: only {', '.join(sorted(SAFE_RESUME_KEYS))} "
            "may change in a resumed run; drop the other overrides or train into a new run.out"
        )
    for k in changed:
        set_key(saved, k, mine[k])
    done = int(state.get("epoch", 0))
    total = saved.train.warmup_epochs + saved.train.epochs
    if total < done:
        raise FusionError(
            f"cannot resume from {ckpt_path} with train.epochs={saved.train.epochs}: the run has already "
            f"trained {done} epochs (train.warmup_epochs={saved.train.warmup_epochs} + train.epochs)"
        )
    applied = [k for k in changed if k not in ("run.out", "run.device")]
    if applied:
        say("resume: applying " + ", ".join(f"{k}={mine[k]!r} (was {theirs[k]!r})" for k in applied))
    return saved, state
