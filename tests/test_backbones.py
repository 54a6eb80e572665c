"""Backbones whose blocks are fusion slots: shapes, units, parameter and MAC counts, registry, config."""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from fusion3d.config import ConfigError, load_config
from fusion3d.models import Strategy, create, list_models
from fusion3d.models.backbones import (
    _REGISTRY,
    BasicSlot,
    BlockSlot,
    BottleneckSlot,
    InvertedResidualSlot,
    SlotMobileNetV2,
    SlotResNet,
)
from fusion3d.models.convs import FactorConv3d, conv1xkxk
from fusion3d.models.macs import count_macs, count_params, macs_breakdown, trace_costs
from fusion3d.models.spec import BACKBONES, PRESETS, ModelConfig, resolve_arch
from fusion3d.models.strategy import UNITS
from fusion3d.models.template import FusionTemplate, build_model

CLIP = (3, 4, 32, 32)  # (C, T, H, W): every backbone reaches 1x1 space at the end, fast on a CPU
WIDTH = 0.125  # small widths: ResNet stages 8/16/32/64 planes, MobileNetV2 widths of 8 to 40


def small(name: str, num_classes: int = 5, **kw):
    torch.manual_seed(0)
    return create(name, num_classes=num_classes, width_mult=WIDTH, **kw)


def clips(n: int = 2, shape=CLIP) -> torch.Tensor:
    return torch.randn(n, *shape, generator=torch.Generator().manual_seed(1))


def mixed(num_slots: int, offset: int = 0) -> Strategy:
    """Every unit, cycling through the slots."""
    return Strategy(tuple(UNITS[(i + offset) % 4] for i in range(num_slots)))


def meta_model(name: str, num_classes: int = 1000):
    """A full-width model on the meta device: built in milliseconds, counted without data."""
    with torch.device("meta"):
        return create(name, num_classes=num_classes)


# ---- registry ---------------------------------------------------------------------------------


def test_registry_lists_every_template_preset_and_backbone():
    assert list_models() == [*PRESETS, *BACKBONES]
    assert set(_REGISTRY) == set(BACKBONES)
    assert "densenet121_3d" in list_models() and "densenet121_3d" not in BACKBONES
    with pytest.raises(ValueError, match="unknown model"):
        create("resnet", num_classes=3)


@pytest.mark.parametrize("name", list(PRESETS) + list(BACKBONES))
def test_create_builds_every_name_with_its_slots(name):
    model = meta_model(name, 7)
    assert model.num_classes == 7 and model.in_channels == 3
    assert len(model.slot_names) == len(set(model.slot_names)) == model.num_slots
    expected_slots = {
        "resnet18_3d": 8,
        "resnet50_3d": 16,
        "resnext50_32x4d_3d": 16,
        "resnext101_32x8d_3d": 33,
        "mobilenetv2_3d": 16,
        "densenet121_3d": 61,
    }
    if name in BACKBONES:
        assert model.slot_names[0] == ("layer2.block1" if name == "mobilenetv2_3d" else "layer1.block1")
        assert all(model.get_submodule(s.name) is s for s in model.slots)  # slot name = module path
    else:
        assert isinstance(model, FusionTemplate)
    if name in expected_slots:
        assert model.num_slots == expected_slots[name]


def test_create_applies_a_strategy_given_as_unit_string_or_strategy():
    model = small("resnet18_3d", strategy="ST")
    assert model.gate_mode == "hard" and model.current_strategy() == Strategy.uniform("ST", 8)
    s = mixed(8)
    assert small("resnet18_3d", strategy=str(s)).current_strategy() == s
    assert small("resnet18_3d", strategy=s).current_strategy() == s
    assert small("resnet18_3d", strategy=list(s.units)).current_strategy() == s
    assert create("tiny", num_classes=3, strategy="S").current_strategy() == Strategy.uniform("S", 6)
    with pytest.raises(ValueError):
        small("resnet18_3d", strategy="S|ST")


