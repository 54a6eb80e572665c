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
