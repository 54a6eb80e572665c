"""The optional depth gate (``model.depth_gate``): off by default, hard / relaxed semantics, sampling,
regulariser, training, marginals and the report's "Depth redundancy" section."""

from __future__ import annotations

import hashlib
import json
import math
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from conftest import tiny_overrides
from test_models import _hook_calls

from fusion3d.analysis.marginals import depth_marginals, plot_depth
from fusion3d.models.macs import count_macs, count_params
from fusion3d.models.regularizer import template_regularizer, vdroppath_regularizer
from fusion3d.models.spec import BACKBONES, ModelConfig, check_model_config
from fusion3d.models.strategy import Strategy
from fusion3d.models.template import DenseSlot, FusionTemplate, TransitionSlot, build_model, channel_pool
from fusion3d.run.layout import DEPTH_PNG

CLIP = (3, 4, 32, 32)
PNG = b"\x89PNG\r\n\x1a\n"
BIG = 1e4  # a saturated logit: p is exactly 0 or 1 in float32


def tiny(depth: bool = True, num_classes: int = 5, **kw) -> FusionTemplate:
    torch.manual_seed(0)
    return build_model(ModelConfig(name="tiny", depth_gate=depth, **kw), num_classes)


def clips(n: int = 2) -> torch.Tensor:
    return torch.randn(n, *CLIP, generator=torch.Generator().manual_seed(1))


def set_logits(model: FusionTemplate, st=None, depth=None) -> None:
    with torch.no_grad():
        for i, slot in enumerate(model.slots):
            if st is not None:
                slot.gate_s.logit.fill_(st[i][0])
                slot.gate_t.logit.fill_(st[i][1])
            if depth is not None:
                slot.gate_d.logit.fill_(depth[i])


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def _ent(p: float) -> float:
    return p * math.log(p) + (1 - p) * math.log(1 - p)


# ---- off by default -----------------------------------------------------------------------------

# Measured on the template before the depth gate existed (git HEAD): parameters, state-dict entries
# and sha1 of the newline-joined state-dict keys.
BEFORE = {
    "tiny": (5, 66_413, 127, "fff27215ab1ba524ee51fa03caf0a1dafa5186d9"),
    "small": (7, 433_737, 301, "391c67c50fbb4348020fef00caee1c583d38fbde"),
}


@pytest.mark.parametrize("name", sorted(BEFORE))
def test_off_by_default_leaves_keys_and_counts_as_before(name):
    classes, params, entries, digest = BEFORE[name]
    assert ModelConfig().depth_gate is False
    model = build_model(ModelConfig(name=name), classes)
    sd = model.state_dict()
    assert sum(p.numel() for p in model.parameters()) == params
    assert len(sd) == entries and hashlib.sha1("\n".join(sd).encode()).hexdigest() == digest
    assert not any("gate_d" in k for k in sd) and all(s.gate_d is None for s in model.slots)
    assert model.depth_drop_probs() is None and not model.has_depth_gate and model.depth_gated_weights() == []
    assert len(model.gates()) == len(model.drop_logits()) == 2 * model.num_slots
    assert "depth_gate" not in repr(model) and "p_D" not in repr(model)


def test_on_adds_only_one_logit_per_slot_and_keeps_the_network():
    off, on = tiny(False), tiny(True)
    sd_off, sd_on = off.state_dict(), on.state_dict()
    extra = set(sd_on) - set(sd_off)
    assert set(sd_off) <= set(sd_on) and extra == {f"features.{s.name}.gate_d.logit" for s in on.slots}
    assert all(torch.equal(sd_off[k], sd_on[k]) for k in sd_off)  # same weights from the same seed
    assert len(on.drop_logits()) == 3 * on.num_slots
    assert [id(p) for p in on.drop_logits()[-on.num_slots :]] == [id(s.gate_d.logit) for s in on.slots]
    assert on.drop_probs().shape == (on.num_slots, 2)
    torch.testing.assert_close(on.depth_drop_probs(), torch.full((on.num_slots,), 0.1))
    assert sum(p.numel() for p in on.network_parameters()) == sum(p.numel() for p in off.network_parameters())
    s = Strategy.from_string("S|none|ST|S+ST|none|ST")
    assert count_params(on, s) == count_params(off, s) and count_macs(on, CLIP, s) == count_macs(off, CLIP, s)
    # gates off and any strategy: exactly the network without depth gates
    off.eval()
    on.eval()
    x = clips()
    assert torch.equal(off(x), on(x))
    off.apply_strategy(s)
    on.apply_strategy(s)
    assert torch.equal(off(x), on(x))
    assert all(s_.gate_d.mode == "hard" and s_.gate_d.keep for s_ in on.slots)
    assert "p_D" in repr(on) and "depth_gate=True" in repr(on)


