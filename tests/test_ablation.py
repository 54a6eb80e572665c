"""The per-slot ablation (fusion3d.analysis.ablation): closed-form checks on made-up scores."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from fusion3d.analysis.ablation import ablation_effects, ablation_plan, ablation_t_effects, additive_scores
from fusion3d.models.units import UNITS

# an additive truth on 3 slots: score = 10 + sum of the slot's unit value
VALUE = {
    0: {"S": 0.0, "ST": 30.0, "S+ST": 28.0, "none": -5.0},
    1: {"S": 0.0, "ST": 10.0, "S+ST": 12.0, "none": -1.0},
    2: {"S": 0.0, "ST": 2.0, "S+ST": 1.0, "none": -8.0},
}


def _truth(strategy: str) -> float:
    return 10.0 + sum(VALUE[i][u] for i, u in enumerate(strategy.split("|")))


def test_the_plan_is_the_base_then_every_other_unit_at_every_slot():
    plan = [str(s) for s in ablation_plan(3)]
    assert len(plan) == 1 + 3 * 3 == len(set(plan))
    assert plan[0] == "S|S|S" and plan[1:4] == ["ST|S|S", "S+ST|S|S", "none|S|S"]
    assert str(ablation_plan(2, "ST")[0]) == "ST|ST"
    with pytest.raises(ValueError, match="ablation base"):
        ablation_plan(2, "T")


def test_an_additive_truth_is_recovered_exactly_from_any_base():
    everything = ["|".join(u) for u in itertools.product(UNITS, repeat=3)]
    truth = np.array([_truth(s) for s in everything])
    for base in UNITS:
        scores = {str(s): _truth(str(s)) for s in ablation_plan(3, base)}
        eff = ablation_effects(scores, 3, base)
        base_score = scores["|".join([base] * 3)]
        assert np.allclose(additive_scores(eff, base_score, everything), truth)
        assert np.allclose(ablation_t_effects(eff), [30.0, 10.0, 2.0])  # ST minus S at each slot


def test_effects_are_differences_from_the_base_and_a_missing_score_is_named():
    scores = {
        "S|S": 50.0,
        "ST|S": 70.0,
        "S+ST|S": 65.0,
        "none|S": 20.0,
        "S|ST": 55.0,
        "S|S+ST": 52.0,
        "S|none": 40.0,
    }
    eff = ablation_effects(scores, 2)
    e = eff.set_index(["slot", "unit"])["effect"]
    assert e[(0, "ST")] == 20.0 and e[(0, "none")] == -30.0 and e[(1, "S")] == 0.0 and e[(1, "none")] == -10.0
    assert ablation_t_effects(eff) == [20.0, 5.0]
    # an interaction is not seen: the additive score of ST|ST is 50 + 20 + 5
    assert additive_scores(eff, 50.0, ["ST|ST", "none|none"]).tolist() == [75.0, 10.0]
    del scores["S|none"]
    with pytest.raises(KeyError, match=r"S\|none"):
        ablation_effects(scores, 2)
