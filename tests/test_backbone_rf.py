"""Static receptive fields of the backbones (``Backbone.rf_graph``), checked against input gradients."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch import nn

from fusion3d.analysis.receptive_field import (
    AxisRF,
    Mark,
    Op,
    Par,
    expected_temporal_rf,
    head_rf,
    receptive_fields,
    rf_distribution,
    rf_graph,
    strategy_rf_columns,
    trace,
    unit_probabilities,
)
from fusion3d.models.backbones import BlockSlot, create
from fusion3d.models.strategy import UNITS, Strategy

AXES = ("t", "h", "w")
# small widths: a receptive field does not depend on the width (MobileNetV2 at 0.5 so that its first,
# non-slot block keeps a channel change, hence no residual, as at width 1)
FAMILIES = {"resnet18_3d": 0.125, "resnet50_3d": 0.125, "resnext50_32x4d_3d": 0.125, "mobilenetv2_3d": 0.5}


def _model(name: str, **kw):
    return create(name, num_classes=3, width_mult=FAMILIES.get(name, 0.125), **kw)


# the brute force runs the ResNets through the conv2d kernels (the CPU path), MobileNetV2 through
# conv3d (the CUDA path; on a CPU its many depthwise convs in float64 are faster so)
IMPL = {
    "resnet18_3d": "conv2d",
    "resnet50_3d": "conv2d",
    "resnext50_32x4d_3d": "conv2d",
    "mobilenetv2_3d": "conv3d",
}


def _uniform(model, unit: str) -> Strategy:
    return Strategy.uniform(unit, model.num_slots)


# ----------------------------------------------------------------------------- the graphs


@pytest.mark.parametrize("name", [*FAMILIES, "resnext101_32x8d_3d"])
def test_head_receptive_fields_of_the_backbones(name):
    model = _model(name)
    n = model.num_slots
    rf = {u: head_rf(model, _uniform(model, u)) for u in UNITS}
    # the spatial receptive fields of the 2D networks (ResNet-18 435, ResNet-50 427, MobileNetV2 491 pixels)
    s_max = {
        "resnet18_3d": 435,
        "resnet50_3d": 427,
        "resnext50_32x4d_3d": 427,
        "resnext101_32x8d_3d": 971,
        "mobilenetv2_3d": 491,
    }[name]
    mobile = name.startswith("mobilenet")
    t_stem = 3 if mobile else 7  # stem conv 3x3x3 / conv 5x7x7 + max pool 3x3x3
    for u in ("S", "ST", "S+ST"):
        assert (rf[u].h.r_max, rf[u].w.r_max, rf[u].h.jump, rf[u].t.jump) == (s_max, s_max, 32, 1), u
        # each kept T path adds 2 frames to the longest chain: temporal stride is 1 everywhere
        assert rf[u].t.r_max == t_stem + 2 * n * (u != "S"), u
    # unit none: the stem, the projections / option-A skips and MobileNetV2's first block
    assert (rf["none"].t.r_max, rf["none"].h.r_max) == (t_stem, 7 if mobile else 11)
    assert head_rf(model, None) == rf["S+ST"]
    # shortest path: the shortcuts; in MobileNetV2 the six blocks without a residual need a kept path
    assert rf["S+ST"].t.r_min == rf["S"].t.r_min == t_stem
    assert rf["ST"].t.r_min == (15 if mobile else t_stem)


def test_graph_layout_and_contract():
    model = _model("mobilenetv2_3d")
    strategy = Strategy(tuple(itertools.islice(itertools.cycle(UNITS), model.num_slots)))
    graph = model.rf_graph(strategy)
    assert graph == rf_graph(model, strategy) and model.rf_graph(str(strategy)) == graph
    marks = [n for n in graph if isinstance(n, Mark)]
    assert [m.name for m in marks] == [*model.slot_names, "head"]
    assert [m.unit for m in marks] == [*strategy.units, ""]
    assert {m.kind for m in marks[:-1]} == {"inverted"}
    assert graph[0] == Op.from_module(model.stem.conv)
    # a residual slot with unit none adds nothing; one without a residual adds its option-A skip
    nodes = model.rf_graph(_uniform(model, "none"))
    skips = [n for n in nodes if isinstance(n, Op) and n.name == "FreeSkip"]
    assert len(skips) == sum(not s.residual for s in model.slots) == 6
    assert not any(isinstance(n, Par) for n in nodes)
    # ResNet: Par(shortcut, kept paths + branch); projection shortcuts read from the modules
    resnet = _model("resnet50_3d")
    g = resnet.rf_graph(_uniform(resnet, "S+ST"))
    first = resnet.layer2.block1
    i = next(k for k, n in enumerate(g) if isinstance(n, Mark) and n.name == first.name)
    par = g[i - 1]
    assert par.branches[0] == (Op.from_module(first.shortcut.conv),)
    assert par.branches[1][0] == Par(
        ((Op.from_module(first.path_s.conv),), (Op.from_module(first.path_t.conv),))
    )
    assert par.branches[1][1:] == (Op.from_module(first.branch.conv2), Op.from_module(first.branch.conv3))
    assert Op.from_module(first.branch.conv2).stride == (1, 2, 2)


def test_the_graph_follows_the_modules():
    model = _model("resnet18_3d")
    before = head_rf(model, _uniform(model, "S"))
    model.stem.conv = nn.Conv3d(3, model.stem.conv.out_channels, (3, 5, 5), (1, 2, 2), (1, 2, 2), bias=False)
    after = head_rf(model, _uniform(model, "S"))
    assert (before.t.r_max - after.t.r_max, before.h.r_max - after.h.r_max) == (2, 2)
    model.stem.pool = nn.Upsample(scale_factor=2)
    with pytest.raises(TypeError, match="Upsample"):
        model.rf_graph(None)


# ----------------------------------------------------------------------------- brute force from gradients


def _positive(name: str):
    """The backbone made linear with positive weights: conv weights |w| + 1e-3, each output channel's
    weights normalised to sum 1 (activations stay moderate), ReLU6 replaced by the identity (it would
    clip at 6) and the stem MaxPool by an AvgPool of the same geometry (a max sends the gradient to one
    position). With positive inputs the ReLUs are identities too, and every input position a feature
    depends on gets a positive gradient, every other one an exact zero.

    BatchNorm (in eval with default statistics: a positive per-channel scale, pointwise) is replaced by
    the identity as well: on the CPU its backward, given a map whose strides look channels-last (a 1 x 1
    frame), leaves round-off (~1e-16) on positions outside the receptive field, where the convolutions,
    pools and additions leave exact zeros."""
    torch.manual_seed(0)
    model = _model(name, conv_impl=IMPL[name]).double().eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 5:
                p.abs_().add_(1e-3).div_(p.sum(dim=(1, 2, 3, 4), keepdim=True))
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, (nn.ReLU6, nn.BatchNorm3d)):
                setattr(parent, child_name, nn.Identity())
            elif isinstance(child, nn.MaxPool3d):
                setattr(parent, child_name, nn.AvgPool3d(child.kernel_size, child.stride, child.padding))
    return model


def _window(n_out: int, n_in: int, rf: AxisRF) -> int | None:
    """The output index closest to the middle whose whole window lies inside the input (None: none)."""
    ok = [i for i in range(n_out) if i * rf.jump + rf.lo >= 0 and i * rf.jump + rf.hi <= n_in - 1]
    return min(ok, key=lambda i: abs(i * rf.jump + (rf.lo + rf.hi) / 2 - (n_in - 1) / 2)) if ok else None


def _brute_force(model, strategy: Strategy, shape: tuple[int, int, int]) -> dict[str, dict[str, tuple]]:
    """Per mark (slot outputs and the pooled map of the head) and per axis whose window fits in
    ``shape``: (measured (first, last) input position with a nonzero gradient, predicted, AxisRF), for
    one output position (the middle-most one that fits along each axis that fits).

    An axis whose window does not fit is left out: the other axes are still measured exactly, since
    with "same" padding and temporal stride 1 the path that reaches a window's edge along one axis can
    stay on the centre taps (in range) along the others."""
    model.apply_strategy(strategy)
    feats: dict[str, torch.Tensor] = {}
    hooks = [slot.register_forward_hook(lambda m, a, o: feats.__setitem__(m.name, o)) for slot in model.slots]
    hooks.append(model.head.pool.register_forward_pre_hook(lambda m, a: feats.__setitem__("head", a[0])))
    g = torch.Generator().manual_seed(1)
    x = (torch.rand(1, model.in_channels, *shape, generator=g, dtype=torch.float64) + 0.5).requires_grad_(
        True
    )
    try:
        model(x)
    finally:
        for h in hooks:
            h.remove()
        model.apply_strategy(None)
    out = {}
    for mark, rf in trace(rf_graph(model, strategy)):
        f = feats[mark.name]
        idx = [_window(f.shape[2 + a], shape[a], rf.axis(ax)) for a, ax in enumerate(AXES)]
        fits = [a for a in range(3) if idx[a] is not None]
        if not fits:
            continue
        # an axis that does not fit: any output position (the middle one) gives the others' support
        pos = tuple(idx[a] if idx[a] is not None else f.shape[2 + a] // 2 for a in range(3))
        (grad,) = torch.autograd.grad(f[0, :, pos[0], pos[1], pos[2]].sum(), x, retain_graph=True)
        support = grad[0].abs().sum(0) > 0
        out[mark.name] = {}
        for a in fits:
            others = tuple(d for d in range(3) if d != a)
            nz = torch.nonzero(support.any(dim=others[1]).any(dim=others[0])).flatten()
            r = rf.axis(AXES[a])
            out[mark.name][AXES[a]] = (
                (int(nz.min()), int(nz.max())),
                (idx[a] * r.jump + r.lo, idx[a] * r.jump + r.hi),
                r,
            )
    return out


def _shortest(model, strategy: Strategy) -> Strategy:
    """The sub-network of the shortest path: the shortcut at residual blocks (unit none), the S path if
    kept (else the T path, or the option-A skip for none) at blocks without a residual."""
    return Strategy(
        tuple(
            "none" if slot.residual else ("S" if unit in ("S", "S+ST") else unit)
            for slot, unit in zip(model.slots, strategy)
        )
    )


def _strategies(n: int, seed: int, uniform: tuple[str, ...] = UNITS) -> list[Strategy]:
    rng = np.random.default_rng(seed)
    mixed = [Strategy(tuple(UNITS[i] for i in rng.integers(0, 4, n))) for _ in range(2)]
    return [Strategy.uniform(u, n) for u in uniform] + mixed


@pytest.fixture(scope="module", params=list(FAMILIES))
def positive(request):
    return _positive(request.param)


def _check(model, strategy: Strategy, shape, axis: str) -> dict:
    """Brute force at ``shape``: every fitting (mark, axis) matches, and the head was measured on ``axis``."""
    res = _brute_force(model, strategy, shape)
    for name, per_axis in res.items():
        for ax, (measured, predicted, _) in per_axis.items():
            assert measured == predicted, f"{model.name} {strategy} at {name}, axis {ax}"
    assert axis in res["head"], f"{model.name} {strategy}: the head's {axis} window does not fit in {shape}"
    return res


def test_gradient_support_matches_the_static_receptive_field(positive):
    """t_max / s_max (hull) at every slot and the head, and t_min / s_min from the shortest sub-network,
    for the uniform strategies and two mixed ones (with units none), on two clips per strategy: a long
    clip with a small frame (temporal windows of the head fit) and three frames of a tall, narrow image
    (spatial windows of the head fit along H; W is the same by symmetry of the kernels)."""
    model = positive
    # ResNeXt has ResNet-50's geometry (only groups differ): fewer strategies
    uniform = ("ST", "S+ST", "none") if model.name.startswith("resnext") else UNITS
    strategies = _strategies(model.num_slots, seed=len(model.name), uniform=uniform)
    head = [head_rf(model, s) for s in strategies]
    t_len = max(r.t.r_max for r in head) + 2
    height = max(r.h.r_max + 2 * r.h.jump for r in head)
    shortest: dict[tuple, dict] = {}  # the same sub-network for many strategies (all none for a ResNet)
    for strategy in strategies:
        table = receptive_fields(model, strategy).set_index("slot")
        short = _shortest(model, strategy)
        for shape, axis, col in (((t_len, 8, 8), "t", "t_min"), ((3, height, 8), "h", "s_min")):
            _check(model, strategy, shape, axis)
            # r_min: the whole receptive field of the sub-network made of the shortest path alone
            key = (short, shape)
            if key not in shortest:
                shortest[key] = _check(model, short, shape, axis)
            for name, per_axis in shortest[key].items():
                _, _, rf = per_axis[axis]
                assert rf.r_max == rf.r_min  # one path only
                (first, last), _, _ = per_axis[axis]
                assert last - first + 1 == table.loc[name, col], f"{model.name} {strategy} at {name}: {col}"


# ----------------------------------------------------------------------------- under the drop probabilities


def _enumerate(model, drop_probs) -> dict[str, dict[int, float]]:
    """Distribution of every head column by enumerating the strategies of nonzero probability."""
    probs = unit_probabilities(drop_probs)
    support = [[u for u in range(4) if probs[i, u] > 0] for i in range(model.num_slots)]
    out: dict[str, dict[int, float]] = {}
    for units in itertools.product(*support):
        pr = float(np.prod([probs[i, u] for i, u in enumerate(units)]))
        for key, v in strategy_rf_columns(model, Strategy(tuple(UNITS[u] for u in units))).items():
            out.setdefault(key, {})
            out[key][v] = out[key].get(v, 0.0) + pr
    return out


@pytest.mark.parametrize("name", ["resnet18_3d", "mobilenetv2_3d"])
def test_rf_distribution_matches_enumeration(name):
    """Four slots (one of them without a residual for MobileNetV2) with random drop probabilities, every
    other slot fixed to one unit by probabilities 0 / 1 (4^4 strategies of nonzero probability)."""
    model = _model(name)
    n = model.num_slots
    rng = np.random.default_rng(5)
    drop = np.array([[0.0, 1.0], [1.0, 0.0], [0.0, 0.0], [1.0, 1.0]] * n)[:n]  # S, ST, S+ST, none in turn
    free = (
        [0, 2, n // 2, n - 1] if name == "resnet18_3d" else [0, 2, 5, n - 1]
    )  # 5: layer4.block1 (no residual)
    assert name == "resnet18_3d" or not model.slots[5].residual
    drop[free] = rng.uniform(0.05, 0.95, (4, 2))
    enumerated = _enumerate(model, drop)
    for key, axis, stat in (
        ("rf_t_max", "t", "max"),
        ("rf_t_min", "t", "min"),
        ("rf_s_max", "h", "max"),
        ("rf_s_min", "h", "min"),
    ):
        exact = enumerated[key]
        dp = rf_distribution(model, drop, axis, stat)
        assert dp.keys() == exact.keys(), key
        assert np.allclose([dp[k] for k in exact], list(exact.values()), rtol=0, atol=1e-12), key
    assert len(enumerated["rf_t_max"]) > 1 and len(enumerated["rf_s_max"]) > 1
    expected = sum(k * v for k, v in enumerated["rf_t_max"].items())
    assert expected_temporal_rf(model, drop) == pytest.approx(expected, abs=1e-10)


@pytest.mark.parametrize("name", list(FAMILIES))
def test_expected_temporal_rf_closed_form(name):
    """Every kept T path adds 2 frames to the longest temporal chain whatever else is kept, so
    E[t_max] = t_max(stem) + 2 * sum of keep_prob(T), over all 4^L strategies (learned drop probs)."""
    model = _model(name)
    with torch.no_grad():
        for i, slot in enumerate(model.slots):
            slot.gate_t.logit.fill_(-2.0 + 0.3 * i)
            slot.gate_s.logit.fill_(1.0 - 0.2 * i)
    assert all(isinstance(s, BlockSlot) for s in model.slots)
    q_t = 1 - model.drop_probs()[:, 1].double().numpy()
    t_stem = head_rf(model, _uniform(model, "none")).t.r_max
    assert expected_temporal_rf(model) == pytest.approx(t_stem + 2 * q_t.sum(), abs=1e-6)
    dist = rf_distribution(model, axis="t", stat="max")
    assert min(dist) == t_stem and max(dist) == t_stem + 2 * model.num_slots
    assert sum(dist.values()) == pytest.approx(1.0, abs=1e-12)