def test_depth_gate_is_template_only():
    for name in BACKBONES[:2]:
        with pytest.raises(ValueError, match=r"model\.depth_gate"):
            check_model_config(ModelConfig(name=name, depth_gate=True))
        with pytest.raises(ValueError, match=r"model\.depth_gate"):
            build_model(ModelConfig(name=name, depth_gate=True), 3)
    check_model_config(ModelConfig(name="tiny", depth_gate=True))


# ---- forward semantics --------------------------------------------------------------------------


def test_relaxed_forward_backward_reaches_every_logit():
    model = tiny()
    model.set_gate_mode("relaxed", generator=torch.Generator().manual_seed(0))
    assert all(g.mode == "relaxed" for g in model.depth_gates())
    y = model(clips(4))
    assert y.shape == (4, 5) and torch.isfinite(y).all()
    F.cross_entropy(y, torch.tensor([0, 1, 2, 3])).backward()
    for lg in model.drop_logits():
        assert lg.grad is not None and torch.isfinite(lg.grad) and lg.grad.item() != 0.0


@pytest.mark.parametrize("slot_index", range(6))
def test_hard_depth_drop_equals_unit_none_exactly(slot_index):
    model = tiny().eval()
    calls = _hook_calls(model)
    x = clips()
    base = ["S+ST", "S", "ST", "S+ST", "ST", "S"]
    model.apply_strategy(Strategy(tuple(base)))
    slot = model.slots[slot_index]
    slot.gate_d.set_mode("hard", keep=False)
    assert slot.unit == "none" and model.current_strategy()[slot_index] == "none"
    y_depth = model(x)
    assert calls[f"{slot.name}:S"] == calls[f"{slot.name}:T"] == calls.get(f"{slot.name}:shared", 0) == 0
    none = list(base)
    none[slot_index] = "none"
    model.apply_strategy(Strategy(tuple(none)))
    assert torch.equal(y_depth, model(x))


def _one_slot(kind: str) -> torch.nn.Module:
    torch.manual_seed(0)
    slot = (
        DenseSlot("d", 8, 12, 4, 0.1, 0.2, "conv3d", depth_gate=True)
        if kind == "dense"
        else TransitionSlot("t", 8, 0.1, 0.2, "conv3d", depth_gate=True)
    )
    return slot.eval()


def _hard(slot, keep_s, keep_t, keep_d, x):
    for g, k in ((slot.gate_s, keep_s), (slot.gate_t, keep_t), (slot.gate_d, keep_d)):
        g.set_mode("hard", keep=k)
    return slot(x)


@pytest.mark.parametrize("kind", ["dense", "transition"])
def test_relaxed_equals_hard_at_saturated_logits_per_slot(kind):
    slot = _one_slot(kind)
    x = torch.randn(3, 8, 2, 4, 4, generator=torch.Generator().manual_seed(2))
    for ks in (True, False):
        for kt in (True, False):
            for kd in (True, False):
                with torch.no_grad():
                    for g, k in ((slot.gate_s, ks), (slot.gate_t, kt), (slot.gate_d, kd)):
                        g.logit.fill_(-BIG if k else BIG)
                        g.set_mode("relaxed", generator=torch.Generator().manual_seed(5))
                    relaxed = slot(x)
                    hard = _hard(slot, ks, kt, kd, x)
                torch.testing.assert_close(relaxed, hard, rtol=0, atol=0, msg=f"{kind} S={ks} T={kt} D={kd}")
    # dropped by the depth gate = unit none: zeros (dense) or pool(channel-average skip) (transition)
    none = _hard(slot, True, True, False, x)
    if kind == "dense":
        assert none.shape == (3, 4, 2, 4, 4) and (none == 0).all()
    else:
        torch.testing.assert_close(none, F.avg_pool3d(channel_pool(x, 4), (1, 2, 2)), rtol=0, atol=0)


