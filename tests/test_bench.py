"""The known-answer benchmark: its pure maths on closed forms, a real (small) build that is killed
and resumed, and a real template scored against the finished table."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import yaml

from fusion3d.analysis.ablation import ablation_plan
from fusion3d.analysis.benchmark import (
    TABLE_COLUMNS,
    attainable_tau,
    depth_profile,
    describe_table,
    design,
    ground_truth,
    noise_ceiling,
    score_predictors,
    slot_agreement,
    slot_effects,
    structured_design,
)
from fusion3d.analysis.stats import kendall_tau_b
from fusion3d.models.strategy import Strategy

# ----------------------------------------------------------------------------- pure maths


def test_design_has_canonical_single_slot_half_and_cost_spread_random_strategies():
    macs = {"S": 1.0, "ST": 3.0, "S+ST": 4.0, "none": 0.0}
    rows = design(6, 31, seed=0, cost=lambda s: sum(macs[u] for u in s))
    labels = [label for _, label in rows]
    assert len(rows) == 48 and len({s.id for s, _ in rows}) == 48
    assert labels[:3] == ["all-S", "all-ST", "all-S+ST"]
    assert labels.count("random") == 31 and "T-early-half" in labels and "T-late-half" in labels
    by = {label: s for s, label in rows}
    assert str(by["T-only@2"]) == "S|S|ST|S|S|S" and str(by["T-but@2"]) == "ST|ST|S|ST|ST|ST"
    assert str(by["T-early-half"]) == "ST|ST|ST|S|S|S"
    costs = sorted(sum(macs[u] for u in s) for s, label in rows if label == "random")
    assert costs[0] <= 3 and costs[-1] >= 20  # spread from cheap to expensive
    assert design(6, 31, seed=0, cost=lambda s: sum(macs[u] for u in s)) == rows  # seeded


def _table(acc_of, strategies, seeds=(0, 1), noise=0.0, n_test=600):
    rng = np.random.default_rng(0)
    rows = []
    for s, label in strategies:
        for seed in seeds:
            rows.append(
                {
                    "strategy": str(s),
                    "id": s.id,
                    "design": label,
                    "seed": seed,
                    "top1": acc_of(s) + noise * rng.normal(),
                    "top5": 100.0,
                    "macs": 1,
                    "params": 1,
                    "test_videos": n_test,
                    "seconds": 1.0,
                }
            )
    return pd.DataFrame(rows, columns=list(TABLE_COLUMNS))


def test_slot_effects_recover_a_linear_ground_truth():
    # top-1 = 40 + 12 x (T at slot 0) + 3 x (T at slot 5): the single-slot and linear effects say so
    def acc(s):
        return 40 + 12 * (s[0] in ("ST", "S+ST")) + 3 * (s[5] in ("ST", "S+ST"))

    strategies = design(6, 31, 0, cost=lambda s: 0.0)
    gt = ground_truth(_table(acc, strategies))
    eff = slot_effects(gt)
    np.testing.assert_allclose(eff["single"], [12, 0, 0, 0, 0, 3], atol=1e-9)
    np.testing.assert_allclose(eff["linear"], [12, 0, 0, 0, 0, 3], atol=1e-9)
    prof = depth_profile(gt)
    assert prof["early_half_T"] == 52 and prof["late_half_T"] == 43 and prof["early_minus_late"] == 9


def test_noise_ceiling_is_one_for_identical_seeds_and_lower_with_noise():
    strategies = structured_design(6)
    clean = _table(lambda s: 10.0 * s.counts()["ST"], strategies)
    assert noise_ceiling(clean)["kendall_tau"] == 1.0
    noisy = _table(lambda s: 10.0 * s.counts()["ST"], strategies, noise=8.0)
    assert noise_ceiling(noisy)["kendall_tau"] < 1.0


def test_noise_ceiling_splits_the_seeds_in_halves_and_averages_each():
    # three strategies, four seeds: half A = seeds 0,1, half B = seeds 2,3
    vals = {"a": [10, 30, 20, 20], "b": [20, 20, 30, 30], "c": [40, 0, 10, 10]}
    rows = [
        {
            "strategy": k,
            "id": k,
            "design": "x",
            "seed": i,
            "top1": v,
            "top5": 100.0,
            "macs": 1,
            "params": 1,
            "test_videos": 100,
            "seconds": 1.0,
        }
        for k, vs in vals.items()
        for i, v in enumerate(vs)
    ]
    nc = noise_ceiling(pd.DataFrame(rows, columns=list(TABLE_COLUMNS)))
    assert nc["halves"] == [[0, 1], [2, 3]] and nc["n"] == 3
    # half means: A = (20, 20, 20), B = (20, 30, 10): all of A tied, so tau-b is undefined (None)
    assert nc["kendall_tau"] is None
    # single-seed pairs by hand (tau-b): (0,1) -1, (0,2) -1/3, (0,3) -1/3, (1,2) 1/3, (1,3) 1/3, (2,3) 1
    assert abs(nc["single_seed_tau"] - 0.0) < 1e-12
    vals["a"] = [10, 10, 20, 20]  # A = (10, 20, 20) vs B = (20, 30, 10): tau-b = (1 - 1 + 0) / sqrt(2 * 3)
    rows = [dict(r, top1=vals[r["id"]][r["seed"]]) for r in rows]
    nc = noise_ceiling(pd.DataFrame(rows, columns=list(TABLE_COLUMNS)))
    assert abs(nc["kendall_tau"] - 0.0) < 1e-12
    vals["c"] = [40, 30, 40, 40]  # A = (10, 20, 35) vs B = (20, 30, 40): perfectly concordant
    rows = [dict(r, top1=vals[r["id"]][r["seed"]]) for r in rows]
    assert noise_ceiling(pd.DataFrame(rows, columns=list(TABLE_COLUMNS)))["kendall_tau"] == 1.0


def test_more_seeds_raise_the_split_half_ceiling_not_the_single_seed_one():
    strategies = structured_design(6)
    truth = {str(s): 2.0 * i for i, (s, _) in enumerate(strategies)}  # every strategy distinct

    def acc(s):
        return truth[str(s)]

    few = noise_ceiling(_table(acc, strategies, seeds=(0, 1), noise=6.0))
    many = noise_ceiling(_table(acc, strategies, seeds=tuple(range(32)), noise=6.0))
    assert few["kendall_tau"] == few["single_seed_tau"]
    # single-seed tau ~0.5 (truth sd ~10 vs noise 6); 16 seeds a half average the noise down 4x
    assert 0.35 < many["single_seed_tau"] < 0.65
    assert many["kendall_tau"] > many["single_seed_tau"] + 0.25


def test_attainable_tau_closed_forms():
    assert attainable_tau(1.0, 1, 2) == pytest.approx(1.0)
    assert attainable_tau(0.0, 2, 4) == 0.0 and attainable_tau(-0.3, 2, 4) == 0.0
    assert np.isnan(attainable_tau(float("nan"), 1, 2))
    # halves of one seed, a table of two: r = sin(pi/2 * 0.5) = 0.7071, R = 2r / (1 + r) = 0.8284
    expected = 2 / np.pi * np.arcsin(np.sqrt(2 * np.sqrt(0.5) / (1 + np.sqrt(0.5))))
    assert attainable_tau(0.5, 1, 2) == pytest.approx(expected, abs=1e-12)
    # more seeds in the table, a higher attainable tau; always above the split-half tau itself
    assert 0.5 < attainable_tau(0.5, 1, 2) < attainable_tau(0.5, 1, 6) < 1.0


def test_attainable_tau_matches_the_truths_tau_against_a_simulated_table():
    """Brute force: true accuracies plus normal seed noise; the split-half estimate against the mean
    Kendall tau of the truth itself with the mean over every seed."""
    rng = np.random.default_rng(0)
    n, seeds = 48, 6
    for noise in (4.0, 10.0):
        predicted, actual = [], []
        for _ in range(100):
            truth = rng.normal(0.0, 10.0, n)
            acc = truth[:, None] + rng.normal(0.0, noise, (n, seeds))
            half = kendall_tau_b(acc[:, :3].mean(1), acc[:, 3:].mean(1))
            predicted.append(attainable_tau(half, 3, seeds))
            actual.append(kendall_tau_b(truth, acc.mean(1)))
        assert abs(np.mean(predicted) - np.mean(actual)) < 0.03, (noise, np.mean(predicted), np.mean(actual))


def test_standard_error_adds_test_set_noise_and_the_median_seed_variance():
    strategies = structured_design(6)
    t = _table(lambda s: 50.0, strategies, n_test=400)
    t.loc[t["seed"] == 0, "top1"] += 1.0  # every strategy: seeds 51 and 50, variance 0.5
    t.loc[(t["seed"] == 0) & (t["design"] == "all-S"), "top1"] += 40.0  # one failed optimisation
    gt = ground_truth(t)
    binom = 100 * np.sqrt(0.505 * 0.495 / 400)
    typical = gt["design"] != "all-S"
    np.testing.assert_allclose(
        gt.loc[typical, "se"], np.sqrt(binom**2 + 0.5 / 2)
    )  # the outlier does not inflate it
    assert gt.loc[~typical, "top1_max"].item() - gt.loc[~typical, "top1_min"].item() == 41.0


def test_a_perfect_predictor_scores_tau_one_no_regret_and_full_top5():
    strategies = design(6, 31, 0, cost=lambda s: 0.0)
    gt = ground_truth(_table(lambda s: 10.0 * s.counts()["ST"] + s.counts()["S+ST"], strategies, noise=0.5))
    r = score_predictors(
        gt,
        {"oracle": gt["top1"].to_numpy(), "reversed": -gt["top1"].to_numpy()},
        permutations=200,
        n_boot=200,
    )
    assert r["oracle"]["kendall_tau"]["value"] == 1.0 and r["oracle"]["regret_points"] == 0.0
    assert r["oracle"]["top_k_overlap"] == 1.0
    assert r["reversed"]["kendall_tau"]["value"] == -1.0 and r["reversed"]["regret_points"] > 0
    assert r["oracle"]["kendall_tau"]["p"] < 0.01


def test_slot_agreement_reads_the_early_late_profile():
    eff = pd.DataFrame({"linear": [9.0, 7, 5, 1, 0, -1]})
    same = slot_agreement(eff, [0.9, 0.8, 0.7, 0.2, 0.1, 0.05])
    assert same["spearman_rho"] == 1.0 and same["profile_matches"] is True
    opposite = slot_agreement(eff, [0.1, 0.2, 0.3, 0.7, 0.8, 0.9])
    assert opposite["spearman_rho"] == -1.0 and opposite["profile_matches"] is False


def test_describe_table_counts_strategies_near_the_best():
    strategies = structured_design(6)
    t = _table(lambda s: 10.0 * s.counts()["ST"], strategies)
    d = describe_table(t)
    assert d["strategies"] == len(strategies) and d["seeds"] == [0, 1]
    assert d["spread"] == 60.0 and d["within_1se_of_best"] == 1


# ----------------------------------------------------------------------------- a real build


FIXTURE_STRATEGIES = ["S", "ST", "S|ST|S|S|S|S"]
# the clip and model of the fixture table, shared by its recipe and by the template scored against it
FIXTURE_DATA_MODEL = [
    "model.name=tiny",
    "data.clip_len=4",
    "data.short_side=32",
    "data.short_side_max=36",
    "data.crop_size=32",
    "data.flip=off",
    "train.batch_size=4",
]


@pytest.fixture(scope="module")
def spec_file(tmp_path_factory):
    folder = tmp_path_factory.mktemp("spec")
    spec = {
        "name": "fixture",
        "description": "a small real table for tests",
        "synth": {
            "kind": "motion",
            "classes": 2,
            "videos_per_class": 6,
            "frames": 8,
            "size": 32,
            "seed": 3,
            "test_per_class": 2,
        },
        "config": [*FIXTURE_DATA_MODEL, "train.warmup_epochs=0", "train.epochs=1", "train.eval_samples=1"],
        "design": {"strategies": FIXTURE_STRATEGIES},
        "seeds": [0, 1],
    }
    path = folder / "fixture.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _cli(*args, **kw):
    return subprocess.Popen(
        [sys.executable, "-m", "fusion3d", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        **kw,
    )


@pytest.fixture(scope="module")
def built(spec_file, tmp_path_factory):
    """A build killed (SIGKILL) after its first row, then resumed to the end."""
    out = tmp_path_factory.mktemp("bench")
    rows = out / "fixture" / "rows.csv"
    proc = _cli("bench", "build", spec_file, "--out", out)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if rows.is_file() and len(rows.read_text().splitlines()) >= 2:  # header + one finished row
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = pd.read_csv(rows, dtype={"id": str})
    assert 1 <= len(first) < 6, "the kill came too late to test a resume"
    proc = _cli("bench", "build", spec_file, "--out", out)
    log, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, log
    return out / "fixture", first, log


def test_a_killed_build_resumes_without_redoing_rows(built):
    folder, first, log = built
    table = pd.read_csv(folder / "table.csv", dtype={"id": str})
    rows = pd.read_csv(folder / "rows.csv", dtype={"id": str})
    assert len(table) == 6 and len(rows) == 6  # every (strategy, seed) once: nothing trained twice
    assert not rows.duplicated(["id", "seed"]).any()
    kept = rows.set_index(["id", "seed"]).loc[list(zip(first["id"], first["seed"]))]
    np.testing.assert_array_equal(
        kept["seconds"].to_numpy(), first["seconds"].to_numpy()
    )  # rows of the killed run kept
    assert f"{len(first)} done" in log
    assert [Strategy.from_string(s).id for s in table["strategy"][::2]] == table["id"][::2].tolist()
    meta = json.loads((folder / "table.json").read_text())
    assert meta["summary"]["strategies"] == 3 and meta["summary"]["seeds"] == [0, 1]
    assert table["top1"].between(0, 100).all() and (table["test_videos"] == 4).all()


def test_bench_list_shows_a_built_table(built):
    folder, _, _ = built
    proc = _cli("bench", "list", "--json", "--dir", folder.parent)
    out, _ = proc.communicate(timeout=120)
    tables = [t for t in json.loads(out) if t["name"] == "fixture"]
    assert len(tables) == 1 and tables[0]["strategies"] == 3 and tables[0]["noise_ceiling"]["n"] == 3


def _template_overrides(root, tmp_path) -> list[str]:
    """A one-epoch template on the fixture table's dataset, a third of its training videos held out."""
    return [
        *FIXTURE_DATA_MODEL,
        "train.warmup_epochs=1",
        "train.epochs=1",
        "train.eval_samples=1",
        "data.selection_fraction=0.34",
        f"data.root={root}",
        f"data.annotations={root / 'ucfTrainTestlist'}",
        f"data.cache_dir={tmp_path / 'cache'}",
        f"run.out={tmp_path / 'run'}",
        "run.threads=1",
        "train.progress=false",
    ]


