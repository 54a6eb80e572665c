"""The document model of a report (paragraphs, tables, figures, ... in sections) and the formatting
helpers every section uses. Rendering is in ``render``; nothing here reads a file."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from fusion3d.models.units import CANONICAL as CANONICAL_UNITS

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