def test_strategy_json_round_trip_with_backbone_slot_names():
    model = meta_model("resnet50_3d")
    s = mixed(model.num_slots, 1)
    text = s.to_json(model.slot_names)
    assert '"layer4.block3"' in text
    assert Strategy.from_json(text) == s


# ---- forward, units, gates --------------------------------------------------------------------


@pytest.mark.parametrize("name", BACKBONES)
def test_forward_shape_with_every_unit_and_backward(name):
    model = small(name).train()
    x = clips(2)
    for unit in UNITS:
        model.apply_strategy(Strategy.uniform(unit, model.num_slots))
        y = model(x)
        assert y.shape == (2, 5) and torch.isfinite(y).all(), unit
    model.apply_strategy(mixed(model.num_slots))
    model(x).logsumexp(1).sum().backward()
    for slot, (ks, kt) in zip(model.slots, mixed(model.num_slots).keep()):
        assert (slot.path_s.conv.weight.grad is not None) == ks, slot.name
        assert (slot.path_t.conv.weight.grad is not None) == kt, slot.name
    assert model.stem.conv.weight.grad is not None and model.head.fc.weight.grad is not None


@pytest.mark.parametrize("name", BACKBONES)
def test_hard_mode_does_not_compute_dropped_paths(name):
    model = small(name).eval()
    calls: dict[str, int] = {}
    for slot in model.slots:
        for tag, mod in (("S", slot.path_s), ("T", slot.path_t), ("branch", slot.branch)):
            key = f"{slot.name}:{tag}"
            calls[key] = 0
            mod.register_forward_hook(lambda m, i, o, key=key: calls.__setitem__(key, calls[key] + 1))
    s = mixed(model.num_slots, 2)
    model.apply_strategy(s)
    with torch.no_grad():
        model(clips(1))
    for slot, unit in zip(model.slots, s):
        ks, kt = s.keep()[model.slot_names.index(slot.name)]
        assert (calls[f"{slot.name}:S"], calls[f"{slot.name}:T"]) == (ks, kt), slot.name
        assert calls[f"{slot.name}:branch"] == int(unit != "none"), slot.name
    # all-S: no T path ever runs
    for key in calls:
        calls[key] = 0
    model.apply_strategy(Strategy.uniform("S", model.num_slots))
    with torch.no_grad():
        model(clips(1))
    assert all(v == 0 for k, v in calls.items() if k.endswith(":T"))


def _io_of(model, slot_name: str) -> tuple[torch.Tensor, torch.Tensor]:
    seen = {}
    model.get_submodule(slot_name).register_forward_hook(lambda m, i, o: seen.__setitem__("io", (i[0], o)))
    with torch.no_grad():
        model(clips(2))
    return seen["io"]


def test_unit_none_in_a_resnet_block_is_relu_of_its_shortcut():
    model = small("resnet18_3d").eval()
    model.apply_strategy(Strategy.uniform("none", model.num_slots))
    x, out = _io_of(model, "layer2.block1")  # a projection shortcut (stride 2, 8 -> 16 channels)
    block = model.get_submodule("layer2.block1")
    assert not isinstance(block.shortcut, nn.Identity)
    torch.testing.assert_close(out, F.relu(block.shortcut(x)))
    x, out = _io_of(model, "layer1.block2")  # identity shortcut: the block passes its input through
    torch.testing.assert_close(out, x)


