"""The analyze stage on a real tiny sampled run: every file, Opt strategy, summaries."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from test_sample import shared_runs

from fusion3d.config import from_dict
from fusion3d.engine.checkpoint import load_checkpoint
from fusion3d.models import Strategy, build_model
from fusion3d.run.strategies import read_strategies
from fusion3d.stages.analyze import run_analyze

PNG = b"\x89PNG\r\n\x1a\n"
FILES = (
    "marginals.csv",
    "figure4.png",
    "figure4_sampling.png",
    "acc_vs_flops.png",
    "acc_hist.png",
    "top_strategies.csv",
    "opt_strategy.json",
    "analysis.json",
    "rf_vs_accuracy.png",
    "ablation.csv",
)


@pytest.fixture(scope="module")
def sampled_run(tiny_motion, tmp_path_factory):
    """A copy of a trained tiny template with 8 draws scored (before and after recalibration)."""
    src = shared_runs(tiny_motion, tmp_path_factory)[1]
    run = tmp_path_factory.mktemp("analyze") / "run"
    shutil.copytree(src, run)
    return run


@pytest.fixture(scope="module")
def analyzed(sampled_run):
    return sampled_run, run_analyze(sampled_run, top_k=4)


def test_ablation_table_reads_the_scored_ablation_strategies(analyzed):
    run, summary = analyzed
    table = pd.read_csv(run / "ablation.csv")
    df = read_strategies(run / "strategies.csv").set_index("strategy")["top1_after"]
    model = _model(run)
    n = model.num_slots
    assert table["slot"].tolist() == model.slot_names
    for i, row in table.iterrows():
        for u in ("S", "ST", "S+ST", "none"):
            units = ["S"] * n
            units[i] = u
            assert row[u] == df["|".join(units)]
        assert row["t_effect"] == pytest.approx(row["ST"] - row["S"])
        assert row["t_gain"] == pytest.approx(max(row["ST"], row["S+ST"]) - row["S"])
        noise = row["t_noise"]
        want = "temporal" if row["t_gain"] > noise else ("spatial" if row["t_gain"] < -noise else "none")
        assert row["t_verdict"] == want
    a = summary["ablation"]
    assert a["slots_where_t_pays"] == table.loc[table["t_verdict"] == "temporal", "slot"].tolist()


def test_without_the_ablation_strategies_there_is_no_ablation_table(sampled_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(sampled_run, run)
    df = read_strategies(run / "strategies.csv")
    df[df["source"] != "ablation"].to_csv(run / "strategies.csv", index=False)  # as `sample --no-ablation`
    summary = run_analyze(run, top_k=4)
    assert summary["ablation"] is None and not (run / "ablation.csv").exists()
    assert "ablation.csv" not in summary["files"]


def _model(run):
    state = load_checkpoint(run / "checkpoint.pt")
    model = build_model(from_dict(state["config"]).model, state["num_classes"])
    model.load_state_dict(state["model"])
    return model


def test_analyze_writes_every_file_non_empty(analyzed):
    run, summary = analyzed
    for name in FILES:
        assert (run / name).is_file() and (run / name).stat().st_size > 0, name
    assert sorted(summary["files"]) == sorted(FILES)
    assert not list(run.glob(".*.tmp")) and not list(run.glob(".*.png"))  # no temporary files left


def test_figures_are_png_files(analyzed):
    run, _ = analyzed
    for name in FILES:
        if name.endswith(".png"):
            assert (run / name).read_bytes()[:8] == PNG, name


def test_opt_strategy_is_the_best_scored_strategy_with_the_run_slot_count(analyzed):
    run, summary = analyzed
    model = _model(run)
    opt = Strategy.load(run / "opt_strategy.json")
    assert len(opt) == model.num_slots
    assert json.loads((run / "opt_strategy.json").read_text())["slots"] == model.slot_names
    df = pd.read_csv(run / "strategies.csv", dtype={"id": str})
    best = df["top1_after"].max()
    assert summary["score_column"] == "top1_after"
    assert opt.id in set(df.loc[df["top1_after"] == best, "id"])
    assert df.loc[df["top1_after"] == best, "macs"].min() == df.loc[df["id"] == opt.id, "macs"].iloc[0]
    assert summary["opt"]["id"] == opt.id


def test_marginals_csv_holds_the_checkpoint_drop_probabilities(analyzed):
    run, summary = analyzed
    model = _model(run)
    marg = pd.read_csv(run / "marginals.csv")
    p = model.drop_probs().numpy()
    assert list(marg["slot"]) == model.slot_names
    assert np.allclose(marg["p_S"], p[:, 0]) and np.allclose(marg["p_T"], p[:, 1])
    assert np.allclose(marg["q_S_paper"], 1 - np.sqrt(p[:, 0]))
    for conv in ("paper", "sampling"):
        assert np.allclose(marg[[f"P_{u}_{conv}" for u in ("S", "ST", "S+ST", "none")]].sum(axis=1), 1.0)
        assert sum(summary["preferred_unit_counts"][conv].values()) == model.num_slots


def test_top_strategies_are_ranked_and_limited_to_top_k(analyzed):
    run, _ = analyzed
    top = pd.read_csv(run / "top_strategies.csv", dtype={"id": str})
    assert list(top["rank"]) == [1, 2, 3, 4]
    assert top["top1_after"].is_monotonic_decreasing
    assert top["id"].iloc[0] == Strategy.load(run / "opt_strategy.json").id


def test_analysis_json_summarises_canonical_and_sampled_scores(analyzed):
    run, summary = analyzed
    on_disk = json.loads((run / "analysis.json").read_text())
    assert on_disk == json.loads(json.dumps(summary))
    assert {"canonical_S", "canonical_ST", "canonical_S+ST"} <= set(on_disk["canonical"])
    df = pd.read_csv(run / "strategies.csv")
    sampled = df.loc[df["source"] == "sampled", "top1_after"]
    stats = on_disk["sampled_scores"]["top1_after"]
    assert stats["count"] == len(sampled) and stats["mean"] == pytest.approx(sampled.mean())
    assert stats["std"] == pytest.approx(sampled.std(ddof=0))
    assert on_disk["pareto_front"] and set(on_disk["pareto_front"]) <= set(df["id"].astype(str))


def test_ties_are_broken_by_fewer_macs(sampled_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(sampled_run, run)
    df = pd.read_csv(run / "strategies.csv", dtype={"id": str, "strategy": str})
    df["top1_after"] = 50.0
    df.to_csv(run / "strategies.csv", index=False)
    summary = run_analyze(run)
    assert summary["opt"]["id"] == df.sort_values("macs")["id"].iloc[0]


def test_without_recalibration_the_before_scores_are_used(sampled_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(sampled_run, run)
    df = pd.read_csv(run / "strategies.csv", dtype={"id": str, "strategy": str})
    df["top1_after"] = np.nan
    df["top5_after"] = np.nan
    df.to_csv(run / "strategies.csv", index=False)
    summary = run_analyze(run)
    assert summary["score_column"] == "top1_before"
    assert summary["opt"]["top1_before"] == df["top1_before"].max()


def test_analyze_without_strategies_csv_says_to_sample_first(sampled_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(sampled_run, run, ignore=shutil.ignore_patterns("strategies.csv"))
    with pytest.raises(FileNotFoundError, match="fusion3d sample"):
        run_analyze(run)


def test_analysis_reports_receptive_field_statistics(analyzed):
    run, summary = analyzed
    rf = summary["receptive_field"]
    assert rf["n"] == summary["strategies"]
    lo, hi = rf["temporal_rf_range"]
    assert 3 <= lo <= hi <= 15  # tiny preset: all-S sees 3 frames (stem pool), all-ST 3 + 2 x 6 slots
    assert 3 < rf["expected_temporal_rf"] < 15
    assert -1 <= rf["pearson_r"] <= 1 and -1 <= rf["partial_r_macs"] <= 1
