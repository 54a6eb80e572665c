"""Inference kernels (fusion3d.models.convs.fast_inference) and forward steps (SlotNetwork.forward_steps):
the same numbers as the plain forward."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from fusion3d.models import Strategy, build_model
from fusion3d.models.convs import ConvStem, FactorConv3d, MaxPool3d, fast_inference, inference_kernels
from fusion3d.models.spec import ModelConfig
from fusion3d.models.units import UNITS

NETWORKS = [("tiny", {}), ("resnet18_3d", {"width_mult": 0.25}), ("mobilenetv2_3d", {"width_mult": 0.25})]


def _network(name: str, kw: dict):
    """A small network with BatchNorm statistics that are not the initial ones (a few training-mode
    batches), in eval mode."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(name=name, **kw), num_classes=5)
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(3, 3, 4, 32, 32) * 2 + 0.5)
    return model.eval()


def _strategies(model, n: int, seed: int = 1) -> list[Strategy]:
    g = torch.Generator().manual_seed(seed)
    out = [Strategy.uniform(u, model.num_slots) for u in UNITS]
    out += [
        Strategy(tuple(UNITS[int(i)] for i in torch.randint(0, 4, (model.num_slots,), generator=g)))
        for _ in range(n)
    ]
    return out


@pytest.mark.parametrize(
    "kernel,stride,padding",
    [
        (3, (1, 2, 2), 1),
        (3, 2, 1),
        (2, 2, 0),
        ((3, 1, 3), 1, (1, 0, 1)),
        ((1, 3, 3), (1, 2, 2), (0, 1, 1)),
        (3, None, 0),
    ],
)
def test_separable_max_pool_equals_max_pool3d_exactly(kernel, stride, padding):
    pool = MaxPool3d(kernel, stride, padding)
    g = torch.Generator().manual_seed(0)
    for shape in ((2, 3, 5, 7, 8), (1, 4, 8, 16, 16)):
        x = torch.randn(shape, generator=g)
        x[x < -0.3] = 0.0  # ties, as after a ReLU
        with torch.no_grad():
            assert inference_kernels(x)
            assert torch.equal(pool(x), F.max_pool3d(x, kernel, stride, padding))


def test_kernels_are_used_only_without_autograd_and_outside_tracing():
    x = torch.randn(2, 3, 4, 8, 8)
    assert not inference_kernels(x)  # autograd on
    with torch.no_grad():
        assert inference_kernels(x)
        with fast_inference(False):
            assert not inference_kernels(x)
        assert inference_kernels(x)
        assert not inference_kernels(x.to("meta"))


def test_pointwise_and_spatial_convs_match_the_plain_kernels():
    g = torch.Generator().manual_seed(0)
    for conv in (
        FactorConv3d(6, 5, 1),
        FactorConv3d(6, 5, 1, stride=(1, 2, 2), bias=True),
        FactorConv3d(6, 5, (1, 3, 3), padding=(0, 1, 1)),
        FactorConv3d(6, 4, (1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1), bias=True),
    ):
        for n in (1, 3):
            x = torch.randn(n, 6, 4, 9, 9, generator=g)
            with torch.no_grad():
                with fast_inference(False):
                    ref = conv(x)
                out = conv(x)
            assert out.shape == ref.shape
            torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)


def test_folded_stem_matches_the_plain_stem():
    model = _network("tiny", {})
    assert isinstance(model.stem, ConvStem)
    x = torch.randn(2, 3, 4, 32, 32)
    with torch.no_grad():
        with fast_inference(False):
            ref = model.stem(x)
        torch.testing.assert_close(model.stem(x), ref, rtol=1e-5, atol=1e-6)
    model.stem.norm.train()  # a BatchNorm in training mode (recalibration) runs the plain stem
    with torch.no_grad():
        assert torch.equal(model.stem(x), torch.nn.Sequential.forward(model.stem, x))
    model.stem.norm.eval()


@pytest.mark.parametrize("name,kw", NETWORKS)
def test_networks_give_the_same_logits_with_the_inference_kernels(name, kw):
    model = _network(name, kw)
    x = torch.randn(2, 3, 4, 32, 32)
    for strategy in _strategies(model, 3):
        model.apply_strategy(strategy)
        with torch.no_grad():
            with fast_inference(False):
                ref = model(x)
            out = model(x)
        # the template's logits within 1e-6 (the folded stem and the matrix products round differently)
        tol = 1e-6 if name == "tiny" else 1e-5 * max(1.0, float(ref.abs().max()))
        assert (out - ref).abs().max() <= tol, strategy


def test_training_forward_does_not_change():
    model = _network("tiny", {}).train()
    x = torch.randn(2, 3, 4, 32, 32)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(5)
    a = model(x)
    model.load_state_dict(state)
    torch.manual_seed(5)
    with fast_inference(False):
        b = model(x)
    assert torch.equal(a, b)


@pytest.mark.parametrize("name,kw", NETWORKS)
def test_forward_steps_compose_to_forward_and_depend_only_on_their_slots(name, kw):
    model = _network(name, kw)
    steps = model.forward_steps()
    slots = [s.slots for s in steps]
    assert slots == sorted(slots) and slots[0] >= 0 and slots[-1] == model.num_slots
    x = torch.randn(2, 3, 4, 32, 32)
    strategies = _strategies(model, 4)
    with torch.no_grad():
        for strategy in strategies:
            model.apply_strategy(strategy)
            state = x
            for step in steps:
                state = step.fn(state)
            assert torch.equal(state, model(x)), strategy
        # a step's output does not change when units after its slots do
        base, other = strategies[-1], strategies[-2]
        for i, step in enumerate(steps):
            mixed = Strategy(base.units[: step.slots] + other.units[step.slots :])
            outs = []
            for s in (base, mixed):
                model.apply_strategy(s)
                state = x
                for st in steps[: i + 1]:
                    state = st.fn(state)
                outs.append(state)
            a, b = outs
            if isinstance(a, tuple):
                assert all(torch.equal(u, v) for u, v in zip(a, b))
            else:
                assert torch.equal(a, b)


def test_forward_steps_do_not_modify_their_input():
    model = _network("tiny", {})
    steps = model.forward_steps()
    x = torch.randn(2, 3, 4, 32, 32)
    for units in itertools.islice(itertools.product(UNITS, repeat=2), 6):
        model.apply_strategy(Strategy(units + ("S+ST",) * (model.num_slots - 2)))
        state = x
        with torch.no_grad():
            for step in steps:
                before = [t.clone() for t in (state if isinstance(state, tuple) else (state,))]
                new = step.fn(state)
                after = state if isinstance(state, tuple) else (state,)
                assert all(torch.equal(u, v) for u, v in zip(before, after))
                state = new
