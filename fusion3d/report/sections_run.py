"""Sections of a run report about the run itself: the header and summary, the config, the training
curves, and the learned drop probabilities."""

from __future__ import annotations

import math

from fusion3d.analysis.verdicts import COLLAPSE_ADVICE, path_preference
from fusion3d.report import fmt
from fusion3d.report.document import DATA_FREE, Code, Img, Missing, Para, Section, Table
from fusion3d.report.figures import drop_probs_png, training_png
from fusion3d.report.status import _commands, _stages
from fusion3d.report.verdicts import headline
from fusion3d.run.io import RunData
from fusion3d.run.layout import FILES


def _meta(run: RunData) -> list[str]:
    """The lines under the title: run directory, dataset, model, when written."""
    meta = [f"run directory {fmt.code(run.dir)}"]
    data_format, root = run.cfg("data", "format"), run.cfg("data", "root")
    if root or data_format:
        ds = f"dataset {fmt.code(root)} (format {data_format or '?'}"
        if run.start:
            ds += (
                f"; {run.start.get('classes', '?')} classes, {run.start.get('train_videos', '?')} training "
                f"videos, {run.start.get('selection_videos', '?')} selection videos"
            )
        meta.append(ds + ")")
    preset = run.cfg("model", "name")
    if preset:
        m = f"model preset {fmt.code(preset)}"
        p, _, _ = run.drop_probs()
        extra = []
        if p is not None:
            extra.append(f"{len(p)} slots")
        if run.start and fmt.isnum(run.start.get("params")):
            extra.append(f"{int(run.start['params']):,} parameters")
        if run.cfg("model", "strategy"):
            extra.append(f"fixed strategy {fmt.code(run.cfg('model', 'strategy'))}")
        meta.append(m + (f" ({', '.join(extra)})" if extra else ""))
    stamps = [f.stat().st_mtime for f in run.files.data_files()]
    meta.append(f"run last written {fmt.when(max(stamps) if stamps else None)}; report generated {fmt.now()}")
    return meta


def _section_header(run: RunData) -> tuple[list[str], Section]:
    meta = _meta(run)
    sec = Section("summary", "Summary", [Para(" ".join(headline(run)), "headline")])
    sec.blocks.append(_stages(run))
    for prob in run.problems:
        sec.blocks.append(Para(f"**Unreadable file**: {prob}", "missing"))
    return meta, sec


def _section_config(run: RunData) -> Section:
    sec = Section("config", "Config")
    if run.config_text is None:
        sec.blocks.append(
            Missing(
                f"{FILES['config']} is missing (it is written by the first epoch of training).",
                _commands(run)["train"],
            )
        )
    else:
        sec.blocks.append(
            Code(run.config_text.rstrip("\n"), f"{FILES['config']} (the resolved config of this run)", "yaml")
        )
    return sec


# ----------------------------------------------------------------------------- training


def _val_labels(run: RunData) -> list[str]:
    seen = []
    for r in run.epochs:
        if "val_top1" in r:
            lab = (
                f"{r.get('phase', '?')} epochs: {r.get('val_measure', 'measure not recorded')}; "
                f"{r.get('val_views', 'views not recorded')}"
            )
            if lab not in seen:
                seen.append(lab)
    return seen


TRAINING_HEADER = [
    "epoch",
    "phase",
    "loss",
    "ce",
    "reg",
    "train acc (training batches)",
    "val top-1",
    "val top-5",
    "val single-strategy mean",
    "validation measured on",
]


def _last_epochs_table(run: RunData) -> Table | None:
    """The last epoch of each phase."""
    rows = []
    last_of = {}
    for r in run.epochs:
        last_of[r.get("phase")] = r
    for phase, r in last_of.items():
        rows.append(
            [
                str(r["epoch"]),
                str(phase),
                fmt.num(r.get("loss"), 3),
                fmt.num(r.get("ce"), 3),
                fmt.num(r.get("reg"), 4),
                fmt.pct(r.get("train_acc")),
                fmt.pct(r.get("val_top1")),
                fmt.pct(r.get("val_top5")),
                fmt.pct(r.get("val_single_mean")),
                f"{r.get('val_measure', '–')}; {r.get('val_views', '–')}" if "val_top1" in r else "–",
            ]
        )
    return Table(TRAINING_HEADER, rows, "Last epoch of each phase.") if rows else None


