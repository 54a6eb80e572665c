"""``fusion3d report RUN``: one readable page per run directory, and one for the demo.

``build_report(run_dir)`` reads whatever the stages of a run have written (see the run-directory
table in the README) and writes two files into the run directory:

- ``report.html``: one self-contained page (inline CSS, every figure embedded as a base64 PNG data
  URI, no script, no external asset) that can be mailed or archived alone;
- ``report.md``: the same content in Markdown, referring to the PNG files next to it by relative path.

It also draws ``training_curves.png`` (loss, cross-entropy, regulariser, training and validation
accuracy per epoch, warm-up and v-DropPath phases shaded) and ``drop_probs.png`` (the drop
probability of every path per epoch) from ``metrics.jsonl``, and, for a template trained with depth
gates (``model.depth_gate``; ``depth_drop_probs`` in summary.json), ``depth_keep.png`` (P(slot kept)
per slot, CKA's redundant runs shaded when cka.json exists) for the "Depth redundancy" section. A section appears only when its
inputs exist; a stage that has not run is named with the command that runs it. Every accuracy is
printed next to the split and views it was measured on, copied verbatim from the files
(``views`` in strategies.csv, ``measured_on`` in retrain.csv, ``val_views`` / ``val_measure`` in
metrics.jsonl, ``measured_on`` in validate.json).

``build_demo_report(demo_dir)`` does the same for ``fusion3d demo``'s output folder (``motion/``,
``appearance/``, ``demo.json``): its first section tells the story of the two datasets in numbers,
with the two Figure-4 plots side by side; the run reports are built and linked below it.

Only numpy, pandas, matplotlib and pyyaml are used (no torch): a report is quick to rebuild.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import json
import math
import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pandas as pd
import yaml

from fusion3d.marginals import DEPTH_PNG, depth_marginals, plot_depth
from fusion3d.utils import atomic_write_bytes, atomic_write_text

REPORT_HTML = "report.html"
REPORT_MD = "report.md"
TRAINING_PNG = "training_curves.png"
DROP_PROBS_PNG = "drop_probs.png"
CANONICAL = (("canonical_S", "all-S"), ("canonical_ST", "all-ST"), ("canonical_S+ST", "all-S+ST"))
RETRAIN_LABELS = ("S", "ST", "S+ST", "opt")
SCORE_LABELS = {
    "top1_after": "top-1 after BatchNorm recalibration",
    "top1_before": "top-1 with the template's BatchNorm statistics (no recalibration)",
}
DATA_FREE = "learned parameters of the template, not measured on data"
# A path type is "preferred" when it is dropped less in most slots AND the mean drop probabilities differ
# by at least this much (absolute, and relative to their average): tiny differences are not a preference.
PREF_MIN_DIFF, PREF_REL_DIFF = 0.005, 0.10
# Drop probabilities that moved less than this from their initial value have barely been learned.
BARELY_MOVED = 0.05


# ----------------------------------------------------------------------------- document model


@dataclass
class Para:
    """A paragraph; inline markup: `code` and **bold**."""

    text: str
    cls: str = ""


@dataclass
class Items:
    items: list[str]


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]
    caption: str = ""


@dataclass
class Img:
    path: Path
    alt: str
    caption: str = ""


@dataclass
class Figures:
    """Figures side by side (a row in HTML, a one-row table in Markdown)."""

    images: list[Img]
    titles: list[str] = field(default_factory=list)


@dataclass
class Code:
    text: str
    summary: str
    lang: str = ""


@dataclass
class Missing:
    """A stage that has not produced this section's input, and the command that runs it."""

    text: str
    command: str = ""


@dataclass
class Links:
    items: list[tuple[str, str, str]]  # (label, html href, markdown href)


@dataclass
class Section:
    id: str
    title: str
    blocks: list = field(default_factory=list)


@dataclass
class Document:
    title: str
    meta: list[str]
    sections: list[Section]


# ----------------------------------------------------------------------------- formatting


def _isnum(v) -> bool:
    return (
        isinstance(v, (int, float, np.integer, np.floating))
        and not isinstance(v, bool)
        and math.isfinite(float(v))
    )


def _f(v, digits: int = 1, suffix: str = "") -> str:
    return f"{float(v):.{digits}f}{suffix}" if _isnum(v) else "–"


def _pct(v) -> str:
    return _f(v, 1, "%")


def _prob(v) -> str:
    return _f(v, 3)


def _macs(v) -> str:
    if not _isnum(v):
        return "–"
    v = float(v)
    for scale, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if v >= scale:
            return f"{v / scale:.2f} {unit}"
    return f"{v:.0f}"


def _params(v) -> str:
    if not _isnum(v):
        return "–"
    v = float(v)
    if v >= 1e6:
        return f"{v / 1e6:.2f}M"
    if v >= 1e3:
        return f"{v / 1e3:.1f}k"
    return f"{v:.0f}"


def _code(s) -> str:
    s = str(s).replace("`", "'")
    return f"`{s}`"


def _cmd(*parts) -> str:
    return " ".join(shlex.quote(str(p)) for p in parts)


def _when(ts: float | None) -> str:
    return _dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M") if ts else "–"


def _score_label(col: str) -> str:
    return SCORE_LABELS.get(col, col)


# ----------------------------------------------------------------------------- reading a run


def _read_json(path: Path, problems: list[str]):
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        problems.append(f"{path.name} could not be read ({type(e).__name__}: {e})")
        return None


def _read_csv(path: Path, problems: list[str], **kw) -> pd.DataFrame | None:
    """A CSV file without its torn last line (a writer killed mid-line), or None."""
    if not path.is_file():
        return None
    try:
        data = path.read_bytes()
        if data and not data.endswith(b"\n"):
            data = data[: data.rfind(b"\n") + 1]
        if not data.strip():
            return None
        return pd.read_csv(io.BytesIO(data), **kw)
    except (OSError, ValueError) as e:
        problems.append(f"{path.name} could not be read ({type(e).__name__}: {e})")
        return None


def _read_metrics(path: Path) -> list[dict] | None:
    if not path.is_file():
        return None
    out = []
    for line in path.read_text(errors="replace").splitlines():
        if line.strip():
            try:
                rec = json.loads(line)
            except ValueError:  # a torn last line
                continue
            if isinstance(rec, dict):
                out.append(rec)
    return out


