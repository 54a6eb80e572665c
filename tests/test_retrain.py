"""Training one strategy alone (retrain) on real videos."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from conftest import tiny_overrides

from fusion3d.cli import main
from fusion3d.config import load_config
from fusion3d.engine.checkpoint import CHECKPOINT, load_checkpoint
from fusion3d.engine.trainer import train
from fusion3d.models import build_model
from fusion3d.models.strategy import Strategy
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