def test_unit_none_in_mobilenetv2_is_identity_or_option_a_skip():
    model = small("mobilenetv2_3d").eval()
    model.apply_strategy(Strategy.uniform("none", model.num_slots))
    x, out = _io_of(model, "layer3.block2")  # residual block: identity
    torch.testing.assert_close(out, x)
    block = model.get_submodule("layer4.block1")  # stride 2, 8 -> 8 channels at this width: no residual
    x, out = _io_of(model, "layer4.block1")
    assert not block.residual
    sub = x[:, :, :, ::2, ::2]
    torch.testing.assert_close(out, F.pad(sub, (0, 0, 0, 0, 0, 0, 0, block.out_channels - x.shape[1])))
    model = create("mobilenetv2_3d", num_classes=5, width_mult=0.5, strategy="none").eval()
    block = model.get_submodule("layer7.block1")  # 160 * 0.5 = 80 -> 320 * 0.5 = 160 channels, stride 1
    x, out = _io_of(model, "layer7.block1")
    assert out.shape[1] == block.out_channels == 160 and x.shape[1] == 80
    torch.testing.assert_close(out[:, :80], x)
    assert (out[:, 80:] == 0).all()


@pytest.mark.parametrize("name", BACKBONES)
def test_relaxed_mode_equals_hard_units_at_saturated_logits(name):
    """With p exactly 0 or 1 the relaxed multipliers are exactly 1 or 0: relaxed == hard, none included."""
    model = small(name).eval()
    s = mixed(model.num_slots, 3)
    with torch.no_grad():
        for slot, (ks, kt) in zip(model.slots, s.keep()):
            slot.gate_s.logit.fill_(-1e4 if ks else 1e4)
            slot.gate_t.logit.fill_(-1e4 if kt else 1e4)
    x = clips(2)
    model.set_gate_mode("relaxed")
    with torch.no_grad():
        y_relaxed = model(x)
    model.apply_strategy(s)
    with torch.no_grad():
        y_hard = model(x)
    torch.testing.assert_close(y_relaxed, y_hard, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", BACKBONES)
def test_relaxed_training_step_reaches_every_logit(name):
    model = small(name, 4).train()
    model.set_gate_mode("relaxed", generator=torch.Generator().manual_seed(0))
    pairs = model.gated_weights()
    assert len(pairs) == 2 * model.num_slots and len(model.drop_logits()) == 2 * model.num_slots
    for slot, ((ls, ws), (lt, wt)) in zip(model.slots, zip(pairs[::2], pairs[1::2])):
        assert ls is slot.gate_s.logit and ws is slot.path_s.conv.weight
        assert lt is slot.gate_t.logit and wt is slot.path_t.conv.weight
        assert wt.numel() == 3 * ws.numel()  # the T path's kernel is 3 frames deep
    F.cross_entropy(model(clips(4)), torch.tensor([0, 1, 2, 3])).backward()
    for lg in model.drop_logits():
        assert lg.grad is not None and torch.isfinite(lg.grad) and lg.grad.item() != 0.0
    assert not {id(p) for p in model.drop_logits()} & {id(p) for p in model.network_parameters()}


def test_summary_lists_every_slot_with_its_unit_and_drop_probs():
    model = small("mobilenetv2_3d")
    model.apply_strategy(mixed(model.num_slots))
    text = repr(model)
    lines = [line for line in text.splitlines() if ".block" in line and "not a slot" not in line]
    assert len(lines) == model.num_slots
    assert lines[3].split()[1] == "layer3.block2" and lines[3].split()[5] == "none" and "0.100" in lines[3]
    assert "not a slot" in text and "head: Conv 1x1x1" in text
    assert "InvertedResidualSlot" in model.tree() and "gate_s" in model.tree()
    assert "BottleneckSlot" in small("resnet50_3d").tree() and "stride (1, 2, 2)" in repr(
        small("resnet50_3d")
    )


# ---- widths and init --------------------------------------------------------------------------


def test_width_mult_keeps_resnext_groups_and_mobilenet_multiples_of_8():
    model = create("resnext50_32x4d_3d", num_classes=5, width_mult=0.1)
    for slot in model.slots:
        assert isinstance(slot, BottleneckSlot) and slot.groups == 32 and slot.width % 32 == 0
        assert slot.branch.conv2.groups == 32
    model = create("mobilenetv2_3d", num_classes=5, width_mult=0.35)
    assert all(s.in_channels % 8 == 0 and s.out_channels % 8 == 0 for s in model.slots)
    assert model.stem.conv.out_channels == 16 and model.head.fc.in_features == 1280
    assert small("resnet50_3d").head.fc.in_features == 256  # 2048 / 8
    with pytest.raises(ValueError):
        create("resnet18_3d", num_classes=5, width_mult=0.0)


def test_init_like_the_template_and_optional_zero_init_residual():
    model = small("resnet50_3d")
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm3d)]
    assert all((m.weight == 1).all() and (m.bias == 0).all() for m in bns)
    model = small("resnet50_3d", zero_init_residual=True)
    for slot in model.slots:
        assert (slot.branch.norm3.weight == 0).all() and (slot.branch.norm1.weight == 1).all()


