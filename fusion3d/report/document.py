"""The document model of a report (paragraphs, tables, figures, ... in sections) and the formatting
helpers every section uses. Rendering is in ``render``; nothing here reads a file."""

from __future__ import annotations

import datetime as _dt
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from fusion3d.models.units import CANONICAL as CANONICAL_UNITS
from fusion3d.run.io import is_number as _isnum

# The canonical strategies as (source in the strategies table, name in a report): all-S, all-ST, all-S+ST.
CANONICAL = tuple((src, f"all-{unit}") for src, unit in CANONICAL_UNITS)
SCORE_LABELS = {
    "top1_after": "top-1 after BatchNorm recalibration",
    "top1_before": "top-1 with the template's BatchNorm statistics (no recalibration)",
}
DATA_FREE = "learned parameters of the template, not measured on data"


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


def _now() -> str:
    return _when(_dt.datetime.now().timestamp())


def _score_label(col: str) -> str:
    return SCORE_LABELS.get(col, col)


def _n_slots(k: int) -> str:
    return f"{k} slot" + ("" if k == 1 else "s")
