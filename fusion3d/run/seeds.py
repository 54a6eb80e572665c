"""A run of several template seeds (``run.seeds = K > 1``): the seed runs it holds.

The run directory holds ``config.yaml`` (the config as given, ``run.seeds = K``), ``seeds.json`` and
one normal, resumable run per template seed (``seed0/``, ``seed1/`` ...), trained with ``run.seed``
``+ 0 .. K-1``. ``seeds.json`` lists them::

    {"seeds": [{"dir": "seed0", "seed": 0}, {"dir": "seed1", "seed": 1}]}

A directory without ``seeds.json`` is a single-seed run.
"""

from __future__ import annotations

import json
from pathlib import Path

from fusion3d.errors import FusionError
from fusion3d.run.layout import RunDir
from fusion3d.utils import atomic_write_text


def read_seeds(run_dir: str | Path) -> list[dict] | None:
    """``[{"dir": ..., "seed": ...}, ...]`` of a run of several template seeds; None for a single-seed run."""
    run = RunDir(run_dir)
    if not run.seeds.is_file():
        return None
    try:
        entries = json.loads(run.seeds.read_text())["seeds"]
        out = [{"dir": str(e["dir"]), "seed": int(e["seed"])} for e in entries]
    except (ValueError, KeyError, TypeError) as e:
        raise FusionError(
            f"{run.seeds} is damaged ({type(e).__name__}: {e}); it lists the seed runs"
        ) from None
    if len(out) < 2:
        raise FusionError(f"{run.seeds} lists {len(out)} seed run(s); a run of several seeds has at least 2")
    return out


def seed_dirs(run_dir: str | Path) -> list[Path]:
    """The seed runs' directories (``run_dir/seed<i>``), in seed order; empty for a single-seed run."""
    entries = read_seeds(run_dir)
    return [] if entries is None else [Path(run_dir) / e["dir"] for e in entries]


def write_seeds(run_dir: str | Path, seeds: list[int]) -> list[dict]:
    """Write ``seeds.json`` for template seeds ``seeds`` (seed run ``i`` is ``seed<i>/``); returns the entries."""
    run = RunDir(run_dir)
    entries = [{"dir": run.seed_run(i).name, "seed": int(s)} for i, s in enumerate(seeds)]
    atomic_write_text(run.seeds, json.dumps({"seeds": entries}, indent=1) + "\n")
    return entries