# ---- parameter counts -------------------------------------------------------------------------

# torchvision's 2D models with 1000 classes, and what inflating their first conv adds: the ResNet stem
# 5x7x7 instead of 7x7 adds 4 x 9,408 = 37,632 weights; the MobileNetV2 stem 3x3x3 instead of 3x3 adds
# 2 x 864 = 1,728. Every other layer of an all-S backbone has exactly the 2D layer's parameters
# (1x1x1 / 1x3x3 kernels, same BatchNorms, same classifier).
TORCHVISION_2D = {
    "resnet18_3d": 11_689_512,
    "resnet50_3d": 25_557_032,
    "resnext50_32x4d_3d": 25_028_904,
    "resnext101_32x8d_3d": 88_791_336,
    "mobilenetv2_3d": 3_504_872,
}
STEM_INFLATION = {
    "resnet18_3d": 37_632,
    "resnet50_3d": 37_632,
    "resnext50_32x4d_3d": 37_632,
    "resnext101_32x8d_3d": 37_632,
    "mobilenetv2_3d": 1_728,
}
ALL_S = {
    "resnet18_3d": 11_727_144,
    "resnet50_3d": 25_594_664,
    "resnext50_32x4d_3d": 25_066_536,
    "resnext101_32x8d_3d": 88_828_968,
    "mobilenetv2_3d": 3_506_600,
}


@pytest.mark.parametrize("name", BACKBONES)
def test_all_s_parameters_equal_the_2d_network_plus_the_inflated_stem(name):
    model = meta_model(name)
    assert ALL_S[name] == TORCHVISION_2D[name] + STEM_INFLATION[name]
    assert count_params(model, Strategy.uniform("S", model.num_slots)) == ALL_S[name]


@pytest.mark.parametrize("name", BACKBONES)
def test_st_and_s_plus_st_parameters_in_closed_form(name):
    """The T path's conv has 3x the S path's weights (and, in MobileNetV2, a BN like the S path's):
    all-ST = all-S + 2 W_S, S+ST = all-S + 3 W_S (+ the T paths' BNs), W_S = all S-path conv weights."""
    model = meta_model(name)
    n = model.num_slots
    w_s = sum(s.path_s.conv.weight.numel() for s in model.slots)
    bn_t = sum(p.numel() for s in model.slots for p in s.path_t.parameters()) - 3 * w_s
    assert bn_t == (0 if name != "mobilenetv2_3d" else sum(2 * s.hidden for s in model.slots))
    assert count_params(model, Strategy.uniform("ST", n)) == ALL_S[name] + 2 * w_s
    assert count_params(model, Strategy.uniform("S+ST", n)) == ALL_S[name] + 3 * w_s + bn_t
    assert count_params(model) == sum(p.numel() for p in model.network_parameters())


# ---- MACs -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", BACKBONES)
def test_macs_match_flop_counter(name):
    model = small(name).eval()
    for s in (mixed(model.num_slots), Strategy.uniform("ST", model.num_slots)):
        model.apply_strategy(s)
        with FlopCounterMode(display=False) as fc, torch.no_grad():
            model(clips(2))
        assert fc.get_total_flops() == 2 * 2 * count_macs(model, CLIP, s), str(s)