class RunData:
    """Everything the stages wrote into one run directory (``None`` for what is not there)."""

    def __init__(self, run_dir: str | Path):
        self.dir = Path(run_dir)
        if not self.dir.is_dir():
            raise FileNotFoundError(f"run directory {self.dir} does not exist")
        d = self.dir
        if not any((d / n).is_file() for n in ("config.yaml", "metrics.jsonl", "summary.json")):
            raise FileNotFoundError(
                f"{d} is not a run directory: it has no config.yaml, metrics.jsonl or "
                f"summary.json (train first: `fusion3d train CONFIG run.out={d}`)"
            )
        self.problems: list[str] = []
        self.config_text = (d / "config.yaml").read_text() if (d / "config.yaml").is_file() else None
        self.config: dict = {}
        if self.config_text:
            try:
                self.config = yaml.safe_load(self.config_text) or {}
            except yaml.YAMLError as e:
                self.problems.append(f"config.yaml could not be parsed ({e})")
        self.metrics = _read_metrics(d / "metrics.jsonl")
        recs = self.metrics or []
        self.start = next((r for r in recs if r.get("kind") == "start"), None)
        by_epoch = {}
        for r in recs:
            if r.get("kind") == "epoch" and _isnum(r.get("epoch")):
                by_epoch[int(r["epoch"])] = r  # a resumed run may repeat an epoch: the last one counts
        self.epochs = [by_epoch[e] for e in sorted(by_epoch)]
        self.steps = [r for r in recs if r.get("kind") == "step"]
        self.summary = _read_json(d / "summary.json", self.problems)
        self.sample = _read_json(d / "sample.json", self.problems)
        self.analysis = _read_json(d / "analysis.json", self.problems)
        self.opt_json = _read_json(d / "opt_strategy.json", self.problems)
        self.validate = _read_json(d / "validate.json", self.problems)
        self.cka = _read_json(d / "cka.json", self.problems)
        self.strategies = _read_csv(d / "strategies.csv", self.problems, dtype={"id": str, "strategy": str})
        self.marginals = _read_csv(d / "marginals.csv", self.problems)
        self.top = _read_csv(d / "top_strategies.csv", self.problems, dtype={"id": str, "strategy": str})
        self.retrain = _read_csv(
            d / "retrain.csv", self.problems, dtype={"id": str, "strategy": str, "label": str}
        )
        for attr, fname, need in (
            ("strategies", "strategies.csv", {"strategy", "id", "source", "macs", "top1_before"}),
            ("top", "top_strategies.csv", {"strategy"}),
            ("marginals", "marginals.csv", {"slot"}),
            ("retrain", "retrain.csv", {"label", "strategy"}),
        ):
            df = getattr(self, attr)
            if df is not None and not need <= set(df.columns):
                self.problems.append(f"{fname} lacks the columns {sorted(need - set(df.columns))}: ignored")
                setattr(self, attr, None)
        for attr in ("summary", "sample", "analysis", "opt_json", "validate", "cka"):
            if getattr(self, attr) is not None and not isinstance(getattr(self, attr), dict):
                self.problems.append(
                    f"{attr.replace('opt_json', 'opt_strategy')}.json is not a JSON object: ignored"
                )
                setattr(self, attr, None)
        self.derived = []
        for p in sorted((d / "derived").glob("*.json")) if (d / "derived").is_dir() else []:
            v = _read_json(p, self.problems)
            if isinstance(v, dict):
                self.derived.append((p, v))

    # --- configuration
    def cfg(self, *keys, default=None):
        v = self.config
        for k in keys:
            if not isinstance(v, dict) or k not in v:
                return default
            v = v[k]
        return v

    @property
    def name(self) -> str:
        return self.dir.resolve().name

    @property
    def warmup_epochs(self) -> int | None:
        w = self.cfg("train", "warmup_epochs")
        return int(w) if _isnum(w) else None

    @property
    def total_epochs(self) -> int | None:
        if self.summary and _isnum(self.summary.get("total_epochs")):
            return int(self.summary["total_epochs"])
        w, e = self.cfg("train", "warmup_epochs"), self.cfg("train", "epochs")
        return int(w) + int(e) if _isnum(w) and _isnum(e) else None

    @property
    def epochs_done(self) -> int:
        if self.summary and _isnum(self.summary.get("epochs_done")):
            return int(self.summary["epochs_done"])
        return int(self.epochs[-1]["epoch"]) if self.epochs else 0

    @property
    def trained(self) -> bool:
        return bool(self.summary and self.summary.get("complete"))

    @property
    def is_fixed(self) -> bool:
        """A strategy trained alone (``fusion3d retrain``): no drop probabilities are learned."""
        return bool(self.cfg("model", "strategy")) or any(r.get("phase") == "fixed" for r in self.epochs)

    # --- drop probabilities
    def drop_probs(self) -> tuple[np.ndarray | None, list[str], str]:
        """(slots x 2 array of p_S, p_T; slot names; where they come from)."""
        p, names, src = None, [], ""
        if self.summary and self.summary.get("drop_probs"):
            p = np.asarray(self.summary["drop_probs"], dtype=float)
            names = list(self.summary.get("slot_names") or [])
            src = f"summary.json (after epoch {self.epochs_done} of {self.total_epochs or '?'})"
        else:
            last = next((r for r in reversed(self.epochs) if r.get("drop_probs")), None)
            if last is not None:
                p = np.asarray(last["drop_probs"], dtype=float)
                src = f"metrics.jsonl, last epoch record (epoch {last['epoch']}; training not finished)"
        if p is not None and len(names) != len(p):
            names = self.slot_names(len(p))
        return p, names, src

    def depth_probs(self) -> tuple[np.ndarray | None, str]:
        """(per-slot depth-gate drop probabilities p_D, where they come from); None without depth gates."""
        if self.summary and self.summary.get("depth_drop_probs"):
            src = f"summary.json (after epoch {self.epochs_done} of {self.total_epochs or '?'})"
            return np.asarray(self.summary["depth_drop_probs"], dtype=float).reshape(-1), src
        last = next((r for r in reversed(self.epochs) if r.get("depth_drop_probs")), None)
        if last is not None:
            src = f"metrics.jsonl, last epoch record (epoch {last['epoch']}; training not finished)"
            return np.asarray(last["depth_drop_probs"], dtype=float).reshape(-1), src
        return None, ""

    def cka_runs(self) -> list[list[str]] | None:
        """cka.json's redundant runs as lists of slot names (both forms ``_cka_run_text`` reads); None
        without cka.json."""
        if not self.cka:
            return None
        out = []
        for r in self.cka.get("redundant_runs") or []:
            if isinstance(r, dict):
                out.append([str(x) for x in (r.get("slots") or [r.get("first"), r.get("last")]) if x is not None])
            elif isinstance(r, (list, tuple)):
                out.append([str(x) for x in r])
            else:
                out.append([str(r)])
        return out

    def slot_names(self, n: int) -> list[str]:
        if self.summary and len(self.summary.get("slot_names") or []) == n:
            return list(self.summary["slot_names"])
        if self.marginals is not None and len(self.marginals) == n and "slot" in self.marginals:
            return [str(s) for s in self.marginals["slot"]]
        if self.opt_json and len(self.opt_json.get("slots") or []) == n:
            return list(self.opt_json["slots"])
        return [f"slot {i}" for i in range(n)]

    def vdroppath_reached(self) -> bool:
        return any(r.get("phase") == "vdroppath" for r in self.epochs)

    # --- strategies
    @property
    def score_col(self) -> str:
        if self.analysis and self.analysis.get("score_column"):
            return self.analysis["score_column"]
        if self.sample and self.sample.get("score_column"):
            return self.sample["score_column"]
        df = self.strategies
        if df is not None and "top1_after" in df and df["top1_after"].notna().any():
            return "top1_after"
        return "top1_before"

    def views(self) -> str:
        vals = []
        if self.strategies is not None and "views" in self.strategies:
            vals = [str(v) for v in self.strategies["views"].dropna().unique()]
        if not vals and self.sample:
            v = (self.sample.get("measurement") or {}).get("views")
            vals = [v] if v else []
        return "; ".join(vals) if vals else "views not recorded"

    def selection_videos(self) -> int | None:
        n = ((self.sample or {}).get("measurement") or {}).get("selection_videos")
        if _isnum(n):
            return int(n)
        m = re.search(r"(\d+) videos", self.views())
        return int(m.group(1)) if m else None

    def ranked(self) -> pd.DataFrame | None:
        """Scored strategies, best first (score, then fewer MACs, then id: analyze's order)."""
        df = self.strategies
        if df is None or df.empty:
            return None
        col = self.score_col
        return (
            df.assign(_s=df[col].fillna(-np.inf))
            .sort_values(["_s", "macs", "id"], ascending=[False, True, True], kind="stable")
            .drop(columns="_s")
        )

    def canonical(self) -> dict[str, dict]:
        """source -> row (dict) of the canonical strategies and the most probable one."""
        df = self.strategies
        out = {}
        if df is not None:
            for src in ("canonical_S", "canonical_ST", "canonical_S+ST", "most_probable"):
                rows = df[df["source"] == src]
                if len(rows):
                    out[src] = rows.iloc[0].to_dict()
        return out

    def opt(self) -> dict | None:
        """The Opt strategy's row: analysis.json's when analyze ran, else the best scored row."""
        if self.analysis and self.analysis.get("opt"):
            o = dict(self.analysis["opt"])
            if self.strategies is not None:
                rows = self.strategies[self.strategies["id"] == str(o.get("id"))]
                if len(rows):
                    o = {**rows.iloc[0].to_dict(), **o}
            return o
        r = self.ranked()
        return r.iloc[0].to_dict() if r is not None else None

    def analysis_stale(self) -> bool:
        return bool(
            self.analysis
            and self.strategies is not None
            and int(self.analysis.get("strategies", len(self.strategies))) != len(self.strategies)
        )


# ----------------------------------------------------------------------------- commands


def _commands(run: RunData) -> dict[str, str]:
    d = str(run.dir)
    return {
        "train": _cmd("fusion3d", "train", f"{d}/config.yaml", f"run.out={d}", "--resume", "auto"),
        "sample": _cmd("fusion3d", "sample", d, "--num", "100"),
        "analyze": _cmd("fusion3d", "analyze", d),
        "retrain": _cmd("fusion3d", "retrain", d, "--strategy", "LABEL"),
        "validate": _cmd("fusion3d", "validate", d),
        "report": _cmd("fusion3d", "report", d),
    }


def _chain(run: RunData, stage: str) -> str:
    """The command for ``stage``, preceded by the commands of the earlier stages that have not run."""
    c = _commands(run)
    todo = [] if run.trained else ["train"]
    if stage == "analyze" and (run.strategies is None or run.strategies.empty):
        todo.append("sample")
    return " && ".join(c[k] for k in [*todo, stage])


def _retrain_cmd(run: RunData, label: str) -> str:
    return _cmd("fusion3d", "retrain", str(run.dir), "--strategy", label)


def _is_table2_label(label: str) -> bool:
    return label in RETRAIN_LABELS or bool(re.fullmatch(r"top\d+", label))


def retrain_parts(run: RunData) -> tuple[pd.DataFrame | None, pd.DataFrame | None, pd.DataFrame | None]:
    """retrain.csv split in three: the Table-2 analog (S, ST, S+ST, opt, topK of the run's own network),
    other strategies of the run's network (``fusion3d validate`` picks, strategy files), and other
    backbones trained with the run's recipe (``model`` column differs: the Table-6 analog)."""
    t = run.retrain
    if t is None or t.empty:
        return None, None, None
    own = run.cfg("model", "name")
    if "model" in t and own:
        same = t["model"].isna() | (t["model"].astype(str) == str(own))
    else:
        same = pd.Series(True, index=t.index)
    table2 = same & t["label"].astype(str).map(_is_table2_label)
    parts = (t[table2], t[same & ~table2], t[~same])
    return tuple(x if len(x) else None for x in parts)


def _missing_retrain(run: RunData) -> list[str]:
    t2 = retrain_parts(run)[0]
    have = set() if t2 is None else {str(x) for x in t2["label"]}
    return [lab for lab in RETRAIN_LABELS if lab not in have]


def _stages(run: RunData) -> Table:
    """The pipeline status table: what ran, what did not, and the command for it."""
    c = _commands(run)
    rows = []
    total = run.total_epochs
    if run.trained:
        rows.append(["train", f"complete ({run.epochs_done} of {total} epochs)", ""])
    elif run.metrics is not None or run.summary is not None:
        why = (
            " (every epoch is logged but summary.json is missing: the run stopped before writing it)"
            if run.summary is None and total and run.epochs_done >= total
            else ""
        )
        rows.append(
            [
                "train",
                f"**not finished**: {run.epochs_done} of {total or '?'} epochs done{why}",
                _code(c["train"]),
            ]
        )
    else:
        rows.append(["train", "**not run**", _code(c["train"])])
    if run.is_fixed:
        return Table(
            ["stage", "status", "command"], rows, "A strategy trained alone: the later stages do not apply."
        )
    n = 0 if run.strategies is None else len(run.strategies)
    if n == 0:
        rows.append(["sample", "**not run**", _code(c["sample"])])
    elif run.sample is None or not run.sample.get("complete", True):
        planned = (run.sample or {}).get("planned", "?")
        rows.append(
            [
                "sample",
                f"**not finished**: {n} of {planned} strategies scored",
                _code(_cmd("fusion3d", "sample", str(run.dir))),
            ]
        )
    else:
        rows.append(["sample", f"{n} strategies scored", ""])
    if run.analysis is None:
        rows.append(["analyze", "**not run**", _code(_chain(run, "analyze"))])
    elif run.analysis_stale():
        rows.append(
            [
                "analyze",
                f"**out of date** (it saw {run.analysis.get('strategies')} strategies, "
                f"strategies.csv holds {n})",
                _code(c["analyze"]),
            ]
        )
    else:
        rows.append(["analyze", "done", ""])
    missing = _missing_retrain(run)
    t2, other, backbones = retrain_parts(run)
    done = [] if t2 is None else [str(x) for x in t2["label"]]
    if not done:
        rows.append(
            ["retrain", "**not run**", "; ".join(_code(_retrain_cmd(run, lab)) for lab in RETRAIN_LABELS)]
        )
    else:
        status = "trained alone: " + ", ".join(sorted(done, key=lambda x: (RETRAIN_LABELS + (x,)).index(x)))
        rows.append(
            [
                "retrain",
                status + (f"; **missing** {', '.join(missing)}" if missing else ""),
                "; ".join(_code(_retrain_cmd(run, lab)) for lab in missing),
            ]
        )
    extra = [
        f"{len(x)} {what}"
        for x, what in ((other, "other strategies"), (backbones, "backbone runs"))
        if x is not None
    ]
    if extra:
        rows[-1][1] += f" (and {', '.join(extra)} in retrain.csv)"
    rows.append(
        ["validate", "done" if run.validate else "**not run**", "" if run.validate else _code(c["validate"])]
    )
    return Table(["stage", "status", "command"], rows)