@pytest.mark.parametrize("kind", ["dense", "transition"])
def test_relaxed_depth_formula(kind):
    """S and T on (m = 1): dense m_d * shared(S + T); transition pool(m_d * (S + T) + (1 - m_d) * skip)."""
    slot = _one_slot(kind)
    x = torch.randn(4, 8, 2, 4, 4, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        slot.gate_d.logit.fill_(0.0)
        slot.gate_d.temperature = 1.0  # multipliers well inside (0, 1)
        slot.gate_d.set_mode("relaxed", generator=torch.Generator().manual_seed(7))
        out = slot(x)
        slot.gate_d.generator = torch.Generator().manual_seed(7)
        md = slot.gate_d.relaxed_keep(4).view(-1, 1, 1, 1, 1)
        assert ((md > 0.05) & (md < 0.95)).any()
        h = slot.path_s(x) + slot.path_t(x)
        if kind == "dense":
            want = md * slot.shared(h)
        else:
            want = slot.pool(md * h + (1 - md) * channel_pool(x, slot.out_channels))
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-6)


def test_relaxed_equals_hard_at_saturated_logits_whole_template():
    model = tiny().eval()
    units = ("S+ST", "S", "ST", "S+ST", "ST", "S+ST")
    depth_keep = (True, False, False, True, True, False)  # drops dense 2, the transition, dense 6
    set_logits(
        model,
        [[-BIG if k else BIG for k in pair] for pair in Strategy(units).keep()],
        [-BIG if k else BIG for k in depth_keep],
    )
    x = clips()
    model.set_gate_mode("relaxed", generator=torch.Generator().manual_seed(0))
    y_relaxed = model(x)
    effective = Strategy(tuple(u if k else "none" for u, k in zip(units, depth_keep)))
    assert model.most_probable_strategy() == effective
    model.apply_strategy(effective)
    torch.testing.assert_close(y_relaxed, model(x), rtol=1e-5, atol=1e-6)


# ---- strategies ---------------------------------------------------------------------------------


def test_sample_strategy_draws_none_with_probability_p_d():
    model = tiny()
    pd = [0.1, 0.3, 0.5, 0.7, 0.9, 0.2]
    g = torch.Generator().manual_seed(123)
    n = 3000
    # paths never dropped: P(none) = p_D
    set_logits(model, [[-30.0, -30.0]] * 6, [_logit(p) for p in pd])
    draws = [model.sample_strategy(g) for _ in range(n)]
    freq = np.array([[d[i] == "none" for i in range(6)] for d in draws]).mean(0)
    tol = 4 * np.sqrt(0.25 / n)
    assert np.abs(freq - pd).max() < tol, freq
    assert all(d[i] in ("S+ST", "none") for d in draws for i in range(6))
    # paths dropped with p = 0.5: P(none) = p_D + (1 - p_D) / 4, as depth_marginals says
    set_logits(model, [[0.0, 0.0]] * 6)
    draws = [model.sample_strategy(g) for _ in range(n)]
    freq = np.array([[d[i] == "none" for i in range(6)] for d in draws]).mean(0)
    want = depth_marginals(model.drop_probs(), model.depth_drop_probs())["P_none"].to_numpy()
    np.testing.assert_allclose(want, np.array(pd) + (1 - np.array(pd)) / 4, rtol=1e-5)
    assert np.abs(freq - want).max() < tol, (freq, want)
    # the same generator seed gives the same strategy; the mode: none iff p_D > 0.5
    assert model.sample_strategy(torch.Generator().manual_seed(9)) == model.sample_strategy(
        torch.Generator().manual_seed(9)
    )
    set_logits(model, [[-30.0, 30.0]] * 6)
    assert str(model.most_probable_strategy()) == "S|S|S|none|none|S"


