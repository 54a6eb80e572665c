"""Fusion strategies: one unit per slot.

A unit says which of a slot's two paths are kept:

=======  ======  ======
unit     S path  T path
=======  ======  ======
S        kept    dropped
ST       dropped kept
S+ST     kept    kept
none     dropped dropped
=======  ======  ======

Keep masks are ``(num_slots, 2)`` bool arrays with columns ``[S, T]`` (the same column order as
``FusionTemplate.drop_probs()``). This module imports no torch; masks are plain nested sequences or
numpy arrays (a torch bool tensor works too, it is read with ``bool()`` per entry).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fusion3d.utils import atomic_write_text

UNITS: tuple[str, ...] = ("S", "ST", "S+ST", "none")
UNIT_TO_KEEP: dict[str, tuple[bool, bool]] = {
    "S": (True, False),
    "ST": (False, True),
    "S+ST": (True, True),
    "none": (False, False),
}
KEEP_TO_UNIT: dict[tuple[bool, bool], str] = {v: k for k, v in UNIT_TO_KEEP.items()}


def unit_from_keep(keep_s: bool, keep_t: bool) -> str:
    return KEEP_TO_UNIT[(bool(keep_s), bool(keep_t))]


@dataclass(frozen=True)
class Strategy:
    """One fusion unit per slot, in slot order (``FusionTemplate.slots``)."""

    units: tuple[str, ...]

    def __post_init__(self) -> None:
        units = tuple(self.units)
        bad = [(i, u) for i, u in enumerate(units) if u not in UNIT_TO_KEEP]
        if bad:
            i, u = bad[0]
            raise ValueError(f"slot {i}: unknown unit {u!r}; valid units: {', '.join(UNITS)}")
        object.__setattr__(self, "units", units)

    # ---- construction ----------------------------------------------------------------------
    @classmethod
    def uniform(cls, unit: str, n: int) -> Strategy:
        """The same ``unit`` at all ``n`` slots."""
        return cls((unit,) * int(n))

    @classmethod
    def from_string(cls, text: str) -> Strategy:
        """Inverse of ``str()``: ``"S+ST|ST|S|none"``."""
        text = text.strip()
        return cls(tuple(u.strip() for u in text.split("|")) if text else ())

    @classmethod
    def from_keep(cls, keep: Any) -> Strategy:
        """From a ``(num_slots, 2)`` bool mask, columns ``[S, T]``."""
        rows = [tuple(r) for r in keep]
        if any(len(r) != 2 for r in rows):
            raise ValueError("a keep mask must have shape (num_slots, 2), columns [S, T]")
        return cls(tuple(unit_from_keep(bool(s), bool(t)) for s, t in rows))

    # ---- views -------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.units)

    def __iter__(self):
        return iter(self.units)

    def __getitem__(self, i: int) -> str:
        return self.units[i]

    def __str__(self) -> str:
        return "|".join(self.units)

    @property
    def id(self) -> str:
        """Stable short id: the first 10 hex digits of sha1 of ``str(self)``."""
        return hashlib.sha1(str(self).encode()).hexdigest()[:10]

    def keep(self) -> list[tuple[bool, bool]]:
        """Keep mask, one ``(keep_S, keep_T)`` pair per slot (``np.array(s.keep())`` is (n, 2) bool)."""
        return [UNIT_TO_KEEP[u] for u in self.units]

    def counts(self) -> dict[str, int]:
        """How many slots use each unit (every unit listed, zeros included)."""
        c = Counter(self.units)
        return {u: c.get(u, 0) for u in UNITS}

    # ---- JSON ----------------------------------------------------------------------------------
    def to_dict(self, slot_names: Sequence[str] | None = None) -> dict[str, Any]:
        d: dict[str, Any] = {"id": self.id, "string": str(self), "units": list(self.units)}
        if slot_names is not None:
            if len(slot_names) != len(self.units):
                raise ValueError(f"{len(slot_names)} slot names for {len(self.units)} units")
            d["slots"] = list(slot_names)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any] | Sequence[str]) -> Strategy:
        """Accepts ``to_dict()`` output (``units`` is authoritative; ``id`` is checked if present),
        a ``{"string": "S|ST"}`` mapping, or a bare list of units."""
        if isinstance(d, dict):
            if "units" in d:
                s = cls(tuple(d["units"]))
            elif "string" in d:
                s = cls.from_string(d["string"])
            else:
                raise ValueError("a strategy mapping needs 'units' (a list) or 'string'")
            if "slots" in d and len(d["slots"]) != len(s):
                raise ValueError(f"{len(d['slots'])} slot names for {len(s)} units")
            if "id" in d and d["id"] != s.id:
                raise ValueError(f"strategy id {d['id']!r} does not match its units (id {s.id!r})")
            return s
        return cls(tuple(d))

    def to_json(self, slot_names: Sequence[str] | None = None, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(slot_names), indent=indent)

    @classmethod
    def from_json(cls, text: str) -> Strategy:
        return cls.from_dict(json.loads(text))

    def save(self, path: str | Path, slot_names: Sequence[str] | None = None) -> None:
        atomic_write_text(Path(path), self.to_json(slot_names, indent=1) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Strategy:
        return cls.from_json(Path(path).read_text())


def as_strategy(value: Strategy | str | Sequence[str], num_slots: int) -> Strategy:
    """A Strategy from a Strategy, a unit string 'S|ST|...' or a sequence of units, checked against ``num_slots``."""
    if isinstance(value, str):
        value = Strategy.from_string(value)
    elif not isinstance(value, Strategy):
        value = Strategy(tuple(value))
    if len(value) != num_slots:
        raise ValueError(f"strategy has {len(value)} units, the template has {num_slots} slots")
    return value


def resolve_strategy(spec: str, num_slots: int) -> Strategy:
    """A strategy from a config value: a unit name (uniform), a unit string, or a JSON file path."""
    from pathlib import Path as _Path

    if spec in UNITS:
        strategy = Strategy.uniform(spec, num_slots)
    elif spec.endswith(".json") or _Path(spec).is_file():
        if not _Path(spec).is_file():
            raise FileNotFoundError(f"strategy file {spec} does not exist")
        strategy = Strategy.load(spec)
    else:
        strategy = Strategy.from_string(spec)
    if len(strategy) != num_slots:
        raise ValueError(f"strategy {spec!r} has {len(strategy)} units, the model has {num_slots} slots")
    return strategy
