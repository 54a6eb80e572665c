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

``--seeds K`` (default 1) trains the strategy with K training seeds: the run's ``run.seed`` s0 under
the plain label, and s0+1 .. s0+K-1 under ``<label>#seed<s>`` (``retrain/S#seed1/``, a row each in
``retrain.csv``, whose ``seed`` and ``base_label`` columns say which is which). Finished seeds are
not trained again, so a rerun adds nothing and a larger K adds only the new seeds. With more than
one seed per label the report shows mean +- standard error over the seeds, and whether Opt trained
alone beats the best canonical strategy by more than one standard error.
"""

from __future__ import annotations

import time

import pandas as pd

from fusion3d.analysis.standalone import seed_summary
from fusion3d.engine.standalone import run_retrain, run_retrain_seeds
from fusion3d.run.layout import RunDir

__all__ = ["command", "run_retrain", "run_retrain_seeds"]


def command(run_dir: str, spec: str, overrides: list[str], seeds: int = 1) -> int:
    t0 = time.time()
    rows = run_retrain_seeds(run_dir, spec, overrides, seeds)
    took = f"in {time.time() - t0:.1f}s -> {RunDir(run_dir).retrain}"
    for row in rows:
        print(
            f"{row['label']} ({row['strategy']}): top-1 {row['top1']:.1f}% on {row['measured_on']}"
            + ("" if len(rows) > 1 else f" {took}")
        )
    if len(rows) > 1:
        s = seed_summary(pd.DataFrame(rows)).iloc[0]
        print(
            f"{s['base_label']} over {int(s['n'])} seeds: top-1 {s['mean']:.1f} +- {s['se']:.1f}% (standard "
            f"error; SD {s['sd']:.1f}, range {s['min']:.1f}-{s['max']:.1f}) {took}"
        )
    return 0
