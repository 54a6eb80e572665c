"""``fusion3d train``: train the template (warm-up, then Variational DropPath) or one fixed strategy.

The loop itself is ``fusion3d.engine.trainer.train`` (shared with ``retrain``, ``agreement`` and
``bench``); this verb loads the config and reports where the run stands. With ``run.seeds = K > 1``
it trains K template seeds, each into its own seed run (``fusion3d.engine.seeds.train_seeds``).
"""

from __future__ import annotations

import os
import time

from fusion3d.config import explicit_keys, load_config
from fusion3d.configs import config_path
from fusion3d.engine.seeds import is_multi_seed, train_seeds
from fusion3d.engine.trainer import train


def command(
    config: str | None,
    overrides: list[str],
    resume: str | None = None,
    init: str | None = None,
    max_epochs: int | None = None,
    overwrite: bool = False,
) -> int:
    if max_epochs is not None and max_epochs < 1:
        raise ValueError(f"--max-epochs must be at least 1, got {max_epochs}")
    if overwrite and resume is not None:
        raise ValueError("--overwrite starts a new run and --resume continues one: pass one of them")
    config = config_path(config)  # a YAML file, or the name of a shipped config
    cfg = load_config(config, overrides)
    t0 = time.time()
    explicit = explicit_keys(config, overrides)
    if is_multi_seed(cfg, resume, explicit):
        summaries = train_seeds(cfg, resume, init, max_epochs, overwrite, explicit)
        done = sum(bool(s["complete"]) for s in summaries)
        state = "complete" if done == len(summaries) else "not complete (resume with --resume auto)"
        print(
            f"training of {len(summaries)} template seeds {state} ({done} finished) in "
            f"{time.time() - t0:.1f}s; run directory {cfg.run.out}"
        )
        return 0
    summary = train(
        cfg, resume=resume, init=init, max_epochs=max_epochs, overwrite=overwrite, explicit=explicit
    )
    if int(os.environ.get("RANK", 0)) == 0:
        state = (
            "complete"
            if summary["complete"]
            else f"stopped after epoch {summary['epochs_done']} (resume with --resume auto)"
        )
        print(f"training {state} in {time.time() - t0:.1f}s; run directory {cfg.run.out}")
    return 0