# ----------------------------------------------------------------------------- numbers in words


def _ps_pt(p: np.ndarray) -> dict:
    n = len(p)
    s_gt = int((p[:, 0] > p[:, 1]).sum())
    t_gt = int((p[:, 1] > p[:, 0]).sum())
    ms, mt = float(p[:, 0].mean()), float(p[:, 1].mean())
    clear = abs(ms - mt) >= max(PREF_MIN_DIFF, PREF_REL_DIFF * (ms + mt) / 2)
    if s_gt > n / 2 and ms > mt and clear:
        pref = "temporal"
    elif t_gt > n / 2 and mt > ms and clear:
        pref = "spatial"
    else:
        pref = "none"
    return {"n": n, "s_gt": s_gt, "t_gt": t_gt, "mean_s": ms, "mean_t": mt, "pref": pref}


def _pref_sentence(p: np.ndarray, init=None) -> str:
    s = _ps_pt(p)
    means = f"mean p_S {s['mean_s']:.3f}, p_T {s['mean_t']:.3f}; {DATA_FREE}"
    if _isnum(init) and float(np.abs(p - float(init)).max()) < BARELY_MOVED:
        means += (
            f"; every drop probability is still within {BARELY_MOVED} of its initial {float(init):g}: "
            "train longer or raise `train.k`"
        )
    if s["pref"] == "temporal":
        return (
            f"**Temporal paths preferred**: the S-path drop probability is above the T-path's in "
            f"{s['s_gt']} of {s['n']} slots ({means})."
        )
    if s["pref"] == "spatial":
        return (
            f"**Spatial paths preferred**: the T-path drop probability is above the S-path's in "
            f"{s['t_gt']} of {s['n']} slots ({means})."
        )
    return (
        f"**No clear preference between S and T paths**: the S-path drop probability is above the "
        f"T-path's in {s['s_gt']} of {s['n']} slots ({means}; a preference needs a majority of slots "
        f"and mean drop probabilities at least {PREF_REL_DIFF:.0%} apart)."
    )


def _accuracy_sentence(run: RunData) -> str | None:
    opt = run.opt()
    if opt is None:
        return None
    col = run.score_col
    canon = run.canonical()
    parts = [f"{name} {_pct(canon[src].get(col))}" for src, name in CANONICAL if src in canon]
    n = len(run.strategies) if run.strategies is not None else (run.analysis or {}).get("strategies", "?")
    src = str(opt.get("source", "?")).replace("canonical_", "all-").replace("_", " ")
    s = f"The best of {n} scored strategies (Opt, {src}) reaches {_pct(opt.get(col))}"
    if parts:
        s += " vs " + ", ".join(parts)
    return s + f" ({run.views()}; {_score_label(col)})."


def headline(run: RunData) -> list[str]:
    """One or two sentences (inline markup) computed from the run's files."""
    out = []
    c = _commands(run)
    p, _, _ = run.drop_probs()
    if run.is_fixed:
        strategy = run.cfg("model", "strategy") or "?"
        val = next((r for r in reversed(run.epochs) if "val_top1" in r), None)
        s = f"Strategy {_code(strategy)} trained alone"
        if val is not None:
            s += (
                f": top-1 {_pct(val['val_top1'])} after epoch {val['epoch']} "
                f"({val.get('val_views', 'views not recorded')})"
            )
        return [s + "."]
    if p is not None and run.vdroppath_reached():
        out.append(_pref_sentence(p, run.cfg("model", "drop_init")))
    elif run.metrics is not None:
        out.append(
            f"Drop probabilities not learned yet: the v-DropPath phase starts after epoch "
            f"{run.warmup_epochs}, and {run.epochs_done} epochs are done (resume: {_code(c['train'])})."
        )
    else:
        out.append(f"Training has not produced metrics yet (run {_code(c['train'])}).")
    if not run.trained and run.metrics is not None and run.vdroppath_reached():
        out.append(
            f"Training stopped after epoch {run.epochs_done} of {run.total_epochs or '?'} "
            f"(resume: {_code(c['train'])})."
        )
    acc = _accuracy_sentence(run)
    if acc:
        out.append(acc)
    elif run.trained:
        out.append(f"No strategy scored yet (run {_code(c['sample'])}).")
    return out


# ----------------------------------------------------------------------------- figures


def _save_png(fig, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    atomic_write_bytes(path, buf.getvalue())
    return path


def _shade_phases(ax, epochs: list[dict], warmup: int | None) -> None:
    """Warm-up and v-DropPath phases as background spans (epoch e covers (e-1, e])."""
    for phase, color, label in (
        ("warmup", "#DCE6F2", "warm-up (gates off)"),
        ("vdroppath", "#FBE3D0", "v-DropPath"),
        ("fixed", "#E4EFE0", "strategy alone"),
    ):
        es = [int(r["epoch"]) for r in epochs if r.get("phase") == phase]
        if es:
            ax.axvspan(min(es) - 1, max(es), color=color, alpha=0.7, lw=0, label=label, zorder=0)
    if warmup and any(r.get("phase") == "vdroppath" for r in epochs):
        ax.axvline(warmup, color="#999999", lw=0.8, ls=":")


def _up_to_date(path: Path, run: RunData) -> bool:
    """``path`` exists and is newer than every file it is drawn from (then it is not drawn again)."""
    if not path.is_file():
        return False
    inputs = [
        run.dir / n for n in ("metrics.jsonl", "summary.json", "config.yaml") if (run.dir / n).is_file()
    ]
    return all(path.stat().st_mtime >= p.stat().st_mtime for p in inputs)


def training_figure(run: RunData, path: Path) -> Path | None:
    """training_curves.png: loss and ce, reg, train_acc and val_top1 per epoch (steps faint)."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    ep, steps = run.epochs, run.steps
    if not ep and not steps:
        return None
    fig = Figure(figsize=(13.5, 3.8), layout="constrained")
    axes = fig.subplots(1, 3)
    x = [r["epoch"] for r in ep]
    for ax in axes:
        _shade_phases(ax, ep, run.warmup_epochs)
    if steps:
        sx = [r.get("epoch", 0) for r in steps]
        axes[0].plot(
            sx, [r.get("loss") for r in steps], color="#4C72B0", alpha=0.25, lw=0.8, label="loss per step"
        )
    if ep:
        axes[0].plot(x, [r.get("loss") for r in ep], "-o", color="#4C72B0", ms=3, label="loss (epoch mean)")
        axes[0].plot(x, [r.get("ce") for r in ep], "--s", color="#C44E52", ms=3, label="cross-entropy")
        axes[1].plot(x, [r.get("reg") for r in ep], "-o", color="#8172B2", ms=3, label="regulariser")
        axes[2].plot(
            x,
            [r.get("train_acc") for r in ep],
            "-o",
            color="#55A868",
            ms=3,
            label="train acc (training batches)",
        )
        vx = [r["epoch"] for r in ep if _isnum(r.get("val_top1"))]
        if vx:
            axes[2].plot(
                vx,
                [r["val_top1"] for r in ep if _isnum(r.get("val_top1"))],
                "-D",
                color="#DD8452",
                ms=4,
                label=f"val top-1 ({run.cfg('data', 'eval_subset', default='eval')} subset)",
            )
    axes[0].set_title("loss (training batches)", fontsize=10)
    axes[1].set_title("v-DropPath regulariser", fontsize=10)
    axes[2].set_title("accuracy (%)", fontsize=10)
    axes[2].set_ylim(0, 100)
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    return _save_png(fig, path)


def drop_probs_figure(run: RunData, path: Path) -> Path | None:
    """drop_probs.png: p_S (solid, left) and p_T (dashed, right) per slot per epoch."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    ep = [r for r in run.epochs if r.get("drop_probs")]
    if not ep or not run.vdroppath_reached():
        return None
    p = np.asarray([r["drop_probs"] for r in ep], dtype=float)  # epochs x slots x 2
    x = [int(r["epoch"]) for r in ep]
    init = run.cfg("model", "drop_init")
    if _isnum(init) and x[0] == 1:
        p = np.concatenate([np.full((1, *p.shape[1:]), float(init)), p])
        x = [0, *x]
    n = p.shape[1]
    names = run.slot_names(n)
    cmap = colormaps["viridis"]
    colors = [cmap(i / max(1, n - 1) * 0.9) for i in range(n)]
    fig = Figure(figsize=(12.5, 4.0), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    for k, (ax, title, style) in enumerate(zip(axes, ("S path (1x1x1)", "T path (3x1x1)"), ("-", "--"))):
        _shade_phases(ax, ep, run.warmup_epochs)
        for i in range(n):
            ax.plot(x, p[:, i, k], style, color=colors[i], lw=1.3, label=names[i] if n <= 12 else None)
        ax.set_title(f"drop probability, {title}", fontsize=10)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("p (drop)")
    top = float(np.nanmax(p))
    axes[0].set_ylim(0, min(1.0, max(0.2, top * 1.15)))
    if n <= 12:
        fig.legend(
            *axes[1].get_legend_handles_labels(),
            fontsize=7,
            loc="outside right upper",
            title="slot",
            title_fontsize=8,
        )
    else:
        from matplotlib.cm import ScalarMappable
        from matplotlib.colors import Normalize

        sm = ScalarMappable(norm=Normalize(0, (n - 1) / 0.9), cmap=cmap)
        fig.colorbar(sm, ax=list(axes), label="slot index (depth)")
    return _save_png(fig, path)


# ----------------------------------------------------------------------------- sections of a run report


def _section_header(run: RunData) -> tuple[list[str], Section]:
    meta = [f"run directory {_code(run.dir)}"]
    fmt, root = run.cfg("data", "format"), run.cfg("data", "root")
    if root or fmt:
        ds = f"dataset {_code(root)} (format {fmt or '?'}"
        if run.start:
            ds += (
                f"; {run.start.get('classes', '?')} classes, {run.start.get('train_videos', '?')} training "
                f"videos, {run.start.get('selection_videos', '?')} selection videos"
            )
        meta.append(ds + ")")
    preset = run.cfg("model", "name")
    if preset:
        m = f"model preset {_code(preset)}"
        p, _, _ = run.drop_probs()
        extra = []
        if p is not None:
            extra.append(f"{len(p)} slots")
        if run.start and _isnum(run.start.get("params")):
            extra.append(f"{int(run.start['params']):,} parameters")
        if run.cfg("model", "strategy"):
            extra.append(f"fixed strategy {_code(run.cfg('model', 'strategy'))}")
        meta.append(m + (f" ({', '.join(extra)})" if extra else ""))
    stamps = [
        f.stat().st_mtime
        for f in run.dir.iterdir()
        if f.is_file() and f.suffix in (".json", ".jsonl", ".csv", ".yaml") and not f.name.startswith(".")
    ]
    meta.append(
        f"run last written {_when(max(stamps) if stamps else None)}; report generated "
        f"{_when(_dt.datetime.now().timestamp())}"
    )
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
                "config.yaml is missing (it is written by the first epoch of training).",
                _commands(run)["train"],
            )
        )
    else:
        sec.blocks.append(
            Code(run.config_text.rstrip("\n"), "config.yaml (the resolved config of this run)", "yaml")
        )
    return sec


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


