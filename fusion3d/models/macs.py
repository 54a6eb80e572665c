"""Exact cost of a fusion template or a backbone under a strategy (only computed paths count).

``count_macs`` counts the multiply-accumulates of every convolution and of the classifier (the
convention of ``torch.utils.flop_counter.FlopCounterMode``, which reports FLOPs = 2 x MACs for them);
BatchNorm, ReLU, pooling, the channel-average skip of a ``none`` transition, the gate multiplications
and concatenations are not counted. A conv's MACs are
``C_out * T' * H' * W' * C_in * kt * kh * kw`` (zero-padded positions included, as in the counter).

``count_params`` counts the parameters a sub-network uses, without a forward pass: every parameter
but the drop logits (they are not weights of any sub-network), less the parameters of each slot's
modules that its unit does not compute (``GatedSlot.computed_modules``). For the template: the stem,
the head, and per slot the kept paths (BN + conv) plus, for a dense layer with at least one kept path,
the shared BN + 1x3x3 conv.

``strategy`` is any spec ``create(..., strategy=...)`` accepts (``fusion3d.models.strategy.as_strategy``:
a ``Strategy``, a unit such as ``"S"`` for every slot, a unit string ``'S|ST|...'``, a strategy JSON
file, a list of units). ``strategy=None`` means the full network (every path computed: "off" or
"relaxed" mode), whatever mode the model is in; pass ``model.current_strategy()`` for the units in force.

MACs, two ways to the same numbers:
- the template (``FusionTemplate``) is counted analytically, layer by layer (``macs_breakdown``; about
  a millisecond, so the sampler can price hundreds of strategies);
- any other ``SlotNetwork`` (the backbones) is measured by ``trace_costs``: one forward pass of a
  batch of one clip on the ``meta`` device (shapes only, no data, no copy of the weights), in hard mode
  with the strategy applied, with a forward hook on every module. MACs come from the hooks on
  convolutions and ``nn.Linear`` (output elements x in_channels / groups x kernel volume; in x out);
  the parameters are those of every module that ran. A trace takes 0.1 to 0.3 s, so ``count_macs``
  traces the four uniform strategies once per model and input shape and adds per-slot costs from that
  table for any strategy (exact: every unit keeps a slot's output shape, which the table checks).
The tests check the two ways against each other on the template, and both against ``FlopCounterMode``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from weakref import WeakKeyDictionary

import torch
from torch import nn

from fusion3d.models.convs import FactorConv3d
from fusion3d.models.network import GatedSlot, SlotNetwork
from fusion3d.models.strategy import Strategy, StrategySpec, strategy_or_full
from fusion3d.models.template import DenseBlock, DenseSlot, FusionTemplate, TransitionSlot
from fusion3d.models.units import FULL_UNIT, UNITS

Shape = tuple[int, int, int, int]  # (C, T, H, W)


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
    out = tuple(
        _out_size(s, k, st, p) for s, k, st, p in zip(sizes, conv.kernel_size, conv.stride, conv.padding)
    )
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


def _shape4(input_shape: Sequence[int]) -> Shape:
    shape: Shape = tuple(int(v) for v in input_shape)  # type: ignore[assignment]
    if len(shape) != 4:
        raise ValueError(f"input_shape must be (C, T, H, W), got {input_shape!r}")
    return shape


_COUNTED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, FactorConv3d, nn.Linear)


def _module_macs(m: nn.Module, out: torch.Tensor) -> int:
    """MACs of one call of a conv or Linear ``m`` that produced ``out`` (batch of one)."""
    if isinstance(m, nn.Linear):
        return out.numel() * m.in_features
    return out.numel() * (m.in_channels // getattr(m, "groups", 1)) * math.prod(m.kernel_size)


@contextmanager
def _hard_eval(model: SlotNetwork, strategy: Strategy) -> Iterator[None]:
    """Apply ``strategy`` in hard mode and eval mode; restore every gate and train flag on exit."""
    gates = [(g, g.mode, g.keep, g.last_keep) for g in model.gates()]
    mode, before = model.gate_mode, model._mode_before_hard
    training = [(m, m.training) for m in model.modules()]
    try:
        model.apply_strategy(strategy)
        model.eval()
        yield
    finally:
        for g, gm, keep, last in gates:
            g.mode, g.keep, g.last_keep = gm, keep, last
        model.gate_mode, model._mode_before_hard = mode, before
        for m, flag in training:
            m.training = flag


# Modules that keep their input's shape and cost no MACs. A shape-only trace passes their input
# through (their hooks still fire): on meta tensors torch runs BatchNorm and the activations through
# slow Python decompositions, most of a trace's time otherwise.
_SHAPE_KEEPING = (
    nn.modules.batchnorm._BatchNorm,
    nn.ReLU,
    nn.Hardtanh,
    nn.modules.dropout._DropoutNd,
    nn.Identity,
)


def _pass_through(x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    return x


@contextmanager
def _shape_only(model: nn.Module) -> Iterator[None]:
    """Replace the forward of every shape-keeping module by the identity, restored on exit."""
    patched = [m for m in model.modules() if isinstance(m, _SHAPE_KEEPING) and "forward" not in m.__dict__]
    try:
        for m in patched:
            m.forward = _pass_through  # an instance attribute: nn.Module.__call__ uses it
        yield
    finally:
        for m in patched:
            del m.forward


@dataclass(frozen=True)
class TracedCosts:
    """What ``trace_costs`` measured: MACs per part (``stem``, slot names, other top-level modules such
    as ``head``, in depth order; slots that compute nothing are listed with 0), the parameters of
    every module that ran, and each slot's input shape ``(C, T, H, W)``."""

    macs: dict[str, int]
    params: int
    slot_inputs: dict[str, tuple[int, ...]]

    @property
    def total_macs(self) -> int:
        return sum(self.macs.values())