def _data_problems(run: RunData) -> Para | None:
    """Videos excluded, missing or failed to decode during training (None when there is none)."""
    if not run.start:
        return None
    s = run.start
    bad = [
        f"{k.replace('_', ' ')}: {s[k]}"
        for k in ("excluded_train_videos", "missing_train_videos", "excluded_val_videos")
        if s.get(k)
    ]
    failed = (run.summary or {}).get("failed_videos") or []
    if not (bad or failed):
        return None
    return Para(
        "Data problems: "
        + "; ".join(bad + ([f"{len(failed)} video(s) failed to decode during training"] if failed else []))
    )


def _section_training(run: RunData) -> Section:
    sec = Section("training", "Training curves")
    c = _commands(run)
    if run.metrics is None:
        sec.blocks.append(Missing(f"{FILES['metrics']} is missing: training has not started.", c["train"]))
        return sec
    total = run.total_epochs
    state = "complete" if run.trained else f"**not finished** (resume with {fmt.code(c['train'])})"
    sec.blocks.append(
        Para(
            f"{run.epochs_done} of {total or '?'} epochs ({run.warmup_epochs} warm-up with every "
            f"path on, then v-DropPath), training {state}."
        )
    )
    for w in (run.summary or {}).get("warnings") or []:  # the template collapsed (train's own check)
        sec.blocks.append(Para(f"**Warning: {w}.** {COLLAPSE_ADVICE[0].upper()}{COLLAPSE_ADVICE[1:]}."))
    png = training_png(run)
    if png is None:
        sec.blocks.append(Para(f"{FILES['metrics']} holds no step or epoch record yet.", "missing"))
        return sec
    labels = _val_labels(run)
    cap = (
        "Loss, cross-entropy, regulariser and training accuracy are means over this epoch's training "
        "batches (random crops, gates as trained). Validation top-1 measured on: " + " | ".join(labels)
        if labels
        else "No validation record yet."
    )
    sec.blocks.append(Img(png, "training curves", cap))
    for block in (_last_epochs_table(run), _data_problems(run)):
        if block is not None:
            sec.blocks.append(block)
    return sec


# ----------------------------------------------------------------------------- drop probabilities

DROP_HEADER = [
    "slot",
    "p_S",
    "p_T",
    "keep S (1-p)",
    "keep T (1-p)",
    "keep S (1-sqrt p, paper)",
    "keep T (1-sqrt p, paper)",
    "higher drop",
]


def _drop_table(p, names: list[str], src: str) -> Table:
    """Final drop probabilities and keep probabilities per slot, with their means."""
    rows = []
    for name, (ps, pt) in zip(names, p):
        higher = "S" if ps > pt else ("T" if pt > ps else "=")
        rows.append(
            [
                fmt.code(name),
                fmt.prob(ps),
                fmt.prob(pt),
                fmt.prob(1 - ps),
                fmt.prob(1 - pt),
                fmt.prob(1 - math.sqrt(ps)),
                fmt.prob(1 - math.sqrt(pt)),
                higher,
            ]
        )
    s = path_preference(p)
    rows.append(
        [
            "**mean**",
            fmt.prob(s["mean_s"]),
            fmt.prob(s["mean_t"]),
            fmt.prob(1 - s["mean_s"]),
            fmt.prob(1 - s["mean_t"]),
            "",
            "",
            f"S in {s['s_gt']} of {s['n']}",
        ]
    )
    return Table(DROP_HEADER, rows, f"Final drop probabilities from {src}; {DATA_FREE}.")


def _section_drop_probs(run: RunData) -> Section:
    sec = Section("drop-probs", "Drop probabilities")
    c = _commands(run)
    p, names, src = run.drop_probs()
    if not run.vdroppath_reached():
        sec.blocks.append(
            Missing(
                f"The v-DropPath phase has not started ({run.epochs_done} epochs done, warm-up is "
                f"{run.warmup_epochs}): no drop probability has been learned yet.",
                c["train"],
            )
        )
        return sec
    png = drop_probs_png(run)
    if png is not None:
        sec.blocks.append(
            Img(
                png,
                "drop probabilities per epoch",
                f"Drop probability of each path per epoch ({DATA_FREE}); S paths solid (left), T paths "
                "dashed (right). They stay at their initial value during warm-up (gates off).",
            )
        )
    if p is not None:
        sec.blocks.append(_drop_table(p, names, src))
    return sec
