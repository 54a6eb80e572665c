"""Fusion template, gates, presets, parameter and MAC counts."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import types
import typing

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from fusion3d.models.gate import Gate
from fusion3d.models.macs import count_macs, count_params, macs_breakdown
from fusion3d.models.spec import BACKBONES, PRESETS, ModelConfig, resolve_arch
from fusion3d.models.strategy import Strategy
from fusion3d.models.template import DenseSlot, FusionTemplate, TransitionSlot, build_model, channel_pool

CLIP = (3, 4, 32, 32)  # (C, T, H, W) small enough for fast tests


def tiny(num_classes: int = 5, **kw) -> FusionTemplate:
    torch.manual_seed(0)
    return build_model(ModelConfig(name="tiny", **kw), num_classes)


def clips(n: int = 2, shape=CLIP) -> torch.Tensor:
    return torch.randn(n, *shape, generator=torch.Generator().manual_seed(1))


def set_logits(model: FusionTemplate, values) -> None:
    """values: (num_slots, 2) logits, columns [S, T]."""
    with torch.no_grad():
        for slot, (ls, lt) in zip(model.slots, values):
            slot.gate_s.logit.fill_(ls)
            slot.gate_t.logit.fill_(lt)


# ---- config and presets -----------------------------------------------------------------------


def test_model_config_fields_have_defaults_help_and_plain_types():
    allowed = {int, float, str, bool, list}
    hints = typing.get_type_hints(ModelConfig)
    cfg = ModelConfig()
    for f in dataclasses.fields(ModelConfig):
        assert f.metadata.get("help"), f.name
        tp = hints[f.name]
        origin = typing.get_origin(tp)
        if origin is typing.Literal:
            continue
        if origin in (typing.Union, types.UnionType):
            assert set(typing.get_args(tp)) - {type(None)} <= allowed, f.name
            continue
        assert tp in allowed, f.name
        getattr(cfg, f.name)
    # model.name is a string checked against the live registry (a user's registered model included)
    assert hints["name"] is str and all(
        n in ModelConfig.__dataclass_fields__["name"].metadata["help"] for n in set(PRESETS) | set(BACKBONES)
    )
    assert (
        cfg.drop_init == 0.1 and cfg.temperature == 0.2 and cfg.conv_impl == "auto" and cfg.num_classes == 0
    )


def test_spec_imports_no_torch():
    code = (
        "import sys, fusion3d.models.spec, fusion3d.models.strategy\n"
        "from fusion3d.models import ModelConfig, Strategy\nassert 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_overrides_and_validation():
    arch = resolve_arch(
        ModelConfig(
            name="tiny",
            growth=4,
            bottleneck_factor=2,
            blocks=[1, 2, 1],
            stem_pool=False,
            dropout=0.3,
            stem_kernel=[1, 3, 3],
            stem_stride=1,
            stem_channels=8,
        )
    )
    assert (arch.growth, arch.bottleneck, arch.blocks, arch.stem_pool, arch.dropout) == (
        4,
        8,
        (1, 2, 1),
        False,
        0.3,
    )
    assert arch.num_slots == 6 and arch.stem_kernel == (1, 3, 3)
    assert resolve_arch(ModelConfig(name="densenet121_3d")).num_slots == 61
    for bad in (
        dict(blocks=[0]),
        dict(stem_kernel=[2, 3, 3]),
        dict(drop_init=0.0),
        dict(temperature=0.0),
        dict(dropout=1.0),
        dict(name="resnet"),
    ):
        with pytest.raises(ValueError):
            resolve_arch(ModelConfig(**bad))
    assert build_model(ModelConfig(name="tiny", num_classes=7), 3).num_classes == 7
    assert build_model(ModelConfig(name="tiny"), 3).num_classes == 3
    with pytest.raises(ValueError):
        build_model(ModelConfig(name="tiny"), 0)


@pytest.fixture(scope="module")
def paper_model() -> FusionTemplate:
    return build_model(ModelConfig(name="densenet121_3d"), 174)  # built, never run (0.5 s)


def test_paper_preset_parameter_counts(paper_model):
    model = paper_model
    assert model.num_slots == 61
    n = model.num_slots
    expected = {"S+ST": 21_404_526, "S": 7_169_838, "ST": 16_615_214}
    for unit, count in expected.items():
        got = count_params(model, Strategy.uniform(unit, n))
        assert got == count
    assert round(count_params(model) / 1e6, 2) == 21.40
    assert round(count_params(model, Strategy.uniform("S", n)) / 1e6, 2) == 7.17
    assert round(count_params(model, Strategy.uniform("ST", n)) / 1e6, 2) == 16.62
    # the full template: every parameter but the 122 drop logits
    assert sum(p.numel() for p in model.network_parameters()) == expected["S+ST"]
    assert len(model.drop_logits()) == 122


def test_paper_preset_macs(paper_model):
    model = paper_model
    assert count_macs(model, (3, 16, 112, 112)) / 1e9 == pytest.approx(30.5, abs=0.05)
    assert count_macs(model, (3, 16, 224, 224)) / 1e9 == pytest.approx(124, rel=0.01)


# ---- forward, modes, gates --------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["off", "relaxed", "sample", "hard"])
def test_forward_every_mode(mode):
    model = tiny(5)
    if mode == "hard":
        model.apply_strategy(Strategy(("S", "ST", "none", "S+ST", "none", "ST")))
    else:
        model.set_gate_mode(mode)
    for train in (True, False):
        model.train(train)
        y = model(clips(3))
        assert y.shape == (3, 5) and torch.isfinite(y).all()


def test_relaxed_gradients_reach_every_logit():
    model = tiny(4)
    model.set_gate_mode("relaxed", generator=torch.Generator().manual_seed(0))
    loss = F.cross_entropy(model(clips(4)), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    for lg in model.drop_logits():
        assert lg.grad is not None and torch.isfinite(lg.grad) and lg.grad.item() != 0.0


def test_off_mode_has_no_logit_gradient_path():
    model = tiny(4)
    model(clips(2)).sum().backward()
    assert all(lg.grad is None for lg in model.drop_logits())


def _hook_calls(model: FusionTemplate):
    calls: dict[str, int] = {}
    for slot in model.slots:
        mods = [("S", slot.path_s), ("T", slot.path_t)] + (
            [("shared", slot.shared)] if isinstance(slot, DenseSlot) else []
        )
        for tag, mod in mods:
            key = f"{slot.name}:{tag}"
            calls[key] = 0
            mod.register_forward_hook(lambda m, i, o, key=key: calls.__setitem__(key, calls[key] + 1))
    return calls


def test_hard_mode_does_not_compute_dropped_paths():
    model = tiny(5)
    calls = _hook_calls(model)
    s = Strategy(("S", "ST", "none", "S+ST", "none", "S"))
    model.apply_strategy(s)
    model(clips(2))
    for slot, unit in zip(model.slots, s):
        ks, kt = {"S": (1, 0), "ST": (0, 1), "S+ST": (1, 1), "none": (0, 0)}[unit]
        assert calls[f"{slot.name}:S"] == ks and calls[f"{slot.name}:T"] == kt, slot.name
        if isinstance(slot, DenseSlot):
            assert calls[f"{slot.name}:shared"] == int(unit != "none")


def test_unit_none_is_a_clean_skip():
    model = tiny(5).eval()
    model.apply_strategy(Strategy(("S+ST", "none", "none", "S", "ST", "S+ST")))
    seen = {}
    layer2 = model.slots[1]
    tr = model.slots[2]
    assert isinstance(layer2, DenseSlot) and isinstance(tr, TransitionSlot)
    layer2.register_forward_hook(lambda m, i, o: seen.__setitem__("dense", o))
    tr.register_forward_hook(lambda m, i, o: seen.__setitem__("trans", (i[0], o)))
    model(clips(2))
    assert seen["dense"].shape[1] == model.arch.growth and (seen["dense"] == 0).all()
    x, out = seen["trans"]
    expected = F.avg_pool3d(x.reshape(x.shape[0], tr.out_channels, 2, *x.shape[2:]).mean(2), (1, 2, 2))
    torch.testing.assert_close(out, expected)
    # channel_pool with an odd channel count still gives the requested width
    assert channel_pool(torch.randn(2, 7, 1, 2, 2), 3).shape == (2, 3, 1, 2, 2)


def test_relaxed_mode_equals_hard_units_at_saturated_logits():
    """With p exactly 0 or 1 the relaxed multipliers are exactly 1 or 0: relaxed == hard, none included."""
    model = tiny(5).eval()
    s = Strategy(("S", "none", "none", "ST", "S+ST", "none"))
    set_logits(model, [[-1e4 if k else 1e4 for k in pair] for pair in s.keep()])
    x = clips(2)
    model.set_gate_mode("relaxed")
    y_relaxed = model(x)
    model.apply_strategy(s)
    y_hard = model(x)
    torch.testing.assert_close(y_relaxed, y_hard, rtol=1e-5, atol=1e-6)


def test_set_gate_mode_and_apply_strategy_round_trip():
    model = tiny(5)
    assert model.gate_mode == "off"
    model.set_gate_mode("relaxed")
    s = Strategy(("S", "ST", "none", "S+ST", "S", "ST"))
    model.apply_strategy(s)
    assert model.gate_mode == "hard" and model.current_strategy() == s
    assert all(g.mode == "hard" for g in model.gates())
    assert "none" in repr(model) and "transition1" in repr(model) and "block2.layer3" in repr(model)
    model.apply_strategy(str(Strategy.uniform("ST", 6)))  # a second strategy keeps the remembered mode
    model.apply_strategy(None)
    assert model.gate_mode == "relaxed" and all(g.mode == "relaxed" and g.keep for g in model.gates())
    assert model.current_strategy() == Strategy.uniform("S+ST", 6)
    with pytest.raises(ValueError):
        model.apply_strategy(Strategy.uniform("S", 5))
    with pytest.raises(ValueError):
        model.set_gate_mode("bogus")
    fresh = tiny(5)
    fresh.apply_strategy(s)
    fresh.apply_strategy(None)
    assert fresh.gate_mode == "off"
    # the evaluator's pattern: remember the mode, apply strategies, restore the mode
    previous = model.gate_mode
    model.apply_strategy(s)
    model.set_gate_mode(previous)
    assert model.gate_mode == "relaxed" and model.current_strategy() == Strategy.uniform("S+ST", 6)


def test_logits_probs_and_strategy_sampling():
    model = tiny(5)
    logits = model.drop_logits()
    assert len(logits) == 2 * model.num_slots and all(lg.is_leaf and lg.requires_grad for lg in logits)
    ids = {id(p) for p in logits}
    assert not ids & {id(p) for p in model.network_parameters()}
    probs = model.drop_probs()
    assert probs.shape == (model.num_slots, 2)
    torch.testing.assert_close(probs, torch.full_like(probs, 0.1))
    # p = 0 / 1 / 0.5 per path
    set_logits(model, [[-30, 30], [30, -30], [30, 30], [-30, -30], [0, -30], [0, 30]])
    assert str(model.most_probable_strategy()) == "S|ST|none|S+ST|S+ST|S"
    a = model.sample_strategy(torch.Generator().manual_seed(3))
    assert a == model.sample_strategy(torch.Generator().manual_seed(3))
    draws = [model.sample_strategy(torch.Generator().manual_seed(i)) for i in range(200)]
    assert all(d.units[:4] == ("S", "ST", "none", "S+ST") for d in draws)
    frac_s_kept = sum(d.units[4] in ("S", "S+ST") for d in draws) / len(draws)
    assert 0.38 < frac_s_kept < 0.62


def test_sample_mode_draws_a_shared_hard_subnetwork_per_call():
    model = tiny(5).eval()
    set_logits(model, [[-30, 30], [30, -30], [0, 0], [-30, -30], [0, 0], [0, 0]])
    model.set_gate_mode("sample", generator=torch.Generator().manual_seed(0))
    calls = _hook_calls(model)
    seen = set()
    for _ in range(8):
        model(clips(2))
        s = model.last_sampled_strategy()
        assert s.units[0] == "S" and s.units[1] == "ST" and s.units[3] == "S+ST"
        seen.add(str(s))
    assert len(seen) > 1
    assert calls["block1.layer1:T"] == 0 and calls["block1.layer1:S"] == 8


def test_gate_relaxed_distribution_and_modes():
    g = Gate(drop_init=0.3, temperature=0.05)
    g.generator = torch.Generator().manual_seed(0)
    assert g.drop_prob == pytest.approx(0.3) and g.keep_prob == pytest.approx(0.7)
    g.set_mode("relaxed")
    m = g.draw(20000)
    assert m.shape == (20000,) and ((m >= 0) & (m <= 1)).all()
    assert m.mean().item() == pytest.approx(0.7, abs=0.02)  # E[1 - z] -> 1 - p as tau -> 0
    assert ((m < 0.05) | (m > 0.95)).float().mean() > 0.9  # nearly hard at small tau
    g.set_mode("off")
    assert g.draw(3) == 1.0
    g.set_mode("hard", keep=False)
    assert g.draw(3) is None and g.last_keep is False
    g.set_mode("sample")
    keeps = [g.draw(1) is not None for _ in range(4000)]
    assert sum(keeps) / len(keeps) == pytest.approx(0.7, abs=0.03)
    assert "p=0.3000" in repr(g) and "mode=sample" in repr(g)
    with torch.no_grad():
        g.logit.fill_(1e4)
    g.set_mode("relaxed")
    assert torch.isfinite(g.draw(100)).all()
    with pytest.raises(ValueError):
        g.set_mode("bogus")


def test_per_batch_relaxed_masks_and_temperature():
    model = tiny(3)
    model.set_gate_mode("relaxed")
    model.set_relaxation(0.5, per_batch=True)
    g = model.gates()[0]
    g.generator = torch.Generator().manual_seed(0)
    m = g.draw(6)
    assert m.shape == (6,) and (m == m[0]).all()  # one draw for the batch
    assert all(x.temperature == 0.5 and x.per_batch for x in model.gates())
    model.set_relaxation(0.2)
    assert not g.per_batch and len(set(g.draw(6).tolist())) > 1  # one draw per sample
    with pytest.raises(ValueError, match="temperature"):
        model.set_relaxation(0.0)


def test_relaxed_temperature_falls_geometrically_over_v_droppath():
    from fusion3d.config import TrainConfig
    from fusion3d.engine.epoch import relaxed_temperature

    t = TrainConfig(epochs=3, temperature_from=0.8)
    assert [relaxed_temperature(t, 0.2, e) for e in range(3)] == pytest.approx([0.8, 0.4, 0.2])
    assert relaxed_temperature(TrainConfig(epochs=3), 0.2, 1) == 0.2  # fixed: the paper
    assert relaxed_temperature(TrainConfig(epochs=1, temperature_from=0.8), 0.2, 0) == 0.2


# ---- counts -----------------------------------------------------------------------------------


STRATEGIES = [
    "S+ST|S+ST|S+ST|S+ST|S+ST|S+ST",
    "S|S|S|S|S|S",
    "ST|ST|ST|ST|ST|ST",
    "S|none|ST|S+ST|none|ST",
    "none|none|none|none|none|none",
]


@pytest.mark.parametrize("impl", ["conv2d", "conv3d"])
@pytest.mark.parametrize("text", STRATEGIES)
def test_macs_match_flop_counter(text, impl):
    model = tiny(5, conv_impl=impl).eval()
    s = Strategy.from_string(text)
    model.apply_strategy(s)
    n = 2
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        model(clips(n))
    assert fc.get_total_flops() == 2 * n * count_macs(model, CLIP, s)


def test_full_template_macs_and_params_in_off_mode():
    model = tiny(5).eval()
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        model(clips(1, (3, 5, 36, 28)))
    assert fc.get_total_flops() == 2 * count_macs(model, (3, 5, 36, 28))
    parts = macs_breakdown(model, CLIP)
    assert list(parts)[0] == "stem" and list(parts)[-1] == "head" and len(parts) == model.num_slots + 2
    assert count_params(model) == sum(p.numel() for p in model.network_parameters())
    s = Strategy.from_string("S|none|ST|S+ST|none|ST")
    used = sum(p.numel() for p in model.stem.parameters()) + sum(p.numel() for p in model.head.parameters())
    for slot, (ks, kt) in zip(model.slots, s.keep()):
        if ks:
            used += sum(p.numel() for p in slot.path_s.parameters())
        if kt:
            used += sum(p.numel() for p in slot.path_t.parameters())
        if isinstance(slot, DenseSlot) and (ks or kt):
            used += sum(p.numel() for p in slot.shared.parameters())
    assert count_params(model, s) == used


def test_tiny_template_learns_from_scratch():
    """Regression guard for the original code's zero-gamma BatchNorm init (its template never learned)."""
    model = tiny(2)
    model.set_gate_mode("relaxed", generator=torch.Generator().manual_seed(0))
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm3d):
            assert (m.weight == 1).all()
    x, y = clips(8, (3, 4, 16, 16)), torch.tensor([0, 1] * 4)
    opt = torch.optim.Adam(model.network_parameters(), lr=1e-2)
    losses = []
    for _ in range(25):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_all_s_cpu_presets_are_blind_to_temporal_order_and_all_st_is_not():
    """The CPU presets' stem is per-frame, so with every slot at S the network is exactly invariant to
    reversing time (the reversal-twin ceiling of the motion data holds), while ST units see order."""
    from fusion3d.models import Strategy, build_model
    from fusion3d.models.spec import ModelConfig

    torch.manual_seed(0)
    for preset in ("tiny", "small"):
        model = build_model(ModelConfig(name=preset), 4).eval()
        x = torch.randn(2, 3, 8, 32, 32)
        model.apply_strategy(Strategy.uniform("S", model.num_slots))
        with torch.no_grad():
            assert torch.allclose(model(x), model(x.flip(2)), atol=1e-5)
        model.apply_strategy(Strategy.uniform("ST", model.num_slots))
        with torch.no_grad():
            assert not torch.allclose(model(x), model(x.flip(2)), atol=1e-3)


def test_pool_output_shape_matches_torch_with_ceil_mode():
    from fusion3d.models.macs import _pool_shape as pool_output_shape

    for n, k, s, p in [(7, 3, 2, 0), (8, 3, 2, 1), (5, 2, 2, 0), (9, 3, 3, 1)]:
        pool = torch.nn.MaxPool3d(k, s, p, ceil_mode=True)
        want = tuple(pool(torch.zeros(1, 2, n, n, n)).shape[1:])
        assert pool_output_shape(pool, (2, n, n, n)) == want, (n, k, s, p)
