"""Typed readers of a run directory's files, and :class:`RunData`: everything the stages of one run
wrote, read once, with ``None`` for what is not there.

The readers never raise on a damaged file: they append a sentence to a ``problems`` list and return
None, so a report can still be written (and say what it could not read). A torn last line (a writer
killed mid-line) is dropped. File names come from :mod:`fusion3d.run.layout` (``RunDir``).
Only numpy, pandas and pyyaml are used (no torch).
"""

from __future__ import annotations

import io
import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from fusion3d.errors import FusionError
from fusion3d.models.units import CANONICAL_SOURCES
from fusion3d.run.layout import FILES, RUN_MARKERS, RunDir
from fusion3d.run.retrains import RETRAIN_STRING_COLUMNS, with_seed_columns
from fusion3d.run.seeds import seed_dirs
from fusion3d.run.strategies import STRING_COLUMNS

# Columns read as strings (strategy strings and ids look like numbers to pandas).
# Columns without which a table is ignored (with a problem): role -> columns.
REQUIRED_COLUMNS = {
    "strategies": {"strategy", "id", "source", "macs", "top1_before"},
    "top": {"strategy"},
    "marginals": {"slot"},
    "retrain": {"label", "strategy"},
    "ablation": {"slot", "t_effect", "t_verdict"},
}
# The JSON files a run holds: RunData attribute -> role.
JSON_FILES = {
    "summary": "summary",
    "sample": "sample",
    "analysis": "analysis",
    "opt_json": "opt",
    "validate": "agreement",
    "cka": "cka",
    "bench": "bench",
}


def is_number(v) -> bool:
    """A finite int or float (numpy's too), not a bool."""
    return (
        isinstance(v, (int, float, np.integer, np.floating))
        and not isinstance(v, bool)
        and math.isfinite(float(v))
    )


