"""The default template scored against a ground-truth table (the numbers of docs/validity.md).

For each table: train the template with the demo's settings (tiny preset, 12 warm-up + 8
v-DropPath epochs, k = 1, held-out selection split) on the table's own dataset (its training list;
the table's test list is never trained on), then ``fusion3d bench score`` it against the table.
Resumes: a finished template is not retrained, scored strategies are not rescored.

    .venv/bin/python benchmarks/bench_templates.py --tables motion texture --out runs/bench_templates
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from fusion3d import bench as catalog
from fusion3d.config import load_config
from fusion3d.engine.trainer import train
from fusion3d.stages.bench import score

RECIPE_KEYS = ("train.warmup_epochs", "train.epochs", "train.eval_every", "data.selection_fraction")
DEMO_TEMPLATE = [
    "train.warmup_epochs=12",
    "train.epochs=8",
    "train.k=1.0",
    "run.threads=1",
    "train.progress=false",
]


def template_for(table: str, builds: Path, out: Path, seed: int) -> Path:
    """Train (or resume) the default template on ``table``'s dataset; returns its run directory."""
    _, meta = catalog.load_table(table)
    spec = catalog.load_spec(meta["name"])
    root = builds / spec.name / "data"
    if catalog.data_id(root) != meta.get("data_id"):
        raise SystemExit(
            f"{root} is not the dataset of table {table!r}: build it with `fusion3d bench build {table}`"
        )
    recipe = [o for o in spec.config if not o.startswith(RECIPE_KEYS)]
    run = out / f"{spec.name}_s{seed}"
    cfg = load_config(
        None,
        [
            *recipe,
            *DEMO_TEMPLATE,
            f"run.seed={seed}",
            f"data.root={root}",
            f"data.annotations={root / 'ucfTrainTestlist'}",
            f"data.cache_dir={out / 'cache'}",
            f"run.out={run}",
        ],
    )
    train(cfg, resume="auto")
    return run


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tables", nargs="+", default=catalog.shipped_tables())
    p.add_argument("--builds", default="runs/bench", help="folder of `fusion3d bench build` (the datasets)")
    p.add_argument("--out", default="runs/bench_templates")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = p.parse_args()
    results = {}
    for table in args.tables:
        for seed in args.seeds:
            t0 = time.time()
            run = template_for(table, Path(args.builds), Path(args.out), seed)
            r = score(str(run), table)
            results[f"{table}_s{seed}"] = r
            pred = r["predictors"]
            line = ", ".join(
                f"{k} tau {v['kendall_tau']['value']:+.2f}"
                for k, v in pred.items()
                if "kendall_tau" in v and v["kendall_tau"]["value"] is not None
            )
            print(f"{table} (template seed {seed}, {time.time() - t0:.0f}s): {line}", flush=True)
    print(
        json.dumps(
            {k: {"tau_after": v["predictors"]["template_after"]["kendall_tau"]} for k, v in results.items()},
            indent=1,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