def _section_training(run: RunData) -> Section:
    sec = Section("training", "Training curves")
    c = _commands(run)
    if run.metrics is None:
        sec.blocks.append(Missing("metrics.jsonl is missing: training has not started.", c["train"]))
        return sec
    total = run.total_epochs
    state = "complete" if run.trained else f"**not finished** (resume with {_code(c['train'])})"
    sec.blocks.append(
        Para(
            f"{run.epochs_done} of {total or '?'} epochs ({run.warmup_epochs} warm-up with every "
            f"path on, then v-DropPath), training {state}."
        )
    )
    png = run.dir / TRAINING_PNG
    png = png if _up_to_date(png, run) else training_figure(run, png)
    if png is None:
        sec.blocks.append(Para("metrics.jsonl holds no step or epoch record yet.", "missing"))
        return sec
    labels = _val_labels(run)
    cap = (
        "Loss, cross-entropy, regulariser and training accuracy are means over this epoch's training "
        "batches (random crops, gates as trained). Validation top-1 measured on: " + " | ".join(labels)
        if labels
        else "No validation record yet."
    )
    sec.blocks.append(Img(png, "training curves", cap))
    rows = []
    last_of = {}
    for r in run.epochs:
        last_of[r.get("phase")] = r
    for phase, r in last_of.items():
        rows.append(
            [
                str(r["epoch"]),
                str(phase),
                _f(r.get("loss"), 3),
                _f(r.get("ce"), 3),
                _f(r.get("reg"), 4),
                _pct(r.get("train_acc")),
                _pct(r.get("val_top1")),
                _pct(r.get("val_top5")),
                _pct(r.get("val_single_mean")),
                f"{r.get('val_measure', '–')}; {r.get('val_views', '–')}" if "val_top1" in r else "–",
            ]
        )
    if rows:
        sec.blocks.append(
            Table(
                [
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
                ],
                rows,
                "Last epoch of each phase.",
            )
        )
    if run.start:
        s = run.start
        bad = [
            f"{k.replace('_', ' ')}: {s[k]}"
            for k in ("excluded_train_videos", "missing_train_videos", "excluded_val_videos")
            if s.get(k)
        ]
        failed = (run.summary or {}).get("failed_videos") or []
        if bad or failed:
            sec.blocks.append(
                Para(
                    "Data problems: "
                    + "; ".join(
                        bad + ([f"{len(failed)} video(s) failed to decode during training"] if failed else [])
                    )
                )
            )
    return sec


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
    png = run.dir / DROP_PROBS_PNG
    png = png if _up_to_date(png, run) else drop_probs_figure(run, png)
    if png is not None:
        sec.blocks.append(
            Img(
                png,
                "drop probabilities per epoch",
                f"Drop probability of each path per epoch ({DATA_FREE}); S paths solid (left), T paths "
                "dashed (right). They stay at their initial value during warm-up (gates off).",
            )
        )
    if p is None:
        return sec
    rows = []
    for name, (ps, pt) in zip(names, p):
        higher = "S" if ps > pt else ("T" if pt > ps else "=")
        rows.append(
            [
                _code(name),
                _prob(ps),
                _prob(pt),
                _prob(1 - ps),
                _prob(1 - pt),
                _prob(1 - math.sqrt(ps)),
                _prob(1 - math.sqrt(pt)),
                higher,
            ]
        )
    s = _ps_pt(p)
    rows.append(
        [
            "**mean**",
            _prob(s["mean_s"]),
            _prob(s["mean_t"]),
            _prob(1 - s["mean_s"]),
            _prob(1 - s["mean_t"]),
            "",
            "",
            f"S in {s['s_gt']} of {s['n']}",
        ]
    )
    sec.blocks.append(
        Table(
            [
                "slot",
                "p_S",
                "p_T",
                "keep S (1-p)",
                "keep T (1-p)",
                "keep S (1-sqrt p, paper)",
                "keep T (1-sqrt p, paper)",
                "higher drop",
            ],
            rows,
            f"Final drop probabilities from {src}; {DATA_FREE}.",
        )
    )
    return sec


def _retrain_cells(r) -> list[str]:
    """The cells every retrain.csv table shows: strategy, top-1, top-5, MACs, params, epochs, views."""
    return [_code(r.get("strategy")), _pct(r.get("top1")), _pct(r.get("top5")), _macs(r.get("macs")),
            _params(r.get("params")), str(r.get("epochs", "–")), str(r.get("measured_on", "measured on: not recorded"))]


def _existing_images(run: RunData, names) -> list:
    """``Img`` of each (file name, caption) whose file exists in the run directory."""
    return [Img(run.dir / n, t) for n, t in names if (run.dir / n).is_file()]


def _section_marginals(run: RunData) -> Section:
    sec = Section("marginals", "Layer-level preference (Figure 4)")
    imgs = _existing_images(run, (("figure4.png", "Figure 4, paper convention q = 1 - sqrt(p)"),
                                  ("figure4_sampling.png", "Figure 4, sampling convention q = 1 - p")))
    if not imgs and run.marginals is None:
        sec.blocks.append(
            Missing(
                "Marginals and Figure 4 are written by the analyze stage, which has not run.",
                _chain(run, "analyze"),
            )
        )
        return sec
    if imgs:
        sec.blocks.append(Figures(imgs, [i.alt for i in imgs]))
        sec.blocks.append(
            Para(
                f"Bars: per-slot marginal probability of each unit ({DATA_FREE}); markers: the unit "
                "the Opt strategy uses in each slot (a red cross where it uses none)."
            )
        )
    m = run.marginals
    if m is not None:
        rows = []
        for _, r in m.iterrows():
            row = [_code(r["slot"])]
            for conv in ("paper", "sampling"):
                row += [_prob(r.get(f"P_{u}_{conv}")) for u in ("S", "ST", "S+ST", "none")]
                row.append(str(r.get(f"preferred_unit_{conv}", "–")))
            rows.append(row)
        head = ["slot"] + [
            f"{h} ({conv})"
            for conv in ("paper", "sampling")
            for h in ("P(S)", "P(ST)", "P(S+ST)", "P(none)", "preferred")
        ]
        sec.blocks.append(
            Table(
                head,
                rows,
                "marginals.csv: paper convention q = 1 - sqrt(p) (Eq. 7), sampling "
                f"convention q = 1 - p; {DATA_FREE}.",
            )
        )
    a = run.analysis or {}
    if a.get("preferred_unit_counts") and a.get("slots"):
        cnt = a["preferred_unit_counts"].get("paper", {})
        s = ", ".join(f"{u} in {k}" for u, k in cnt.items() if k)
        line = f"Preferred unit (paper convention): {s} of {a['slots']} slots."
        if _isnum(a.get("opt_agrees_with_paper_preference")):
            agree = a["opt_agrees_with_paper_preference"]
            line += f" Opt uses the preferred unit in {agree} of {a['slots']} slots."
        sec.blocks.append(Para(line))
    return sec


def _n_slots(k: int) -> str:
    return f"{k} slot" + ("" if k == 1 else "s")


def depth_figure(run: RunData, path: Path) -> Path | None:
    """depth_keep.png from the run's depth drop probabilities, CKA's redundant runs shaded."""
    d, _ = run.depth_probs()
    if d is None:
        return None
    names = run.slot_names(len(d))
    return plot_depth(d, names, path, redundant_runs=run.cka_runs() or [],
                      title=f"Depth gate: P(slot kept) = 1 - p_D per slot ({run.name})")


