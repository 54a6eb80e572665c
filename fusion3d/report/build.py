"""Building reports: the document of a run from its sections, and the files written for a run
directory, for a demo folder, or for whichever of the two a path is."""

from __future__ import annotations

from pathlib import Path

from fusion3d.report.demo import DEMO_RUNS, demo_document
from fusion3d.report.document import Document
from fusion3d.report.render import write
from fusion3d.report.sections_analysis import (
    _section_depth,
    _section_marginals,
    _section_sampling,
    section_ablation,
)
from fusion3d.report.sections_bench import section_bench
from fusion3d.report.sections_retrain import _section_diagnostics, _section_table2, _section_validate
from fusion3d.report.sections_run import (
    _section_config,
    _section_drop_probs,
    _section_header,
    _section_training,
)
from fusion3d.report.sections_trust import section_seeds, section_trust
from fusion3d.run.io import RunData
from fusion3d.run.layout import RunDir


def run_document(run: RunData) -> Document:
    meta, summary = _section_header(run)
    sections = [summary, _section_config(run), _section_training(run)]
    if run.is_fixed:
        return Document(f"fusion3d report: {run.name}", meta, sections)
    sections += [_section_drop_probs(run), _section_marginals(run)]
    ablation = section_ablation(run)
    if ablation is not None:
        sections.append(ablation)
    sections.append(section_seeds(run))
    depth = _section_depth(run)
    if depth is not None:
        sections.append(depth)
    sections += [_section_sampling(run), section_trust(run), _section_table2(run), _section_validate(run)]
    bench = section_bench(run)
    if bench is not None:
        sections.append(bench)
    diag = _section_diagnostics(run)
    if diag is not None:
        sections.append(diag)
    return Document(f"fusion3d report: {run.name}", meta, sections)


def build_report(run_dir: str | Path) -> tuple[Path, Path]:
    """Write the run's report page and Markdown (plus the figures they draw); returns both paths.

    Raises FileNotFoundError when ``run_dir`` does not exist or holds no file of a training run."""
    run = RunData(run_dir)
    return write(run_document(run), run.dir)


def build_demo_report(demo_dir: str | Path) -> Path:
    """Write the demo page and its Markdown into ``demo_dir`` (and each run's own report); returns the
    page's path.

    ``demo_dir`` is ``fusion3d demo``'s output folder: ``motion/`` and ``appearance/`` run directories
    and the demo's timings. Raises FileNotFoundError when the folder does not exist."""
    demo_dir = Path(demo_dir)
    if not demo_dir.is_dir():
        raise FileNotFoundError(f"demo directory {demo_dir} does not exist")
    runs: dict[str, RunData] = {}
    absent = []
    for kind in DEMO_RUNS:
        try:
            runs[kind] = RunData(demo_dir / kind)
        except FileNotFoundError:
            absent.append(kind)
    for run in runs.values():
        build_report(run.dir)
    return write(demo_document(demo_dir, runs, absent), demo_dir)[0]


def is_demo_dir(path: Path) -> bool:
    """A demo folder: it holds the demo's timings, or a ``motion/`` and an ``appearance/`` run."""
    return RunDir(path).demo.is_file() or all(RunDir(path / k).config.is_file() for k in DEMO_RUNS)


def build(path: str | Path) -> Path:
    """The report of ``path``: a demo folder (the demo's timings, or ``motion/`` and ``appearance/`` run
    directories) gets ``build_demo_report``, anything else ``build_report``; returns the page's path."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"run directory {path} does not exist")
    if is_demo_dir(path):
        return build_demo_report(path)
    return build_report(path)[0]