def test_sample_mode_drops_whole_slots_and_reports_them():
    model = tiny().eval()
    set_logits(model, [[-30.0, -30.0]] * 6, [30.0, -30.0, 0.0, -30.0, 0.0, 30.0])
    model.set_gate_mode("sample", generator=torch.Generator().manual_seed(0))
    calls = _hook_calls(model)
    seen = set()
    for _ in range(10):
        model(clips())
        s = model.last_sampled_strategy()
        assert s[0] == "none" and s[5] == "none" and s[1] == "S+ST" and s[3] == "S+ST"
        seen.add((s[2], s[4]))
    assert len(seen) > 1
    assert calls["block1.layer1:S"] == calls["block1.layer1:shared"] == 0 and calls["block1.layer2:S"] == 10
    model.set_gate_mode("relaxed")
    assert all(g.mode == "relaxed" and g.keep for g in model.gates())


# ---- regulariser --------------------------------------------------------------------------------


def test_depth_weights_are_every_conv_of_the_slot():
    model = tiny()
    for slot in model.slots:
        want = [slot.path_s.conv.weight, slot.path_t.conv.weight]
        if isinstance(slot, DenseSlot):
            want.append(slot.shared.conv.weight)
        assert [id(w) for w in slot.depth_weights()] == [id(w) for w in want]


def test_template_regularizer_adds_the_depth_term_in_closed_form():
    torch.manual_seed(0)
    model = build_model(
        ModelConfig(name="tiny", blocks=[1, 1], depth_gate=True), 3
    )  # dense, transition, dense
    pd = [0.2, 0.6, 0.35]
    set_logits(model, depth=[_logit(p) for p in pd])
    k, n = 50.0, 200
    coef = k / n
    val = template_regularizer(model, k, n)
    st = sum(
        coef * (1 - 0.1) * w.detach().pow(2).sum().item() + _ent(0.1) / n for _, w in model.gated_weights()
    )
    depth = sum(
        coef * (1 - p) * sum(w.detach().pow(2).sum().item() for w in slot.depth_weights()) + _ent(p) / n
        for p, slot in zip(pd, model.slots)
    )
    assert val.item() == pytest.approx(st + depth, rel=1e-5)
    # the S / T part is exactly the regulariser of the same network without depth gates
    torch.manual_seed(0)
    off = build_model(ModelConfig(name="tiny", blocks=[1, 1]), 3)
    assert template_regularizer(off, k, n).item() == pytest.approx(st, rel=1e-5)
    # paper form: coef = k^2 / (2N)
    coef_p = k * k / (2 * n)
    depth_p = sum(
        coef_p * (1 - p) * sum(w.detach().pow(2).sum().item() for w in slot.depth_weights()) + _ent(p) / n
        for p, slot in zip(pd, model.slots)
    )
    st_p = sum(
        coef_p * 0.9 * w.detach().pow(2).sum().item() + _ent(0.1) / n for _, w in model.gated_weights()
    )
    assert template_regularizer(model, k, n, "paper").item() == pytest.approx(st_p + depth_p, rel=1e-5)
    val.backward()
    for slot in model.slots:
        assert slot.gate_d.logit.grad.item() < 0  # the weight term pushes p_D up
    assert model.slots[0].shared.conv.weight.grad.abs().sum() > 0  # weighed only by the depth term
    # hand numbers: one gate, ||W||^2 = 4, p = 0.2, coef 0.25: 0.25 * 0.8 * 4 + ent(0.2) / 200
    v = vdroppath_regularizer(torch.tensor([_logit(0.2)]), torch.tensor([4.0]), 50.0, 200)
    assert v.item() == pytest.approx(0.8 - 0.500402 / 200, abs=1e-6)


def test_saturated_depth_logits_stay_finite():
    model = tiny()
    set_logits(model, depth=[BIG, -BIG, BIG, -BIG, 0.0, BIG])
    val = template_regularizer(model, 10.0, 100)
    val.backward()
    assert torch.isfinite(val) and all(torch.isfinite(g.logit.grad) for g in model.depth_gates())


# ---- marginals and figure -----------------------------------------------------------------------