def trace_costs(
    model: SlotNetwork, input_shape: Sequence[int], strategy: StrategySpec | None = None
) -> TracedCosts:
    """MACs and used parameters of the sub-network, measured by a ``meta``-device forward pass of one
    clip ``(C, T, H, W)`` (see the module docstring). The model is left as it was."""
    strategy = strategy_or_full(strategy, model.num_slots)
    shape = _shape4(input_shape)
    slot_paths = {name: m for name, m in model.named_modules() if isinstance(m, GatedSlot)}

    def owner(qname: str) -> str:
        parts = qname.split(".")
        for i in range(1, len(parts) + 1):
            slot = slot_paths.get(".".join(parts[:i]))
            if slot is not None:
                return slot.name
        return parts[0]

    macs: dict[str, int] = {}
    for qname, m in model.named_modules():
        if isinstance(m, GatedSlot):
            macs.setdefault(m.name, 0)
        elif qname and isinstance(m, _COUNTED):
            macs.setdefault(owner(qname), 0)
    ran: dict[int, nn.Module] = {}
    slot_inputs: dict[str, tuple[int, ...]] = {}

    def hook(key: str | None):
        def fn(m: nn.Module, args, out) -> None:
            ran[id(m)] = m
            if key is not None:
                macs[key] += _module_macs(m, out)
            if isinstance(m, GatedSlot):
                slot_inputs[m.name] = tuple(args[0].shape[1:])

        return fn

    handles = [
        m.register_forward_hook(hook(owner(q) if q and isinstance(m, _COUNTED) else None))
        for q, m in model.named_modules()
    ]
    meta = {
        f"{q}.{name}" if q else name: torch.empty_like(t, device="meta")  # bypassed modules need none
        for q, m in model.named_modules()
        if not isinstance(m, _SHAPE_KEEPING)
        for name, t in (*m.named_parameters(recurse=False), *m.named_buffers(recurse=False))
    }
    try:
        with _hard_eval(model, strategy), _shape_only(model), torch.no_grad():
            torch.func.functional_call(model, meta, (torch.empty((1, *shape), device="meta"),))
    finally:
        for h in handles:
            h.remove()
    logits = {id(p) for p in model.drop_logits()}
    seen: set[int] = set()
    params = 0
    for m in ran.values():
        for p in m.parameters(recurse=False):
            if id(p) not in logits and id(p) not in seen:
                seen.add(id(p))
                params += p.numel()
    return TracedCosts(macs, params, slot_inputs)


