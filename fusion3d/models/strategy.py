"""Fusion strategies: one unit per slot, and the one strategy grammar (``as_strategy``).

A unit says which of a slot's two paths are kept (the vocabulary: ``fusion3d.models.units``).

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
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from fusion3d.models.units import FULL_UNIT, KEEP_TO_UNIT, UNIT_TO_KEEP, UNITS, unit_from_keep
from fusion3d.utils import atomic_write_text

# The unit vocabulary lives in ``fusion3d.models.units``; re-exported here (older imports).
__all__ = [
    "KEEP_TO_UNIT",
    "UNIT_TO_KEEP",
    "UNITS",
    "Strategy",
    "StrategySpec",
    "as_strategy",
    "full_strategy",
    "resolve_strategy",
    "strategy_or_full",
    "unit_from_keep",
]


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
        """A strategy JSON file; a file that is not one raises ``ValueError`` naming the file."""
        try:
            return cls.from_json(Path(path).read_text())
        except UnicodeDecodeError:
            raise ValueError(f"strategy file {str(path)!r} is not text (not a strategy JSON file)") from None
        except json.JSONDecodeError as e:
            raise ValueError(
                f"strategy file {str(path)!r} is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})"
            ) from None
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            raise ValueError(f"strategy file {str(path)!r}: {e}") from None


# ---- the strategy grammar ------------------------------------------------------------------------
#
# Every place that takes a strategy (``create``, ``apply_strategy``, ``count_macs``, ``count_params``,
# ``macs_breakdown``, ``trace_costs``, ``rf_graph``, ``model.strategy`` in a config) goes through
# ``as_strategy``, so they all accept the same specs:
#
# - a ``Strategy``;
# - a unit (``S``, ``ST``, ``S+ST``, ``none``): that unit at every slot;
# - a unit string ``'S|ST|...'``: one unit per slot, in slot order;
# - a strategy JSON file (``Strategy.save``; a path ending in ``.json``, or any existing file);
# - a sequence of units.
#
# ``opt`` / ``top:K`` / ``most_probable`` refer to a run's results and are resolved against the run
# (``fusion3d.run.loading``), not here.

StrategySpec = Strategy | str | PathLike | Sequence[str]


def _describe(spec: Any) -> str:
    return repr(str(spec)) if isinstance(spec, (Strategy, PathLike)) else repr(spec)


def _parse(spec: StrategySpec, num_slots: int) -> Strategy:
    """The strategy a spec names (a unit is widened to ``num_slots``); the length is checked by the caller."""
    if isinstance(spec, Strategy):
        return spec
    if isinstance(spec, PathLike) or (
        isinstance(spec, str) and (spec.endswith(".json") or Path(spec).is_file())
    ):
        path = Path(spec)
        if not path.is_file():
            raise FileNotFoundError(f"strategy file {str(path)!r} does not exist")
        return Strategy.load(path)  # its errors name the file
    if isinstance(spec, str):
        text = spec.strip()
        if text in UNIT_TO_KEEP:
            return Strategy.uniform(text, num_slots)
        if not text:
            raise ValueError(
                f"strategy {spec!r} is empty; expected a unit ({', '.join(UNITS)}), a unit string "
                "'S|ST|...' or a strategy JSON file"
            )
        units = tuple(u.strip() for u in text.split("|"))
    elif isinstance(spec, Sequence) and not isinstance(spec, bytes):
        units = tuple(spec)
    else:
        raise TypeError(
            f"strategy {spec!r}: expected a Strategy, a unit ({', '.join(UNITS)}), a unit string "
            f"'S|ST|...', a strategy JSON file or a sequence of units, got {type(spec).__name__}"
        )
    try:
        return Strategy(units)
    except ValueError as e:
        raise ValueError(f"strategy {_describe(spec)}: {e}") from None


def as_strategy(value: StrategySpec, num_slots: int) -> Strategy:
    """THE strategy grammar (see above): a ``Strategy`` for a network with ``num_slots`` slots.

    Errors name the spec and the problem: ``strategy 'S|XX': slot 1: unknown unit 'XX'; valid units:
    S, ST, S+ST, none``, ``strategy 'S|ST' has 2 units, the model has 6 slots``, a missing file
    (``FileNotFoundError``)."""
    strategy = _parse(value, num_slots)
    if len(strategy) != num_slots:
        raise ValueError(
            f"strategy {_describe(value)} has {len(strategy)} units, the model has {num_slots} slots"
        )
    return strategy


def resolve_strategy(spec: str | PathLike, num_slots: int) -> Strategy:
    """A strategy from a config value (``model.strategy``, ``--strategy``): ``as_strategy`` of a string
    (a unit, a unit string or a JSON file path)."""
    if not isinstance(spec, (str, PathLike)):
        raise TypeError(f"a strategy config value must be a string, got {type(spec).__name__}")
    return as_strategy(spec, num_slots)


def full_strategy(num_slots: int) -> Strategy:
    """Every path kept at every slot (``FULL_UNIT``, S+ST): the network in "off" / "relaxed" mode."""
    return Strategy.uniform(FULL_UNIT, num_slots)


def strategy_or_full(value: StrategySpec | None, num_slots: int) -> Strategy:
    """``as_strategy``, with ``None`` meaning the full network (``full_strategy``): the convention of
    ``count_macs`` / ``count_params`` / ``macs_breakdown`` / ``trace_costs`` and of ``rf_graph``."""
    return full_strategy(num_slots) if value is None else as_strategy(value, num_slots)


def single_path_strategy(num_slots: int, step: int, seed: int, fair: bool = False) -> Strategy:
    """The sub-network one single-path training step trains (``train.warmup_sampling``).

    ``fair=False`` ("uniform", single-path one-shot style): each slot's unit is drawn uniformly from
    ``UNITS``, independently per step. ``fair=True`` (FairNAS style): steps go in blocks of
    ``len(UNITS)``; in each block every slot visits every unit exactly once, in its own random order,
    so every unit of every slot is trained equally often. Depends only on (seed, step): a resumed run
    draws what an uninterrupted one would.
    """
    n = len(UNITS)
    if fair:
        rng = np.random.default_rng([int(seed), int(step) // n, 1])
        picks = [int(rng.permutation(n)[int(step) % n]) for _ in range(num_slots)]
    else:
        rng = np.random.default_rng([int(seed), int(step), 0])
        picks = [int(i) for i in rng.integers(0, n, size=num_slots)]
    return Strategy(tuple(UNITS[i] for i in picks))
