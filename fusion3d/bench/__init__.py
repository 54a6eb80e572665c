"""The known-answer benchmark's catalog: table specs (``specs/*.yaml``) and the finished ground-truth
tables that ship with the package (``tables/<name>.csv`` with ``<name>.json``: what produced it).

A spec names a synthetic dataset (``synth``: the arguments of ``fusion3d.data.synth.generate``),
the stand-alone training recipe (``config``: dotted overrides of the defaults), the design of the
strategies (``design``: how many random strategies, their seed) and the training seeds.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml

SPECS_DIR = Path(__file__).parent / "specs"
TABLES_DIR = Path(__file__).parent / "tables"
RELIABILITY_FILE = Path(__file__).parent / "reliability.json"


@dataclass(frozen=True)
class BenchSpec:
    name: str
    description: str
    synth: dict
    config: list = field(default_factory=list)
    design: dict = field(default_factory=lambda: {"random": 31, "seed": 0})
    seeds: list = field(default_factory=lambda: [0, 1])


def data_id(dataset_root: str | Path) -> str | None:
    """12 hex digits identifying a synthetic dataset: a digest of the ``synth.json`` its generator
    wrote (the generator's version and every argument); None for a dataset without one."""
    path = Path(dataset_root) / "synth.json"
    if not path.is_file():
        return None
    text = json.dumps(json.loads(path.read_text()), sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def list_specs() -> list[str]:
    """Names of the specs shipped with the package."""
    return sorted(p.stem for p in SPECS_DIR.glob("*.yaml"))


def load_spec(name: str | Path) -> BenchSpec:
    """A spec by name (shipped) or from a YAML file."""
    path = Path(name)
    if not path.is_file():
        path = SPECS_DIR / f"{name}.yaml"
    if not path.is_file():
        raise FileNotFoundError(
            f"no benchmark spec {str(name)!r}: not a file and not one of {', '.join(list_specs())}"
        )
    data = yaml.safe_load(path.read_text()) or {}
    unknown = set(data) - {"name", "description", "synth", "config", "design", "seeds"}
    if unknown:
        raise ValueError(f"{path}: unknown keys {sorted(unknown)}")
    if "synth" not in data:
        raise ValueError(f"{path}: a spec needs 'synth' (the arguments of fusion3d.data.synth.generate)")
    return BenchSpec(
        name=str(data.get("name", path.stem)),
        description=str(data.get("description", "")),
        synth=dict(data["synth"]),
        config=list(data.get("config", [])),
        design=dict(data.get("design", {"random": 31, "seed": 0})),
        seeds=[int(s) for s in data.get("seeds", [0, 1])],
    )


def shipped_tables() -> list[str]:
    """Names of the finished tables shipped with the package."""
    return sorted(p.stem for p in TABLES_DIR.glob("*.csv"))


def table_paths(name: str | Path) -> tuple[Path, Path]:
    """(csv, json) of a table: a shipped name, or a CSV path (its JSON beside it)."""
    path = Path(name)
    if path.suffix == ".csv" and path.is_file():
        return path, path.with_suffix(".json")
    csv = TABLES_DIR / f"{name}.csv"
    if not csv.is_file():
        raise FileNotFoundError(
            f"no ground-truth table {str(name)!r}: not a CSV file and not one of "
            f"{', '.join(shipped_tables()) or '(none shipped)'}"
        )
    return csv, csv.with_suffix(".json")


def load_table(name: str | Path) -> tuple[pd.DataFrame, dict]:
    """(rows, metadata) of a table."""
    csv, meta = table_paths(name)
    df = pd.read_csv(csv, dtype={"id": str, "strategy": str, "design": str})
    return df, (json.loads(meta.read_text()) if meta.is_file() else {"name": csv.stem})


# ----------------------------------------------------------------------------- reliability.json
#
# What the shipped benchmark measured about the method itself: how far template scores agree with
# stand-alone training, per ground-truth table. The report's "How far to trust these scores" reads it.
# Schema (version 1):
#   {"schema": 1,
#    "placeholder": bool,              # true: provisional numbers, to be overwritten by the final study
#    "what": str,                      # what tau compares (the template's scores vs stand-alone training)
#    "template": str,                  # the template settings measured
#    "source": str,                    # the script / command that produced the numbers
#    "measured": "YYYY-MM-DD",
#    "tables": {NAME: {"kendall_tau_after": float,     # mean over template seeds
#                      "per_seed": [float, ...],        # one tau per template seed
#                      "interval": [low, high],         # across template seeds
#                      "interval_kind": str,            # e.g. "min-max over template seeds"
#                      "template_seeds": int,
#                      "baselines": {NAME: float},      # tau of training-free predictors (macs, ...)
#                      "noise_ceiling": float,          # tau between two halves of the table's seeds
#                      "ablation": {                     # optional: the per-slot ablation's answers
#                          "kendall_tau": float,         #   its additive ranking, mean over seeds
#                          "per_seed": [float, ...],
#                          "slot_spearman": float}}}     #   its per-slot T effects vs the ground truth


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def check_reliability(data: dict, where: str = "reliability.json") -> dict:
    """``data`` if it follows the schema above, else a ValueError naming what is wrong."""
    if not isinstance(data, dict) or data.get("schema") != 1:
        raise ValueError(f"{where}: expected a JSON object with schema 1")
    for key in ("what", "source", "measured"):
        if not isinstance(data.get(key), str) or not data[key]:
            raise ValueError(f"{where}: {key!r} must be a non-empty string")
    tables = data.get("tables")
    if not isinstance(tables, dict) or not tables:
        raise ValueError(f"{where}: 'tables' must map table names to their measurements")
    for name, t in tables.items():
        if not isinstance(t, dict):
            raise ValueError(f"{where}: table {name!r} must be an object")
        for key in ("kendall_tau_after", "noise_ceiling"):
            if not _number(t.get(key)):
                raise ValueError(f"{where}: table {name!r}: {key!r} must be a number")
        per_seed, interval = t.get("per_seed", []), t.get("interval")
        if not isinstance(per_seed, list) or not all(_number(v) for v in per_seed):
            raise ValueError(f"{where}: table {name!r}: 'per_seed' must be a list of numbers")
        if interval is not None and not (
            isinstance(interval, list) and len(interval) == 2 and all(_number(v) for v in interval)
        ):
            raise ValueError(f"{where}: table {name!r}: 'interval' must be [low, high]")
        if not _number(t.get("template_seeds", 0)):
            raise ValueError(f"{where}: table {name!r}: 'template_seeds' must be a number")
        baselines = t.get("baselines", {})
        if not isinstance(baselines, dict) or not all(_number(v) for v in baselines.values()):
            raise ValueError(f"{where}: table {name!r}: 'baselines' must map names to numbers")
        abl = t.get("ablation")
        if abl is not None and not (
            isinstance(abl, dict)
            and _number(abl.get("kendall_tau"))
            and all(_number(v) for v in abl.get("per_seed", []))
            and (abl.get("slot_spearman") is None or _number(abl["slot_spearman"]))
        ):
            raise ValueError(
                f"{where}: table {name!r}: 'ablation' must hold a number 'kendall_tau', a list 'per_seed' "
                "and a number (or null) 'slot_spearman'"
            )
    return data


def load_reliability(path: str | Path | None = None) -> dict:
    """The measured agreement of template scores with stand-alone training (``reliability.json``
    shipped with the package, or ``path``), checked against its schema."""
    path = Path(path) if path is not None else RELIABILITY_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no reliability file {path}")
    try:
        data = json.loads(path.read_text())
    except ValueError as e:
        raise ValueError(f"{path} is not valid JSON ({e})") from None
    return check_reliability(data, str(path))
