"""A slot network with one strategy frozen into it, for use outside fusion3d (pure conversion, no files).

``freeze(model, strategy, example)`` returns a copy of the network as a plain module: the strategy is
applied and fixed, every ``Gate`` is replaced by a constant decision that is not a module (no drop
logit, no random draw, nothing saved or traced), the modules a dropped path or a ``none`` slot would
have run are removed, kept paths are summed by the slot's own forward, and every ``FactorConv3d``
becomes the ``nn.Conv3d`` it stands for (same weight; the portable op for TorchScript and ONNX). Its
output equals the gated network's in hard mode with that strategy (up to float rounding: the
gated network may compute the same convs through folded 2D kernels on a CPU).

- ``to_torchscript``: ``torch.jit.trace`` of the frozen module. A traced module holds its graph and
  weights and loads with ``torch.jit.load`` alone, without fusion3d or any of its classes; only the
  ops that ran are in the graph (the hard gates' branches are resolved while tracing).
- ``onnx_bytes``: ``torch.onnx.export`` of the frozen module (opset 17, dynamic batch axis; the
  TorchScript-based exporter, which needs the ``onnx`` package but not ``onnxscript``; neither is a
  dependency of fusion3d).
- ``mmaction2_config``: for a ResNet / ResNeXt (``SlotResNet``), a config snippet for MMAction2's
  ``ResNet3d`` backbone whose per-block ``inflate`` lists follow the strategy (1 where the unit keeps
  the T path). MMAction2's ``Bottleneck3d`` with ``inflate_style='3x1x1'`` inflates the block's first
  1x1 conv to 3x1x1, which is exactly fusion3d's ST unit; what has no equivalent (S+ST, none, basic
  blocks, cardinality, other widths) is mapped to the nearest setting and returned as a warning.
- ``architecture``: the JSON description written next to an export.
"""

from __future__ import annotations

import copy
import io
import warnings
from collections.abc import Sequence

import torch
from torch import nn

from fusion3d.models.convs import FactorConv3d
from fusion3d.models.gate import Gate
from fusion3d.models.macs import count_macs, count_params
from fusion3d.models.network import SlotNetwork
from fusion3d.models.resnet3d import SlotResNet
from fusion3d.models.strategy import StrategySpec, strategy_or_full
from fusion3d.models.units import FULL_UNIT, NONE_UNIT, TEMPORAL_UNITS

ONNX_OPSET = 17

# (block kind, blocks per stage) -> MMAction2's ResNet3d depth (its ``arch_settings``).
MMACTION2_DEPTHS: dict[tuple[str, tuple[int, ...]], int] = {
    ("basic", (2, 2, 2, 2)): 18,
    ("basic", (3, 4, 6, 3)): 34,
    ("bottleneck", (3, 4, 6, 3)): 50,
    ("bottleneck", (3, 4, 23, 3)): 101,
    ("bottleneck", (3, 8, 36, 3)): 152,
}


class FixedGate:
    """What a ``Gate`` becomes in a frozen network: a constant keep decision. A plain object, not a
    module: it has no parameter, no state-dict entry and no op in a traced graph."""

    mode = "hard"

    def __init__(self, keep: bool) -> None:
        self.keep = self.last_keep = bool(keep)
        self.drop_prob = 0.0 if self.keep else 1.0
        self.keep_prob = 1.0 - self.drop_prob

    def draw(self, n: int, device: torch.device | None = None) -> float | None:
        return 1.0 if self.keep else None

    def __repr__(self) -> str:
        return f"FixedGate(keep={self.keep})"


def model_name(model: nn.Module) -> str:
    """The registered name of a network (a backbone's ``name``, a template's preset), else its class."""
    name = getattr(model, "name", None) or getattr(getattr(model, "arch", None), "name", None)
    return str(name) if isinstance(name, str) and name else type(model).__name__


def _modules_run(net: nn.Module, example: torch.Tensor) -> set[int]:
    """ids of the modules one forward pass of ``example`` calls."""
    ran: set[int] = set()
    hooks = [m.register_forward_pre_hook(lambda mod, args: ran.add(id(mod))) for m in net.modules()]
    try:
        with torch.no_grad():
            net(example)
    finally:
        for h in hooks:
            h.remove()
    return ran


def _owns_tensors(module: nn.Module) -> bool:
    return any(True for _ in module.parameters()) or any(True for _ in module.buffers())


def _as_conv3d(conv: FactorConv3d) -> nn.Conv3d:
    """The ``nn.Conv3d`` a ``FactorConv3d`` stands for, holding the same weight (and bias)."""
    out = nn.Conv3d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        conv.stride,
        conv.padding,
        groups=conv.groups,
        bias=conv.bias is not None,
        device="meta",  # no initialisation: the weights are replaced below
    )
    out.weight = conv.weight
    if conv.bias is not None:
        out.bias = conv.bias
    return out


