"""Rows of ``retrain.csv`` and their training seeds.

A strategy trained alone with several training seeds (``fusion3d retrain RUN --strategy X --seeds K``)
has one row, and one run directory, per seed: the run's ``run.seed`` under the plain label (``S``,
``opt``, ``S@resnet18_3d``), every further seed ``s`` under ``<label>#seed<s>`` (``S#seed1``, in
``retrain/S#seed1/``). Two columns say which row is which: ``seed`` (the training seed) and
``base_label`` (the label without its seed suffix). Rows written before these columns existed get
them when read (``with_seed_columns``): the seed from the label's suffix, else the run's seed.

Only pandas; no torch.
"""

from __future__ import annotations

import re

import pandas as pd

SEED_SUFFIX = "#seed"
# Text columns of ``retrain.csv``: read as strings, so that an id or a label that looks like a number
# ("0123456789", "1e5") is never rewritten as one when the table is read and written back.
RETRAIN_STRING_COLUMNS = {"id": str, "strategy": str, "label": str, "base_label": str, "model": str}
_SUFFIX = re.compile(re.escape(SEED_SUFFIX) + r"(\d+)$")


def seed_label(label: str, seed: int) -> str:
    """The label of ``label`` trained with the extra training seed ``seed``: ``<label>#seed<seed>``."""
    return f"{label}{SEED_SUFFIX}{int(seed)}"


def base_label(label) -> str:
    """``label`` without its seed suffix (``S#seed2`` -> ``S``; ``S`` stays ``S``)."""
    return _SUFFIX.sub("", str(label))


def label_seed(label) -> int | None:
    """The seed in ``label``'s suffix, or None when it has none."""
    m = _SUFFIX.search(str(label))
    return int(m.group(1)) if m else None


def read_retrain(path) -> pd.DataFrame:
    """``retrain.csv`` as written, its text columns as strings (``RETRAIN_STRING_COLUMNS``)."""
    return pd.read_csv(path, dtype=RETRAIN_STRING_COLUMNS)


def reusable_rows(table: pd.DataFrame, model_name: str) -> pd.DataFrame:
    """The rows of ``retrain.csv`` that ``fusion3d agreement`` may reuse instead of training again:
    complete, of the run's own model (a row without a model is the run's), and trained with the
    run's seed (a ``<label>#seed<s>`` row is an extra seed of a label and is left out)."""
    same_model = table["model"].fillna(model_name) == model_name if "model" in table else True
    run_seed = table["label"].astype(str).map(base_label) == table["label"].astype(str)
    return table[(table["complete"].astype(str) == "True") & same_model & run_seed]


def with_seed_columns(table: pd.DataFrame, run_seed: int) -> pd.DataFrame:
    """``table`` (rows of ``retrain.csv``) with ``seed`` and ``base_label`` filled in where missing:
    the seed from the label's suffix, else ``run_seed``; the base label from the label (also where
    the stored one does not fit the label: the label is the row's key)."""
    t = table.copy()
    labels = t["label"].astype(str)
    stored = t["base_label"] if "base_label" in t else pd.Series(None, index=t.index, dtype=object)
    t["base_label"] = [
        str(b) if isinstance(b, str) and (lab == b or base_label(lab) == b) else base_label(lab)
        for lab, b in zip(labels, stored)
    ]
    fill = labels.map(lambda x: label_seed(x) if label_seed(x) is not None else int(run_seed))
    seed = (
        pd.to_numeric(t["seed"], errors="coerce") if "seed" in t else pd.Series(float("nan"), index=t.index)
    )
    seed = seed.where(seed.notna(), fill)
    t["seed"] = seed.astype("int64")
    return t
