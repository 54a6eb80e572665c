"""``fusion3d train``: train the template (warm-up, then Variational DropPath) or one fixed strategy.

The loop itself is ``fusion3d.engine.trainer.train`` (shared with ``retrain``, ``agreement`` and
``bench``); this verb loads the config and reports where the run stands.
"""

from __future__ import annotations

import os
import time

from fusion3d.config import explicit_keys, load_config
from fusion3d.configs import config_path
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
    summary = train(
        cfg,
        resume=resume,
        init=init,
        max_epochs=max_epochs,
        overwrite=overwrite,
        explicit=explicit_keys(config, overrides),
    )
    if int(os.environ.get("RANK", 0)) == 0:
        state = (
            "complete"
            if summary["complete"]
            else f"stopped after epoch {summary['epochs_done']} (resume with --resume auto)"
        )
        print(f"training {state} in {time.time() - t0:.1f}s; run directory {cfg.run.out}")
    return 0
