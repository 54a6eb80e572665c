"""Per-slot unit marginals and the Pareto front, against closed forms."""

from __future__ import annotations

import numpy as np
import pytest

from fusion3d.analysis.marginals import keep_probs, marginals_table, unit_marginals
from fusion3d.analysis.stats import pareto_front


def test_keep_probability_paper_convention_is_one_minus_sqrt_p():
    assert keep_probs(0.25, "paper") == pytest.approx(0.5)
    assert keep_probs([0.0, 1.0, 0.81], "paper") == pytest.approx([1.0, 0.0, 0.1])


def test_keep_probability_sampling_convention_is_one_minus_p():
    assert keep_probs(0.25, "sampling") == pytest.approx(0.75)
    assert keep_probs(np.array([[0.1, 0.9]]), "sampling") == pytest.approx(np.array([[0.9, 0.1]]))


def test_keep_probability_rejects_unknown_convention_and_out_of_range_p():
    with pytest.raises(ValueError, match="convention"):
        keep_probs(0.5, "other")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        keep_probs(1.5, "paper")


def test_unit_marginals_match_hand_computation():
    m = unit_marginals(0.5, 0.75)
    assert m == pytest.approx({"S": 0.5 * 0.25, "ST": 0.75 * 0.5, "S+ST": 0.5 * 0.75, "none": 0.5 * 0.25})
    assert sum(m.values()) == pytest.approx(1.0)


def test_marginals_table_both_conventions_by_hand():
    # slot a: p_S = 0.25, p_T = 0.64 ; slot b: p_S = 0.81, p_T = 0.01
    df = marginals_table([[0.25, 0.64], [0.81, 0.01]], ["a", "b"])
    a, b = df.iloc[0], df.iloc[1]
    # paper: q_S = 0.5, q_T = 0.2
    assert a["q_S_paper"] == pytest.approx(0.5) and a["q_T_paper"] == pytest.approx(0.2)
    assert a["P_S_paper"] == pytest.approx(0.4) and a["P_ST_paper"] == pytest.approx(0.1)
    assert a["P_S+ST_paper"] == pytest.approx(0.1) and a["P_none_paper"] == pytest.approx(0.4)
    # sampling: q_S = 0.75, q_T = 0.36
    assert a["P_S_sampling"] == pytest.approx(0.75 * 0.64) and a["P_ST_sampling"] == pytest.approx(
        0.36 * 0.25
    )
    assert a["P_S+ST_sampling"] == pytest.approx(0.75 * 0.36) and a["P_none_sampling"] == pytest.approx(
        0.25 * 0.64
    )
    assert a["preferred_unit_sampling"] == "S"
    # b: paper q_S = 0.1, q_T = 0.9 -> ST (0.81); sampling q_S = 0.19, q_T = 0.99 -> ST (0.8019)
    assert b["P_ST_paper"] == pytest.approx(0.81) and b["preferred_unit_paper"] == "ST"
    assert b["P_ST_sampling"] == pytest.approx(0.99 * 0.81) and b["preferred_unit_sampling"] == "ST"
    assert list(df["slot"]) == ["a", "b"] and list(df["p_S"]) == pytest.approx([0.25, 0.81])


def test_marginals_table_rows_sum_to_one_in_each_convention():
    p = np.random.default_rng(0).uniform(0, 1, size=(20, 2))
    df = marginals_table(p)
    for conv in ("sampling", "paper"):
        total = df[[f"P_{u}_{conv}" for u in ("S", "ST", "S+ST", "none")]].sum(axis=1)
        assert np.allclose(total, 1.0)
    assert list(df["slot"])[:2] == ["slot0", "slot1"]


def test_marginals_table_rejects_wrong_shape_and_name_count():
    with pytest.raises(ValueError, match="shape"):
        marginals_table([0.1, 0.2])
    with pytest.raises(ValueError, match="slot names"):
        marginals_table([[0.1, 0.2]], ["a", "b"])


def test_pareto_front_of_a_hand_example():
    #          0    1    2    3    4    5    6
    flops = [1.0, 2.0, 2.0, 3.0, 4.0, 0.5, 2.0]
    acc = [50.0, 60.0, 55.0, 60.0, 70.0, 40.0, 60.0]
    # 5 (cheapest), 0, 1 (beats 2; 6 duplicates 1 -> first kept), 4; 3 is dominated by 1
    assert pareto_front(flops, acc) == [5, 0, 1, 4]


def test_pareto_front_ignores_nan_and_keeps_a_single_best_point():
    assert pareto_front([1.0, 2.0, np.nan], [90.0, 80.0, 99.0]) == [0]
