"""fusion3d validate: rank statistics against closed forms, and the stage on a real tiny run."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pandas as pd
import pytest
from test_sample import fresh_copy, shared_runs

from fusion3d.analysis.stats import (
    average_ranks,
    kendall_tau_b,
    permutation_p_value,
    spearman_rho,
    spread_picks,
)
from fusion3d.stages.agreement import rank_agreement, run_validate


def test_kendall_tau_b_closed_forms():
    assert kendall_tau_b([1, 2, 3, 4], [10, 20, 30, 40]) == 1.0
    assert kendall_tau_b([1, 2, 3, 4], [4, 3, 2, 1]) == -1.0
    # 2 discordant pairs of 6: (4 - 2) / 6
    assert kendall_tau_b([1, 2, 3, 4], [2, 1, 4, 3]) == pytest.approx(1 / 3)
    # one pair tied in x: 5 concordant, tau_b = 5 / sqrt((6 - 1) * 6)
    assert kendall_tau_b([1, 1, 2, 3], [1, 2, 3, 4]) == pytest.approx(5 / np.sqrt(30))
    assert np.isnan(kendall_tau_b([1, 1, 1], [1, 2, 3]))


def test_kendall_tau_b_matches_a_brute_force_count_with_ties():
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 4, 12), rng.integers(0, 5, 12)
    c = d = tx = ty = 0
    for i, j in itertools.combinations(range(12), 2):
        a, b = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
        c += a * b > 0
        d += a * b < 0
        tx += a != 0
        ty += b != 0
    assert kendall_tau_b(x, y) == pytest.approx((c - d) / np.sqrt(tx * ty))


def test_spearman_rho_closed_forms():
    # no ties: 1 - 6 sum d^2 / (n (n^2 - 1)) with d = (1, -1, 1, -1)
    assert spearman_rho([1, 2, 3, 4], [2, 1, 4, 3]) == pytest.approx(1 - 6 * 4 / (4 * 15))
    assert spearman_rho([1, 2, 3], [9, 5, 1]) == pytest.approx(-1.0)
    assert average_ranks([10, 20, 20, 30]).tolist() == [1.0, 2.5, 2.5, 4.0]


def test_permutation_p_value_is_small_for_a_perfect_ranking_and_one_for_no_relation():
    x = np.arange(7)
    # |tau| = 1 only for the identity and the reversal: p ~ 2 / 7! (plus the +1 correction)
    assert permutation_p_value(kendall_tau_b, x, x, permutations=2000) < 0.01
    assert permutation_p_value(kendall_tau_b, [1, 2, 3, 4], [1, 1, 1, 2], permutations=200) <= 1.0
    assert np.isnan(permutation_p_value(spearman_rho, [1, 2, 3], [5, 5, 5], permutations=10))


def test_spread_picks_takes_the_nearest_to_evenly_spaced_scores_best_and_worst_included():
    scores = [50, 90, 10, 70, 30]
    assert spread_picks(scores, 3) == [1, 0, 2]  # targets 90, 50, 10
    # crowded at the top: targets 90, 60, 30 -> 90, then 88 (nearest to 60 among 88/87/86/30? 30 is 30
    # away, 86 is 26 away), then 30
    assert spread_picks([90, 88, 87, 86, 30], 3) == [0, 3, 4]
    assert spread_picks([80, 80, 80], 2) == [0, 1]  # ties: the earlier position, never twice
    assert sorted(spread_picks(scores, 10)) == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError):
        spread_picks(scores, 0)


def test_rank_agreement_reports_template_and_flops_rankings():
    df = pd.DataFrame(
        {
            "top1_after": [10, 20, 30, 40],
            "top1_before": [40, 30, 20, 10],
            "macs": [1, 2, 3, 4],
            "standalone_top1": [11, 19, 33, 41],
        }
    )
    r = rank_agreement(df, permutations=50)
    assert r["n"] == 4 and r["kendall_tau_after"] == 1.0 and r["kendall_tau_before"] == -1.0
    assert r["kendall_tau_flops"] == 1.0 and r["spearman_rho_after"] == pytest.approx(1.0)
    assert set(r["p_values"]) == {
        f"{s}_{n}" for s in ("kendall_tau", "spearman_rho") for n in ("after", "before", "flops")
    }


@pytest.mark.slow
def test_validate_trains_spread_strategies_alone_and_writes_tau(tiny_motion, tmp_path_factory, tmp_path):
    _, sampled = shared_runs(tiny_motion, tmp_path_factory)
    run = tmp_path / "run"
    import shutil

    shutil.copytree(sampled, run, ignore=shutil.ignore_patterns("retrain*", "validate*"))
    result = run_validate(run, num=3, permutations=100, overrides=["train.warmup_epochs=0", "train.epochs=1"])
    table = pd.read_csv(run / "validate.csv", dtype={"id": str})
    assert result["n"] == len(table) == 3
    strategies = pd.read_csv(run / "strategies.csv", dtype={"id": str})
    best, worst = strategies["top1_after"].max(), strategies["top1_after"].min()
    assert table["top1_after"].max() == best and table["top1_after"].min() == worst
    assert table["standalone_top1"].between(0, 100).all()
    saved = json.loads((run / "validate.json").read_text())
    for key in (
        "kendall_tau_after",
        "kendall_tau_before",
        "kendall_tau_flops",
        "spearman_rho_after",
        "n",
        "measured_on",
        "p_values",
    ):
        assert key in saved
    assert "selection split" in saved["measured_on"] and "test subset" in saved["measured_on"]
    assert (run / "validate_scatter.png").stat().st_size > 5000
    retrained = pd.read_csv(run / "retrain.csv", dtype={"id": str})
    assert set(table["id"]) <= set(retrained["id"])
    # a second call reuses every stand-alone run
    mtimes = {p: p.stat().st_mtime for p in (run / "retrain").glob("*/checkpoint.pt")}
    assert run_validate(run, num=3, permutations=100)["kendall_tau_after"] == result["kendall_tau_after"]
    assert mtimes == {p: p.stat().st_mtime for p in (run / "retrain").glob("*/checkpoint.pt")}


def test_validate_without_strategies_names_the_missing_stage(tiny_motion, tmp_path_factory, tmp_path):
    trained, _ = shared_runs(tiny_motion, tmp_path_factory)
    run = fresh_copy(trained, tmp_path / "run")
    with pytest.raises(FileNotFoundError, match="fusion3d sample"):
        run_validate(run)


def test_rank_agreement_uses_exact_p_values_intervals_and_warns_for_few_strategies():
    df = pd.DataFrame(
        {
            "top1_after": [10, 20, 30, 40, 50, 60],
            "top1_before": [1, 2, 3, 4, 5, 6],
            "macs": [6, 5, 4, 3, 2, 1],
            "standalone_top1": [12, 18, 35, 38, 55, 61],
        }
    )
    r = rank_agreement(df, permutations=50, n_boot=200)
    # tau = 1 on 6 points: exactly 2 of the 720 orders reach |tau| = 1
    assert r["p_methods"]["kendall_tau_after"] == "exact"
    assert r["p_values"]["kendall_tau_after"] == pytest.approx(2 / 720)
    lo, hi = r["intervals"]["kendall_tau_after"]
    assert lo <= r["kendall_tau_after"] <= hi
    assert r["tau_critical"] == pytest.approx(13 / 15) and "only |tau| >= 0.87" in r["warning"]
    many = pd.concat(
        [df.assign(standalone_top1=df["standalone_top1"] + k / 10) for k in range(3)], ignore_index=True
    )
    assert rank_agreement(many, permutations=50, n_boot=50)["warning"] is None
