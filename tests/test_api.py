"""The Python API: ``fusion3d.fit`` and ``fusion3d.score_strategies`` on any slot network and any
dataset (the README's example runs as written), and evaluation on tuple batches."""

from __future__ import annotations

import contextlib
import io
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

import fusion3d
from fusion3d.config import ConfigError
from fusion3d.engine.bn import bn_state, recalibrate_bn
from fusion3d.engine.checkpoint import load_checkpoint
from fusion3d.engine.evaluate import predict, split_batch, video_scores
from fusion3d.models import Strategy, count_params, create
from fusion3d.models import registry as model_registry

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def readme_api_example() -> str:
    """The first Python code block of the README's "Python API" section."""
    section = README.split("\n## Python API\n", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def test_importing_fusion3d_loads_no_torch_and_exports_the_api():
    code = "import sys, fusion3d; assert 'torch' not in sys.modules; print(sorted(fusion3d.__all__))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "'fit'" in out and "'score_strategies'" in out
    assert fusion3d.fit.__module__ == "fusion3d.api" and "score_strategies" in dir(fusion3d)
    with pytest.raises(AttributeError):
        fusion3d.no_such_name  # noqa: B018


def test_the_readme_python_api_example_runs():
    code = readme_api_example()
    assert "register_model" in code and "TensorDataset" in code and "GatedSlot" in code
    namespace: dict = {"__name__": "readme_example"}
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            exec(compile(code, "README.md (Python API)", "exec"), namespace)
    finally:
        model_registry._MODELS.pop("two_slot_net", None)  # the example registers a model: leave none behind
    summary, table, model = namespace["summary"], namespace["table"], namespace["model"]
    assert [r["phase"] for r in summary["history"]] == ["warmup", "vdroppath", "vdroppath"]
    assert len(summary["drop_probs"]) == model.num_slots == 2 and "val_top1" in summary
    assert list(table.columns) == [
        "strategy",
        "id",
        "top1_before",
        "top5_before",
        "top1_after",
        "top5_after",
        "macs",
        "params",
    ]
    assert table["strategy"].tolist()[:3] == ["S|S", "ST|ST", "S+ST|S+ST"]
    assert table["macs"].iloc[0] < table["macs"].iloc[1] < table["macs"].iloc[2]
    assert table[["top1_before", "top1_after"]].notna().all().all()
    assert model.gate_mode == "off" and "epoch 3/3 [vdroppath]" in out.getvalue()


class _DictClips(Dataset):
    """A dataset of dict items, as this package's evaluation datasets yield them."""

    def __init__(self, clips, labels, videos=None):
        self.clips, self.labels, self.videos = clips, labels, videos

    def __len__(self):
        return len(self.clips)

    def __getitem__(self, i):
        item = {"clip": self.clips[i], "label": self.labels[i]}
        if self.videos is not None:
            item["video"] = self.videos[i]
        return item


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(3)
    return torch.randn(10, 3, 4, 16, 16, generator=g), torch.arange(10) % 3, torch.arange(10) // 2


def test_predict_reads_tuple_and_dict_batches_alike(data):
    clips, labels, videos = data
    torch.manual_seed(0)
    model = create("tiny", num_classes=3).eval()
    per_video = [
        DataLoader(TensorDataset(clips, labels, videos), batch_size=4),
        DataLoader(_DictClips(clips, labels, videos), batch_size=4),
    ]
    per_clip = [
        DataLoader(TensorDataset(clips, labels), batch_size=4),
        DataLoader(_DictClips(clips, labels), batch_size=4),
    ]
    ref = predict(model, per_video[0], torch.device("cpu"))
    for loader in per_video[1:]:
        got = predict(model, loader, torch.device("cpu"))
        assert all(torch.equal(a, b) for a, b in zip(ref, got))
    for loader in per_clip:  # without video ids every clip is its own video, numbered across batches
        probs, labs, vids = predict(model, loader, torch.device("cpu"))
        assert torch.equal(probs, ref[0]) and torch.equal(labs, labels) and vids.tolist() == list(range(10))
        assert video_scores(probs, labs, vids).videos == 10
    assert video_scores(*ref).videos == 5
    assert split_batch(clips)[1:] == (None, None)
    with pytest.raises(ValueError, match="labelled"):
        predict(model, DataLoader(clips, batch_size=4), torch.device("cpu"))
    with pytest.raises(KeyError, match="'clip'"):
        split_batch({"x": clips})


def test_bn_recalibration_reads_tuple_and_dict_batches_alike(data):
    clips, labels, _ = data
    torch.manual_seed(0)
    model = create("tiny", num_classes=3)
    states = []
    for ds in (TensorDataset(clips, labels), _DictClips(clips, labels)):
        recalibrate_bn(model, DataLoader(ds, batch_size=4))
        states.append(bn_state(model))
    assert states[0].keys() == states[1].keys()
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_fit_a_fixed_strategy_on_dict_data_saves_a_checkpoint(data, tmp_path):
    clips, labels, _ = data
    torch.manual_seed(0)
    model = create("tiny", num_classes=3)
    logits_before = [p.detach().clone() for p in model.drop_logits()]
    summary = fusion3d.fit(
        model,
        DataLoader(_DictClips(clips, labels), batch_size=5, shuffle=True),
        None,
        {"train.warmup_epochs": 0, "train.epochs": 2, "optimizer": "adamw", "lr": 1e-3},
        strategy="ST",
        out=tmp_path / "fit.pt",
        verbose=False,
    )
    assert summary["strategy"] == "|".join(["ST"] * model.num_slots) and summary["steps"] == 4
    assert [r["phase"] for r in summary["history"]] == ["fixed", "fixed"]
    assert all(r["reg"] == 0.0 for r in summary["history"])
    assert all(torch.equal(a, b) for a, b in zip(logits_before, model.drop_logits()))  # logits never move
    assert model.current_strategy() == Strategy.uniform("ST", model.num_slots)  # left applied
    state = load_checkpoint(tmp_path / "fit.pt")
    assert state["fit"]["steps"] == 4 and state["num_classes"] == 3
    fresh = create("tiny", num_classes=3)
    fresh.load_state_dict(state["model"])
    with pytest.raises(ConfigError, match="train.lrr"):
        fusion3d.fit(model, TensorDataset(clips, labels), cfg={"lrr": 0.1}, verbose=False)


def test_score_strategies_restores_the_model_and_reads_the_strategy_grammar(data, tmp_path):
    clips, labels, videos = data
    torch.manual_seed(0)
    model = create("tiny", num_classes=3).eval()
    before = bn_state(model)
    spec = Strategy(("S", "ST", "S+ST", "none", "S", "ST"))
    spec.save(tmp_path / "s.json")
    table = fusion3d.score_strategies(
        model, TensorDataset(clips, labels, videos), None, [tmp_path / "s.json", "S", spec], batch_size=4
    )
    assert table["strategy"].tolist() == [str(spec), "|".join(["S"] * 6), str(spec)]
    assert table["top1_after"].map(math.isnan).all() and table["top1_before"].between(0, 100).all()
    assert table.loc[0, "macs"] == table.loc[2, "macs"] and table.loc[0, "params"] == count_params(
        model, spec
    )
    assert model.gate_mode == "off" and not model.training
    assert all(torch.equal(before[k], v) for k, v in bn_state(model).items())
    model.apply_strategy("ST")  # a strategy in force before scoring is in force after
    recal = DataLoader(TensorDataset(clips, labels), batch_size=5)
    table = fusion3d.score_strategies(model, TensorDataset(clips, labels), recal, "S+ST")
    assert len(table) == 1 and not math.isnan(table.loc[0, "top1_after"])
    assert model.current_strategy() == Strategy.uniform("ST", 6)