def _section_depth(run: RunData) -> Section | None:
    """"Depth redundancy": the depth gates' P(slot kept) next to CKA's redundant runs (None without
    depth gates)."""
    d, src = run.depth_probs()
    if d is None:
        return None
    sec = Section("depth", "Depth redundancy")
    n = len(d)
    names = run.slot_names(n)
    png = run.dir / DEPTH_PNG
    fresh = _up_to_date(png, run) and not (
        (run.dir / "cka.json").is_file() and png.stat().st_mtime < (run.dir / "cka.json").stat().st_mtime
    )
    png = png if fresh else depth_figure(run, png)
    kept = 1.0 - d
    dropped = [nm for nm, q in zip(names, kept) if q < 0.5]
    sec.blocks.append(
        Para(
            f"With `model.depth_gate` each slot has a third gate that drops the whole slot (unit none); "
            f"P(slot kept) = 1 - p_D ({DATA_FREE}; from {src}). "
            + (
                f"**{len(dropped)} of {n} slots** have P(slot kept) < 0.5 (the most probable strategy drops "
                f"them): {', '.join(_code(x) for x in dropped)}."
                if dropped
                else f"Every slot has P(slot kept) >= 0.5 (lowest {min(kept):.3f}, at "
                f"{_code(names[int(np.argmin(kept))])}): no layer is judged unneeded yet."
            )
        )
    )
    cka_png = run.dir / "cka_within.png"
    depth_img = Img(png, "P(slot kept) per slot", "Bars: P(slot kept) per slot in depth order; dashed line "
                    "at 0.5" + ("; shaded: CKA's redundant runs of slots." if run.cka_runs() else "."))
    if cka_png.is_file():
        sec.blocks.append(Figures([depth_img, Img(cka_png, "CKA within one strategy")],
                                  ["depth gate: P(slot kept)", "CKA within one strategy"]))
    else:
        sec.blocks.append(depth_img)
    runs = run.cka_runs()
    in_run: set[str] = {x for r in runs for x in r} if runs else set()
    if runs is None:
        sec.blocks.append(
            Missing(
                "cka.json is missing: no CKA redundancy to compare the depth gates with.",
                _cmd("fusion3d", "analyze", str(run.dir), "--cka"),
            )
        )
    elif not runs:
        sec.blocks.append(Para("cka.json lists no redundant run of slots to compare the depth gates with."))
    else:
        thr = run.cka.get("threshold")
        idx = {nm: i for i, nm in enumerate(names)}
        rows = []
        for r in runs:
            qs = [kept[idx[x]] for x in r if x in idx]
            low = [x for x in r if x in idx and kept[idx[x]] < 0.5]
            rows.append([", ".join(_code(x) for x in r), _prob(np.mean(qs)) if qs else "–",
                         _prob(min(qs)) if qs else "–", ", ".join(_code(x) for x in low) or "none"])
        sec.blocks.append(
            Table(
                ["CKA redundant run", "mean P(slot kept)", "min P(slot kept)", "slots the depth gate drops"],
                rows,
                "Runs of consecutive slots whose adjacent CKA is above "
                + (f"{thr}" if _isnum(thr) else "the threshold")
                + " (cka.json), against the depth gates' keep probabilities.",
            )
        )
        inside = [kept[idx[x]] for x in in_run if x in idx]
        outside = [q for nm, q in zip(names, kept) if nm not in in_run]
        if inside and outside:
            sec.blocks.append(
                Para(
                    f"Mean P(slot kept): {np.mean(inside):.3f} in CKA redundant runs ({_n_slots(len(inside))}), "
                    f"{np.mean(outside):.3f} elsewhere ({_n_slots(len(outside))}); the two signals agree when "
                    "redundant slots are kept less."
                )
            )
    p, _, _ = run.drop_probs()
    if p is not None and len(p) == n:
        m = depth_marginals(p, d, names)
        rows = [
            [_code(r["slot"]), _prob(r["p_D"]), _prob(r["P_kept"]), _prob(r["P_none"]), str(r["preferred_unit"]),
             ("yes" if r["slot"] in in_run else "no") if runs is not None else "–"]
            for _, r in m.iterrows()
        ]
        sec.blocks.append(
            Table(
                ["slot", "p_D", "P(slot kept)", "P(none), depth folded in", "preferred unit", "in a CKA redundant run"],
                rows,
                "Sampling convention (q = 1 - p): P(none) = p_D + (1 - p_D) p_S p_T; the other units' "
                f"marginals are scaled by 1 - p_D; {DATA_FREE}.",
            )
        )
    return sec


def _strategy_row(label: str, r: dict, col: str) -> list[str]:
    top5 = col.replace("top1", "top5")
    return [
        label,
        _code(r.get("strategy", "?")),
        _pct(r.get("top1_before")),
        _pct(r.get("top1_after")),
        _pct(r.get(top5)),
        _macs(r.get("macs")),
        _params(r.get("params")),
        str(r.get("views", "–")),
    ]


def _section_sampling(run: RunData) -> Section:
    sec = Section("sampling", "Sampled strategies")
    c = _commands(run)
    df = run.strategies
    if df is None or df.empty:
        if run.trained:
            sec.blocks.append(
                Missing("No strategy has been scored: the sample stage has not run.", c["sample"])
            )
        else:
            sec.blocks.append(
                Missing(
                    "Training is not finished, so no strategy has been scored; finish training, then sample.",
                    _chain(run, "sample"),
                )
            )
        return sec
    col = run.score_col
    smp = run.sample or {}
    meas = smp.get("measurement") or {}
    n_sampled = int((df["source"] == "sampled").sum())
    txt = (
        f"{len(df)} strategies scored: the canonical all-S, all-ST, all-S+ST, the most probable one, and "
        f"{n_sampled} distinct hard-Bernoulli draws"
    )
    settings = smp.get("settings") or {}
    if _isnum(settings.get("num")):
        txt += f" (of {settings['num']} draws"
        txt += (
            f", {smp['duplicates_removed']} duplicates removed)"
            if _isnum(smp.get("duplicates_removed"))
            else ")"
        )
    txt += f". Measured on: {run.views()}."
    if meas.get("recalibrate"):
        txt += (
            f" BatchNorm recalibrated per strategy on {meas.get('recal_videos', '?')} training clips "
            "before the "
            "'after' scores."
        )
    elif meas:
        txt += " No BatchNorm recalibration (only 'before' scores)."
    if _isnum(smp.get("seconds_per_strategy")):
        txt += f" {smp['seconds_per_strategy']:.2f} s per strategy ({settings.get('device', '?')})."
    sec.blocks.append(Para(txt))
    if run.sample is None:
        sec.blocks.append(
            Para("sample.json is missing: the sampling run has not finished or was interrupted.", "missing")
        )
    elif not smp.get("complete", True):
        sec.blocks.append(
            Missing(
                f"Sampling not finished ({len(df)} of {smp.get('planned', '?')} strategies); "
                "resume it (scored strategies are skipped).",
                _cmd("fusion3d", "sample", str(run.dir)),
            )
        )
    canon = run.canonical()
    rows = [_strategy_row(name, canon[src], col) for src, name in CANONICAL if src in canon]
    if "most_probable" in canon:
        rows.append(_strategy_row("most probable", canon["most_probable"], col))
    opt = run.opt()
    if opt is not None:
        rows.append(_strategy_row(f"**Opt** ({opt.get('source', '?')})", opt, col))
    sampled = df.loc[df["source"] == "sampled", col].dropna()
    if len(sampled):
        rows.append([f"sampled: mean ± std (n={len(sampled)})", "", "", "", "", "", "", run.views()])
        rows[-1][3 if col == "top1_after" else 2] = f"{sampled.mean():.1f} ± {sampled.std(ddof=0):.1f}%"
    sec.blocks.append(
        Table(
            [
                "strategy",
                "units per slot",
                "top-1 before recal.",
                "top-1 after recal.",
                f"top-5 ({'after' if col == 'top1_after' else 'before'})",
                "MACs per clip",
                "params",
                "measured on",
            ],
            rows,
            f"Ranking score: {_score_label(col)}. Opt = best score, ties broken by fewer MACs.",
        )
    )
    if run.analysis is None:
        sec.blocks.append(
            Missing(
                "The analyze stage has not run (no Opt file, top-strategies table or figures); "
                "Opt above is the best row of strategies.csv.",
                c["analyze"],
            )
        )
    elif run.analysis_stale():
        sec.blocks.append(
            Missing("analysis.json is older than strategies.csv; re-run analyze.", c["analyze"])
        )
    top = run.top
    if top is not None and len(top):
        trows = []
        for _, r in top.iterrows():
            d = r.to_dict()
            trows.append(
                [
                    str(d.get("rank", "")),
                    _code(d.get("strategy")),
                    str(d.get("source", "")),
                    _pct(d.get("top1_before")),
                    _pct(d.get("top1_after")),
                    _pct(d.get(col.replace("top1", "top5"))),
                    _macs(d.get("macs")),
                    _params(d.get("params")),
                ]
            )
        views = "; ".join(str(v) for v in top["views"].dropna().unique()) if "views" in top else run.views()
        sec.blocks.append(
            Table(
                [
                    "rank",
                    "units per slot",
                    "source",
                    "top-1 before recal.",
                    "top-1 after recal.",
                    "top-5",
                    "MACs",
                    "params",
                ],
                trows,
                f"top_strategies.csv, measured on: {views}; ranked by {_score_label(col)}.",
            )
        )
    imgs = _existing_images(run, (("acc_vs_flops.png", "accuracy vs MACs, Pareto front"),
                                  ("acc_hist.png", "histogram of sampled accuracies")))
    if imgs:
        sec.blocks.append(Figures(imgs, [i.alt for i in imgs]))
        sec.blocks.append(Para(f"Both figures: {_score_label(col)}, measured on: {run.views()}."))
    return sec


def _table2_rows(run: RunData, t: pd.DataFrame | None = None) -> list[list[str]]:
    """Rows of retrain.csv (default: the Table-2 part) with the same strategy's template score."""
    t = retrain_parts(run)[0] if t is None else t
    if t is None:
        return []
    order = {lab: i for i, lab in enumerate(RETRAIN_LABELS)}
    t = t.assign(_o=[order.get(str(x), len(order)) for x in t["label"]]).sort_values(
        ["_o", "label"], kind="stable"
    )
    sel = {} if run.strategies is None else {str(r["id"]): r for _, r in run.strategies.iterrows()}
    col = run.score_col
    rows = []
    for _, r in t.iterrows():
        s = sel.get(str(r.get("id")))
        label = str(r["label"])
        label = "Opt" if label == "opt" else label
        done = "" if str(r.get("complete", True)).lower() in ("true", "1") else " (**not finished**)"
        rows.append(
            [
                f"**{label}**{done}",
                *_retrain_cells(r),
                _pct(s.get(col)) if s is not None else "–",
            ]
        )
    return rows


