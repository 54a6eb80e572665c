"""Training one strategy alone (retrain) on real videos."""

from __future__ import annotations

import hashlib
import math
import shutil

import pandas as pd
import pytest
import torch
from conftest import tiny_overrides

from fusion3d.analysis.standalone import compare_to_best, seed_summary
from fusion3d.cli import main
from fusion3d.config import load_config
from fusion3d.engine.checkpoint import CHECKPOINT, load_checkpoint
from fusion3d.engine.trainer import train
from fusion3d.models import build_model
from fusion3d.models.strategy import Strategy
from fusion3d.report.document import Document
from fusion3d.report.render import render_markdown
from fusion3d.report.sections_retrain import _section_table2
from fusion3d.run.io import RunData
from fusion3d.run.retrains import base_label, label_seed, seed_label
from fusion3d.utils import seed_everything


@pytest.fixture(scope="module")
def template_run(tiny_motion, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("retrain")
    train(load_config(None, tiny_overrides(tiny_motion, tmp, **{"train.epochs": 1})))
    return tmp / "run"


def test_fixed_strategy_trains_in_hard_mode_without_moving_the_logits(tiny_motion, tmp_path):
    over = tiny_overrides(tiny_motion, tmp_path, **{"model.strategy": "ST"})
    summary = train(load_config(None, over))
    assert summary["complete"] and "trained alone" in open(tmp_path / "run" / "metrics.jsonl").read()
    p = torch.tensor(summary["drop_probs"])
    assert torch.allclose(p, torch.full_like(p, 0.1), atol=1e-6)
    # the S paths were never computed, so their weights keep their initial values; the T paths trained
    cfg = load_config(None, over)
    seed_everything(cfg.run.seed)
    initial = build_model(cfg.model, 4).state_dict()
    trained = load_checkpoint(tmp_path / "run" / CHECKPOINT)["model"]
    s_key, t_key = "features.block1.layer1.path_s.conv.weight", "features.block1.layer1.path_t.conv.weight"
    assert torch.equal(trained[s_key], initial[s_key])
    assert not torch.equal(trained[t_key], initial[t_key])


def test_retrain_command_fills_the_table_two_analog(template_run, capsys):
    for spec in ("S", "ST"):
        assert (
            main(
                ["retrain", str(template_run), "--strategy", spec, "train.warmup_epochs=1", "train.epochs=0"]
            )
            == 0
        )
    table = pd.read_csv(template_run / "retrain.csv")
    assert list(table["label"]) == ["S", "ST"]
    assert table["macs"].iloc[0] < table["macs"].iloc[1]
    assert table["top1"].between(0, 100).all() and table["measured_on"].str.contains("test subset").all()
    assert Strategy.from_string(table["strategy"].iloc[1]).counts()["ST"] == len(
        Strategy.from_string(table["strategy"].iloc[1])
    )
    # running the same label again replaces its row (the retrain resumes from its own checkpoint)
    assert (
        main(["retrain", str(template_run), "--strategy", "S", "train.warmup_epochs=1", "train.epochs=0"])
        == 0
    )
    assert list(pd.read_csv(template_run / "retrain.csv")["label"]) == ["ST", "S"]


def test_retrain_opt_without_analysis_names_the_missing_step(template_run, capsys):
    assert main(["retrain", str(template_run), "--strategy", "opt"]) == 2
    assert "fusion3d analyze" in capsys.readouterr().err


def test_strategy_with_the_wrong_number_of_units_is_rejected(tiny_motion, tmp_path):
    with pytest.raises(ValueError, match="slots"):
        train(load_config(None, tiny_overrides(tiny_motion, tmp_path, **{"model.strategy": "S|ST"})))


# ----------------------------------------------------------------------------- several training seeds

RETRAIN_TINY = ["train.warmup_epochs=1", "train.epochs=0"]


def _weights_sha(run_dir) -> str:
    state = load_checkpoint(run_dir / CHECKPOINT)["model"]
    h = hashlib.sha256()
    for k in sorted(state):
        h.update(k.encode() + state[k].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def seeded_run(template_run, tmp_path_factory):
    """A copy of the template run with S trained alone with 2 seeds (``retrain --seeds 2``)."""
    run = tmp_path_factory.mktemp("retrain_seeds") / "run"
    shutil.copytree(template_run, run, ignore=shutil.ignore_patterns("retrain", "retrain.csv"))
    assert main(["retrain", str(run), "--strategy", "S", "--seeds", "2", *RETRAIN_TINY]) == 0
    return run


def test_retrain_seeds_trains_one_labelled_run_per_seed(seeded_run, capsys):
    table = pd.read_csv(seeded_run / "retrain.csv")
    assert list(table["label"]) == ["S", "S#seed1"]  # '#' is safe in paths, YAML overrides and the CSV
    assert list(table["seed"]) == [0, 1] and list(table["base_label"]) == ["S", "S"]
    assert table["complete"].all() and table["strategy"].nunique() == 1
    for label, seed in (("S", 0), ("S#seed1", 1)):
        cfg = load_config(seeded_run / "retrain" / label / "config.yaml")
        assert cfg.run.seed == seed and cfg.run.out == str(seeded_run / "retrain" / label)
    assert _weights_sha(seeded_run / "retrain" / "S") != _weights_sha(seeded_run / "retrain" / "S#seed1")
    # a rerun trains nothing and adds nothing; a larger K adds only the new seed
    before = {lab: _weights_sha(seeded_run / "retrain" / lab) for lab in ("S", "S#seed1")}
    saved = {lab: (seeded_run / "retrain" / lab / CHECKPOINT).stat().st_mtime_ns for lab in before}
    assert main(["retrain", str(seeded_run), "--strategy", "S", "--seeds", "2", *RETRAIN_TINY]) == 0
    again = pd.read_csv(seeded_run / "retrain.csv")
    assert len(again) == 2 and set(again["label"]) == {"S", "S#seed1"}
    assert again.set_index("label")["top1"].to_dict() == table.set_index("label")["top1"].to_dict()
    assert main(["retrain", str(seeded_run), "--strategy", "S", "--seeds", "3", *RETRAIN_TINY]) == 0
    third = pd.read_csv(seeded_run / "retrain.csv")
    assert sorted(third["label"]) == ["S", "S#seed1", "S#seed2"] and sorted(third["seed"]) == [0, 1, 2]
    assert {lab: _weights_sha(seeded_run / "retrain" / lab) for lab in ("S", "S#seed1")} == before
    assert {lab: (seeded_run / "retrain" / lab / CHECKPOINT).stat().st_mtime_ns for lab in before} == saved
    assert "S over 3 seeds: top-1" in capsys.readouterr().out


def test_retrain_seeds_of_another_backbone(seeded_run):
    argv = ["retrain", str(seeded_run), "--strategy", "ST", "--seeds", "2", "model.name=small", *RETRAIN_TINY]
    assert main(argv) == 0
    table = RunData(seeded_run).retrain.set_index("label")
    assert (
        table.loc["ST@small#seed1", "base_label"] == "ST@small" and table.loc["ST@small#seed1", "seed"] == 1
    )
    assert table.loc["ST@small", "seed"] == 0 and (seeded_run / "retrain" / "ST@small#seed1").is_dir()
    assert table.loc["ST@small#seed1", "model"] == "small"


def test_seed_summary_of_retrain_csv_matches_a_hand_computation(seeded_run):
    table = RunData(seeded_run).retrain
    x = table.loc[table["base_label"] == "S", "top1"].astype(float).tolist()
    n = len(x)
    mean = sum(x) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in x) / (n - 1))
    s = seed_summary(table).set_index("base_label").loc["S"]
    assert s["n"] == n >= 2
    assert s["mean"] == pytest.approx(mean) and s["sd"] == pytest.approx(sd)
    assert s["se"] == pytest.approx(sd / math.sqrt(n))
    assert (s["min"], s["max"]) == (min(x), max(x))


