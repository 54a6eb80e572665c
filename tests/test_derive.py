"""fusion3d derive: the depth mapping and the design rules on closed forms, and the stage on a run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fusion3d.analysis.design import (
    argmax_units,
    budget_units,
    depth_mapping,
    map_marginals,
    paper_units,
    relative_depths,
)


def test_relative_depths_are_interval_centres():
    assert relative_depths(4).tolist() == [0.125, 0.375, 0.625, 0.875]


def test_depth_mapping_covers_every_block_and_keeps_depth_order():
    for n, m in [(6, 8), (6, 3), (58, 16), (6, 6), (1, 5), (5, 1)]:
        mapping = depth_mapping(n, m)
        assert len(mapping) == m
        positions = [lo + w for lo, hi, w in mapping]
        assert positions == sorted(positions)  # monotone in depth
        assert all(0 <= lo <= hi <= n - 1 and 0.0 <= w <= 1.0 for lo, hi, w in mapping)


def test_depth_mapping_closed_forms():
    # same number of slots and blocks: the identity
    assert depth_mapping(3, 3) == [(0, 0, 0.0), (1, 2, 0.0), (2, 2, 0.0)] or [
        lo + w for lo, _, w in depth_mapping(3, 3)
    ] == [0, 1, 2]
    # 2 slots (depths 0.25, 0.75), 4 blocks (0.125, 0.375, 0.625, 0.875): clamp, 1/4, 3/4, clamp
    assert depth_mapping(2, 4) == [(0, 0, 0.0), (0, 1, 0.25), (0, 1, 0.75), (1, 1, 0.0)]


def test_map_marginals_interpolates_and_renormalises():
    marg = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 0.5]])  # second row sums to 0.5 (a 'none' mass dropped)
    out = map_marginals(marg, 4)
    assert np.allclose(out.sum(1), 1.0)
    assert np.allclose(out[0], [1, 0, 0]) and np.allclose(out[3], [0, 0, 1])
    # block 1: 0.75 * [1, 0, 0] + 0.25 * [0, 0, 0.5] = [0.75, 0, 0.125] -> renormalised
    assert np.allclose(out[1], np.array([0.75, 0, 0.125]) / 0.875)


def test_argmax_and_paper_rules():
    assert argmax_units(np.array([[0.2, 0.5, 0.3], [0.4, 0.1, 0.5]])) == ["ST", "S+ST"]
    assert paper_units(8) == ["S+ST"] * 4 + ["ST"] + ["S+ST"] * 3
    assert paper_units(16) == ["S+ST"] * 8 + ["ST"] * 5 + ["S+ST"] * 3
    assert paper_units(4) == ["S+ST"] * 4


def test_budget_rule_is_the_most_probable_design_within_budget():
    import itertools

    probs = np.array([[0.1, 0.2, 0.7], [0.1, 0.6, 0.3], [0.2, 0.35, 0.45]])
    costs = np.array([[0, 1, 2], [0, 1.5, 3], [0, 1, 2]], dtype=float)  # S / ST / S+ST MACs per block
    assert budget_units(probs, costs, 10.0, 100.0) == argmax_units(probs)
    for budget in (10.0, 11.0, 12.0, 13.5, 14.0, 15.0):
        got = budget_units(probs, costs, 10.0, budget)
        idx = [("S", "ST", "S+ST").index(u) for u in got]
        assert 10.0 + sum(costs[j, u] for j, u in enumerate(idx)) <= budget
        best = max(
            (sum(np.log(probs[j, u]) for j, u in enumerate(c)), c)
            for c in itertools.product(range(3), repeat=3)
            if 10.0 + sum(costs[j, u] for j, u in enumerate(c)) <= budget
        )
        assert tuple(idx) == best[1], budget  # brute force over all 27 designs
    assert budget_units(probs, costs, 10.0, 10.0) == ["S", "S", "S"]
    with pytest.raises(ValueError, match="cheapest"):
        budget_units(probs, costs, 10.0, 9.0)


@pytest.fixture(scope="module")
def analysed(tiny_motion, tmp_path_factory):
    import shutil

    from test_sample import shared_runs

    from fusion3d.stages.analyze import run_analyze

    _, sampled = shared_runs(tiny_motion, tmp_path_factory)
    run = tmp_path_factory.mktemp("derive") / "run"
    shutil.copytree(sampled, run, ignore=shutil.ignore_patterns("retrain*", "validate*"))
    run_analyze(run)
    return run


@pytest.mark.parametrize("rule", ["argmax", "paper", "budget", "ablation"])
def test_derived_design_is_a_strategy_file_for_the_backbone(analysed, rule):
    from fusion3d.models import Strategy, count_macs, count_params, create
    from fusion3d.stages.derive import derive

    budget = None
    if rule == "budget":  # halfway between all-S and all-S+ST
        c = derive(analysed, "resnet18_3d", width_mult=0.25, out=analysed / "tmp.json")["canonical"]
        budget = (c["S"]["macs"] + c["S+ST"]["macs"]) / 2e9
    d = derive(analysed, "resnet18_3d", rule=rule, flops_budget=budget, width_mult=0.25)
    model = create("resnet18_3d", num_classes=d["num_classes"], width_mult=0.25)
    s = Strategy.load(d["path"])  # the design file is a strategy file
    assert len(s) == model.num_slots == len(d["mapping"]) and d["slots"] == model.slot_names
    assert set(s.units) <= {"S", "ST", "S+ST"}
    assert d["macs"] == count_macs(model, tuple(d["input_shape"]), s) and d["params"] == count_params(
        model, s
    )
    depths = [m["depth"] for m in d["mapping"]]
    assert depths == sorted(depths) and [m["block"] for m in d["mapping"]] == model.slot_names
    if rule == "budget":
        assert d["macs"] <= budget * 1e9
    if rule == "paper":
        assert list(s.units) == paper_units(model.num_slots)


def test_the_ablation_rule_picks_the_best_scoring_unit_of_each_block(analysed, tmp_path):
    import shutil

    import pandas as pd

    from fusion3d.stages.derive import derive

    run = tmp_path / "run"
    shutil.copytree(analysed, run)
    table = pd.read_csv(run / "ablation.csv")
    n = len(table)
    # made-up scores: ST best in the first half of the slots, S+ST in the second, never S
    table["S"] = 10.0
    table["ST"] = [60.0 if i < n // 2 else 20.0 for i in range(n)]
    table["S+ST"] = [20.0 if i < n // 2 else 60.0 for i in range(n)]
    table.to_csv(run / "ablation.csv", index=False)
    d = derive(run, "resnet18_3d", rule="ablation", width_mult=0.25)
    depths = [m["depth"] for m in d["mapping"]]
    assert d["units"] == ["ST" if x < 0.5 else "S+ST" for x in depths]
    auto = derive(run, "resnet18_3d", width_mult=0.25)  # the default rule reads the ablation where it exists
    assert auto["rule"] == "ablation" and auto["units"] == d["units"]
    assert Path(auto["path"]).name == "resnet18_3d_ablation.json"
    (run / "ablation.csv").unlink()
    with pytest.raises(FileNotFoundError, match="--no-ablation"):
        derive(run, "resnet18_3d", rule="ablation")
    fallback = derive(run, "resnet18_3d", width_mult=0.25)  # ... and the marginals where it does not
    marginals = derive(run, "resnet18_3d", rule="argmax", width_mult=0.25)
    assert fallback["rule"] == "argmax" and fallback["units"] == marginals["units"]
    assert Path(fallback["path"]).name == "resnet18_3d_argmax.json"


def test_derive_without_analysis_or_with_a_bad_rule_says_what_to_do(analysed, tmp_path):
    from fusion3d.stages.derive import derive

    with pytest.raises(ValueError, match="budget"):
        derive(analysed, "resnet18_3d", rule="budget")
    with pytest.raises(ValueError, match="rule"):
        derive(analysed, "resnet18_3d", rule="best")
    with pytest.raises(FileNotFoundError, match="config.yaml"):
        derive(tmp_path, "resnet18_3d")


@pytest.mark.slow
def test_a_backbone_trains_with_a_derived_design_through_the_cli(analysed, tiny_motion, tmp_path):
    import json

    from conftest import tiny_overrides

    from fusion3d.cli import main

    design = analysed / "derived" / "resnet18_3d_argmax.json"
    if not design.is_file():
        from fusion3d.stages.derive import derive

        derive(analysed, "resnet18_3d", rule="argmax", width_mult=0.25)
    over = tiny_overrides(
        tiny_motion,
        tmp_path,
        **{
            "model.name": "resnet18_3d",
            "model.width_mult": 0.125,
            "model.strategy": design,
            "train.warmup_epochs": 0,
            "train.epochs": 1,
        },
    )
    assert main(["train", *over]) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["complete"] and "trained alone" in summary["val_measure"]
    assert json.loads(design.read_text())["string"] in summary["val_measure"]