TABLE2_HEADER = [
    "strategy",
    "units per slot",
    "top-1 (trained alone)",
    "top-5 (trained alone)",
    "MACs per clip",
    "params",
    "epochs",
    "trained alone: measured on",
    "in the template: selection top-1",
]


def _section_table2(run: RunData) -> Section:
    sec = Section("table2", "Strategies trained alone (Table-2 analog)")
    missing = _missing_retrain(run)
    t2, other, backbones = retrain_parts(run)
    caption = (
        f"retrain.csv. Last column: the same strategy scored inside the template "
        f"({_score_label(run.score_col)}; {run.views()})."
    )
    if t2 is None:
        sec.blocks.append(
            Missing(
                "No strategy has been trained alone yet. The Table-2 analog trains S, ST, S+ST and "
                "Opt from scratch with the run's recipe, one command each.",
                " ; ".join(_retrain_cmd(run, lab) for lab in RETRAIN_LABELS),
            )
        )
    else:
        sec.blocks.append(Table(TABLE2_HEADER, _table2_rows(run, t2), caption))
        if missing:
            sec.blocks.append(
                Missing(
                    f"Not trained alone yet: {', '.join(missing)}.",
                    " ; ".join(_retrain_cmd(run, lab) for lab in missing),
                )
            )
    if other is not None:
        picked = set()
        if run.validate and isinstance(run.validate.get("strategies"), list):
            picked = {str(x) for x in run.validate["strategies"]}
        rest = other[~other["id"].astype(str).isin(picked)] if picked else other
        if picked & set(other["id"].astype(str)):
            k = len(other) - len(rest)
            sec.blocks.append(
                Para(
                    f"{k} more {'strategy' if k == 1 else 'strategies'} trained alone by the "
                    f"validation stage {'is' if k == 1 else 'are'} in the validation section."
                )
            )
        if len(rest):
            sec.blocks.append(
                Table(
                    TABLE2_HEADER,
                    _table2_rows(run, rest),
                    "Other strategies of this network trained alone. " + caption,
                )
            )
    if backbones is not None:
        rows = [
            [
                _code(r["label"]),
                str(r.get("model", "?")),
                *_retrain_cells(r),
            ]
            for _, r in backbones.iterrows()
        ]
        sec.blocks.append(
            Table(
                [
                    "label",
                    "network",
                    "units per block",
                    "top-1",
                    "top-5",
                    "MACs per clip",
                    "params",
                    "epochs",
                    "measured on",
                ],
                rows,
                "Other backbones trained on this run's data (the Table-6 analog); each row's recipe, with "
                "any overrides, is in retrain/<label>/config.yaml.",
            )
        )
    return sec


def _section_validate(run: RunData) -> Section:
    sec = Section("validate", "Does the template predict accuracy trained alone?")
    v = run.validate
    if v is None:
        sec.blocks.append(
            Missing(
                "The validation stage has not run. It trains a set of strategies alone and "
                "measures the rank correlation between their accuracy inside the template and "
                "trained alone.",
                _commands(run)["validate"],
            )
        )
        return sec
    pv = v.get("p_values") if isinstance(v.get("p_values"), dict) else {}

    def cell(key):
        s = _f(v.get(key), 3)
        p = pv.get(key)
        return s + (f" (p = {p:.3g})" if _isnum(p) and s != "–" else "")

    rows = [
        [
            "template accuracy, before BN recalibration",
            cell("kendall_tau_before"),
            cell("spearman_rho_before"),
        ],
        ["template accuracy, after BN recalibration", cell("kendall_tau_after"), cell("spearman_rho_after")],
        ["MACs alone (baseline: bigger is better)", cell("kendall_tau_flops"), cell("spearman_rho_flops")],
    ]
    n = v.get("n")
    measured = v.get("measured_on", "measured on: not recorded")
    sec.blocks.append(
        Table(
            ["predictor of the trained-alone ranking", "Kendall tau", "Spearman rho"],
            rows,
            f"Rank correlation over {n if n is not None else '?'} strategies; measured on: {measured}.",
        )
    )
    ta, tf = v.get("kendall_tau_after"), v.get("kendall_tau_flops")
    if _isnum(ta) and _isnum(tf):
        verdict = "better than" if ta > tf else ("no better than" if ta < tf else "as good as")
        sec.blocks.append(
            Para(
                f"With BN recalibration the template's ranking (tau {ta:.3f}) is {verdict} ranking by "
                f"cost alone (tau {tf:.3f})."
            )
        )
    if (run.dir / "validate_scatter.png").is_file():
        sec.blocks.append(
            Img(
                run.dir / "validate_scatter.png",
                "template accuracy vs accuracy trained alone",
                f"Measured on: {measured}.",
            )
        )
    vc = _read_csv(run.dir / "validate.csv", run.problems, dtype={"id": str, "strategy": str})
    if vc is not None and {"strategy", "standalone_top1"} <= set(vc.columns):
        rows = [
            [
                _code(r.get("strategy")),
                str(r.get("source", "–")),
                _pct(r.get("top1_before")),
                _pct(r.get("top1_after")),
                _pct(r.get("standalone_top1")),
                _macs(r.get("macs")),
                _params(r.get("params")),
            ]
            for _, r in vc.iterrows()
        ]
        sec.blocks.append(
            Table(
                [
                    "units per slot",
                    "source",
                    "template top-1 before recal.",
                    "template top-1 after recal.",
                    "top-1 trained alone",
                    "MACs per clip",
                    "params",
                ],
                rows,
                f"validate.csv; measured on: {measured}.",
            )
        )
    sec.blocks.append(Code(json.dumps(v, indent=1), "validate.json", "json"))
    return sec


def _derived_table(derived: list[tuple[Path, dict]], rel_to: Path) -> Table:
    rows = []
    for p, d in derived:
        units = d.get("string") or (
            "|".join(map(str, d["units"])) if isinstance(d.get("units"), list) else d.get("units", "?")
        )
        canon = d.get("canonical") if isinstance(d.get("canonical"), dict) else {}
        ref = ", ".join(
            f"all-{u} {_macs((c or {}).get('macs'))}" for u, c in canon.items() if isinstance(c, dict)
        )
        rule = str(d.get("rule", "–")) + (f" ({d['convention']} convention)" if d.get("convention") else "")
        if _isnum(d.get("flops_budget_g")):
            rule += f", budget {d['flops_budget_g']} GMACs"
        rows.append(
            [
                _code(os.path.relpath(p, rel_to)),
                str(d.get("backbone", "?")),
                _code(units),
                _macs(d.get("macs")) + (f" (vs {ref})" if ref else ""),
                _params(d.get("params")),
                rule,
            ]
        )
    return Table(
        ["file", "backbone", "units per block", "MACs per clip", "params", "rule"],
        rows,
        "Backbone designs derived from the template's marginals (computed, not trained or measured). "
        "Train one with the run's recipe: `fusion3d retrain RUN --strategy DESIGN.json model.name=BACKBONE`.",
    )


def _cka_run_text(r) -> str:
    if isinstance(r, dict):
        slots = r.get("slots") or [r.get("first", "?"), r.get("last", "?")]
        s = ", ".join(_code(x) for x in slots)
        if _isnum(r.get("min_adjacent_cka")):
            s += f" (adjacent CKA at least {r['min_adjacent_cka']:.3f})"
        return s
    if isinstance(r, (list, tuple)):
        return ", ".join(_code(x) for x in r)
    return _code(r)


def _section_diagnostics(run: RunData) -> Section | None:
    sec = Section("diagnostics", "Diagnostics")
    d = run.dir
    if (d / "rf_vs_accuracy.png").is_file():
        sec.blocks.append(
            Img(
                d / "rf_vs_accuracy.png",
                "temporal receptive field vs accuracy",
                f"Temporal receptive field at the head vs template accuracy of the scored strategies "
                f"({run.views()}; {_score_label(run.score_col)}).",
            )
        )
    cka_imgs = [
        Img(d / n, t)
        for n, t in (
            ("cka_within.png", "CKA within one strategy"),
            ("cka_between.png", "CKA between two strategies"),
        )
        if (d / n).is_file()
    ]
    if cka_imgs:
        sec.blocks.append(Figures(cka_imgs, [i.alt for i in cka_imgs]))
    if run.cka:
        c = run.cka
        strat = c.get("strategies") if isinstance(c.get("strategies"), dict) else {}
        desc = [
            f"{k}: {_code((v or {}).get('string', '?'))} ({(v or {}).get('source', '?')})"
            for k, v in strat.items()
            if isinstance(v, dict)
        ]
        if desc:
            sec.blocks.append(Para("CKA of slot outputs; " + "; ".join(desc) + "."))
        runs = c.get("redundant_runs") or []
        thr = f" (adjacent CKA above {c['threshold']})" if _isnum(c.get("threshold")) else ""
        if runs:
            sec.blocks.append(Para(f"Redundant runs of consecutive slots{thr}, candidates for removal:"))
            sec.blocks.append(Items([_cka_run_text(r) for r in runs]))
        else:
            sec.blocks.append(Para(f"cka.json lists no redundant run of slots{thr}."))
        if _isnum(c.get("between_diagonal_mean")):
            sec.blocks.append(
                Para(
                    f"Mean CKA between the two strategies at the same slot: {c['between_diagonal_mean']:.3f}."
                )
            )
        where = c.get("views") or c.get("measured_on")
        if where:
            sec.blocks.append(Para(f"CKA measured on: {where}."))
    if run.derived:
        sec.blocks.append(_derived_table(run.derived, d))
    return sec if sec.blocks else None


def run_document(run: RunData) -> Document:
    meta, summary = _section_header(run)
    sections = [summary, _section_config(run), _section_training(run)]
    if run.is_fixed:
        return Document(f"fusion3d report: {run.name}", meta, sections)
    sections += [_section_drop_probs(run), _section_marginals(run)]
    depth = _section_depth(run)
    if depth is not None:
        sections.append(depth)
    sections += [
        _section_sampling(run),
        _section_table2(run),
        _section_validate(run),
    ]
    diag = _section_diagnostics(run)
    if diag is not None:
        sections.append(diag)
    return Document(f"fusion3d report: {run.name}", meta, sections)


# ----------------------------------------------------------------------------- rendering