def test_report_shows_mean_and_standard_error_over_seeds(seeded_run):
    run = RunData(seeded_run)
    md = render_markdown(Document("t", [], [_section_table2(run)]), seeded_run)
    s = seed_summary(run.retrain).set_index("base_label").loc["S"]
    assert f"{s['mean']:.1f} ± {s['se']:.1f}% ({int(s['n'])} seeds)" in md
    assert "S#seed" not in md and "mean ± standard error" in md
    assert "Opt trained alone" not in md  # Opt and the other canonical strategies have no seeds


def _fake_retrain(run, rows: list[tuple[str, str, int, float]]):
    """retrain.csv of (label, model, seed, top1) rows, every other column the template's."""
    cols = {"strategy": "S|S|S|S|S|S", "id": "x", "top5": 100.0, "epochs": 1, "macs": 1e6, "params": 1e4}
    recs = [
        {"label": lab, "model": model, **cols, "top1": top1, "measured_on": "test subset", "complete": True}
        | ({"seed": seed, "base_label": base_label(lab)} if seed is not None else {})
        for lab, model, seed, top1 in rows
    ]
    pd.DataFrame(recs).to_csv(run / "retrain.csv", index=False)


def test_report_says_whether_opt_beats_the_best_canonical_within_one_standard_error(seeded_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(seeded_run, run, ignore=shutil.ignore_patterns("retrain", "retrain.csv"))
    values = {"S": (60, 62, 64), "ST": (65, 66, 67), "S+ST": (50, 50, 53), "opt": (70, 72, 74)}
    bb = {"S": (20, 22), "ST": (30, 34), "S+ST": (25, 25), "resnet18_3d_argmax": (31, 33)}
    rows = [
        (lab if i == 0 else f"{lab}#seed{i}", "tiny", i, v)
        for lab, vs in values.items()
        for i, v in enumerate(vs)
    ] + [
        (f"{lab}@resnet18_3d" + ("" if i == 0 else f"#seed{i}"), "resnet18_3d", i, v)
        for lab, vs in bb.items()
        for i, v in enumerate(vs)
    ]
    _fake_retrain(run, rows)
    md = render_markdown(Document("t", [], [_section_table2(RunData(run))]), run)
    # Opt 72 +- 2/sqrt(3) vs ST 66 +- 1/sqrt(3): difference 6 > sqrt(5/3) = 1.29
    assert "Opt trained alone: 72.0 ± 1.2% vs the best canonical (ST) 66.0 ± 0.6%: **better**" in md
    assert "combined standard error 1.3" in md and "72.0 ± 1.2% (3 seeds)" in md
    # the design 32 +- 1 vs ST@resnet18_3d 32 +- 2: difference 0, within sqrt(5) = 2.24
    assert (
        "`resnet18_3d_argmax@resnet18_3d` trained alone: 32.0 ± 1.0% vs the best of resnet18_3d's "
        "S / ST / S+ST (ST@resnet18_3d) 32.0 ± 2.0%: **within 1 SE**"
    ) in md
    assert "32.0 ± 1.0% (2 seeds)" in md and "#seed" not in md
    # fewer than two seeds of one canonical strategy: no verdict
    _fake_retrain(run, [r for r in rows if not r[0].startswith("S+ST#seed")])
    md = render_markdown(Document("t", [], [_section_table2(RunData(run))]), run)
    assert "Opt trained alone" not in md and "50.0% (1 seed)" in md


def test_a_retrain_csv_without_the_seed_columns_still_reads(seeded_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(seeded_run, run, ignore=shutil.ignore_patterns("retrain", "retrain.csv"))
    _fake_retrain(
        run, [("S", "tiny", None, 60.0), ("ST", "tiny", None, 65.0), ("S@resnet18_3d", "x", None, 1.0)]
    )
    assert "seed" not in pd.read_csv(run / "retrain.csv")
    data = RunData(run)
    assert not data.problems
    assert list(data.retrain["seed"]) == [0, 0, 0]
    assert list(data.retrain["base_label"]) == ["S", "ST", "S@resnet18_3d"]
    md = render_markdown(Document("t", [], [_section_table2(data)]), run)
    assert "| **S** | `S\\|S\\|S\\|S\\|S\\|S` | 60.0% |" in md and "±" not in md and "seed" not in md
    # one seed per label: the same section with the seed columns as without them
    _fake_retrain(run, [("S", "tiny", 0, 60.0), ("ST", "tiny", 0, 65.0), ("S@resnet18_3d", "x", 0, 1.0)])
    assert render_markdown(Document("t", [], [_section_table2(RunData(run))]), run) == md
    # a retrain appended to the old file fills the columns of the old rows (the run's seed)
    assert main(["retrain", str(run), "--strategy", "S+ST", *RETRAIN_TINY]) == 0
    table = pd.read_csv(run / "retrain.csv")
    assert list(table["label"]) == ["S", "ST", "S@resnet18_3d", "S+ST"]
    assert list(table["seed"]) == [0, 0, 0, 0] and list(table["base_label"]) == list(table["label"])


# ----------------------------------------------------------------------------- pure: mean +- SE over seeds


def test_seed_summary_closed_form():
    rows = pd.DataFrame(
        {"base_label": ["a", "b", "a", "a", "b", "c"], "top1": [60.0, 10.0, 62.0, 64.0, float("nan"), 5.0]}
    )
    s = seed_summary(rows).set_index("base_label")
    assert list(s.index) == ["a", "b", "c"]
    assert s.loc["a", "n"] == 3 and s.loc["a", "mean"] == 62.0 and s.loc["a", "sd"] == pytest.approx(2.0)
    assert s.loc["a", "se"] == pytest.approx(2 / math.sqrt(3))
    assert (s.loc["a", "min"], s.loc["a", "max"]) == (60.0, 64.0)
    assert s.loc["b", "n"] == 1 and s.loc["b", "mean"] == 10.0  # the NaN is not a seed
    assert math.isnan(s.loc["b", "sd"]) and math.isnan(s.loc["b", "se"])


def test_compare_to_best_within_one_standard_error():
    def summary(**vals):
        return seed_summary(
            pd.DataFrame([{"base_label": k, "top1": v} for k, vs in vals.items() for v in vs])
        )

    canon = {"S": (60, 62, 64), "ST": (65, 66, 67)}  # ST: mean 66, se 1/sqrt(3)
    c = compare_to_best(summary(opt=(70, 72, 74), **canon), "opt", ["S", "ST"])
    assert c["best"] == "ST" and c["diff"] == pytest.approx(6.0)
    assert c["se_diff"] == pytest.approx(math.sqrt(4 / 3 + 1 / 3)) and c["verdict"] == "better"
    assert compare_to_best(summary(opt=(65, 67, 69), **canon), "opt", ["S", "ST"])["verdict"] == "within 1 SE"
    assert compare_to_best(summary(opt=(60, 63, 66), **canon), "opt", ["S", "ST"])["verdict"] == "worse"
    # exactly one combined SE apart: within (the bound is included)
    c = compare_to_best(summary(a=(1, 3), b=(0, 0)), "a", ["b"])  # diff 2, se_diff 1
    assert (c["diff"], c["se_diff"], c["verdict"]) == (2.0, 1.0, "better")
    c = compare_to_best(summary(a=(0, 2), b=(0, 0)), "a", ["b"])  # diff 1, se_diff 1
    assert (c["diff"], c["se_diff"], c["verdict"]) == (1.0, 1.0, "within 1 SE")
    with pytest.raises(ValueError, match="fewer than 2 seeds"):
        compare_to_best(summary(opt=(70,), **canon), "opt", ["S", "ST"])
    with pytest.raises(ValueError, match="no seeds"):
        compare_to_best(summary(**canon), "opt", ["S", "ST"])


def test_seed_labels():
    assert seed_label("S@resnet18_3d", 3) == "S@resnet18_3d#seed3"
    assert base_label("S@resnet18_3d#seed3") == "S@resnet18_3d" and base_label("opt") == "opt"
    assert label_seed("opt#seed12") == 12 and label_seed("opt") is None


def test_retrain_csv_text_columns_survive_a_read_and_write_back(tmp_path):
    from fusion3d.run.retrains import read_retrain

    path = tmp_path / "retrain.csv"
    table = pd.DataFrame(
        {
            "label": ["0123", "1e5", "S#seed1"],
            "base_label": ["0123", "1e5", "S"],
            "id": ["0012345678", "1e51234567", "abcdef0123"],
            "strategy": ["S|S", "ST|ST", "S|S"],
            "top1": [50.0, 60.0, 55.0],
        }
    )
    table.to_csv(path, index=False)
    back = read_retrain(path)
    assert back["id"].tolist() == table["id"].tolist() and back["label"].tolist() == table["label"].tolist()
    back.to_csv(path, index=False)  # what run_retrain does after adding its row
    assert read_retrain(path)["id"].tolist() == ["0012345678", "1e51234567", "abcdef0123"]


def test_agreement_reuses_only_complete_rows_of_the_run_model_and_seed():
    from fusion3d.run.retrains import reusable_rows

    table = pd.DataFrame(
        {
            "label": ["S", "S#seed1", "ST", "opt", "S@resnet18_3d", "top:1"],
            "id": ["a", "a", "b", "c", "a", "d"],
            "complete": ["True", "True", "False", "True", "True", "True"],
            "model": ["tiny", "tiny", "tiny", None, "resnet18_3d", "tiny"],
        }
    )
    kept = reusable_rows(table, "tiny")
    # the extra seed, the unfinished run and the other backbone are not reused; a row without a
    # model (written before the column existed) is the run's own
    assert kept["label"].tolist() == ["S", "opt", "top:1"]
    without_model = reusable_rows(table.drop(columns="model"), "tiny")
    assert without_model["label"].tolist() == ["S", "opt", "S@resnet18_3d", "top:1"]