def test_bench_score_compares_a_trained_template_with_the_table(built, tmp_path):
    from fusion3d.config import load_config
    from fusion3d.engine.trainer import train
    from fusion3d.stages.bench import score

    folder, _, _ = built
    train(load_config(None, _template_overrides(folder / "data", tmp_path)))
    r = score(str(tmp_path / "run"), str(folder / "table.csv"), permutations=100)
    assert r["n"] == 3 and r["data_matches"] is True
    assert set(r["predictors"]) == {
        "template_after",
        "template_before",
        "macs",
        "params",
        "temporal_rf",
        "synflow",
        "ablation",
    }
    for p in r["predictors"].values():  # undefined (None) where 4 test videos leave a variable constant
        tau = p["kendall_tau"]
        assert tau["value"] is None or (-1 <= tau["value"] <= 1 and tau["p_method"] == "exact")
    rows = pd.read_csv(tmp_path / "run" / "bench_fixture_scores.csv", dtype={"id": str})
    table_ids = set(pd.read_csv(folder / "table.csv", dtype={"id": str})["id"])
    plan_ids = {s.id for s in ablation_plan(6)}
    assert set(rows["id"]) == table_ids | plan_ids and rows["id"].is_unique  # each scored once
    saved = json.loads((tmp_path / "run" / "bench.json").read_text())
    assert saved["fixture"]["n"] == 3 and len(saved["fixture"]["slot_effects"]) == 6
    abl = pd.DataFrame(saved["fixture"]["ablation"]["effects"])
    by_strategy = rows.set_index("strategy")["top1_after"]
    assert len(abl) == 24 and abl.loc[abl["unit"] == "S", "effect"].abs().max() == 0.0
    assert saved["fixture"]["ablation"]["base_top1"] == by_strategy["S|S|S|S|S|S"]
    assert np.allclose(abl["score"] - saved["fixture"]["ablation"]["base_top1"], abl["effect"])
    t_effects = abl[abl["unit"] == "ST"].sort_values("slot")["effect"].to_numpy()  # minus effect(S) = 0
    assert np.allclose(saved["fixture"]["slots"]["ablation_t_effects"]["preference"], t_effects)

    from fusion3d.report import build_report

    _, md = build_report(tmp_path / "run")
    text = md.read_text()
    assert (
        "Known-answer benchmark" in text and "Table `fixture`" in text and "synflow at initialisation" in text
    )


