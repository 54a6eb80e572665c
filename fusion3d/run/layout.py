"""The run directory: the one place that knows the name of every file a run holds.

A run directory is written by ``fusion3d train`` and then grows stage by stage::

    config.yaml  splits.json  checkpoint.pt  metrics.jsonl  summary.json      train
    strategies.csv  sample.json  (strategies.shard<i>of<n>.csv/.done)        sample
    marginals.csv  top_strategies.csv  opt_strategy.json  analysis.json       analyze
      ablation.csv  figure4.png  figure4_sampling.png  acc_vs_flops.png  acc_hist.png
      rf_vs_accuracy.png  depth_keep.png  cka.csv  cka.json  cka_*.png
    retrain.csv  retrain/<label>/  (retrain/<label>#seed<s>/: --seeds K)      retrain
    validate.json  validate.csv  validate_scatter.png  validate/               agreement
    derived/<backbone>_<rule>.json                                            derive
    bench.json  bench_<table>_scores.csv                                      bench score
    report.html  report.md  training_curves.png  drop_probs.png               report

With ``run.seeds=K > 1`` the run directory holds ``config.yaml``, ``seeds.json`` (the seed runs) and
one normal run per template seed, ``seed0/ .. seed<K-1>/``; sample, analyze and report then write
their files at the top, combined over the seeds.

Stages, the report and the notebooks reach these files only through :class:`RunDir`, so a file
name is spelled here once. Two names predate the vocabulary and are kept because users' scripts
read them: ``acc_vs_flops.png`` (the axis is MACs) and ``validate.*`` (written by the agreement
stage, ``fusion3d agreement``, once called ``validate``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

# File names by role. Everything else in the package refers to the roles.
FILES: dict[str, str] = {
    "config": "config.yaml",
    "splits": "splits.json",
    "checkpoint": "checkpoint.pt",
    "metrics": "metrics.jsonl",
    "summary": "summary.json",
    "strategies": "strategies.csv",
    "sample": "sample.json",
    "marginals": "marginals.csv",
    "top": "top_strategies.csv",
    "opt": "opt_strategy.json",
    "analysis": "analysis.json",
    "ablation": "ablation.csv",  # per-slot ablation (when sample scored its strategies)
    "figure4": "figure4.png",
    "figure4_sampling": "figure4_sampling.png",
    "acc_vs_macs": "acc_vs_flops.png",  # name kept from older versions (users' scripts read it)
    "acc_hist": "acc_hist.png",
    "rf_vs_accuracy": "rf_vs_accuracy.png",
    "depth": "depth_keep.png",
    "cka_csv": "cka.csv",
    "cka": "cka.json",
    "cka_within": "cka_within.png",
    "cka_between": "cka_between.png",
    "retrain": "retrain.csv",
    "agreement": "validate.json",  # the agreement stage was called validate; its file names stay
    "agreement_csv": "validate.csv",
    "agreement_scatter": "validate_scatter.png",
    "bench": "bench.json",
    "report_html": "report.html",
    "report_md": "report.md",
    "training_curves": "training_curves.png",
    "drop_probs": "drop_probs.png",
    "demo": "demo.json",
    "seeds": "seeds.json",  # a run of several template seeds (run.seeds > 1): the seed runs it holds
}

DEPTH_PNG = FILES["depth"]  # the depth-gate figure (kept as a name: tests and scripts import it)

# Files the analyze stage writes (in the order its summary lists them).
ANALYZE_FILES = (
    "marginals",
    "figure4",
    "figure4_sampling",
    "acc_vs_macs",
    "acc_hist",
    "top",
    "opt",
    "analysis",
)
CKA_FILES = ("cka_csv", "cka_within", "cka_between", "cka")
# Files whose presence marks a directory as a run (config alone is written first by train).
RUN_MARKERS = ("config", "metrics", "summary")
# Files of one run that a report lists as its data.
DATA_SUFFIXES = (".json", ".jsonl", ".csv", ".yaml")


@dataclass(frozen=True)
class _Folder:
    """A folder whose files are reached by role: ``folder.<role>`` is ``path / ROLES[role]``."""

    path: Path
    ROLES: ClassVar[dict[str, str]] = {}
    WHAT: ClassVar[str] = "folder"

    def __init__(self, path: str | Path):
        object.__setattr__(self, "path", Path(path))

    def __getattr__(self, role: str) -> Path:
        if role in self.ROLES:
            return self.path / self.ROLES[role]
        raise AttributeError(f"a {self.WHAT} has no file {role!r}; known: {', '.join(self.ROLES)}")

    def lock(self, what: str) -> Path:
        """The lock file guarding ``what`` (a role or a purpose such as ``"merge"``)."""
        return self.path / f".{what}.lock"


class RunDir(_Folder):
    """The files of one run directory. ``RunDir(path).strategies`` is ``path/strategies.csv``."""

    ROLES = FILES
    WHAT = "run directory"

    def __fspath__(self) -> str:
        return str(self.path)

    def __str__(self) -> str:
        return str(self.path)

    def file(self, role: str) -> Path:
        """The path of ``role`` (see ``FILES``)."""
        return getattr(self, role)

    def existing(self, role: str) -> Path | None:
        """The file of ``role`` if it exists, else None."""
        path = self.file(role)
        return path if path.is_file() else None

    def is_run(self) -> bool:
        return any(self.file(r).is_file() for r in RUN_MARKERS)

    def aside_path(self) -> Path:
        """Where ``move_aside`` puts this run: ``<dir>.old-<YYYYmmdd-HHMMSS>`` (``-2``, ``-3`` ... when taken)."""
        import time

        base = self.path.with_name(f"{self.path.name}.old-{time.strftime('%Y%m%d-%H%M%S')}")
        path, n = base, 1
        while path.exists():
            n += 1
            path = base.with_name(f"{base.name}-{n}")
        return path

    def move_aside(self) -> Path:
        """Rename the whole run directory to ``aside_path()`` (nothing is deleted); returns the new path."""
        target = self.aside_path()
        self.path.rename(target)
        return target

    # --- folders and families of files
    @property
    def retrain_dir(self) -> Path:
        return self.path / "retrain"

    def retrain_run(self, label: str) -> Path:
        """The run directory of a strategy trained alone under ``label``."""
        return self.retrain_dir / label

    def seed_run(self, i: int) -> Path:
        """The run directory of template seed number ``i`` (``run.seeds > 1``): ``seed<i>/``."""
        return self.path / f"seed{int(i)}"

    @property
    def derived_dir(self) -> Path:
        return self.path / "derived"

    def bench_scores(self, table: str) -> Path:
        """The template's scores of the strategies of ground-truth table ``table`` (``bench score``)."""
        return self.path / bench_scores_name(table)

    def derived(self, backbone: str, rule: str) -> Path:
        return self.derived_dir / f"{backbone}_{rule}.json"

    @property
    def agreement_dir(self) -> Path:
        """Strategy files of the agreement stage's picks."""
        return self.path / "validate"

    @property
    def tensorboard_dir(self) -> Path:
        return self.path / "tensorboard"

    def shared_probe(self) -> Path:
        """The file rank 0 writes at start-up so that every rank can show it sees run.out (torchrun)."""
        return self.path / ".shared_probe"

    def weights_rank(self, rank: int) -> Path:
        """sha1 of the weights rank ``rank`` ended with (multi-process training)."""
        return self.path / f"weights_rank{rank}.sha1"

    def shard_rows(self, i: int, n: int) -> Path:
        return self.path / f"strategies.shard{i}of{n}.csv"

    def shard_done(self, i: int, n: int) -> Path:
        return self.path / f"strategies.shard{i}of{n}.done"

    def shard_counts(self) -> list[int]:
        """Shard counts ``n`` of which some shard has finished."""
        return sorted(
            {int(p.name.split("of")[1].split(".")[0]) for p in self.path.glob("strategies.shard*of*.done")}
        )

    def data_files(self) -> list[Path]:
        """The data files (json, csv, yaml) at the top of the run directory, by name."""
        return sorted(
            f
            for f in self.path.iterdir()
            if f.is_file() and f.suffix in DATA_SUFFIXES and not f.name.startswith(".")
        )


BENCH_FILES: dict[str, str] = {
    "rows": "rows.csv",  # one row per (strategy, seed) trained alone, appended as each finishes
    "build": "build.json",  # the spec, the data id and the command of the build
    "table": "table.csv",  # the finished table, in design order
    "table_meta": "table.json",  # what produced it: spec, data id, command, wall time
}


class BenchDir(_Folder):
    """The files of one ground-truth table build (``fusion3d bench build NAME --out DIR``: ``DIR/NAME``)."""

    ROLES = BENCH_FILES
    WHAT = "bench build directory"

    @property
    def data_dir(self) -> Path:
        """The synthetic dataset of the table."""
        return self.path / "data"

    def row_run(self, key: str) -> Path:
        """The run directory of one (strategy, seed) row."""
        return self.path / "runs" / key

    def row_log(self, key: str) -> Path:
        return self.path / "logs" / f"{key}.log"


def bench_scores_name(table: str) -> str:
    """File name, inside a run directory, of the template's scores of a table's strategies."""
    return f"bench_{table}_scores.csv"