def freeze(model: SlotNetwork, strategy: StrategySpec | None, example: torch.Tensor) -> nn.Module:
    """A copy of ``model`` with ``strategy`` (None: the full network, S+ST everywhere) frozen into
    it, in eval mode, without gradients (see the module docstring). ``example``: a batch of clips
    ``(N, C, T, H, W)``, run once to see which modules the sub-network calls. ``model`` is not changed."""
    strategy = strategy_or_full(strategy, model.num_slots)
    net = copy.deepcopy(model).eval()
    net.apply_strategy(strategy)
    ran = _modules_run(net, example.to(next(net.parameters()).device))
    for slot, (keep_s, keep_t) in zip(net.slots, strategy.keep()):
        computed = {id(m) for m in slot.computed_modules(keep_s, keep_t)}
        for name, child in list(slot.named_children()):
            if isinstance(child, Gate):
                continue
            if _owns_tensors(child) and id(child) not in computed and id(child) not in ran:
                delattr(slot, name)  # a dropped path, or what a none slot does not compute
        for name, keep in (("gate_s", keep_s), ("gate_t", keep_t), ("gate_d", True)):
            if isinstance(getattr(slot, name, None), Gate):
                delattr(slot, name)
                setattr(slot, name, FixedGate(keep))
    for parent in list(net.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, FactorConv3d):
                setattr(parent, name, _as_conv3d(child))
    left = [n for n, m in net.named_modules() if isinstance(m, Gate)]
    left += [n for n, _ in net.named_parameters() if n.endswith("logit")]
    if left:
        raise RuntimeError(f"freeze left gates or drop logits in the network: {left[:3]}")
    cls = type(net)
    net.__class__ = type(  # the slot summary reads drop logits: print the module tree instead
        f"Frozen{cls.__name__}",
        (cls,),
        {"__repr__": nn.Module.__repr__, "summary": nn.Module.__repr__, "__module__": __name__},
    )
    net.frozen_strategy = str(strategy)
    return net.requires_grad_(False).eval()