@dataclass(frozen=True)
class _UnitTable:
    """MACs of every part under each uniform strategy; valid when every slot sees the same input shape
    whatever the units (each unit keeps the slot's output shape), so costs add up slot by slot."""

    by_unit: dict[str, dict[str, int]]  # unit -> part -> MACs


# model -> {input shape: (module fingerprint, table)}; the fingerprint (ids of all modules) makes a
# model whose modules were replaced since (a new classifier, say) be traced again.
_UNIT_TABLES: WeakKeyDictionary[nn.Module, dict[Shape, tuple[tuple[int, ...], _UnitTable | None]]] = (
    WeakKeyDictionary()
)


def _unit_table(model: SlotNetwork, shape: Shape) -> _UnitTable | None:
    """Four traces (one per unit, every slot alike), once per model and input shape; None if the costs
    are not additive (a slot's input shape depends on other slots' units)."""
    tables = _UNIT_TABLES.setdefault(model, {})
    fingerprint = tuple(id(m) for m in model.modules())
    if shape not in tables or tables[shape][0] != fingerprint:
        traces = {u: trace_costs(model, shape, Strategy.uniform(u, model.num_slots)) for u in UNITS}
        ref = traces[FULL_UNIT]
        slots = set(model.slot_names)
        additive = all(
            t.slot_inputs == ref.slot_inputs
            and len(t.slot_inputs) == len(slots)
            and all(t.macs[k] == v for k, v in ref.macs.items() if k not in slots)
            for t in traces.values()
        )
        tables[shape] = (
            fingerprint,
            _UnitTable({u: t.macs for u, t in traces.items()}) if additive else None,
        )
    return tables[shape][1]


def _backbone_macs(model: SlotNetwork, shape: Shape, strategy: Strategy) -> dict[str, int]:
    """Per-part MACs of any SlotNetwork: from the per-unit table (microseconds once it exists), else
    a direct trace."""
    table = _unit_table(model, shape)
    if table is None:
        return trace_costs(model, shape, strategy).macs
    unit_of = dict(zip(model.slot_names, strategy.units))
    return {part: table.by_unit[unit_of.get(part, FULL_UNIT)][part] for part in table.by_unit[FULL_UNIT]}


def macs_breakdown(
    model: SlotNetwork, input_shape: Sequence[int], strategy: StrategySpec | None = None
) -> dict[str, int]:
    """MACs per clip by part: ``stem``, one entry per slot name, ``head`` (a backbone's other top-level
    parts, e.g. MobileNetV2's ``layer1`` that is not a slot, under their own names)."""
    strategy = strategy_or_full(strategy, model.num_slots)
    if not isinstance(model, FusionTemplate):
        return _backbone_macs(model, _shape4(input_shape), strategy)
    keeps = iter(strategy.keep())
    shape = _shape4(input_shape)
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


def count_macs(model: SlotNetwork, input_shape: Sequence[int], strategy: StrategySpec | None = None) -> int:
    """Multiply-accumulates per clip of shape ``(C, T, H, W)`` (see the module docstring)."""
    return sum(macs_breakdown(model, input_shape, strategy).values())


def count_params(model: SlotNetwork, strategy: StrategySpec | None = None) -> int:
    """Parameters of the sub-network (see the module docstring); no forward pass."""
    strategy = strategy_or_full(strategy, model.num_slots)
    total = sum(p.numel() for p in model.network_parameters())
    logits = {id(p) for p in model.drop_logits()}
    for slot, (ks, kt) in zip(model.slots, strategy.keep()):
        used = {id(p) for m in slot.computed_modules(ks, kt) for p in m.parameters()}
        total -= sum(p.numel() for p in slot.parameters() if id(p) not in used and id(p) not in logits)
    return total
