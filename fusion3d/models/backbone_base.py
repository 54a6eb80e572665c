"""What the backbones share (``fusion3d.models.resnet3d``, ``fusion3d.models.mobilenet3d``): a block
whose first conv is the slot (``BlockSlot``) and the network around the blocks (``Backbone``).

A backbone is a ``SlotNetwork`` like the template: each block is a ``GatedSlot`` with an S path and a T
path and a learned drop probability per path, so the same trainer (v-DropPath included), sampler and
analyzer work on it unchanged, and a strategy (one unit per block: S, ST, S+ST, none) turns it into a
fixed 2D, (2+1)D or mixed network. Temporal stride is 1 everywhere, as in the template: a T-frame clip
keeps T frames until the head. Slots are named ``layer<i>.block<j>`` in depth order, which is also
their module path (``model.get_submodule(slot.name)``).

Unit ``none`` (both paths dropped) is a clean skip: the block's residual branch is not computed.
- ResNet / ResNeXt blocks: ``relu(shortcut(x))``, with the projection shortcut when the block has one
  (identity blocks pass their input through: it is already the output of a ReLU);
- MobileNetV2 residual blocks: ``x``;
- MobileNetV2 blocks without a residual (stride 2 or a channel change): the parameter-free
  ``skip(x)`` of He et al.'s "option A" shortcut (``fusion3d.models.mobilenet3d.FreeSkip``).
Relaxed mode is consistent with the hard units (cf. ``template.py``): with multipliers m = 1 - z,
``out = act(shortcut(x) + (1 - z_s z_t) * branch(m_s S(x) + m_t T(x)))`` for residual blocks and
``out = (1 - z_s z_t) * branch(...) + z_s z_t * skip(x)`` for the others.

Initialisation as the template's: Kaiming-normal convs, BatchNorm gamma 1 and beta 0, zero classifier
bias. ``zero_init_residual`` (default False) zeroes the last BN gamma of every block branch (Goyal et
al.); it is off by default because a branch that outputs zeros gives its gates no gradient until the
gamma moves, and all units are the same network at initialisation.

All 1x1x1, 3x1x1, 1x3x3 (grouped and depthwise included) and 3x3x3 convs are ``FactorConv3d`` and follow
``conv_impl``; the stem is an ``nn.Conv3d``.

Receptive fields: every backbone describes itself (``Backbone.rf_graph``, ``BlockSlot.rf_nodes``; a
block that is not a slot has ``rf_nodes()``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from fusion3d.models.network import (
    ForwardStep,
    GatedSlot,
    Multiplier,
    SlotNetwork,
    _both_dropped,
    _scale,
    init_weights,
    module_rf_nodes,
    rf_sequence,
)
from fusion3d.models.rf_graph import Mark, Par
from fusion3d.models.strategy import StrategySpec


def _bn(c: int) -> nn.BatchNorm3d:
    return nn.BatchNorm3d(c)


class BlockSlot(GatedSlot):
    """A block whose first conv is the slot: ``branch`` follows the sum of the kept paths; ``shortcut``
    is the residual (``residual=True``: always added, identity or projection) or a parameter-free skip
    used only for unit none (``residual=False``). ``relu_out`` applies ReLU after the addition."""

    kind = "block"

    def __init__(
        self,
        name: str,
        path_s: nn.Module,
        path_t: nn.Module,
        branch: nn.Sequential,
        shortcut: nn.Module,
        residual: bool,
        relu_out: bool,
        in_channels: int,
        out_channels: int,
        stride: int,
        drop_init: float,
        temperature: float,
    ) -> None:
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

    def gated_forward(self, x: torch.Tensor, md: Multiplier, ms: Multiplier, mt: Multiplier) -> torch.Tensor:
        h, ms, mt = self._kept_paths(x, md, ms, mt)
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
        """This block's receptive-field nodes for one unit (``fusion3d.models.rf_graph``): the kept paths
        (``Par`` of both when both are kept) then the branch's convs, in ``Par`` with the shortcut when
        it is a residual; for unit none, the shortcut alone (identity, projection or option-A skip)."""
        paths = self.rf_paths(keep_s, keep_t)
        if not paths:
            return module_rf_nodes(self.shortcut)
        branch = [*(paths[0] if len(paths) == 1 else [Par(paths)]), *module_rf_nodes(self.branch)]
        return [Par((module_rf_nodes(self.shortcut), branch))] if self.residual else branch


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

    def _finish(
        self, stem: nn.Module, stages: Sequence[nn.Sequential], head: nn.Sequential, zero_init_residual: bool
    ) -> None:
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

    def forward_steps(self) -> list[ForwardStep]:
        """``forward`` cut at every block (``SlotNetwork.forward_steps``): the stem, each block of each
        stage (a slot counts one more slot; a block that is not a slot, none), the head."""
        steps = [ForwardStep(0, self.stem)]
        k = 0
        for name in self.stage_names:
            for block in getattr(self, name).children():
                k += isinstance(block, GatedSlot)
                steps.append(ForwardStep(k, block))
        steps.append(ForwardStep(k, self.head))
        return steps

    def rf_graph(self, strategy: StrategySpec | None = None) -> list:
        """The static receptive-field graph of a sub-network (``fusion3d.models.rf_graph``; ``None`` =
        every path on, S+ST everywhere, as in ``fusion3d.models.macs``): the stem's conv (and pool), then
        per block its ``rf_nodes`` (slots: followed by ``Mark(slot name, unit, kind)``), then the head's
        convs before the global pool and ``Mark("head")``. Kernels, strides and paddings are read from
        the modules. A slot's nodes depend only on its own unit (the ``rf_graph`` contract); a block that
        is not a slot (MobileNetV2's first) describes itself (``rf_nodes()``) and goes before the next
        slot's mark."""
        units = self.rf_units(strategy)
        graph = module_rf_nodes(self.stem)
        for name in self.stage_names:
            graph += rf_sequence(getattr(self, name).children(), units)
        for m in self.head.children():
            if isinstance(
                m, nn.AdaptiveAvgPool3d
            ):  # one logit sees the whole clip: the head row is the pooled map's
                break
            graph += module_rf_nodes(m)
        return [*graph, Mark("head", "", "head")]

    def extra_repr(self) -> str:
        return (
            f"name={self.name}, width_mult={self.width_mult:g}, slots={self.num_slots}, "
            f"classes={self.num_classes}, gate_mode={self.gate_mode}, conv_impl={self.conv_impl}"
        )

    def _stem_text(self) -> str:
        conv = self.stem.conv
        pool = ""
        if hasattr(self.stem, "pool"):
            k, st = (
                v if isinstance(v, tuple) else (v,) * 3
                for v in (self.stem.pool.kernel_size, self.stem.pool.stride)
            )
            pool = f" - MaxPool {'x'.join(map(str, k))} stride {st}"
        act = "ReLU6" if isinstance(self.stem.relu, nn.ReLU6) else "ReLU"
        return (
            f"Conv {'x'.join(map(str, conv.kernel_size))} {conv.in_channels}->{conv.out_channels} "
            f"stride {tuple(conv.stride)} - BN - {act}{pool}"
        )

    def _head_text(self) -> str:
        fc = self.head.fc
        pre = (
            f"Conv 1x1x1 {self.head.conv.in_channels}->{self.head.conv.out_channels} - BN - ReLU6 - "
            if hasattr(self.head, "conv")
            else ""
        )
        return f"{pre}global avg pool - Dropout({self.head.dropout.p:g}) - Linear {fc.in_features}->{fc.out_features}"

    def summary(self) -> str:
        """One line per slot: index, name, kind, channels, spatial stride, unit in force, drop probabilities."""
        lines = [f"{type(self).__name__}({self.extra_repr()})", f"  stem: {self._stem_text()}"]
        for name in self.stage_names:
            for block_name, block in getattr(self, name).named_children():
                if not isinstance(block, GatedSlot):  # a block that is not a slot says what it is
                    lines.append(f"  {name}.{block_name}: {block.summary_text()}")
        lines.append(
            f"  {'slot':>4s}  {'name':<16s} {'kind':<10s} {'channels':<11s} {'stride':>6s} {'unit':<5s} "
            f"{'p_S':>6s} {'p_T':>6s}"
        )
        probs = self.drop_probs().tolist()
        for i, (slot, (ps, pt)) in enumerate(zip(self._slots, probs)):
            ch = f"{slot.in_channels}->{slot.out_channels}"
            lines.append(
                f"  {i:>4d}  {slot.name:<16s} {slot.kind:<10s} {ch:<11s} {slot.stride:>6d} {slot.unit:<5s} "
                f"{ps:6.3f} {pt:6.3f}"
            )
        lines.append(f"  head: {self._head_text()}")
        return "\n".join(lines)