def test_bench_score_of_a_run_of_several_template_seeds_scores_each_and_their_mean(built, tmp_path):
    """``run.seeds=2``: every seed's template scores the table; the answers are the seeds' mean."""
    from fusion3d.config import load_config
    from fusion3d.errors import FusionError
    from fusion3d.stages.bench import score
    from fusion3d.stages.export import export
    from fusion3d.stages.retrain import run_retrain
    from fusion3d.stages.train import command

    folder, _, _ = built
    command(None, [*_template_overrides(folder / "data", tmp_path), "run.seeds=2"])
    run = tmp_path / "run"
    r = score(str(run), str(folder / "table.csv"), permutations=100)
    assert r["template_seeds"] == 2 and set(r["per_seed"]) == {"seed0", "seed1"}
    assert "mean over 2 template seeds" in r["measured_on"]["template"]
    gt = ground_truth(pd.read_csv(folder / "table.csv", dtype={"id": str}))
    per = [
        pd.read_csv(run / d / "bench_fixture_scores.csv", dtype={"id": str}).set_index("id").loc[gt["id"]]
        for d in ("seed0", "seed1")
    ]
    truth = gt["top1"].to_numpy(float)
    for d, one in zip(("seed0", "seed1"), per):  # each seed's own tau, from its own scores
        expected = kendall_tau_b(one["top1_after"].to_numpy(float), truth)
        got = r["per_seed"][d]["template_after"]
        assert (got is None and np.isnan(expected)) or got == pytest.approx(expected)
    mean = (per[0]["top1_after"].to_numpy(float) + per[1]["top1_after"].to_numpy(float)) / 2
    expected = kendall_tau_b(mean, truth)
    got = r["predictors"]["template_after"]["kendall_tau"]["value"]
    assert (got is None and np.isnan(expected)) or got == pytest.approx(expected)
    assert "fixture" in json.loads((run / "bench.json").read_text())
    # one network is asked for: a run of several seeds names its seed runs
    with pytest.raises(FusionError, match="run of 2 template seeds.*seed0"):
        export(run, "torch", out=tmp_path / "x.pt")
    # a strategy trained alone with the recipe of a run of several seeds: one network, the classes
    # of the seed runs' shared dataset
    row = run_retrain(run, "S", ["train.warmup_epochs=0"])
    assert row["complete"] and row["params"] > 0
    assert load_config(run / "retrain" / "S" / "config.yaml").run.seeds == 1