CSS = """
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:0;color:#222;background:#fafafa}
main{max-width:1280px;margin:0 auto;padding:12px 24px 40px;background:#fff}
h1{font-size:1.5em;margin:.4em 0 .2em}
h2{font-size:1.2em;border-bottom:1px solid #ddd;padding-bottom:3px;margin-top:1.6em}
.meta{color:#555;font-size:.85em;margin:0 0 .6em;padding-left:1.2em}
.headline{font-size:1.02em;background:#f3f7fc;border-left:4px solid #4C72B0;padding:8px 12px;margin:.6em 0}
.missing{background:#fff6e5;border-left:4px solid #e0a030;padding:6px 10px}
table{border-collapse:collapse;font-size:.82em;margin:.6em 0}
th,td{border:1px solid #ddd;padding:3px 7px;vertical-align:top}th{background:#f0f0f0;text-align:left}
td.num{text-align:right;white-space:nowrap}
caption{caption-side:bottom;text-align:left;color:#555;font-size:.92em;
padding-top:3px}
code{background:#f2f2f2;padding:0 3px;border-radius:3px;font-size:.92em}pre{background:#f6f6f6;padding:8px;
overflow:auto;font-size:.8em}
figure{margin:.6em 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
.row figure img{max-height:440px;width:auto}
figcaption{color:#555;font-size:.85em}
.row{display:flex;gap:12px;align-items:flex-start}.row figure{flex:1 1 0;min-width:0}
nav{font-size:.85em;color:#555}nav a{margin-right:10px}
.story{font-size:1.02em;line-height:1.45}
"""

_INLINE = re.compile(r"`([^`]+)`|\*\*(.+?)\*\*")
_NUMERIC = re.compile(r"^[\s\-+–]*[\d.,]+\s*(%|[kMG]|[kMG]?s)?(\s*±\s*[\d.]+%?)?$|^–$")


def _inline_html(text: str) -> str:
    out, pos = [], 0
    for m in _INLINE.finditer(text):
        out.append(html.escape(text[pos : m.start()]))
        if m.group(1) is not None:
            out.append(f"<code>{html.escape(m.group(1))}</code>")
        else:
            out.append(f"<strong>{_inline_html(m.group(2))}</strong>")
        pos = m.end()
    out.append(html.escape(text[pos:]))
    return "".join(out)


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def _html_figure(img: Img, title: str = "") -> str:
    cap = " ".join(
        x
        for x in (
            f"<strong>{html.escape(title)}</strong>" if title else "",
            _inline_html(img.caption) if img.caption else "",
        )
        if x
    )
    return (
        f'<figure><img src="{_data_uri(img.path)}" alt="{html.escape(img.alt)}">'
        + (f"<figcaption>{cap}</figcaption>" if cap else "")
        + "</figure>"
    )


def _html_block(b) -> str:
    if isinstance(b, Para):
        cls = f' class="{b.cls}"' if b.cls else ""
        return f"<p{cls}>{_inline_html(b.text)}</p>"
    if isinstance(b, Items):
        return "<ul>" + "".join(f"<li>{_inline_html(i)}</li>" for i in b.items) + "</ul>"
    if isinstance(b, Table):
        head = "".join(f"<th>{_inline_html(h)}</th>" for h in b.header)
        body = "".join(
            "<tr>"
            + "".join(
                f'<td class="num">{_inline_html(c)}</td>'
                if _NUMERIC.match(c or "–")
                else f"<td>{_inline_html(c)}</td>"
                for c in row
            )
            + "</tr>"
            for row in b.rows
        )
        cap = f"<caption>{_inline_html(b.caption)}</caption>" if b.caption else ""
        return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    if isinstance(b, Img):
        return _html_figure(b)
    if isinstance(b, Figures):
        titles = b.titles + [""] * (len(b.images) - len(b.titles))
        return '<div class="row">' + "".join(_html_figure(i, t) for i, t in zip(b.images, titles)) + "</div>"
    if isinstance(b, Code):
        return (
            f"<details><summary>{_inline_html(b.summary)}</summary>"
            f"<pre><code>{html.escape(b.text)}</code></pre>"
            "</details>"
        )
    if isinstance(b, Missing):
        cmd = f" Run: <code>{html.escape(b.command)}</code>" if b.command else ""
        return f'<p class="missing"><strong>Not run yet:</strong> {_inline_html(b.text)}{cmd}</p>'
    if isinstance(b, Links):
        return (
            "<ul>"
            + "".join(
                f'<li><a href="{html.escape(h, quote=True)}">{_inline_html(t)}</a></li>'
                for t, h, _ in b.items
            )
            + "</ul>"
        )
    raise TypeError(f"unknown block {type(b).__name__}")


def render_html(doc: Document) -> str:
    nav = " ".join(f'<a href="#{s.id}">{html.escape(s.title)}</a>' for s in doc.sections)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(doc.title)}</title>",
        f"<style>{CSS}</style>",
        "</head>",
        "<body>",
        "<main>",
        f"<h1>{html.escape(doc.title)}</h1>",
    ]
    if doc.meta:
        parts.append('<ul class="meta">' + "".join(f"<li>{_inline_html(m)}</li>" for m in doc.meta) + "</ul>")
    parts.append(f"<nav>{nav}</nav>")
    for s in doc.sections:
        parts.append(f'<section id="{html.escape(s.id)}">')
        parts.append(f"<h2>{html.escape(s.title)}</h2>")
        parts.extend(_html_block(b) for b in s.blocks)
        parts.append("</section>")
    parts.append(
        '<footer><p class="meta">Written by <code>fusion3d report</code>. Every figure is embedded in this '
        "page; the same report in Markdown is report.md, next to this file.</p></footer>"
    )
    parts += ["</main>", "</body>", "</html>"]
    return "\n".join(parts) + "\n"


def _md_rel(path: Path, base: Path) -> str:
    return quote(os.path.relpath(Path(path).resolve(), base.resolve()).replace(os.sep, "/"), safe="/")


