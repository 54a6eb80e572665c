"""Per-slot ablation: what each unit is worth at each slot, read from the template one slot at a time.

The template's score of a whole strategy suffers from co-adaptation: its later layers were trained
with earlier paths nearly always present, so a strategy far from what it trained on (several slots
``none``, say) scores far below what it reaches trained alone. The ablation reads the template
only near one reference point, the *base* strategy (every slot the same unit, ``S`` by default):
it scores the base and, for each slot, the base with that slot set to each other unit
(``1 + 3 n`` strategies for ``n`` slots). Then

- ``effect(i, u)`` = score(base with slot ``i`` = ``u``) - score(base): what unit ``u`` at slot
  ``i`` adds to the base (0 for the base's own unit);
- the T effect of slot ``i`` is ``effect(i, ST) - effect(i, S)``; from the all-S base it is "T only
  here" minus all-S, the ground-truth tables' own single-slot effect;
- the additive score of a strategy is score(base) + the sum of ``effect(i, u_i)`` over its slots:
  a ranking of any strategy from ``1 + 3 n`` scored sub-networks.

Pure functions on strategy strings and scores (``fusion3d.engine`` does the scoring).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from fusion3d.analysis.verdicts import accuracy_gap
from fusion3d.models.strategy import Strategy
from fusion3d.models.units import TEMPORAL_UNITS, UNITS

DEFAULT_BASE = "S"


def _check_base(base: str) -> None:
    if base not in UNITS:
        raise ValueError(f"ablation base must be one of {', '.join(UNITS)}, got {base!r}")


def _with(base: str, num_slots: int, slot: int, unit: str) -> str:
    units = [base] * num_slots
    units[slot] = unit
    return "|".join(units)


def ablation_plan(num_slots: int, base: str = DEFAULT_BASE) -> list[Strategy]:
    """The base strategy, then for each slot in order the base with that slot set to each other unit
    (in ``UNITS`` order): ``1 + 3 * num_slots`` distinct strategies."""
    _check_base(base)
    plan = ["|".join([base] * num_slots)]
    plan += [_with(base, num_slots, i, u) for i in range(num_slots) for u in UNITS if u != base]
    return [Strategy.from_string(s) for s in plan]


def ablation_effects(scores: Mapping[str, float], num_slots: int, base: str = DEFAULT_BASE) -> pd.DataFrame:
    """One row per (slot, unit): ``effect`` = score of the base with that slot set to the unit minus the
    base's score. ``scores``: strategy string -> score, covering ``ablation_plan``; a missing one
    raises a KeyError naming it."""
    _check_base(base)
    ref = float(scores["|".join([base] * num_slots)])
    rows = []
    for i in range(num_slots):
        for u in UNITS:
            s = _with(base, num_slots, i, u)
            if s not in scores:
                raise KeyError(f"ablation score missing for strategy {s}")
            rows.append({"slot": i, "unit": u, "score": float(scores[s]), "effect": float(scores[s]) - ref})
    return pd.DataFrame(rows)


def ablation_t_effects(effects: pd.DataFrame) -> list[float]:
    """Per slot (in order): ``effect(i, ST) - effect(i, S)``, what the T path is worth there."""
    e = effects.set_index(["slot", "unit"])["effect"]
    return [float(e[(i, "ST")] - e[(i, "S")]) for i in sorted(effects["slot"].unique())]


def additive_scores(effects: pd.DataFrame, base_score: float, strategies: Sequence[str]) -> np.ndarray:
    """The additive score of each strategy: ``base_score`` plus the effect of its unit at every slot."""
    e = effects.set_index(["slot", "unit"])["effect"]
    out = []
    for s in strategies:
        units = Strategy.from_string(s).units
        out.append(base_score + sum(float(e[(i, u)]) for i, u in enumerate(units)))
    return np.asarray(out, dtype=float)


def ablation_table(
    scores: Mapping[str, float], slot_names: Sequence[str], n_videos: int | None, base: str = DEFAULT_BASE
) -> pd.DataFrame | None:
    """Per slot: the score of the base with that slot set to each unit (columns ``S``, ``ST``, ``S+ST``,
    ``none``), the T effect (``ST`` minus ``S``), and whether a temporal unit there pays off beyond
    binomial noise on ``n_videos`` videos: ``t_gain`` (the best temporal unit minus the slot's ``S``
    score), ``t_noise`` (two standard errors of that difference; None without ``n_videos``) and
    ``t_verdict`` ("temporal", "spatial" or "none", ``fusion3d.analysis.verdicts.accuracy_gap``).
    None when ``scores`` lacks a strategy of ``ablation_plan``."""
    n = len(slot_names)
    try:
        eff = ablation_effects(scores, n, base)
    except KeyError:
        return None
    wide = eff.pivot(index="slot", columns="unit", values="score")
    t_eff = ablation_t_effects(eff)
    rows = []
    for i, name in enumerate(slot_names):
        s = float(wide.loc[i, "S"])
        gap = accuracy_gap(s, {u: float(wide.loc[i, u]) for u in TEMPORAL_UNITS}, n_videos)
        rows.append(
            {
                "slot": name,
                **{u: float(wide.loc[i, u]) for u in UNITS},
                "t_effect": t_eff[i],
                "t_best_unit": gap["tname"],
                "t_gain": gap["gap"],
                "t_noise": gap["noise"],
                "t_verdict": gap["kind"],
            }
        )
    return pd.DataFrame(rows)
