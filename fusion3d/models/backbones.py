"""3D backbones whose every block is a fusion slot (METHOD.md section 8), and the model registry.

A backbone is a ``SlotNetwork`` like the template: each block is a ``GatedSlot`` with an S path and a T
path and a learned drop probability per path, so the same trainer (v-DropPath included), sampler and
analyzer work on it unchanged, and a strategy (one unit per block: S, ST, S+ST, none) turns it into a
fixed 2D, (2+1)D or mixed network. Temporal stride is 1 everywhere, as in the template: a T-frame clip
keeps T frames until the head. Slots are named ``layer<i>.block<j>`` in depth order, which is also
their module path (``model.get_submodule(slot.name)``).

ResNet-50, ResNeXt-50 (32x4d), ResNeXt-101 (32x8d): bottleneck block, the first 1x1 conv is the slot:
    S path  Conv 1x1x1 (in -> width)                   gated by ``gate_s``
    T path  Conv 3x1x1 (in -> width), temporal pad 1   gated by ``gate_t``
    sum, BN - ReLU - Conv 1x3x3 (width, the block's spatial stride and groups) - BN - ReLU -
    Conv 1x1x1 (width -> 4 planes) - BN, add the shortcut (identity, or Conv 1x1x1 stride - BN), ReLU.
ResNet-18 (basic block; METHOD.md is silent, our choice): the block's first 3x3 conv is the slot:
    S path  Conv 1x3x3 (in -> planes, spatial stride)  gated by ``gate_s``
    T path  Conv 3x3x3 (in -> planes, spatial stride)  gated by ``gate_t``
    sum, BN - ReLU - Conv 1x3x3 - BN, add the shortcut, ReLU.
    All-S is then exactly the 2D ResNet-18 (with the 5x7x7 stem), all-ST is an MC/R3D-style block
    (a full 3x3x3 conv then a 2D conv), S+ST sums both, and the T path weighs 3x the S path, as in
    the bottleneck. Putting the slot on a 1x1 conv instead would need a conv the 2D net does not have.
    ResNet stem: Conv 5x7x7 stride (1, 2, 2) padding (2, 3, 3) - BN - ReLU - MaxPool 3x3x3 stride
    (1, 2, 2) padding 1. Head: global average pool - dropout (default 0.5, the template's) - Linear.
MobileNetV2: inverted residual, the expansion 1x1 is the slot:
    S path  Conv 1x1x1 (in -> hidden) - BN - ReLU6    gated by ``gate_s``
    T path  Conv 3x1x1 (in -> hidden) - BN - ReLU6    gated by ``gate_t``
    sum (after activation), depthwise Conv 1x3x3 (spatial stride) - BN - ReLU6, Conv 1x1x1 (hidden ->
    out) - BN, plus the input when stride is 1 and in == out.
    The first block (expansion 1) has no expansion conv: it is a plain 2D block (depthwise 1x3x3 -
    BN - ReLU6 - Conv 1x1x1 - BN), not a slot, so MobileNetV2 has 16 slots. (Gating its depthwise
    conv instead would make a slot of another kind, and its unit none would have no output: it has
    no residual.)
    Stem (our choice): Conv 3x3x3 stride (1, 2, 2) padding 1 - BN - ReLU6, the 2D stem's 3x3 inflated
    to 3 frames like the ResNet stem's 7x7 to 5. Head: Conv 1x1x1 -> 1280 - BN - ReLU6 - global
    average pool - dropout (default 0.2, torchvision's) - Linear.

Unit ``none`` (both paths dropped) is a clean skip: the block's residual branch is not computed.
- ResNet / ResNeXt blocks: ``relu(shortcut(x))``, with the projection shortcut when the block has one
  (identity blocks pass their input through: it is already the output of a ReLU);
- MobileNetV2 residual blocks: ``x``;
- MobileNetV2 blocks without a residual (stride 2 or a channel change): the parameter-free
  ``skip(x)`` of He et al.'s "option A" shortcut: space subsampled by the block's stride (the same
  output size as the depthwise conv's), channels zero-padded to the output width (averaged in groups
  if a block ever narrows). Zeros instead would cut every later block off from the input, as for the
  template's transitions. (An average pool over the depthwise conv's window was the other candidate;
  torch's pooling refuses maps smaller than the window, which tiny clips reach.)
Relaxed mode is consistent with the hard units (cf. ``template.py``): with multipliers m = 1 - z,
``out = act(shortcut(x) + (1 - z_s z_t) * branch(m_s S(x) + m_t T(x)))`` for residual blocks and
``out = (1 - z_s z_t) * branch(...) + z_s z_t * skip(x)`` for the others.

Width: ``width_mult`` scales every channel count. ResNets: stem and stage widths ``round(c * m)``
(at least 1); a ResNeXt block keeps its cardinality (groups) and has ``groups * max(1, int(planes *
width_per_group / 64))`` channels, so groups always divide the width (torchvision's formula at m = 1).
MobileNetV2: torchvision's rule, every width rounded to a multiple of 8 (at least 8, never 10 %
below the exact value), the last conv ``1280 * max(1, m)``.

Initialisation as the template's: Kaiming-normal convs, BatchNorm gamma 1 and beta 0, zero classifier
bias. ``zero_init_residual`` (default False) zeroes the last BN gamma of every block branch (Goyal et
al.); it is off by default because a branch that outputs zeros gives its gates no gradient until the
gamma moves, and all units are the same network at initialisation.

All 1x1x1, 3x1x1, 1x3x3 (grouped and depthwise included) and 3x3x3 convs are ``FactorConv3d`` and follow
``conv_impl``; the stem is an ``nn.Conv3d``.

Registry: ``create(name, num_classes=..., strategy=...)`` builds any backbone or template preset,
``list_models()`` lists the names.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from fusion3d.models.convs import FactorConv3d, conv1x1x1, conv1xkxk, conv3x1x1
from fusion3d.models.network import GatedSlot, SlotNetwork, _both_dropped, _scale, init_weights
from fusion3d.models.spec import BACKBONES, PRESETS, ModelConfig
from fusion3d.models.strategy import Strategy, as_strategy, resolve_strategy
from fusion3d.models.template import build_model, channel_pool


def _conv_path(conv: nn.Module) -> nn.Sequential:
    """A bare-conv path: ``path.conv`` is the gated conv the v-DropPath regulariser weighs."""
    return nn.Sequential(OrderedDict(conv=conv))


# ---- blocks ------------------------------------------------------------------------------------


class BlockSlot(GatedSlot):
    """A block whose first conv is the slot: ``branch`` follows the sum of the kept paths; ``shortcut``
    is the residual (``residual=True``: always added, identity or projection) or a parameter-free skip
    used only for unit none (``residual=False``). ``relu_out`` applies ReLU after the addition."""

    kind = "block"

    def __init__(self, name: str, path_s: nn.Module, path_t: nn.Module, branch: nn.Sequential, shortcut: nn.Module,
                 residual: bool, relu_out: bool, in_channels: int, out_channels: int, stride: int,
                 drop_init: float, temperature: float) -> None:
        super().__init__(name, path_s, path_t, drop_init, temperature)
        self.branch = branch
        self.shortcut = shortcut
        self.residual = residual
        self.relu_out = relu_out
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.stride = stride

    def computed_modules(self, keep_s: bool, keep_t: bool) -> list[nn.Module]:
        mods = super().computed_modules(keep_s, keep_t)
        if mods:
            mods.append(self.branch)
        if self.residual or not mods:
            mods.append(self.shortcut)
        return mods

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, ms, mt = self._paths(x)
        both = _both_dropped(ms, mt)
        out = None
        if h is not None:  # unit none computes no branch at all
            out = self.branch(h)
            if isinstance(both, torch.Tensor):
                out = _scale(out, 1.0 - both)
        if self.residual or isinstance(both, torch.Tensor) or both == 1.0:
            skip = self.shortcut(x)
            if not self.residual:  # the parameter-free skip stands in for the branch only when it is dropped
                skip = _scale(skip, both)
            out = skip if out is None else out + skip
        return F.relu(out) if self.relu_out else out  # not in place: out may be the block's input

    def rf_nodes(self, keep_s: bool, keep_t: bool) -> list:
        """This block's receptive-field graph (``fusion3d.receptive_field``) for one unit: the kept paths
        (``Par`` of both when both are kept) then the branch's convs, in ``Par`` with the shortcut when
        it is a residual; for unit none, the shortcut alone (identity, projection or option-A skip)."""
        from fusion3d.receptive_field import Par

        paths = [_rf_ops(p) for keep, p in ((keep_s, self.path_s), (keep_t, self.path_t)) if keep]
        if not paths:
            return _rf_ops(self.shortcut)
        branch = [*(paths[0] if len(paths) == 1 else [Par(paths)]), *_rf_ops(self.branch)]
        return [Par((_rf_ops(self.shortcut), branch))] if self.residual else branch


def _rf_ops(module: nn.Module) -> list:
    """The ``Op`` of every conv / pooling window of ``module`` (a conv, a pool, a pointwise layer, a
    ``FreeSkip`` or an ``nn.Sequential`` of them), in order; pointwise layers (BN, activations,
    identity) have none. Anything else raises, so a graph never silently misses a window."""
    from fusion3d.receptive_field import Op

    if isinstance(module, (nn.Conv3d, FactorConv3d, nn.MaxPool3d, nn.AvgPool3d)):
        return [Op.from_module(module)]
    if isinstance(module, FreeSkip):  # x[..., ::s, ::s]: a 1x1x1 window with the block's spatial stride
        return [Op(1, (1, module.stride, module.stride), padding=0, name="FreeSkip")]
    if isinstance(module, nn.Sequential):
        return [op for m in module for op in _rf_ops(m)]
    if isinstance(module, (nn.BatchNorm3d, nn.ReLU, nn.ReLU6, nn.Identity, nn.Dropout, nn.Flatten)):
        return []
    raise TypeError(f"no receptive-field rule for {type(module).__name__}")


def _bn(c: int) -> nn.BatchNorm3d:
    return nn.BatchNorm3d(c)


def _projection(in_channels: int, out_channels: int, stride: int, impl: str) -> nn.Module:
    """ResNet shortcut: identity, or Conv 1x1x1 (spatial stride) - BN when the shape changes."""
    if stride == 1 and in_channels == out_channels:
        return nn.Identity()
    return nn.Sequential(OrderedDict(conv=conv1x1x1(in_channels, out_channels, stride, impl=impl),
                                     norm=_bn(out_channels)))


class BasicSlot(BlockSlot):
    """ResNet-18 basic block; S path 1x3x3, T path 3x3x3 (see the module docstring)."""

    kind = "basic"
    expansion = 1

    def __init__(self, name: str, in_channels: int, planes: int, stride: int, drop_init: float, temperature: float,
                 impl: str, groups: int = 1, width_per_group: int = 64) -> None:
        if groups != 1 or width_per_group != 64:
            raise ValueError("the basic block has no groups / width_per_group")
        path_s = _conv_path(conv1xkxk(in_channels, planes, 3, stride, impl=impl))
        path_t = _conv_path(FactorConv3d(in_channels, planes, 3, (1, stride, stride), 1, impl=impl))
        branch = nn.Sequential(OrderedDict(
            norm1=_bn(planes), relu1=nn.ReLU(inplace=True), conv2=conv1xkxk(planes, planes, 3, impl=impl),
            norm2=_bn(planes)))
        super().__init__(name, path_s, path_t, branch, _projection(in_channels, planes, stride, impl), True, True,
                         in_channels, planes, stride, drop_init, temperature)


class BottleneckSlot(BlockSlot):
    """ResNet / ResNeXt bottleneck; S path 1x1x1, T path 3x1x1 (see the module docstring)."""

    kind = "bottleneck"
    expansion = 4

    def __init__(self, name: str, in_channels: int, planes: int, stride: int, drop_init: float, temperature: float,
                 impl: str, groups: int = 1, width_per_group: int = 64) -> None:
        width = groups * max(1, int(planes * width_per_group / 64))
        out = planes * self.expansion
        branch = nn.Sequential(OrderedDict(
            norm1=_bn(width), relu1=nn.ReLU(inplace=True),
            conv2=conv1xkxk(width, width, 3, stride, impl=impl, groups=groups), norm2=_bn(width),
            relu2=nn.ReLU(inplace=True), conv3=conv1x1x1(width, out, impl=impl), norm3=_bn(out)))
        super().__init__(name, _conv_path(conv1x1x1(in_channels, width, impl=impl)),
                         _conv_path(conv3x1x1(in_channels, width, impl=impl)), branch,
                         _projection(in_channels, out, stride, impl), True, True, in_channels, out, stride,
                         drop_init, temperature)
        self.width = width
        self.groups = groups


class FreeSkip(nn.Module):
    """Parameter-free skip for unit none of a block without a residual ("option A"): space subsampled
    by ``stride`` (ceil(H / stride), the depthwise conv's output size), channels zero-padded (or averaged
    in groups) to ``out_channels``."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :, ::self.stride, ::self.stride]
        if self.out_channels >= self.in_channels:
            return F.pad(x, (0, 0, 0, 0, 0, 0, 0, self.out_channels - self.in_channels))
        return channel_pool(x, self.out_channels)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, stride={self.stride}"