def test_depth_marginals_closed_forms():
    # slot a: p_S 0.25, p_T 0.64, p_D 0.2 ; slot b: p_S 0.81, p_T 0.01, p_D 0.5
    df = depth_marginals([[0.25, 0.64], [0.81, 0.01]], [0.2, 0.5], ["a", "b"])
    a, b = df.iloc[0], df.iloc[1]
    # a: q_S 0.75, q_T 0.36 -> paths S 0.48, ST 0.09, S+ST 0.27, none 0.16; q_D = 0.8
    assert a["P_kept"] == pytest.approx(0.8)
    assert (a["P_S"], a["P_ST"], a["P_S+ST"]) == pytest.approx((0.384, 0.072, 0.216))
    assert a["P_none"] == pytest.approx(0.2 + 0.8 * 0.16)
    # b: q_S 0.19, q_T 0.99 -> paths S 0.0019, ST 0.8019, S+ST 0.1881, none 0.0081; q_D = 0.5
    assert b["P_none"] == pytest.approx(0.5 + 0.5 * 0.0081) and b["P_ST"] == pytest.approx(0.40095)
    assert (a["preferred_unit"], b["preferred_unit"]) == ("S", "none")
    units = ["P_S", "P_ST", "P_S+ST", "P_none"]
    np.testing.assert_allclose(df[units].sum(axis=1), 1.0)
    # p_D = 0 gives the plain marginals; p_D = 1 gives none
    z = depth_marginals([[0.3, 0.6]], [0.0])
    assert z["P_S"][0] == pytest.approx(0.7 * 0.6) and z["P_none"][0] == pytest.approx(0.3 * 0.6)
    assert depth_marginals([[0.3, 0.6]], [1.0])["P_none"][0] == 1.0
    # paper convention: q = 1 - sqrt(p) for the paths and the depth gate alike
    pp = depth_marginals([[0.25, 0.64]], [0.25], convention="paper").iloc[0]
    assert pp["P_kept"] == pytest.approx(0.5) and pp["P_S+ST"] == pytest.approx(0.5 * 0.5 * 0.2)
    with pytest.raises(ValueError, match="depth_probs"):
        depth_marginals([[0.1, 0.2]], [0.1, 0.2])
    with pytest.raises(ValueError, match="slot names"):
        depth_marginals([[0.1, 0.2]], [0.1], ["a", "b"])


def test_plot_depth_writes_a_png_atomically(tmp_path):
    out = plot_depth([0.1, 0.7, 0.4], ["a", "b", "c"], tmp_path / DEPTH_PNG, redundant_runs=[["b", "c"]])
    assert out == tmp_path / DEPTH_PNG and out.read_bytes().startswith(PNG)
    assert [p.name for p in tmp_path.iterdir()] == [DEPTH_PNG]  # no temporary file left
    with pytest.raises(ValueError):
        plot_depth([0.1, 0.2], ["a"], tmp_path / "x.png")


# ---- training -----------------------------------------------------------------------------------


def test_one_epoch_training_run_logs_depth_drop_probs(tiny_motion, tmp_path):
    from fusion3d.config import load_config
    from fusion3d.engine.checkpoint import CHECKPOINT, load_checkpoint
    from fusion3d.engine.trainer import train

    over = tiny_overrides(
        tiny_motion,
        tmp_path,
        **{"model.depth_gate": "true", "train.warmup_epochs": 0, "train.epochs": 1, "train.eval_samples": 1},
    )
    summary = train(load_config(None, over))
    run = tmp_path / "run"
    recs = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    epoch = [r for r in recs if r["kind"] == "epoch"][-1]
    n = len(summary["slot_names"])
    for d in (epoch["depth_drop_probs"], summary["depth_drop_probs"]):
        assert len(d) == n and all(0.0 < p < 1.0 for p in d)
    assert summary["depth_drop_probs"] == epoch["depth_drop_probs"]
    assert summary["depth_drop_probs"] != [pytest.approx(0.1, abs=1e-7)] * n  # the logits trained
    assert epoch["reg"] > 0
    state = load_checkpoint(run / CHECKPOINT)
    assert sum("gate_d.logit" in k for k in state["model"]) == n
    assert yaml.safe_load((run / "config.yaml").read_text())["model"]["depth_gate"] is True
    # the logits group of the optimizer holds the depth logits too (3 per slot)
    groups = state["optimizer"]["param_groups"]
    assert [len(g["params"]) for g in groups if g.get("name") == "drop_logits"] == [3 * n]


