"""Several template seeds (run.seeds = K): training, combined scores, marginals with intervals, the report."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import tiny_overrides

from fusion3d.analysis.marginals import marginals_table
from fusion3d.analysis.seeds import interval_kind, seed_interval, seed_marginals, t975
from fusion3d.bench import check_reliability, load_reliability
from fusion3d.config import ConfigError, load_config
from fusion3d.engine.scoring import StrategyScorer
from fusion3d.errors import FusionError
from fusion3d.models import Strategy
from fusion3d.run.strategies import combine_seed_rows, read_strategies, seed_columns

# ----------------------------------------------------------------------------- pure parts


def test_t_quantiles_and_the_interval_rule():
    assert t975(1) == pytest.approx(12.7062047, abs=1e-6)
    assert t975(3) == pytest.approx(3.1824463, abs=1e-6)
    assert t975(60) == pytest.approx(2.0002978, abs=1e-4)
    # K = 1: no interval
    m, lo, hi = seed_interval([[0.3]])
    assert m[0] == 0.3 and math.isnan(lo[0]) and math.isnan(hi[0])
    # K = 2, 3: the range over the seeds
    m, lo, hi = seed_interval([0.2, 0.6, 0.4])
    assert (float(m), float(lo), float(hi)) == pytest.approx((0.4, 0.2, 0.6))
    # K = 4: mean +- t_{0.975,3} sd / sqrt(4), sd = sqrt(0.05 / 3)
    m, lo, hi = seed_interval([0.1, 0.2, 0.3, 0.4])
    half = 3.182446305284263 * math.sqrt(0.05 / 3) / 2
    assert (float(m), float(lo), float(hi)) == pytest.approx((0.25, 0.25 - half, 0.25 + half))
    # clipped to a probability: mean 0.1, sd 0.2, half width t * 0.2 / 2
    _, lo, hi = seed_interval([0.0, 0.0, 0.0, 0.4], 0.0, 1.0)
    assert float(lo) == 0.0 and float(hi) == pytest.approx(0.1 + 3.182446305284263 * 0.1)
    assert "not a 95% interval" in interval_kind(3) and "t-interval" in interval_kind(4)


def test_seed_marginals_mean_range_and_agreement():
    a = np.array([[0.04, 0.64], [0.25, 0.25]])
    b = np.array([[0.16, 0.36], [0.81, 0.01]])
    df = seed_marginals([a, b], ["x", "y"])
    base = marginals_table((a + b) / 2, ["x", "y"])
    pd.testing.assert_frame_equal(df[base.columns], base)
    # slot x, paper: q_S = 1 - sqrt(p_S): seed a 0.8, seed b 0.6; q_T: 0.2, 0.4 -> P(S) 0.64 and 0.36
    assert df.loc[0, "P_S_paper_mean"] == pytest.approx(0.5)
    assert (df.loc[0, "P_S_paper_lo"], df.loc[0, "P_S_paper_hi"]) == pytest.approx((0.36, 0.64))
    assert (df.loc[0, "p_S_lo"], df.loc[0, "p_S_hi"]) == pytest.approx((0.04, 0.16))
    assert df.loc[0, "preferred_agreement_paper"] == 1.0  # both seeds prefer S in slot x
    # slot y: seed a prefers S+ST (q 0.5, 0.5 -> 0.25 each: argmax picks S), seed b ST (q_S 0.1, q_T 0.9)
    assert df.loc[1, "preferred_agreement_paper"] == 0.5
    assert (df["seeds"] == 2).all()


def test_combined_row_is_the_mean_with_each_seed_and_the_spread():
    rows = [
        {
            "top1_before": 10.0,
            "top5_before": 50.0,
            "top1_after": 20.0,
            "top5_after": 60.0,
            "views": "v",
            "seconds": 1.0,
        },
        {
            "top1_before": 30.0,
            "top5_before": 70.0,
            "top1_after": 40.0,
            "top5_after": 80.0,
            "views": "v",
            "seconds": 2.0,
        },
    ]
    out = combine_seed_rows(rows)
    assert (out["top1_before"], out["top1_after"], out["top5_after"]) == (20.0, 30.0, 70.0)
    assert (out["top1_after_seed0"], out["top1_after_seed1"]) == (20.0, 40.0)
    assert out["top1_after_sd"] == pytest.approx(math.sqrt(200.0)) and out["seconds"] == 3.0
    assert set(seed_columns(2)) <= set(out) and seed_columns(1) == ()


def test_the_shipped_reliability_file_follows_its_schema():
    from fusion3d import bench as catalog

    rel = load_reliability()
    assert set(rel["tables"]) <= set(catalog.shipped_tables())  # measured on tables that ship
    for t in rel["tables"].values():
        assert abs(t["kendall_tau_after"] - sum(t["per_seed"]) / len(t["per_seed"])) < 1e-3
        assert t["interval"] == [min(t["per_seed"]), max(t["per_seed"])] and t["template_seeds"] == len(
            t["per_seed"]
        )
        assert {"macs", "params", "temporal_rf", "synflow"} <= set(t["baselines"])
        if "ablation" in t:  # the per-slot ablation's answers, measured on the same templates
            a = t["ablation"]
            assert abs(a["kendall_tau"] - sum(a["per_seed"]) / len(a["per_seed"])) < 1e-3
            assert len(a["per_seed"]) == len(t["per_seed"])
    with pytest.raises(ValueError, match="kendall_tau_after"):
        check_reliability({**rel, "tables": {"motion": {"noise_ceiling": 0.5}}})
    table = next(iter(rel["tables"].values()))
    with pytest.raises(ValueError, match="'ablation'"):
        check_reliability({**rel, "tables": {"motion": {**table, "ablation": {"per_seed": [0.5]}}}})


def test_run_seeds_must_be_positive():
    assert load_config(None, []).run.seeds == 1
    with pytest.raises(ConfigError, match="run.seeds"):
        load_config(None, ["run.seeds=0"])


# ----------------------------------------------------------------------------- a tiny run of 2 seeds


@pytest.fixture(scope="module")
def seeds_run(tiny_motion, tmp_path_factory):
    """A tiny run of 2 template seeds, trained, sampled (3 draws) and analysed."""
    from fusion3d.stages.analyze import run_analyze
    from fusion3d.stages.sample import run_sample
    from fusion3d.stages.train import command

    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("seeds")
    overrides = tiny_overrides(tiny_motion, tmp, **{"train.epochs": 1, "run.seeds": 2})
    command(None, overrides)
    run = tmp / "run"
    df = run_sample(run, num=3, recal_clips=8, progress=False)
    run_analyze(run)
    return run, df, overrides


def test_two_seeds_train_two_normal_runs_with_different_weights(seeds_run, capsys):
    from fusion3d.stages.train import command

    run, _, overrides = seeds_run
    listed = json.loads((run / "seeds.json").read_text())["seeds"]
    assert listed == [{"dir": "seed0", "seed": 0}, {"dir": "seed1", "seed": 1}]
    summaries = [json.loads((run / d / "summary.json").read_text()) for d in ("seed0", "seed1")]
    assert all(s["complete"] for s in summaries)
    assert summaries[0]["weights_sha1"] != summaries[1]["weights_sha1"]
    assert load_config(run / "seed1" / "config.yaml").run.seed == 1
    assert load_config(run / "config.yaml").run.seeds == 2
    assert not (run / "checkpoint.pt").exists()
    command(None, overrides, resume="auto")  # resuming re-enters each seed run: both finished
    assert capsys.readouterr().out.count("finished, skipped") == 2
    with pytest.raises(FusionError, match="already holds a run"):
        command(None, overrides)
    with pytest.raises(FusionError, match="run has 2 template seeds"):
        command(None, [*overrides[:-1], "run.seeds=3"], resume="auto")


def test_the_combined_score_is_the_mean_of_each_seed_templates_score(seeds_run):
    run, df, _ = seeds_run
    again = read_strategies(run / "strategies.csv")
    assert list(again["id"]) == list(df["id"]) and "top1_after_sd" in again
    direct = []
    for d in ("seed0", "seed1"):
        scorer = StrategyScorer(run / d, recal_clips=8)
        direct.append(
            {sid: scorer.score(Strategy.from_string(s), "x") for sid, s in zip(df["id"], df["strategy"])}
        )
        scorer.restore()
    for _, row in again.iterrows():
        for c in ("top1_before", "top1_after", "top5_after"):
            per = [direct[i][row["id"]][c] for i in range(2)]
            assert row[f"{c}_seed0"] == pytest.approx(per[0]) and row[f"{c}_seed1"] == pytest.approx(per[1])
            assert row[c] == pytest.approx(np.mean(per))
    assert json.loads((run / "sample.json").read_text())["complete"]


def test_analyze_writes_marginals_with_intervals_across_seeds(seeds_run):
    run, _, _ = seeds_run
    m = pd.read_csv(run / "marginals.csv")
    assert {"P_S_paper_lo", "P_S_paper_hi", "P_S_paper_mean", "preferred_agreement_paper"} <= set(m.columns)
    assert (m["P_S_paper_lo"] <= m["P_S_paper_mean"] + 1e-12).all()
    assert (m["P_S_paper_mean"] <= m["P_S_paper_hi"] + 1e-12).all()
    a = json.loads((run / "analysis.json").read_text())
    assert a["template_seeds"]["count"] == 2 and "range" in a["template_seeds"]["interval"]


def test_the_report_shows_intervals_and_how_far_to_trust_the_scores(seeds_run):
    from fusion3d.report.build import build_report

    run, _, _ = seeds_run
    md = build_report(run)[1].read_text()
    seeds = md.split("## Preferences across template seeds")[1].split("\n## ")[0]
    assert "**2 templates**" in seeds and "not a 95% interval" in seeds and "of 2 |" in seeds
    trust = md.split("## How far to trust these scores")[1].split("\n## ")[0]
    shipped = load_reliability()["tables"]["motion"]  # the numbers come from the shipped file
    per = ", ".join(f"{v:+.2f}" for v in shipped["per_seed"])
    assert (
        f"table `motion`: Kendall tau {shipped['kendall_tau_after']:+.2f} (per template seed {per})" in trust
    )
    assert "+0.39 ranking by MACs alone" in trust and "noise ceiling 0.67" in trust
    assert "table `texture`" in trust and "noise ceiling 0.71" in trust
    assert "your own data" in trust
    # the shipped tables' recipes: motion, appearance and order 12 epochs, texture 8
    assert "a short, fixed recipe (8-12 epochs on a few hundred videos)" in trust
    single = build_report(run / "seed0")[1].read_text()  # a seed run is a normal single-seed run
    assert "single template seed" in single and "`run.seeds=3`" in single
    assert "## How far to trust these scores" in single