def test_macs_match_flop_counter_with_conv3d_impl():
    model = small("resnext50_32x4d_3d", conv_impl="conv3d").eval()
    s = mixed(model.num_slots, 1)
    model.apply_strategy(s)
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        model(clips(1))
    assert fc.get_total_flops() == 2 * count_macs(model, CLIP, s)


@pytest.mark.parametrize(
    "text",
    [
        "S+ST|S+ST|S+ST|S+ST|S+ST|S+ST",
        "S|S|S|S|S|S",
        "ST|ST|ST|ST|ST|ST",
        "S|none|ST|S+ST|none|ST",
        "none|none|none|none|none|none",
    ],
)
def test_traced_costs_equal_the_analytic_template_counts(text):
    model = create("tiny", num_classes=5)
    s = Strategy.from_string(text)
    traced = trace_costs(model, CLIP, s)
    assert traced.macs == macs_breakdown(model, CLIP, s)
    assert traced.params == count_params(model, s)
    assert model.gate_mode == "off"  # tracing leaves the model as it was


@pytest.mark.parametrize("name", ["resnet18_3d", "mobilenetv2_3d"])
def test_count_macs_and_params_equal_a_direct_trace_for_random_strategies(name):
    model = small(name)
    model.set_gate_mode("relaxed")
    rng = random.Random(0)
    for _ in range(6):
        s = Strategy(tuple(rng.choice(UNITS) for _ in range(model.num_slots)))
        traced = trace_costs(model, CLIP, s)
        assert macs_breakdown(model, CLIP, s) == traced.macs
        assert count_params(model, s) == traced.params  # the modules that ran, drop logits excluded
    assert model.gate_mode == "relaxed" and all(g.mode == "relaxed" for g in model.gates())
    assert list(traced.macs)[0] == "stem" and list(traced.macs)[-1] == "head"


def test_macs_are_linear_in_clip_length():
    """Temporal stride 1 everywhere: every conv's output has T frames, so MACs per clip (less the
    classifier, counted once) are T times those of one frame, for every strategy."""
    model = small("resnet50_3d")
    head = model.head.fc.in_features * model.head.fc.out_features
    for s in (Strategy.uniform("S", 16), Strategy.uniform("ST", 16), mixed(16)):
        assert count_macs(model, (3, 8, 32, 32), s) - head == 8 * (
            count_macs(model, (3, 1, 32, 32), s) - head
        )


# ---- config -----------------------------------------------------------------------------------


def test_build_model_dispatches_on_the_config_name():
    model = build_model(
        ModelConfig(
            name="resnext50_32x4d_3d",
            width_mult=WIDTH,
            dropout=0.1,
            drop_init=0.2,
            temperature=0.5,
            conv_impl="conv3d",
        ),
        6,
    )
    assert isinstance(model, SlotResNet) and model.num_classes == 6 and model.width_mult == WIDTH
    assert model.head.dropout.p == 0.1 and model.conv_impl == "conv3d"
    assert model.drop_probs()[0, 0].item() == pytest.approx(0.2) and model.slots[0].gate_t.temperature == 0.5
    assert isinstance(build_model(ModelConfig(name="mobilenetv2_3d", width_mult=WIDTH), 3), SlotMobileNetV2)
    assert isinstance(build_model(ModelConfig(name="resnet18_3d", width_mult=WIDTH), 3).slots[0], BasicSlot)
    assert isinstance(
        build_model(ModelConfig(name="mobilenetv2_3d", width_mult=WIDTH), 3).slots[0], InvertedResidualSlot
    )
    assert build_model(ModelConfig(name="resnet50_3d", width_mult=WIDTH), 3).head.dropout.p == 0.5
    cfg = load_config(None, ["model.name=resnet18_3d", "model.width_mult=0.25"])
    model = build_model(cfg.model, 4)
    assert all(isinstance(s, BlockSlot) for s in model.slots) and model.stem.conv.out_channels == 16