def _md_cell(c: str) -> str:
    return str(c).replace("\n", " ").replace("|", "\\|")


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(_md_cell(h) for h in header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return out


def _md_block(b, base: Path) -> list[str]:
    if isinstance(b, Para):
        return [("> " if b.cls == "headline" else "") + b.text]
    if isinstance(b, Items):
        return [f"- {i}" for i in b.items]
    if isinstance(b, Table):
        return _md_table(b.header, b.rows) + ([""] + [f"*{b.caption}*"] if b.caption else [])
    if isinstance(b, Img):
        return [f"![{b.alt}]({_md_rel(b.path, base)})"] + ([""] + [f"*{b.caption}*"] if b.caption else [])
    if isinstance(b, Figures):
        titles = b.titles + [i.alt for i in b.images[len(b.titles) :]]
        out = _md_table(titles, [[f"![{i.alt}]({_md_rel(i.path, base)})" for i in b.images]])
        caps = [i.caption for i in b.images if i.caption]
        return out + ([""] + [f"*{c}*" for c in caps] if caps else [])
    if isinstance(b, Code):
        fence = "````" if "```" in b.text else "```"
        return [
            f"<details><summary>{html.escape(b.summary.replace('`', ''))}</summary>",
            "",
            f"{fence}{b.lang}",
            b.text,
            fence,
            "",
            "</details>",
        ]
    if isinstance(b, Missing):
        return [f"**Not run yet:** {b.text}" + (f" Run: `{b.command}`" if b.command else "")]
    if isinstance(b, Links):
        return [f"- [{t}]({quote(m, safe='/#')})" for t, _, m in b.items]
    raise TypeError(f"unknown block {type(b).__name__}")


def render_markdown(doc: Document, base: Path) -> str:
    lines = [f"# {doc.title}", ""]
    lines += [f"- {m}" for m in doc.meta] + ([""] if doc.meta else [])
    for s in doc.sections:
        lines += [f"## {s.title}", ""]
        for b in s.blocks:
            lines += _md_block(b, base) + [""]
    return "\n".join(lines).rstrip("\n") + "\n"


def _write(doc: Document, out_dir: Path) -> tuple[Path, Path]:
    html_path, md_path = out_dir / REPORT_HTML, out_dir / REPORT_MD
    atomic_write_text(html_path, render_html(doc))
    atomic_write_text(md_path, render_markdown(doc, out_dir))
    for p in (html_path, md_path):  # a report is meant to be shared: rw-r--r--, not the temporary file's 0600
        os.chmod(p, 0o644)
    return html_path, md_path


def build_report(run_dir: str | Path) -> tuple[Path, Path]:
    """Write ``RUN/report.html`` and ``RUN/report.md`` (plus the two figures they draw); returns both paths.

    Raises FileNotFoundError when ``run_dir`` does not exist or holds no file of a training run."""
    run = RunData(run_dir)
    return _write(run_document(run), run.dir)


def build(path: str | Path) -> Path:
    """The report of ``path``: a demo folder (``demo.json``, or ``motion/`` and ``appearance/`` run
    directories) gets ``build_demo_report``, anything else ``build_report``; returns the HTML path."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"run directory {path} does not exist")
    if (path / "demo.json").is_file() or all(
        (path / k / "config.yaml").is_file() for k in ("motion", "appearance")
    ):
        return build_demo_report(path)
    return build_report(path)[0]


# ----------------------------------------------------------------------------- the demo report


def _verdict(run: RunData) -> dict:
    """Numbers the demo's story is told with (missing ones are None)."""
    col = run.score_col
    canon = run.canonical()
    opt = run.opt()
    p, _, _ = run.drop_probs()
    v = {
        "run": run,
        "col": col,
        "views": run.views(),
        "n_videos": run.selection_videos(),
        "acc": {name: canon[src].get(col) for src, name in CANONICAL if src in canon},
        "opt": opt.get(col) if opt else None,
        "opt_units": None,
        "probs": _ps_pt(p) if p is not None and run.vdroppath_reached() else None,
    }
    if opt and opt.get("strategy"):
        v["opt_units"] = str(opt["strategy"]).split("|")
    return v


def _acc_verdict(v: dict) -> dict | None:
    """all-S against the better temporal canonical strategy, judged against binomial noise."""
    acc = v["acc"]
    temporal = [(k, float(acc[k])) for k in ("all-ST", "all-S+ST") if _isnum(acc.get(k))]
    if not _isnum(acc.get("all-S")) or not temporal:
        return None
    s = float(acc["all-S"])
    tname, t = max(temporal, key=lambda kv: kv[1])
    gap, n = t - s, v["n_videos"]
    out = {
        "gap": gap,
        "tname": tname,
        "noise": None,
        "nums": f"all-S scores {_pct(s)} against " + " and ".join(f"{k} {_pct(x)}" for k, x in temporal),
    }
    if n:
        out["noise"] = 200 * math.sqrt((s / 100) * (1 - s / 100) / n + (t / 100) * (1 - t / 100) / n)
        thr = out["noise"]
    else:
        thr = 0.0
    out["kind"] = "temporal" if gap > thr else ("spatial" if gap < -thr else "none")
    return out


_VERDICTS = {  # (accuracy verdict, drop-probability preference) -> words
    ("temporal", "temporal"): "temporal units pay off and the analyzer finds them",
    ("temporal", "none"): "temporal units pay off, but the drop probabilities do not single them out",
    ("temporal", "spatial"): "temporal units pay off, but the drop probabilities favour the spatial paths",
    (
        "none",
        "temporal",
    ): "temporal units make no clear difference in accuracy, yet the drop probabilities favour them",
    ("none", "none"): "temporal units make no clear difference, and the analyzer shows no preference either",
    (
        "none",
        "spatial",
    ): "temporal units make no clear difference, and the drop probabilities favour the spatial paths",
    ("spatial", "temporal"): "spatial units do better, yet the drop probabilities favour the temporal paths",
    ("spatial", "none"): "spatial units do better, and the drop probabilities show no preference",
    ("spatial", "spatial"): "spatial units do better and the analyzer prefers them",
}


def _story_sentence(name: str, v: dict, label: bool) -> str:
    """One sentence per dataset; ``label``: append the split/views the accuracies were measured on."""
    av, pr = _acc_verdict(v), v["probs"]
    if av is None and pr is None:
        return f"On **{name}** data nothing has been learned or scored yet."
    evidence = []
    if av is not None:
        e = av["nums"]
        if av["noise"] is not None:
            e += (
                f" (gap {av['gap']:+.1f} points; two binomial standard errors on {v['n_videos']} videos: "
                f"{av['noise']:.1f})"
            )
        if label:
            e += f" [{v['views']}; {_score_label(v['col'])}]"
        evidence.append(e)
    if pr is not None:
        evidence.append(
            f"the S path is dropped more often than the T path in {pr['s_gt']} of {pr['n']} slots "
            f"(mean p_S {pr['mean_s']:.3f}, p_T {pr['mean_t']:.3f})"
        )
        if v["opt_units"]:
            k, n = sum(u in ("ST", "S+ST") for u in v["opt_units"]), len(v["opt_units"])
            where = "every slot" if k == n else f"{k} of {n} slots"
            evidence.append(f"Opt ({_pct(v['opt'])}) keeps a temporal path in {where}")
    if av is None:
        words = {
            "temporal": "the drop probabilities favour the temporal paths (no strategy scored yet)",
            "spatial": "the drop probabilities favour the spatial paths (no strategy scored yet)",
            "none": "the drop probabilities show no preference (no strategy scored yet)",
        }[pr["pref"]]
    elif pr is None:
        words = {
            "temporal": "temporal units pay off (drop probabilities not learned yet)",
            "spatial": "spatial units do better (drop probabilities not learned yet)",
            "none": "temporal units make no clear difference (drop probabilities not learned yet)",
        }[av["kind"]]
    else:
        words = _VERDICTS[(av["kind"], pr["pref"])]
    body = evidence[0] if len(evidence) == 1 else ", ".join(evidence[:-1]) + ", and " + evidence[-1]
    return f"On **{name}** data {words}: {body}."


def _demo_table(verdicts: dict[str, dict]) -> Table:
    rows = []
    for name, v in verdicts.items():
        pr = v["probs"] or {}
        rows.append(
            [
                f"**{name}**",
                _prob(pr.get("mean_s")),
                _prob(pr.get("mean_t")),
                f"{pr['s_gt']} of {pr['n']}" if pr else "–",
                *[_pct(v["acc"].get(k)) for k in ("all-S", "all-ST", "all-S+ST")],
                _pct(v["opt"]),
                f"{v['views']}; {_score_label(v['col'])}",
            ]
        )
    return Table(
        [
            "dataset",
            "mean p_S",
            "mean p_T",
            "slots with p_S > p_T",
            "all-S",
            "all-ST",
            "all-S+ST",
            "Opt",
            "accuracies measured on",
        ],
        rows,
        f"Drop probabilities: {DATA_FREE}. Accuracies: strategies scored inside the template, "
        "without retraining, on the selection split (never trained on).",
    )


def _timings_rows(demo: dict) -> list[list[str]]:
    rows = []
    for kind, r in (demo.get("results") or {}).items():
        t = (r or {}).get("timings") if isinstance(r, dict) else None
        items = []
        if isinstance(t, dict):
            items = list(t.items())
        elif isinstance(t, list):
            for e in t:
                if isinstance(e, (list, tuple)) and len(e) >= 2:
                    items.append((e[0], e[1]))
                elif isinstance(e, dict):
                    items.append((e.get("stage", e.get("name", "?")), e.get("seconds", e.get("time"))))
        for stage, sec in items:
            rows.append([str(kind), str(stage), _f(sec, 1, " s")])
    return rows


def build_demo_report(demo_dir: str | Path) -> Path:
    """Write ``demo_dir/report.html`` and ``report.md`` (and each run's own report); returns the HTML path.

    ``demo_dir`` is ``fusion3d demo``'s output folder: ``motion/`` and ``appearance/`` run directories
    and ``demo.json``. Raises FileNotFoundError when the folder does not exist."""
    demo_dir = Path(demo_dir)
    if not demo_dir.is_dir():
        raise FileNotFoundError(f"demo directory {demo_dir} does not exist")
    problems: list[str] = []
    demo = _read_json(demo_dir / "demo.json", problems) or {}
    runs: dict[str, RunData] = {}
    absent = []
    for kind in ("motion", "appearance"):
        try:
            runs[kind] = RunData(demo_dir / kind)
        except FileNotFoundError:
            absent.append(kind)
    for run in runs.values():
        build_report(run.dir)
    verdicts = {k: _verdict(r) for k, r in runs.items()}

    first = Section("story", "What the demo shows")
    labels = {(v["views"], v["col"]) for v in verdicts.values() if v["acc"]}
    shared = len(labels) == 1
    story = [_story_sentence(k, v, label=not shared) for k, v in verdicts.items()]
    if shared:
        views, col = labels.pop()
        story.append(
            f"Accuracies: strategies scored inside the template without retraining, {views} "
            f"({_score_label(col)}); drop probabilities are {DATA_FREE}."
        )
    if absent:
        story.append(
            f"The {' and '.join(absent)} run{'s are' if len(absent) > 1 else ' is'} missing from "
            f"{_code(demo_dir)}: run {_code(_cmd('fusion3d', 'demo', '--out', str(demo_dir)))}."
        )
    first.blocks.append(Para(" ".join(story), "story"))
    figs = [(k, r.dir / "figure4.png") for k, r in runs.items() if (r.dir / "figure4.png").is_file()]
    if figs:
        first.blocks.append(
            Figures([Img(p, f"Figure 4, {k}") for k, p in figs], [f"{k}: Figure 4" for k, _ in figs])
        )
        first.blocks.append(
            Para(
                f"Per-slot marginal probability of S, ST and S+ST (paper convention q = 1 - sqrt(p); "
                f"{DATA_FREE}); markers: the Opt strategy's unit in each slot."
            )
        )
    for k, r in runs.items():
        if not (r.dir / "figure4.png").is_file():
            first.blocks.append(
                Missing(f"Figure 4 of the {k} run is not drawn yet.", _commands(r)["analyze"])
            )
    if "motion" in runs:
        m = runs["motion"]
        if retrain_parts(m)[0] is not None:
            first.blocks.append(
                Table(
                    TABLE2_HEADER,
                    _table2_rows(m),
                    f"motion: strategies trained alone from scratch (Table-2 analog, retrain.csv); "
                    f"last column scored inside the template ({m.views()}).",
                )
            )
        else:
            first.blocks.append(
                Missing(
                    "motion: no strategy trained alone yet (Table-2 analog).",
                    " ; ".join(_retrain_cmd(m, lab) for lab in RETRAIN_LABELS),
                )
            )
    if verdicts:
        first.blocks.append(_demo_table(verdicts))

    sections = [first]
    tim = Section("timings", "Stage timings")
    rows = _timings_rows(demo)
    if rows:
        wall = demo.get("wall_seconds")
        tim.blocks.append(
            Table(
                ["dataset", "stage", "wall time"],
                rows,
                f"Total wall time {_f(wall, 1, ' s')}; the two pipelines ran side by side."
                if _isnum(wall)
                else "",
            )
        )
        if isinstance(demo.get("settings"), dict):
            tim.blocks.append(
                Para("Settings: " + ", ".join(f"{k} {v}" for k, v in demo["settings"].items()) + ".")
            )
    else:
        tim.blocks.append(Para("demo.json is missing or holds no timings.", "missing"))
    sections.append(tim)
    links = Section("runs", "Run reports")
    links.blocks.append(
        Links(
            [
                (f"{k}: full report of {_code(r.dir)}", f"{k}/{REPORT_HTML}", f"{k}/{REPORT_MD}")
                for k, r in runs.items()
            ]
        )
    )
    for k, r in runs.items():
        links.blocks.append(Para(f"**{k}**: " + " ".join(headline(r))))
    sections.append(links)
    if "motion" in runs and runs["motion"].derived:
        der = Section("derived", "Derived backbone designs (from the motion template)")
        der.blocks.append(_derived_table(runs["motion"].derived, demo_dir))
        sections.append(der)
    for prob in problems:
        sections[-1].blocks.append(Para(f"**Unreadable file**: {prob}", "missing"))
    meta = [f"demo folder {_code(demo_dir)}", f"report generated {_when(_dt.datetime.now().timestamp())}"]
    doc = Document("fusion3d demo: where does temporal modelling pay off?", meta, sections)
    return _write(doc, demo_dir)[0]
