"""``fusion3d report RUN``: one readable page per run directory, and one for the demo.

``build_report(run_dir)`` reads whatever the stages of a run have written (``fusion3d.run.io``; the
run-directory table in the README) and writes two files into the run directory:

- the page (``RunDir.report_html``): one self-contained HTML file (inline CSS, every figure embedded
  as a base64 PNG data URI, no script, no external asset) that can be mailed or archived alone;
- the Markdown (``RunDir.report_md``): the same content, referring to the PNG files next to it by
  relative path.

It also draws the training curves (loss, cross-entropy, regulariser, training and validation accuracy
per epoch, warm-up and v-DropPath phases shaded) and the drop probability of every path per epoch from
the metrics log, and, for a template trained with depth gates (``model.depth_gate``), P(slot kept) per
slot (CKA's redundant runs shaded) for the "Depth redundancy" section. A section appears only when
its inputs exist; a stage that has not run is named with the command that runs it. Every accuracy is
printed next to the split and views it was measured on, copied verbatim from the files.

``build_demo_report(demo_dir)`` does the same for ``fusion3d demo``'s output folder (``motion/``,
``appearance/`` and the demo's timings): its first section tells the story of the two datasets in
numbers, with the two Figure-4 plots side by side; the run reports are built and linked below it.

Modules: ``document`` (the document model and formatting), ``render`` (HTML and Markdown),
``figures``, ``status`` (stage commands and the status table), ``verdicts`` (numbers in words),
``sections_run`` / ``sections_analysis`` / ``sections_retrain`` (the sections of a run report),
``demo`` (the demo page) and ``build`` (assembling and writing). Only numpy, pandas, matplotlib and
pyyaml are used (no torch): a report is quick to rebuild.
"""

from __future__ import annotations

from fusion3d.report.build import build, build_demo_report, build_report, run_document
from fusion3d.report.status import retrain_parts
from fusion3d.report.verdicts import _ps_pt, _story_sentence, headline
from fusion3d.run.io import RunData

__all__ = [
    "RunData",
    "_ps_pt",
    "_story_sentence",
    "build",
    "build_demo_report",
    "build_report",
    "headline",
    "retrain_parts",
    "run_document",
]
