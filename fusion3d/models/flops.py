"""Exact analytic cost of a fusion template under a strategy (only computed paths count).

``count_macs`` counts the multiply-accumulates of every convolution and of the classifier (the
convention of ``torch.utils.flop_counter.FlopCounterMode``, which reports FLOPs = 2 x MACs for them);
BatchNorm, ReLU, pooling, the channel-average skip of a ``none`` transition, the gate multiplications
and concatenations are not counted. A conv's MACs are
``C_out * T' * H' * W' * C_in * kt * kh * kw`` (zero-padded positions included, as in the counter).

``count_params`` counts the parameters a sub-network uses: the stem, the head, and per slot the
kept paths (BN + conv) plus, for a dense layer with at least one kept path, the shared BN + 1x3x3
conv. Drop logits are not counted (they are not weights of any sub-network).

``strategy=None`` means the full template (every path computed: "off" or "relaxed" mode), whatever
mode the model is in; pass ``model.current_strategy()`` for the units in force.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from fusion3d.models.convs import FactorConv3d
from fusion3d.models.strategy import Strategy, as_strategy
from fusion3d.models.template import DenseBlock, DenseSlot, FusionTemplate, TransitionSlot

Shape = tuple[int, int, int, int]  # (C, T, H, W)


def _as_strategy(model: FusionTemplate, strategy: Strategy | str | Sequence[str] | None) -> Strategy:
    if strategy is None:
        return Strategy.uniform("S+ST", model.num_slots)
    return as_strategy(strategy, model.num_slots)


def _out_size(size: int, k: int, s: int, p: int) -> int:
    return (size + 2 * p - k) // s + 1


def conv_macs(conv: nn.Module, shape: Shape) -> tuple[int, Shape]:
    """MACs and output shape of an ``nn.Conv3d`` or ``FactorConv3d`` on an input ``(C, T, H, W)``."""
    if not isinstance(conv, (nn.Conv3d, FactorConv3d)):
        raise TypeError(f"not a 3D conv: {type(conv).__name__}")
    c, *sizes = shape
    if c != conv.in_channels:
        raise ValueError(f"conv expects {conv.in_channels} channels, got {c}")
    groups = getattr(conv, "groups", 1)
    out = tuple(_out_size(s, k, st, p) for s, k, st, p in zip(sizes, conv.kernel_size, conv.stride, conv.padding))
    kt, kh, kw = conv.kernel_size
    macs = conv.out_channels * out[0] * out[1] * out[2] * (conv.in_channels // groups) * kt * kh * kw
    return macs, (conv.out_channels, *out)  # type: ignore[return-value]


def _pool_shape(pool: nn.Module, shape: Shape) -> Shape:
    def t3(v):
        return (v, v, v) if isinstance(v, int) else tuple(v)

    c, *sizes = shape
    k, s, p = t3(pool.kernel_size), t3(pool.stride), t3(pool.padding)
    if getattr(pool, "ceil_mode", False):  # torch: round up, but the last window must start inside the input
        out = []
        for a, kk, ss, pp in zip(sizes, k, s, p):
            o = -(-(a + 2 * pp - kk) // ss) + 1
            out.append(o - 1 if (o - 1) * ss >= a + pp else o)
        return (c, *out)  # type: ignore[return-value]
    return (c, *(_out_size(a, kk, ss, pp) for a, kk, ss, pp in zip(sizes, k, s, p)))  # type: ignore[return-value]


def macs_breakdown(model: FusionTemplate, input_shape: Sequence[int],
                   strategy: Strategy | str | Sequence[str] | None = None) -> dict[str, int]:
    """MACs per clip by part: ``stem``, one entry per slot name, ``head``."""
    strategy = _as_strategy(model, strategy)
    keeps = iter(strategy.keep())
    shape: Shape = tuple(int(v) for v in input_shape)  # type: ignore[assignment]
    if len(shape) != 4:
        raise ValueError(f"input_shape must be (C, T, H, W), got {input_shape!r}")
    out: dict[str, int] = {}
    out["stem"], shape = conv_macs(model.stem.conv, shape)
    if hasattr(model.stem, "pool"):
        shape = _pool_shape(model.stem.pool, shape)
    for part in model.features:
        if isinstance(part, DenseBlock):
            for layer in part.children():
                assert isinstance(layer, DenseSlot)
                ks, kt = next(keeps)
                macs = 0
                mid: Shape | None = None
                for keep, path in ((ks, layer.path_s), (kt, layer.path_t)):
                    if keep:
                        m, mid = conv_macs(path.conv, shape)
                        macs += m
                if mid is not None:
                    macs += conv_macs(layer.shared.conv, mid)[0]
                out[layer.name] = macs
                shape = (shape[0] + layer.out_channels, *shape[1:])
        elif isinstance(part, TransitionSlot):
            ks, kt = next(keeps)
            macs = 0
            for keep, path in ((ks, part.path_s), (kt, part.path_t)):
                if keep:
                    macs += conv_macs(path.conv, shape)[0]
            out[part.name] = macs
            shape = _pool_shape(part.pool, (part.out_channels, *shape[1:]))
        else:
            raise TypeError(f"unexpected feature module {type(part).__name__}")
    out["head"] = model.head.fc.in_features * model.head.fc.out_features
    return out


def count_macs(model: FusionTemplate, input_shape: Sequence[int],
               strategy: Strategy | str | Sequence[str] | None = None) -> int:
    """Multiply-accumulates per clip of shape ``(C, T, H, W)`` (see the module docstring)."""
    return sum(macs_breakdown(model, input_shape, strategy).values())


def count_params(model: FusionTemplate, strategy: Strategy | str | Sequence[str] | None = None) -> int:
    """Parameters of the sub-network (see the module docstring)."""
    strategy = _as_strategy(model, strategy)
    total = sum(p.numel() for p in model.stem.parameters()) + sum(p.numel() for p in model.head.parameters())
    for slot, (ks, kt) in zip(model.slots, strategy.keep()):
        total += sum(p.numel() for m in slot.computed_modules(ks, kt) for p in m.parameters())
    return total
