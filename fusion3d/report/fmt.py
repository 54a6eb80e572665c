"""Formatting numbers and code for a report's text (used as ``fmt.pct(v)``, ``fmt.code(s)``, ...)."""

from __future__ import annotations

import datetime as _dt
import shlex

from fusion3d.report.document import SCORE_LABELS
from fusion3d.run.io import is_number as isnum


def num(v, digits: int = 1, suffix: str = "") -> str:
    return f"{float(v):.{digits}f}{suffix}" if isnum(v) else "–"


def pct(v) -> str:
    return num(v, 1, "%")


def prob(v) -> str:
    return num(v, 3)


def macs(v) -> str:
    if not isnum(v):
        return "–"
    v = float(v)
    for scale, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if v >= scale:
            return f"{v / scale:.2f} {unit}"
    return f"{v:.0f}"


def params(v) -> str:
    if not isnum(v):
        return "–"
    v = float(v)
    if v >= 1e6:
        return f"{v / 1e6:.2f}M"
    if v >= 1e3:
        return f"{v / 1e3:.1f}k"
    return f"{v:.0f}"


def code(s) -> str:
    s = str(s).replace("`", "'")
    return f"`{s}`"


def cmd(*parts) -> str:
    return " ".join(shlex.quote(str(p)) for p in parts)


def when(ts: float | None) -> str:
    return _dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M") if ts else "–"


def now() -> str:
    return when(_dt.datetime.now().timestamp())


def score_label(col: str) -> str:
    return SCORE_LABELS.get(col, col)


def n_slots(k: int) -> str:
    return f"{k} slot" + ("" if k == 1 else "s")