@pytest.mark.parametrize(
    "key,value",
    [
        ("growth", 8),
        ("bottleneck_factor", 2),
        ("blocks", [1, 1]),
        ("stem_channels", 8),
        ("stem_kernel", [1, 3, 3]),
    ],
)
def test_template_only_keys_with_a_backbone_are_config_errors(key, value):
    with pytest.raises(ValueError, match=f"model.{key}"):
        build_model(ModelConfig(name="resnet50_3d", **{key: value}), 3)
    with pytest.raises(ConfigError, match=f"model.{key}"):
        load_config(None, ["model.name=resnet50_3d", f"model.{key}={value}"])


def test_width_mult_with_a_template_preset_is_a_config_error():
    with pytest.raises(ValueError, match="model.width_mult"):
        build_model(ModelConfig(name="tiny", width_mult=0.5), 3)
    with pytest.raises(ConfigError, match="model.width_mult"):
        load_config(None, ["model.width_mult=0.5"])
    with pytest.raises(ValueError, match="backbone"):
        resolve_arch(ModelConfig(name="resnet50_3d"))


# ---- grouped FactorConv3d ---------------------------------------------------------------------


@pytest.mark.parametrize("impl", ["conv2d", "conv3d"])
@pytest.mark.parametrize(
    "kernel,stride,padding",
    [
        ((1, 3, 3), (1, 2, 2), (0, 1, 1)),
        ((3, 1, 1), 1, (1, 0, 0)),
        ((1, 1, 1), (1, 2, 2), 0),
        ((3, 3, 3), (1, 2, 2), 1),
    ],
)
@pytest.mark.parametrize("groups", [2, 6])
def test_grouped_factor_conv_equals_conv3d(impl, kernel, stride, padding, groups):
    torch.manual_seed(0)
    conv = FactorConv3d(6, 12, kernel, stride, padding, impl=impl, groups=groups).double()
    ref = nn.Conv3d(6, 12, kernel, stride, padding, groups=groups, bias=False).double()
    assert conv.weight.shape == ref.weight.shape
    with torch.no_grad():
        ref.weight.copy_(conv.weight)
    x = torch.randn(2, 6, 5, 7, 9, dtype=torch.double, requires_grad=True)
    x2 = x.detach().clone().requires_grad_()
    y, y_ref = conv(x), ref(x2)
    torch.testing.assert_close(y, y_ref)
    g = torch.randn_like(y)
    y.backward(g)
    y_ref.backward(g)
    torch.testing.assert_close(x.grad, x2.grad)
    torch.testing.assert_close(conv.weight.grad, ref.weight.grad)


def test_depthwise_conv_helper_and_bad_groups():
    conv = conv1xkxk(8, 8, 3, 2, groups=8)
    assert conv.weight.shape == (8, 1, 1, 3, 3) and "groups=8" in repr(conv)
    with pytest.raises(ValueError):
        FactorConv3d(6, 4, 1, groups=4)


def test_small_input_stem_options_reach_backbones_through_the_config():
    from fusion3d.models import build_model
    from fusion3d.models.spec import ModelConfig

    x = torch.randn(1, 3, 2, 32, 32)
    default = build_model(ModelConfig(name="resnet18_3d", width_mult=0.125), 4)
    small = build_model(ModelConfig(name="resnet18_3d", width_mult=0.125, stem_stride=1, stem_pool=False), 4)
    assert default.stem(x).shape[-1] == 8 and small.stem(x).shape[-1] == 32
    assert not hasattr(small.stem, "pool") and small(x).shape == (1, 4)
    mob = build_model(ModelConfig(name="mobilenetv2_3d", width_mult=0.25, stem_stride=1), 4)
    assert mob.stem(x).shape[-1] == 32
    with pytest.raises(ValueError, match="model.stem_pool"):
        build_model(ModelConfig(name="mobilenetv2_3d", stem_pool=True), 4)