# ---- report -------------------------------------------------------------------------------------


def _hand_run(tmp_path, depth=True):
    run = tmp_path / "run"
    run.mkdir()
    names = [
        "block1.layer1",
        "block1.layer2",
        "transition1",
        "block2.layer1",
        "block2.layer2",
        "block2.layer3",
    ]
    (run / "config.yaml").write_text(
        yaml.safe_dump(
            {
                "model": {"name": "tiny", "depth_gate": depth, "drop_init": 0.1},
                "train": {"warmup_epochs": 0, "epochs": 1},
            }
        )
    )
    drop = [[0.1, 0.2]] * 6
    summary = {
        "epochs_done": 1,
        "total_epochs": 1,
        "steps": 5,
        "drop_probs": drop,
        "slot_names": names,
        "complete": True,
    }
    if depth:
        summary["depth_drop_probs"] = [0.05, 0.2, 0.1, 0.8, 0.65, 0.3]
    (run / "summary.json").write_text(json.dumps(summary))
    rec = {
        "kind": "epoch",
        "epoch": 1,
        "step": 5,
        "phase": "vdroppath",
        "loss": 1.0,
        "ce": 0.9,
        "reg": 0.1,
        "train_acc": 50.0,
        "drop_probs": drop,
    }
    (run / "metrics.jsonl").write_text(json.dumps(rec) + "\n")
    return run


def _md_section(md: str, title: str) -> str | None:
    parts = re.split(r"^## (.+)$", md, flags=re.M)
    return {parts[i].strip(): parts[i + 1] for i in range(1, len(parts) - 1, 2)}.get(title)


def _section_images(html: str, sid: str) -> int:
    m = re.search(rf'<section id="{sid}">(.*?)</section>', html, flags=re.S)
    return 0 if m is None else m.group(1).count('<img src="data:image/png;base64,')


def test_report_depth_redundancy_section(tmp_path):
    from fusion3d.report import build_report

    run = _hand_run(tmp_path)
    html_path, md_path = build_report(run)
    sec = _md_section(md_path.read_text(), "Depth redundancy")
    assert sec is not None and (run / DEPTH_PNG).read_bytes().startswith(PNG)
    assert "**2 of 6 slots**" in sec and "`block2.layer1`, `block2.layer2`" in sec
    assert "cka.json is missing" in sec and "--cka" in sec and DEPTH_PNG in sec
    assert "0.950" in sec and "0.200" in sec  # P(slot kept) of block1.layer1 / block2.layer1
    assert _section_images(html_path.read_text(), "depth") == 1
    # with CKA: the redundant runs next to the depth gates, the heatmap side by side with the figure
    (run / "cka_within.png").write_bytes((run / DEPTH_PNG).read_bytes())
    (run / "cka.json").write_text(
        json.dumps(
            {
                "threshold": 0.9,
                "redundant_runs": [
                    {
                        "first": "block2.layer1",
                        "last": "block2.layer3",
                        "slots": ["block2.layer1", "block2.layer2", "block2.layer3"],
                        "length": 3,
                        "min_adjacent_cka": 0.95,
                    },
                    ["block1.layer1", "block1.layer2"],
                ],
            }
        )
    )
    html_path, md_path = build_report(run)
    sec = _md_section(md_path.read_text(), "Depth redundancy")
    assert "cka.json is missing" not in sec and "CKA redundant run" in sec
    assert "| 0.417 | 0.200 | `block2.layer1`, `block2.layer2` |" in sec  # mean / min P(kept) of the run
    assert "| 0.875 | 0.800 | none |" in sec
    assert "0.600 in CKA redundant runs (5 slots), 0.900 elsewhere (1 slot)" in sec
    assert _section_images(html_path.read_text(), "depth") == 2
    assert "cka_within.png" in sec


def test_report_has_no_depth_section_without_depth_gates(tmp_path):
    from fusion3d.report import build_report

    run = _hand_run(tmp_path, depth=False)
    html_path, md_path = build_report(run)
    assert _md_section(md_path.read_text(), "Depth redundancy") is None
    assert not (run / DEPTH_PNG).exists() and 'id="depth"' not in html_path.read_text()
