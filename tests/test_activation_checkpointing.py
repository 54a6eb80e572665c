"""Activation checkpointing (``train.activation_checkpointing``): each slot recomputes its activations in
the backward pass with the gate multipliers of its forward, and training is unchanged (the same
gradients, the same BatchNorm statistics, the same run)."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_overrides

import fusion3d.models.network as network
from fusion3d.config import load_config
from fusion3d.engine.checkpoint import CHECKPOINT, load_checkpoint
from fusion3d.engine.trainer import train
from fusion3d.models import build_model, create
from fusion3d.models.network import GatedSlot, SlotNetwork
from fusion3d.models.regularizer import template_regularizer
from fusion3d.models.spec import ModelConfig

MIXED = "S|ST|S+ST|none|S|ST"  # one unit per slot of the tiny preset, unit none included


def _pair(model: SlotNetwork) -> tuple[SlotNetwork, SlotNetwork]:
    """The model and a copy with activation checkpointing on (same weights, buffers, gate modes)."""
    checkpointed = copy.deepcopy(model)
    checkpointed.set_activation_checkpointing(True)
    return model.train(), checkpointed.train()


def _step(model: SlotNetwork, x, y, seed: int, regularise: bool) -> tuple[dict, torch.Tensor]:
    """Forward and backward from torch's global RNG seeded with ``seed``: (gradients, logits)."""
    torch.manual_seed(seed)
    out = model(x)
    loss = F.cross_entropy(out, y)
    if regularise:
        loss = loss + template_regularizer(model, 1.0, 100)
    model.zero_grad(set_to_none=True)
    loss.backward()
    return {n: p.grad for n, p in model.named_parameters() if p.grad is not None}, out.detach()


def _batch(classes: int = 4):
    g = torch.Generator().manual_seed(3)
    return torch.randn(4, 3, 4, 32, 32, generator=g), torch.randint(0, classes, (4,), generator=g)


def _assert_same_step(plain, checkpointed, regularise: bool) -> dict:
    x, y = _batch()
    grads, out = _step(plain, x, y, 11, regularise)
    grads_ckpt, out_ckpt = _step(checkpointed, x, y, 11, regularise)
    assert torch.equal(out, out_ckpt)
    assert grads.keys() == grads_ckpt.keys()
    for name in grads:
        assert torch.allclose(grads[name], grads_ckpt[name], rtol=0, atol=1e-6), name
    # the recomputation does not move BatchNorm's running statistics a second time
    buffers = dict(checkpointed.named_buffers())
    for name, b in plain.named_buffers():
        assert torch.equal(b, buffers[name]), name
    return grads


@pytest.mark.parametrize("phase", ["warmup", "vdroppath", "fixed"])
def test_gradients_with_checkpointing_equal_those_without(phase):
    torch.manual_seed(0)
    model = build_model(ModelConfig(name="tiny"), 4)
    if phase == "warmup":
        model.set_gate_mode("off")
    elif phase == "vdroppath":
        model.set_gate_mode("relaxed")
    else:
        model.apply_strategy(MIXED)
    grads = _assert_same_step(*_pair(model), regularise=phase == "vdroppath")
    logit_grads = [n for n in grads if n.endswith("logit")]
    if phase == "vdroppath":  # the drop logits learn through the multipliers drawn outside the checkpoint
        assert len(logit_grads) == 2 * model.num_slots
        assert all(grads[n].abs() > 0 for n in logit_grads)
    else:
        assert not logit_grads


def test_depth_gate_gradients_with_checkpointing_equal_those_without():
    torch.manual_seed(0)
    model = build_model(ModelConfig(name="tiny", depth_gate=True), 4)
    model.set_gate_mode("relaxed")
    grads = _assert_same_step(*_pair(model), regularise=True)
    assert sum(n.endswith("gate_d.logit") for n in grads) == model.num_slots


@pytest.mark.parametrize("name", ["resnet18_3d", "mobilenetv2_3d"])
def test_backbone_gradients_with_checkpointing_equal_those_without(name):
    torch.manual_seed(0)
    model = create(name, num_classes=4, width_mult=0.125)
    model.set_gate_mode("relaxed")
    _assert_same_step(*_pair(model), regularise=True)


