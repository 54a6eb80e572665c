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

import time

from fusion3d.engine.standalone import run_retrain
from fusion3d.run.layout import RunDir

__all__ = ["command", "run_retrain"]


def command(run_dir: str, spec: str, overrides: list[str]) -> int:
    t0 = time.time()
    row = run_retrain(run_dir, spec, overrides)
    print(
        f"{row['label']} ({row['strategy']}): top-1 {row['top1']:.1f}% on {row['measured_on']} "
        f"in {time.time() - t0:.1f}s -> {RunDir(run_dir).retrain}"
    )
    return 0