def to_torchscript(frozen: nn.Module, example: torch.Tensor) -> torch.jit.ScriptModule:
    """``torch.jit.trace`` of a frozen network (any batch size runs; clip size as ``example``'s)."""
    example = example.to(next(frozen.parameters()).device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about shapes read as Python ints
        return torch.jit.trace(frozen, example, check_trace=False)


def onnx_bytes(frozen: nn.Module, example: torch.Tensor, opset: int = ONNX_OPSET) -> bytes:
    """The ONNX model of a frozen network: input ``clip`` (N, C, T, H, W), output ``logits`` (N,
    classes), the batch axis dynamic. The TorchScript-based exporter (``dynamo=False``) needs the
    ``onnx`` package; the dynamo exporter would need onnxscript as well."""
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation notice and tracer warnings
        torch.onnx.export(
            frozen,
            (example.to(next(frozen.parameters()).device),),
            buf,
            dynamo=False,
            opset_version=opset,
            input_names=["clip"],
            output_names=["logits"],
            dynamic_axes={"clip": {0: "batch"}, "logits": {0: "batch"}},
        )
    return buf.getvalue()


def architecture(model: SlotNetwork, strategy: StrategySpec | None, input_shape: Sequence[int]) -> dict:
    """What an exported network is: the model, the strategy (units per slot), the input and output,
    the MACs and parameters of the sub-network."""
    strategy = strategy_or_full(strategy, model.num_slots)
    shape = [int(v) for v in input_shape]
    return {
        "model": model_name(model),
        "class": type(model).__name__,
        "num_classes": int(model.num_classes),
        "strategy": strategy.to_dict(model.slot_names),
        "input": {"name": "clip", "shape": ["N", *shape], "layout": "N, C, T, H, W", "dtype": "float32"},
        "output": {"name": "logits", "shape": ["N", int(model.num_classes)]},
        "macs": count_macs(model, shape, strategy),
        "params": count_params(model, strategy),
    }


# ---- MMAction2 -------------------------------------------------------------------------------------


def _names(names: Sequence[str]) -> str:
    return ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")


def mmaction2_config(model: SlotNetwork, strategy: StrategySpec, source: str = "") -> tuple[str, list[str]]:
    """(config text, warnings): a ``model = dict(type='Recognizer3D', backbone=dict(type='ResNet3d',
    ...), cls_head=...)`` snippet for a ResNet / ResNeXt (``SlotResNet``) under ``strategy``, with one
    ``inflate`` entry per block (1 where the unit keeps the T path: ST, S+ST), ``depth``,
    ``conv1_kernel=(5, 7, 7)``, temporal stride 1 throughout (``conv1_stride_t=1``, ``pool1_stride_t=1``,
    ``with_pool2=False``) and ``inflate_style='3x1x1'``. ``source`` is named in the header comment."""
    if not isinstance(model, SlotResNet):
        raise ValueError(
            f"an MMAction2 ResNet3d config describes ResNet / ResNeXt designs only; {model_name(model)} "
            f"is a {type(model).__name__} (export it with --format torch or onnx)"
        )
    strategy = strategy_or_full(strategy, model.num_slots)
    unit_of = dict(zip(model.slot_names, strategy.units))
    stages = [[b.name for b in getattr(model, s).children()] for s in model.stage_names]
    kind = model.slots[0].kind
    depth = MMACTION2_DEPTHS.get((kind, tuple(len(s) for s in stages)))
    if depth is None:
        raise ValueError(
            f"{model_name(model)}: {kind} blocks {[len(s) for s in stages]} per stage match no MMAction2 "
            f"ResNet3d depth ({', '.join(str(d) for d in sorted(set(MMACTION2_DEPTHS.values())))})"
        )
    warns = []
    both = [n for n in model.slot_names if unit_of[n] == FULL_UNIT]
    if both:
        warns.append(
            f"{FULL_UNIT} at {_names(both)}: MMAction2 has no block that sums a 1x1x1 and a 3x1x1 conv; "
            "mapped to inflate=1 (the ST block)"
        )
    skipped = [n for n in model.slot_names if unit_of[n] == NONE_UNIT]
    if skipped:
        warns.append(f"none at {_names(skipped)}: MMAction2 computes every block; mapped to inflate=0 (S)")
    if kind == "basic":
        warns.append(
            "MMAction2's BasicBlock3d with inflate=1 makes both 3x3 convs 3x3x3 (inflate_style applies "
            "to bottlenecks only); fusion3d's ST basic block inflates the first one only"
        )
    if model.groups != 1:
        warns.append(
            f"MMAction2's ResNet3d has no cardinality: {model_name(model)} ({model.groups} groups) is "
            f"written as a ResNet-{depth} with the same inflate pattern"
        )
    base = model.stem.conv.out_channels
    planes = [getattr(model, s)[0].out_channels // model.slots[0].expansion for s in model.stage_names]
    if planes != [base * 2**i for i in range(len(planes))]:
        warns.append(
            f"width_mult {model.width_mult:g}: stage widths {planes} are not base_channels={base} "
            "doubled per stage, as MMAction2 builds them"
        )
    if model.stem.conv.stride[1] != 2 or not hasattr(model.stem, "pool"):
        warns.append("the stem's stride or pool differs from MMAction2's (stride 2, then a max pool)")
    rows = []
    for stage, names in zip(model.stage_names, stages):
        flags = ", ".join("1" if unit_of[n] in TEMPORAL_UNITS else "0" for n in names)
        units = "|".join(unit_of[n] for n in names)
        rows.append(f"            ({flags}{',' if len(names) == 1 else ''}),  # {stage}: {units}")
    header = [
        f"# MMAction2 config for the fusion3d design {model_name(model)}: {strategy} (id {strategy.id})",
        *([f"# exported by `fusion3d export` from {source}"] if source else []),
        "# inflate: 1 where the block's unit keeps the T path (ST; S+ST), 0 where it does not (S).",
        "# MMAction2's Bottleneck3d with inflate_style='3x1x1' inflates the first 1x1 conv to 3x1x1:",
        "# exactly fusion3d's ST unit. S+ST (a 1x1x1 and a 3x1x1 conv summed) has no MMAction2",
        "# equivalent and is mapped to inflate=1 (with a warning when exported).",
        "# Temporal stride 1 throughout, as in fusion3d. Not identical: MMAction2's stem max pool is",
        "# 1x3x3 (fusion3d's is 3x3x3, stride (1, 2, 2)).",
        *(f"# warning: {w}" for w in warns),
    ]
    body = [
        "model = dict(",
        "    type='Recognizer3D',",
        "    backbone=dict(",
        "        type='ResNet3d',",
        f"        depth={depth},",
        "        pretrained=None,",
        "        pretrained2d=False,",
        f"        in_channels={model.in_channels},",
        f"        base_channels={base},",
        "        conv1_kernel=(5, 7, 7),",
        "        conv1_stride_t=1,",
        "        pool1_stride_t=1,",
        "        with_pool2=False,",
        "        inflate_style='3x1x1',",
        "        inflate=(",
        *rows,
        "        ),",
        "        zero_init_residual=False,",
        "    ),",
        "    cls_head=dict(",
        "        type='I3DHead',",
        f"        num_classes={model.num_classes},",
        f"        in_channels={model.feature_channels},",
        "        spatial_type='avg',",
        f"        dropout_ratio={model.head.dropout.p:g},",
        "    ),",
        ")",
    ]
    return "\n".join(header + body) + "\n", warns


__all__ = [
    "FixedGate",
    "MMACTION2_DEPTHS",
    "ONNX_OPSET",
    "architecture",
    "freeze",
    "mmaction2_config",
    "model_name",
    "onnx_bytes",
    "to_torchscript",
]