def _act_path(conv: nn.Module, channels: int) -> nn.Sequential:
    return nn.Sequential(OrderedDict(conv=conv, norm=_bn(channels), relu=nn.ReLU6(inplace=True)))


def _dw_pw(hidden: int, out: int, stride: int, impl: str) -> nn.Sequential:
    """Depthwise 1x3x3 (spatial stride) - BN - ReLU6 - pointwise 1x1x1 - BN."""
    return nn.Sequential(OrderedDict(
        dwconv=conv1xkxk(hidden, hidden, 3, stride, impl=impl, groups=hidden), norm1=_bn(hidden),
        relu1=nn.ReLU6(inplace=True), pwconv=conv1x1x1(hidden, out, impl=impl), norm2=_bn(out)))


class InvertedResidualSlot(BlockSlot):
    """MobileNetV2 inverted residual whose expansion 1x1 is the slot (see the module docstring)."""

    kind = "inverted"

    def __init__(self, name: str, in_channels: int, out_channels: int, stride: int, expand_ratio: int,
                 drop_init: float, temperature: float, impl: str) -> None:
        hidden = int(round(in_channels * expand_ratio))
        residual = stride == 1 and in_channels == out_channels
        shortcut = nn.Identity() if residual else FreeSkip(in_channels, out_channels, stride)
        super().__init__(name, _act_path(conv1x1x1(in_channels, hidden, impl=impl), hidden),
                         _act_path(conv3x1x1(in_channels, hidden, impl=impl), hidden),
                         _dw_pw(hidden, out_channels, stride, impl), shortcut, residual, False, in_channels,
                         out_channels, stride, drop_init, temperature)
        self.hidden = hidden


