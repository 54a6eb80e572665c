"""Where a run stands: the command of each stage, the strategies trained alone (split into the
Table-2 analog, other strategies, other backbones), and the pipeline status table."""

from __future__ import annotations

import re

import pandas as pd

from fusion3d.models.units import DESIGN_UNITS
from fusion3d.report import fmt
from fusion3d.report.document import Table
from fusion3d.run.io import RunData
from fusion3d.run.layout import FILES

# The strategies of the Table-2 analog, in table order: one per design unit, and Opt.
RETRAIN_LABELS = (*DESIGN_UNITS, "opt")


def _commands(run: RunData) -> dict[str, str]:
    d = str(run.dir)
    return {
        "train": fmt.cmd("fusion3d", "train", f"{d}/{FILES['config']}", f"run.out={d}", "--resume", "auto"),
        "sample": fmt.cmd("fusion3d", "sample", d, "--num", "100"),
        "analyze": fmt.cmd("fusion3d", "analyze", d),
        "retrain": fmt.cmd("fusion3d", "retrain", d, "--strategy", "LABEL"),
        "validate": fmt.cmd("fusion3d", "validate", d),
        "report": fmt.cmd("fusion3d", "report", d),
    }


def _chain(run: RunData, stage: str) -> str:
    """The command for ``stage``, preceded by the commands of the earlier stages that have not run."""
    c = _commands(run)
    todo = [] if run.trained else ["train"]
    if stage == "analyze" and (run.strategies is None or run.strategies.empty):
        todo.append("sample")
    return " && ".join(c[k] for k in [*todo, stage])


def _retrain_cmd(run: RunData, label: str) -> str:
    return fmt.cmd("fusion3d", "retrain", str(run.dir), "--strategy", label)


def _is_table2_label(label: str) -> bool:
    return label in RETRAIN_LABELS or bool(re.fullmatch(r"top\d+", label))


def base_labels(t: pd.DataFrame | None) -> list[str]:
    """The labels of a retrain table without their seed suffixes, once each, in order."""
    if t is None:
        return []
    col = t["base_label"] if "base_label" in t else t["label"]
    return list(dict.fromkeys(col.astype(str)))


def retrain_parts(run: RunData) -> tuple[pd.DataFrame | None, pd.DataFrame | None, pd.DataFrame | None]:
    """The retrain table split in three: the Table-2 analog (S, ST, S+ST, opt, topK of the run's own
    network), other strategies of the run's network (``fusion3d validate`` picks, strategy files), and
    other backbones trained with the run's recipe (``model`` column differs: the Table-6 analog). A
    label's rows of every training seed go to the same part (by ``base_label``)."""
    t = run.retrain
    if t is None or t.empty:
        return None, None, None
    own = run.cfg("model", "name")
    if "model" in t and own:
        same = t["model"].isna() | (t["model"].astype(str) == str(own))
    else:
        same = pd.Series(True, index=t.index)
    labels = t["base_label"] if "base_label" in t else t["label"]
    table2 = same & labels.astype(str).map(_is_table2_label)
    parts = (t[table2], t[same & ~table2], t[~same])
    return tuple(x if len(x) else None for x in parts)


def _missing_retrain(run: RunData) -> list[str]:
    have = set(base_labels(retrain_parts(run)[0]))
    return [lab for lab in RETRAIN_LABELS if lab not in have]


# ----------------------------------------------------------------------------- the status table


def _train_row(run: RunData, c: dict[str, str]) -> list[str]:
    total = run.total_epochs
    if run.trained:
        return ["train", f"complete ({run.epochs_done} of {total} epochs)", ""]
    if run.metrics is not None or run.summary is not None:
        why = (
            f" (every epoch is logged but {FILES['summary']} is missing: the run stopped before writing it)"
            if run.summary is None and total and run.epochs_done >= total
            else ""
        )
        return [
            "train",
            f"**not finished**: {run.epochs_done} of {total or '?'} epochs done{why}",
            fmt.code(c["train"]),
        ]
    return ["train", "**not run**", fmt.code(c["train"])]


def _sample_row(run: RunData, c: dict[str, str], n: int) -> list[str]:
    if n == 0:
        return ["sample", "**not run**", fmt.code(c["sample"])]
    if run.sample is None or not run.sample.get("complete", True):
        planned = (run.sample or {}).get("planned", "?")
        return [
            "sample",
            f"**not finished**: {n} of {planned} strategies scored",
            fmt.code(fmt.cmd("fusion3d", "sample", str(run.dir))),
        ]
    return ["sample", f"{n} strategies scored", ""]


def _analyze_row(run: RunData, c: dict[str, str], n: int) -> list[str]:
    if run.analysis is None:
        return ["analyze", "**not run**", fmt.code(_chain(run, "analyze"))]
    if run.analysis_stale():
        return [
            "analyze",
            f"**out of date** (it saw {run.analysis.get('strategies')} strategies, "
            f"{FILES['strategies']} holds {n})",
            fmt.code(c["analyze"]),
        ]
    return ["analyze", "done", ""]


def _retrain_row(run: RunData) -> list[str]:
    missing = _missing_retrain(run)
    t2, other, backbones = retrain_parts(run)
    done = base_labels(t2)
    if not done:
        row = [
            "retrain",
            "**not run**",
            "; ".join(fmt.code(_retrain_cmd(run, lab)) for lab in RETRAIN_LABELS),
        ]
    else:
        status = "trained alone: " + ", ".join(sorted(done, key=lambda x: (RETRAIN_LABELS + (x,)).index(x)))
        row = [
            "retrain",
            status + (f"; **missing** {', '.join(missing)}" if missing else ""),
            "; ".join(fmt.code(_retrain_cmd(run, lab)) for lab in missing),
        ]
    extra = [
        f"{len(base_labels(x))} {what}"
        for x, what in ((other, "other strategies"), (backbones, "backbone runs"))
        if x is not None
    ]
    if extra:
        row[1] += f" (and {', '.join(extra)} in {FILES['retrain']})"
    return row


def _stages(run: RunData) -> Table:
    """The pipeline status table: what ran, what did not, and the command for it."""
    c = _commands(run)
    rows = [_train_row(run, c)]
    if run.is_fixed:
        return Table(
            ["stage", "status", "command"], rows, "A strategy trained alone: the later stages do not apply."
        )
    n = 0 if run.strategies is None else len(run.strategies)
    rows += [_sample_row(run, c, n), _analyze_row(run, c, n), _retrain_row(run)]
    rows.append(
        [
            "validate",
            "done" if run.validate else "**not run**",
            "" if run.validate else fmt.code(c["validate"]),
        ]
    )
    return Table(["stage", "status", "command"], rows)