def test_recomputation_reuses_the_masks_of_the_forward_and_draws_nothing():
    """Gates drawing from their own generator: checkpoint does not restore it, so a recomputation that
    drew again would get other drop variables (other gradients) and leave the generator further on."""
    torch.manual_seed(0)
    plain, checkpointed = _pair(build_model(ModelConfig(name="tiny"), 4))
    generators = []
    for model in (plain, checkpointed):
        generators.append(torch.Generator().manual_seed(5))
        model.set_gate_mode("relaxed", generator=generators[-1])
    draws = []
    real_draw = network.Gate.draw

    def counted(gate, n, device=None):
        draws.append(gate)
        return real_draw(gate, n, device)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(network.Gate, "draw", counted)
        _assert_same_step(plain, checkpointed, regularise=True)
    assert len(draws) == 2 * 2 * plain.num_slots  # one draw per gate and forward, in both models
    assert torch.equal(generators[0].get_state(), generators[1].get_state())


def test_checkpointing_keeps_less_for_the_backward():
    """What the forward saves for the backward, counted with saved-tensor hooks: a slot keeps its input
    and multipliers, and a dense layer not even its concatenated input (it concatenates the block's
    features under its checkpoint)."""
    torch.manual_seed(0)
    plain, checkpointed = _pair(build_model(ModelConfig(name="tiny"), 4))
    concatenated = plain.features.block1.layer2.in_channels  # 24 + 12: a dense layer's concatenated input
    x, _ = _batch()
    saved, channels = {}, {}
    for key, model in (("plain", plain), ("checkpointed", checkpointed)):
        tensors = []

        def pack(t, tensors=tensors):
            tensors.append(t)
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model(x)
        saved[key] = sum(t.numel() * t.element_size() for t in tensors)
        channels[key] = {t.shape[1] for t in tensors if t.dim() == 5 and t.shape[0] == len(x)}
    assert saved["checkpointed"] < 0.5 * saved["plain"]
    assert concatenated in channels["plain"] and concatenated not in channels["checkpointed"]


def test_evaluation_and_no_grad_forwards_are_not_checkpointed(monkeypatch):
    torch.manual_seed(0)
    plain, checkpointed = _pair(build_model(ModelConfig(name="tiny"), 4))

    def refuse(*args, **kwargs):
        raise AssertionError("checkpoint called")

    monkeypatch.setattr(network, "checkpoint", refuse)
    x, _ = _batch()
    with torch.no_grad():
        assert torch.equal(checkpointed(x), plain(x))
    plain.eval(), checkpointed.eval()
    assert torch.equal(checkpointed(x), plain(x))
    checkpointed.train()
    with pytest.raises(AssertionError, match="checkpoint called"):
        checkpointed(x)


def test_a_slot_that_defines_forward_itself_is_refused_by_name():
    class OwnForward(GatedSlot):
        def forward(self, x):
            h, _, _ = self._paths(x)
            return x if h is None else h

    class Net(SlotNetwork):
        def __init__(self):
            super().__init__()
            conv = torch.nn.Sequential(torch.nn.Conv3d(2, 2, 1))
            self.block = OwnForward("block", conv, copy.deepcopy(conv), 0.1, 0.2)
            self._init_slots([self.block])

    net = Net()
    with pytest.raises(ValueError, match="OwnForward define forward"):
        net.set_activation_checkpointing(True)
    net.set_activation_checkpointing(False)
    assert not net.activation_checkpointing


def test_training_run_with_checkpointing_ends_where_one_without_does(tiny_motion, tmp_path, monkeypatch):
    """A real run (warm-up, then v-DropPath) of the tiny preset, once each way; the checkpointed one
    really goes through ``torch.utils.checkpoint`` (counted)."""
    calls = []

    def counted(*args, **kwargs):
        calls.append(1)
        return torch.utils.checkpoint.checkpoint(*args, **kwargs)

    monkeypatch.setattr(network, "checkpoint", counted)
    runs = {}
    for on in (False, True):
        over = tiny_overrides(tiny_motion, tmp_path / str(on), **{"train.activation_checkpointing": on})
        calls.clear()
        summary = train(load_config(None, over))
        assert bool(calls) is on
        run = tmp_path / str(on) / "run"
        records = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
        runs[on] = summary, records, load_checkpoint(run / CHECKPOINT)["model"]
    (ref, ref_records, ref_weights), (summary, records, weights) = runs[False], runs[True]
    assert summary["complete"] and summary["steps"] == ref["steps"] > 0
    assert weights.keys() == ref_weights.keys()
    for name, value in ref_weights.items():
        assert torch.allclose(weights[name].double(), value.double(), rtol=0, atol=1e-5), name
    assert torch.allclose(torch.tensor(summary["drop_probs"]), torch.tensor(ref["drop_probs"]), atol=1e-6)
    assert [r["kind"] for r in records] == [r["kind"] for r in ref_records]
    for r, q in zip(records, ref_records):
        for key in ("loss", "ce", "reg"):
            if key in q:
                assert r[key] == pytest.approx(q[key], abs=1e-5), (r["step"], key)
    assert summary["val_top1"] == ref["val_top1"]