class InvertedResidual(nn.Module):
    """MobileNetV2's first block (expansion 1, no expansion conv): a plain 2D block, not a slot."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, impl: str) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.stride = stride
        self.residual = stride == 1 and in_channels == out_channels
        self.branch = _dw_pw(in_channels, out_channels, stride, impl)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.branch(x)
        return x + out if self.residual else out

    def rf_nodes(self) -> list:
        """This block's receptive-field graph (no slot: the same for every strategy)."""
        from fusion3d.receptive_field import Par

        branch = _rf_ops(self.branch)
        return [Par(((), branch))] if self.residual else branch


# ---- networks ----------------------------------------------------------------------------------


def _check_common(num_classes: int, width_mult: float, dropout: float) -> None:
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if not width_mult > 0:
        raise ValueError(f"width_mult must be > 0, got {width_mult}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")


class Backbone(SlotNetwork):
    """What the backbones share: ``stem``, stages ``layer1..layerN`` (``nn.Sequential`` of blocks
    ``block1..``), ``head``; forward, initialisation, the slot summary."""

    def _finish(self, stem: nn.Module, stages: Sequence[nn.Sequential], head: nn.Sequential,
                zero_init_residual: bool) -> None:
        self.stem = stem
        self.stage_names = [f"layer{i}" for i in range(1, len(stages) + 1)]
        for name, stage in zip(self.stage_names, stages):
            self.add_module(name, stage)
        self.head = head
        self._init_slots([m for m in self.modules() if isinstance(m, GatedSlot)])
        self.zero_init_residual = zero_init_residual
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Kaiming-normal conv weights, BatchNorm gamma = 1 and beta = 0, zero classifier bias (the
        template's init); with ``zero_init_residual`` the last BN gamma of every slot's branch is 0.
        Gate logits are left at their initial value."""
        init_weights(self)
        if self.zero_init_residual:
            for slot in self._slots:
                nn.init.zeros_(slot.branch[-1].weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, T, H, W) clips -> (N, num_classes) logits."""
        x = self.stem(x)
        for name in self.stage_names:
            x = getattr(self, name)(x)
        return self.head(x)

    def rf_graph(self, strategy: Strategy | str | Sequence[str] | None = None) -> list:
        """The static receptive-field graph of a sub-network (``fusion3d.receptive_field``; ``None`` = every
        path on, S+ST everywhere, as in ``fusion3d.models.flops``): the stem's conv (and pool), then per
        block its ``rf_nodes`` (slots: followed by ``Mark(slot name, unit, kind)``), then the head's
        convs before the global pool and ``Mark("head")``. Kernels, strides and paddings are read from
        the modules. A slot's nodes depend only on its own unit (the ``rf_graph`` contract); a block that
        is not a slot (MobileNetV2's first) goes before the next slot's mark."""
        from fusion3d.receptive_field import Mark

        strategy = Strategy.uniform("S+ST", self.num_slots) if strategy is None else as_strategy(
            strategy, self.num_slots)
        units = {slot.name: (unit, keep) for slot, unit, keep in zip(self._slots, strategy.units, strategy.keep())}
        graph = _rf_ops(self.stem)
        for name in self.stage_names:
            for block in getattr(self, name).children():
                if isinstance(block, BlockSlot):
                    unit, (keep_s, keep_t) = units[block.name]
                    graph += [*block.rf_nodes(keep_s, keep_t), Mark(block.name, unit, block.kind)]
                elif isinstance(block, InvertedResidual):
                    graph += block.rf_nodes()
                else:
                    raise TypeError(f"no receptive-field rule for block {type(block).__name__}")
        for m in self.head.children():
            if isinstance(m, nn.AdaptiveAvgPool3d):  # one logit sees the whole clip: the head row is the pooled map's
                break
            graph += _rf_ops(m)
        return [*graph, Mark("head", "", "head")]

    def extra_repr(self) -> str:
        return (f"name={self.name}, width_mult={self.width_mult:g}, slots={self.num_slots}, "
                f"classes={self.num_classes}, gate_mode={self.gate_mode}, conv_impl={self.conv_impl}")

    def _stem_text(self) -> str:
        conv = self.stem.conv
        pool = ""
        if hasattr(self.stem, "pool"):
            k, st = (v if isinstance(v, tuple) else (v,) * 3 for v in (self.stem.pool.kernel_size, self.stem.pool.stride))
            pool = f" - MaxPool {'x'.join(map(str, k))} stride {st}"
        act = "ReLU6" if isinstance(self.stem.relu, nn.ReLU6) else "ReLU"
        return (f"Conv {'x'.join(map(str, conv.kernel_size))} {conv.in_channels}->{conv.out_channels} "
                f"stride {tuple(conv.stride)} - BN - {act}{pool}")

    def _head_text(self) -> str:
        fc = self.head.fc
        pre = (f"Conv 1x1x1 {self.head.conv.in_channels}->{self.head.conv.out_channels} - BN - ReLU6 - "
               if hasattr(self.head, "conv") else "")
        return f"{pre}global avg pool - Dropout({self.head.dropout.p:g}) - Linear {fc.in_features}->{fc.out_features}"

    def summary(self) -> str:
        """One line per slot: index, name, kind, channels, spatial stride, unit in force, drop probabilities."""
        lines = [f"{type(self).__name__}({self.extra_repr()})", f"  stem: {self._stem_text()}"]
        for name in self.stage_names:
            for block in getattr(self, name).children():
                if isinstance(block, InvertedResidual):
                    lines.append(f"  {name}.block1: depthwise 1x3x3 - pointwise {block.in_channels}->"
                                 f"{block.out_channels} (expansion 1, not a slot)")
        lines.append(f"  {'slot':>4s}  {'name':<16s} {'kind':<10s} {'channels':<11s} {'stride':>6s} {'unit':<5s} "
                     f"{'p_S':>6s} {'p_T':>6s}")
        probs = self.drop_probs().tolist()
        for i, (slot, (ps, pt)) in enumerate(zip(self._slots, probs)):
            ch = f"{slot.in_channels}->{slot.out_channels}"
            lines.append(f"  {i:>4d}  {slot.name:<16s} {slot.kind:<10s} {ch:<11s} {slot.stride:>6d} {slot.unit:<5s} "
                         f"{ps:6.3f} {pt:6.3f}")
        lines.append(f"  head: {self._head_text()}")
        return "\n".join(lines)


def _round(c: float) -> int:
    return max(1, int(round(c)))


class SlotResNet(Backbone):
    """A 3D ResNet / ResNeXt whose every block is a slot (see the module docstring)."""

    def __init__(self, name: str, block: str, layers: Sequence[int], num_classes: int, groups: int = 1,
                 width_per_group: int = 64, width_mult: float = 1.0, dropout: float | None = None,
                 drop_init: float = 0.1, temperature: float = 0.2, conv_impl: str = "auto", in_channels: int = 3,
                 zero_init_residual: bool = False, stem_stride: int = 2, stem_pool: bool = True) -> None:
        super().__init__()
        dropout = 0.5 if dropout is None else float(dropout)
        _check_common(num_classes, width_mult, dropout)
        block_cls = {"basic": BasicSlot, "bottleneck": BottleneckSlot}[block]
        self.name, self.num_classes, self.in_channels = name, int(num_classes), int(in_channels)
        self.width_mult, self.conv_impl = float(width_mult), conv_impl
        self.groups, self.width_per_group = groups, width_per_group
        c = _round(64 * width_mult)
        stem: OrderedDict[str, nn.Module] = OrderedDict(
            conv=nn.Conv3d(in_channels, c, (5, 7, 7), stride=(1, stem_stride, stem_stride), padding=(2, 3, 3),
                           bias=False),
            norm=_bn(c), relu=nn.ReLU(inplace=True))
        if stem_pool:
            stem["pool"] = nn.MaxPool3d(kernel_size=3, stride=(1, 2, 2), padding=1)
        stem = nn.Sequential(stem)
        stages = []
        for i, (n_blocks, base) in enumerate(zip(layers, (64, 128, 256, 512)), start=1):
            planes = _round(base * width_mult)
            blocks = OrderedDict()
            for j in range(1, n_blocks + 1):
                stride = 2 if (i > 1 and j == 1) else 1
                blocks[f"block{j}"] = block_cls(f"layer{i}.block{j}", c, planes, stride, drop_init, temperature,
                                                conv_impl, groups, width_per_group)
                c = blocks[f"block{j}"].out_channels
            stages.append(nn.Sequential(blocks))
        self.feature_channels = c
        head = nn.Sequential(OrderedDict(pool=nn.AdaptiveAvgPool3d(1), flatten=nn.Flatten(1),
                                         dropout=nn.Dropout(dropout), fc=nn.Linear(c, num_classes)))
        self._finish(stem, stages, head, zero_init_residual)


def make_divisible(v: float, divisor: int = 8) -> int:
    """torchvision's MobileNet rounding: nearest multiple of ``divisor``, at least ``divisor``, and never
    more than 10 % below ``v``."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


# (expansion t, channels c, blocks n, first stride s) per stage, as in MobileNetV2 (Sandler et al. 2018).
MOBILENETV2_SETTINGS: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


class SlotMobileNetV2(Backbone):
    """A 3D MobileNetV2 whose inverted residuals with expansion > 1 are slots (see the module docstring)."""

    def __init__(self, name: str, num_classes: int, width_mult: float = 1.0, dropout: float | None = None,
                 drop_init: float = 0.1, temperature: float = 0.2, conv_impl: str = "auto", in_channels: int = 3,
                 zero_init_residual: bool = False, stem_stride: int = 2, stem_pool: bool | None = None) -> None:
        super().__init__()
        if stem_pool:
            raise ValueError(f"config key 'model.stem_pool': {name} has no stem pool (its stem is one strided conv)")
        dropout = 0.2 if dropout is None else float(dropout)
        _check_common(num_classes, width_mult, dropout)
        self.name, self.num_classes, self.in_channels = name, int(num_classes), int(in_channels)
        self.width_mult, self.conv_impl = float(width_mult), conv_impl
        c = make_divisible(32 * width_mult)
        last = make_divisible(1280 * max(1.0, width_mult))
        stem = nn.Sequential(OrderedDict(
            conv=nn.Conv3d(in_channels, c, 3, stride=(1, stem_stride, stem_stride), padding=1, bias=False), norm=_bn(c),
            relu=nn.ReLU6(inplace=True)))
        stages = []
        for i, (t, channels, n_blocks, s) in enumerate(MOBILENETV2_SETTINGS, start=1):
            out = make_divisible(channels * width_mult)
            blocks: OrderedDict[str, nn.Module] = OrderedDict()
            for j in range(1, n_blocks + 1):
                stride = s if j == 1 else 1
                if t == 1:
                    blocks[f"block{j}"] = InvertedResidual(c, out, stride, conv_impl)
                else:
                    blocks[f"block{j}"] = InvertedResidualSlot(f"layer{i}.block{j}", c, out, stride, t, drop_init,
                                                               temperature, conv_impl)
                c = out
            stages.append(nn.Sequential(blocks))
        self.feature_channels = last
        head = nn.Sequential(OrderedDict(
            conv=conv1x1x1(c, last, impl=conv_impl), norm=_bn(last), relu=nn.ReLU6(inplace=True),
            pool=nn.AdaptiveAvgPool3d(1), flatten=nn.Flatten(1), dropout=nn.Dropout(dropout),
            fc=nn.Linear(last, num_classes)))
        self._finish(stem, stages, head, zero_init_residual)


# ---- registry ----------------------------------------------------------------------------------

_REGISTRY: dict[str, Callable[..., SlotNetwork]] = {}


def register(fn: Callable[..., SlotNetwork]) -> Callable[..., SlotNetwork]:
    """Register a backbone factory under its function name."""
    _REGISTRY[fn.__name__] = fn
    return fn


@register
def resnet18_3d(num_classes: int, **kwargs) -> SlotResNet:
    """ResNet-18, basic blocks [2, 2, 2, 2]: 8 slots."""
    return SlotResNet("resnet18_3d", "basic", (2, 2, 2, 2), num_classes, **kwargs)


@register
def resnet50_3d(num_classes: int, **kwargs) -> SlotResNet:
    """ResNet-50, bottlenecks [3, 4, 6, 3]: 16 slots."""
    return SlotResNet("resnet50_3d", "bottleneck", (3, 4, 6, 3), num_classes, **kwargs)


@register
def resnext50_32x4d_3d(num_classes: int, **kwargs) -> SlotResNet:
    """ResNeXt-50 32x4d, bottlenecks [3, 4, 6, 3] with 32 groups of 4 channels (at width 64): 16 slots."""
    return SlotResNet("resnext50_32x4d_3d", "bottleneck", (3, 4, 6, 3), num_classes, groups=32, width_per_group=4,
                      **kwargs)


@register
def resnext101_32x8d_3d(num_classes: int, **kwargs) -> SlotResNet:
    """ResNeXt-101 32x8d, bottlenecks [3, 4, 23, 3] with 32 groups of 8 channels (at width 64): 33 slots."""
    return SlotResNet("resnext101_32x8d_3d", "bottleneck", (3, 4, 23, 3), num_classes, groups=32,
                      width_per_group=8, **kwargs)


@register
def mobilenetv2_3d(num_classes: int, **kwargs) -> SlotMobileNetV2:
    """MobileNetV2 (width 1.0: 32-16-24-32-64-96-160-320, last conv 1280): 16 slots."""
    return SlotMobileNetV2("mobilenetv2_3d", num_classes, **kwargs)


def list_models() -> list[str]:
    """Every name ``create`` accepts: the template presets, then the backbones."""
    return [*PRESETS, *BACKBONES]


def create(name: str, *, num_classes: int, strategy: Strategy | str | Sequence[str] | None = None,
           **kwargs) -> SlotNetwork:
    """Build the backbone or template preset ``name`` with ``num_classes`` outputs.

    ``kwargs`` go to the backbone (``width_mult``, ``dropout``, ``drop_init``, ``temperature``,
    ``conv_impl``, ``in_channels``, ``zero_init_residual``) or, for a template preset, to its
    ``ModelConfig`` (``growth``, ``blocks``, ``dropout``, ...). ``strategy`` (a ``Strategy``, a unit name
    S / ST / S+ST / none for every slot, a unit string ``'S|ST|...'``, a strategy JSON file or a list of
    units) is applied with ``apply_strategy`` (hard mode); None leaves the gates off.
    """
    if name in _REGISTRY:
        model = _REGISTRY[name](num_classes, **kwargs)
    elif name in PRESETS:
        model = build_model(ModelConfig(name=name, **kwargs), num_classes)  # type: ignore[arg-type]
    else:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(list_models())}")
    if strategy is not None:
        model.apply_strategy(resolve_strategy(strategy, model.num_slots) if isinstance(strategy, str)
                             else as_strategy(strategy, model.num_slots))
    return model