def read_json(path: Path, problems: list[str]):
    """The parsed JSON file, or None (missing, or unreadable: then a problem is recorded)."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        problems.append(f"{path.name} could not be read ({type(e).__name__}: {e})")
        return None


def read_csv(path: Path, problems: list[str], **kw) -> pd.DataFrame | None:
    """A CSV file without its torn last line (a writer killed mid-line), or None (missing, blank, or
    unreadable: then a problem is recorded). ``kw`` go to ``pandas.read_csv``."""
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


def read_metrics(path: Path) -> list[dict] | None:
    """The records of a metrics file (JSON lines; a torn or foreign line is skipped), or None."""
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


def _check_run_dir(d: Path, files: RunDir) -> None:
    if not d.is_dir():
        raise FileNotFoundError(f"run directory {d} does not exist")
    if not files.is_run():
        markers = [FILES[r] for r in RUN_MARKERS]
        raise FileNotFoundError(
            f"{d} is not a run directory: it has no {', '.join(markers[:-1])} or "
            f"{markers[-1]} (train first: `fusion3d train CONFIG run.out={d}`)"
        )


class RunData:
    """Everything the stages wrote into one run directory (``None`` for what is not there).

    ``dir`` is the directory, ``files`` its :class:`RunDir` (the path of every file by role)."""

    def __init__(self, run_dir: str | Path):
        self.dir = Path(run_dir)
        self.files = f = RunDir(self.dir)
        _check_run_dir(self.dir, f)
        self.problems: list[str] = []
        self.config_text = f.config.read_text() if f.config.is_file() else None
        self.config: dict = {}
        if self.config_text:
            try:
                self.config = yaml.safe_load(self.config_text) or {}
            except yaml.YAMLError as e:
                self.problems.append(f"{FILES['config']} could not be parsed ({e})")
        self._read_metrics()
        for attr, role in JSON_FILES.items():
            setattr(self, attr, read_json(f.file(role), self.problems))
        self.strategies = read_csv(f.strategies, self.problems, dtype=STRING_COLUMNS)
        self.marginals = read_csv(f.marginals, self.problems)
        self.ablation = read_csv(f.ablation, self.problems)
        self.top = read_csv(f.top, self.problems, dtype=STRING_COLUMNS)
        self.retrain = read_csv(f.retrain, self.problems, dtype=RETRAIN_STRING_COLUMNS)
        self._check_tables()
        if self.retrain is not None:  # rows from before the seed columns: the run's seed
            seed = self.cfg("run", "seed", default=0)
            self.retrain = with_seed_columns(self.retrain, seed if is_number(seed) else 0)
        self.derived = []
        for p in sorted(f.derived_dir.glob("*.json")) if f.derived_dir.is_dir() else []:
            v = read_json(p, self.problems)
            if isinstance(v, dict):
                self.derived.append((p, v))
        self._read_seed_runs()

    def _read_seed_runs(self) -> None:
        """A run of several template seeds (``run.seeds > 1``): ``seed_runs`` holds each seed run's data;
        without training records of its own, the run shows the first seed's (``metrics``) and a summary
        whose drop probabilities are the mean over the seeds."""
        self.seed_runs: list[RunData] = []
        try:
            dirs = seed_dirs(self.dir)
        except FusionError as e:
            self.problems.append(str(e))
            dirs = []
        for d in dirs:
            try:
                self.seed_runs.append(RunData(d))
            except FileNotFoundError:
                self.problems.append(f"seed run {d.name} has not been trained yet")
        if not self.seed_runs or self.summary is not None or self.metrics is not None:
            return
        first = self.seed_runs[0]
        self.metrics, self.start, self.epochs, self.steps = (
            first.metrics,
            first.start,
            first.epochs,
            first.steps,
        )
        summaries = [r.summary for r in self.seed_runs if r.summary]
        if first.summary:
            self.summary = dict(first.summary)
            self.summary["complete"] = len(summaries) == len(dirs) and all(
                x.get("complete") for x in summaries
            )
            for key in ("drop_probs", "depth_drop_probs"):
                tables = [x.get(key) for x in summaries]
                if all(t is not None for t in tables) and tables:
                    self.summary[key] = np.mean(np.asarray(tables, dtype=float), axis=0).tolist()

    def _read_metrics(self) -> None:
        self.metrics = read_metrics(self.files.metrics)
        recs = self.metrics or []
        self.start = next((r for r in recs if r.get("kind") == "start"), None)
        by_epoch = {}
        for r in recs:
            if r.get("kind") == "epoch" and is_number(r.get("epoch")):
                by_epoch[int(r["epoch"])] = r  # a resumed run may repeat an epoch: the last one counts
        self.epochs = [by_epoch[e] for e in sorted(by_epoch)]
        self.steps = [r for r in recs if r.get("kind") == "step"]

    def _check_tables(self) -> None:
        """Tables without their required columns, and JSON files that are not objects, are dropped."""
        for attr, need in REQUIRED_COLUMNS.items():
            df = getattr(self, attr)
            if df is not None and not need <= set(df.columns):
                lacks = sorted(need - set(df.columns))
                self.problems.append(f"{FILES[attr]} lacks the columns {lacks}: ignored")
                setattr(self, attr, None)
        for attr, role in JSON_FILES.items():
            if getattr(self, attr) is not None and not isinstance(getattr(self, attr), dict):
                self.problems.append(f"{FILES[role]} is not a JSON object: ignored")
                setattr(self, attr, None)

    def agreement_table(self) -> pd.DataFrame | None:
        """The agreement stage's table (one row per strategy trained alone), read now; a problem is
        recorded when it cannot be read."""
        return read_csv(self.files.agreement_csv, self.problems, dtype=STRING_COLUMNS)

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
        return int(w) if is_number(w) else None

    @property
    def total_epochs(self) -> int | None:
        if self.summary and is_number(self.summary.get("total_epochs")):
            return int(self.summary["total_epochs"])
        w, e = self.cfg("train", "warmup_epochs"), self.cfg("train", "epochs")
        return int(w) + int(e) if is_number(w) and is_number(e) else None

    @property
    def epochs_done(self) -> int:
        if self.summary and is_number(self.summary.get("epochs_done")):
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
    def _from_summary(self) -> str:
        if self.seed_runs:
            return f"mean over the {len(self.seed_runs)} template seeds' {FILES['summary']}"
        return f"{FILES['summary']} (after epoch {self.epochs_done} of {self.total_epochs or '?'})"

    def _from_metrics(self, epoch) -> str:
        return f"{FILES['metrics']}, last epoch record (epoch {epoch}; training not finished)"

    def drop_probs(self) -> tuple[np.ndarray | None, list[str], str]:
        """(slots x 2 array of p_S, p_T; slot names; where they come from)."""
        p, names, src = None, [], ""
        if self.summary and self.summary.get("drop_probs"):
            p = np.asarray(self.summary["drop_probs"], dtype=float)
            names = list(self.summary.get("slot_names") or [])
            src = self._from_summary()
        else:
            last = next((r for r in reversed(self.epochs) if r.get("drop_probs")), None)
            if last is not None:
                p = np.asarray(last["drop_probs"], dtype=float)
                src = self._from_metrics(last["epoch"])
        if p is not None and len(names) != len(p):
            names = self.slot_names(len(p))
        return p, names, src

    def depth_probs(self) -> tuple[np.ndarray | None, str]:
        """(per-slot depth-gate drop probabilities p_D, where they come from); None without depth gates."""
        if self.summary and self.summary.get("depth_drop_probs"):
            return np.asarray(self.summary["depth_drop_probs"], dtype=float).reshape(-1), self._from_summary()
        last = next((r for r in reversed(self.epochs) if r.get("depth_drop_probs")), None)
        if last is not None:
            d = np.asarray(last["depth_drop_probs"], dtype=float).reshape(-1)
            return d, self._from_metrics(last["epoch"])
        return None, ""

    def cka_runs(self) -> list[list[str]] | None:
        """The CKA file's redundant runs as lists of slot names (a plain list, or the CKA stage's dict
        with ``slots`` or ``first`` / ``last``); None without the CKA file."""
        if not self.cka:
            return None
        out = []
        for r in self.cka.get("redundant_runs") or []:
            if isinstance(r, dict):
                slots = r.get("slots") or [r.get("first"), r.get("last")]
                out.append([str(x) for x in slots if x is not None])
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
        if is_number(n):
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
            for src in CANONICAL_SOURCES:
                rows = df[df["source"] == src]
                if len(rows):
                    out[src] = rows.iloc[0].to_dict()
        return out

    def opt(self) -> dict | None:
        """The Opt strategy's row: the analysis file's when analyze ran, else the best scored row."""
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
