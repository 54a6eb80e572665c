"""The fusion template: an inflated DenseNet whose dense layers and transitions are *slots*.

Layout (docs/method.md §2-§3), temporal stride 1 everywhere:

    stem     Conv kt x kh x kw, stride (1, s, s) - BN - ReLU - [MaxPool 3x3x3, stride (1, 2, 2)]
    block1   dense layers (slots) ...
    transition1 (slot)
    ...
    blockB   dense layers (slots)
    head     BN - ReLU - global average pool over T,H,W - dropout - Linear

Dense-layer slot (input c channels, bottleneck width b, growth g):
    S path  BN - ReLU - Conv 1x1x1 (c -> b)        gated by ``gate_s``
    T path  BN - ReLU - Conv 3x1x1 (c -> b)        gated by ``gate_t``
    sum of the kept paths, then the shared BN - ReLU - Conv 1x3x3 (b -> g); the g new channels are
    concatenated to the block's features.
Transition slot (input c channels, output c // 2):
    S path  BN - ReLU - Conv 1x1x1 (c -> c // 2)   gated by ``gate_s``
    T path  BN - ReLU - Conv 3x1x1 (c -> c // 2)   gated by ``gate_t``
    sum, then AvgPool (1, 2, 2) (space only).

Unit ``none`` (both paths dropped) is a clean skip that computes no learned layer:
- dense layer: its g new channels are zeros (nothing of the layer is computed, not even the shared
  1x3x3 conv; the original code fed zeros into that conv and got BatchNorm-bias features instead);
- transition: the parameter-free reduction of the input, ``skip(x)`` = average of each group of
  ``c / (c // 2)`` consecutive channels (adaptive average over channels if c is odd), then the same
  AvgPool (1, 2, 2). This is the analogue of the identity skip of a residual block: the transition must
  still halve channels and space for the next block, and returning zeros instead would cut every
  later layer off from the input (the whole sub-network would output a constant).

Relaxed mode is made consistent with these hard units: with per-sample multipliers m = 1 - z,
- dense layer: ``out = conv1x3x3(m_s * S(x) + m_t * T(x)) * (1 - z_s * z_t)``,
- transition:  ``out = pool(m_s * S(x) + m_t * T(x) + z_s * z_t * skip(x))``,
which equal the hard units exactly when z is 0 or 1 (the factor ``1 - z_s z_t`` is an addition to the
paper, which only scales the paths; it matters only when both paths are dropped at once).

Depth gate (``model.depth_gate``, off by default; not in the paper): each slot gets a third gate
``gate_d`` that multiplies the whole slot's contribution. Hard-dropped, the slot is unit ``none``
(dense: zero new channels; transition: ``pool(skip(x))``) and nothing of it is computed. Relaxed, with
``m_d = 1 - z_d`` per sample, the slot's relaxed output is mixed with its ``none`` output:
- dense layer: ``out = m_d * conv1x3x3(m_s * S(x) + m_t * T(x)) * (1 - z_s * z_t)``
  (the ``none`` output is zero);
- transition:  ``out = pool(m_d * (m_s * S(x) + m_t * T(x) + z_s * z_t * skip(x)) + (1 - m_d) * skip(x))
  = pool(m_d * (m_s * S(x) + m_t * T(x)) + z_slot * skip(x))`` with ``z_slot = 1 - m_d (1 - z_s z_t)``,
  the relaxed indicator of "the slot is none".
At ``m_d = 1`` these are the formulas above (exactly: a float 1.0 multiplies nothing), at ``m_d = 0`` the
unit ``none``; so relaxed == hard at saturated logits for every combination of the three gates.

Receptive fields: the template describes itself (``FusionTemplate.rf_graph``, ``DenseBlock.rf_graph``,
``DenseSlot.rf_nodes``, ``TransitionSlot.rf_nodes``; the algebra is ``fusion3d.models.rf_graph``).

The presets (``tiny``, ``small``, ``densenet121_3d``) are registered by ``fusion3d.models.presets``;
``fusion3d.models.registry.build_model`` builds a template from a ``ModelConfig``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from functools import partial

import torch
from torch import nn

from fusion3d.models.convs import ConvStem, MaxPool3d, conv1x1x1, conv1xkxk, conv3x1x1
from fusion3d.models.network import (
    ForwardStep,
    GatedSlot,
    Multiplier,
    SlotNetwork,
    _both_dropped,
    _scale,
    channel_pool,
    init_weights,
    module_rf_nodes,
    rf_sequence,
)
from fusion3d.models.registry import build_model
from fusion3d.models.rf_graph import Mark, Par
from fusion3d.models.spec import Arch
from fusion3d.models.strategy import StrategySpec

# ``build_model`` (now ``fusion3d.models.registry.build_model``) and ``channel_pool`` (now
# ``fusion3d.models.network.channel_pool``) are re-exported here for older imports.
__all__ = [
    "DenseBlock",
    "DenseSlot",
    "FusionTemplate",
    "Slot",
    "TransitionSlot",
    "build_model",
    "channel_pool",
]


def _path(in_channels: int, out_channels: int, temporal: bool, impl: str) -> nn.Sequential:
    conv = (
        conv3x1x1(in_channels, out_channels, impl=impl)
        if temporal
        else conv1x1x1(in_channels, out_channels, impl=impl)
    )
    return nn.Sequential(OrderedDict(norm=nn.BatchNorm3d(in_channels), relu=nn.ReLU(inplace=True), conv=conv))


class Slot(GatedSlot):
    """Base of the template's two slot kinds: pre-activation paths BN - ReLU - conv (1x1x1 / 3x1x1)."""

    def __init__(
        self,
        name: str,
        in_channels: int,
        path_channels: int,
        drop_init: float,
        temperature: float,
        impl: str,
        depth_gate: bool = False,
    ) -> None:
        super().__init__(
            name,
            _path(in_channels, path_channels, temporal=False, impl=impl),
            _path(in_channels, path_channels, temporal=True, impl=impl),
            drop_init,
            temperature,
            depth_gate=depth_gate,
        )
        self.in_channels = in_channels
        self.path_channels = path_channels


class DenseSlot(Slot):
    """A dense layer: returns its ``growth`` new channels."""

    kind = "dense"

    def __init__(
        self,
        name: str,
        in_channels: int,
        bottleneck: int,
        growth: int,
        drop_init: float,
        temperature: float,
        impl: str,
        depth_gate: bool = False,
    ) -> None:
        super().__init__(name, in_channels, bottleneck, drop_init, temperature, impl, depth_gate)
        self.out_channels = growth
        self.shared = nn.Sequential(
            OrderedDict(
                norm=nn.BatchNorm3d(bottleneck),
                relu=nn.ReLU(inplace=True),
                conv=conv1xkxk(bottleneck, growth, 3, impl=impl),
            )
        )

    def computed_modules(self, keep_s: bool, keep_t: bool) -> list[nn.Module]:
        mods = super().computed_modules(keep_s, keep_t)
        return mods + [self.shared] if mods else mods

    def rf_nodes(self, keep_s: bool, keep_t: bool) -> list:
        """``Par([identity, new-channel branch])``: what the block's running feature map becomes (the
        layer's input concatenated with its new channels). The new-channel branch is the kept path
        (S: 1x1x1, T: 3x1x1) then the shared 1x3x3 conv; with both paths kept, ``Par([S, T])`` then the
        shared conv. Unit ``none`` adds no branch (its new channels are zeros): no node."""
        paths = self.rf_paths(keep_s, keep_t)
        if not paths:
            return []
        new = [*(paths[0] if len(paths) == 1 else [Par(paths)]), *module_rf_nodes(self.shared)]
        return [Par(((), new))]

    def gated_forward(
        self, x: torch.Tensor | tuple[torch.Tensor, ...], md: Multiplier, ms: Multiplier, mt: Multiplier
    ) -> torch.Tensor:
        """The layer's new channels; ``x`` is its input, or the block's features to concatenate first
        (``DenseBlock`` under activation checkpointing: the concatenation is then recomputed too)."""
        if isinstance(x, tuple):
            x = torch.cat(x, 1)
        h, ms, mt = self._kept_paths(x, md, ms, mt)
        if h is None:  # unit none (both paths or the depth gate dropped): zeros, nothing computed
            n, _, t, hh, ww = x.shape
            return x.new_zeros(n, self.out_channels, t, hh, ww)
        out = self.shared(h)
        both = _both_dropped(ms, mt)
        if isinstance(both, torch.Tensor):
            out = _scale(out, 1.0 - both)
        if isinstance(md, torch.Tensor):  # relaxed depth gate: m_d * out + (1 - m_d) * zeros
            out = _scale(out, md)
        return out


class TransitionSlot(Slot):
    """A transition: halves channels (``c // 2``), pools space by 2, keeps time."""

    kind = "transition"

    def __init__(
        self,
        name: str,
        in_channels: int,
        drop_init: float,
        temperature: float,
        impl: str,
        depth_gate: bool = False,
    ) -> None:
        super().__init__(name, in_channels, in_channels // 2, drop_init, temperature, impl, depth_gate)
        self.out_channels = in_channels // 2
        self.pool = nn.AvgPool3d(kernel_size=(1, 2, 2), stride=(1, 2, 2))

    def rf_nodes(self, keep_s: bool, keep_t: bool) -> list:
        """``Par`` over the kept paths (1x1x1 / 3x1x1), nothing for unit none (the channel-average skip
        is pointwise), then the AvgPool (1, 2, 2)."""
        paths = self.rf_paths(keep_s, keep_t)
        return [*([Par(paths)] if paths else []), *module_rf_nodes(self.pool)]

    def gated_forward(self, x: torch.Tensor, md: Multiplier, ms: Multiplier, mt: Multiplier) -> torch.Tensor:
        h, ms, mt = self._kept_paths(x, md, ms, mt)
        both = _both_dropped(ms, mt)  # 1.0 when the depth gate dropped (ms = mt = None)
        if isinstance(md, torch.Tensor):  # relaxed depth gate: pool(m_d * h + z_slot * skip)
            if h is not None:
                h = _scale(h, md)
            both = 1.0 - md * (1.0 - both)  # z_slot = 1 - m_d (1 - z_s z_t), a tensor
        if isinstance(both, torch.Tensor) or both == 1.0:
            skip = _scale(channel_pool(x, self.out_channels), both)
            h = skip if h is None else h + skip
        return self.pool(h)


def _dense_step(layer: DenseSlot, feats: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """One dense layer as a forward step: the block's features so far -> with the layer's new channels."""
    return (*feats, layer(torch.cat(feats, 1) if len(feats) > 1 else feats[0]))


def _block_start(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    return (x,)


def _block_end(feats: tuple[torch.Tensor, ...]) -> torch.Tensor:
    return torch.cat(feats, 1)


class DenseBlock(nn.Module):
    """Dense layers ``layer1..layerL``; each sees the concatenation of all earlier features."""

    def __init__(self, layers: Sequence[DenseSlot]) -> None:
        super().__init__()
        for i, layer in enumerate(layers):
            self.add_module(f"layer{i + 1}", layer)

    def rf_graph(self, units: Mapping[str, str]) -> list:
        """The block's receptive-field graph: its layers in order, each followed by its ``Mark``
        (``units``: {slot name: unit}, ``SlotNetwork.rf_units``)."""
        return rf_sequence(self.children(), units)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [x]
        for layer in self.children():
            if len(feats) == 1:
                feats.append(layer(x))
            elif layer.checkpointing_now():
                # the layer concatenates under its checkpoint: the backward keeps the block's features,
                # not every layer's concatenated input (the memory-efficient DenseNet's saving)
                feats.append(layer(tuple(feats)))
            else:
                feats.append(layer(torch.cat(feats, 1)))
        return torch.cat(feats, 1)


class FusionTemplate(SlotNetwork):
    """The v-DropPath fusion template (see the module docstring).

    Gate modes are set on the whole template with ``set_gate_mode`` / ``apply_strategy``; the
    current one is ``gate_mode``.
    """

    def __init__(
        self,
        arch: Arch,
        num_classes: int,
        drop_init: float = 0.1,
        temperature: float = 0.2,
        conv_impl: str = "auto",
        in_channels: int = 3,
        depth_gate: bool = False,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.arch = arch
        self.depth_gate = bool(depth_gate)
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.conv_impl = conv_impl
        kt, kh, kw = arch.stem_kernel
        stem: OrderedDict[str, nn.Module] = OrderedDict(
            conv=nn.Conv3d(
                in_channels,
                arch.stem_channels,
                arch.stem_kernel,
                stride=(1, arch.stem_stride, arch.stem_stride),
                padding=(kt // 2, kh // 2, kw // 2),
                bias=False,
            ),
            norm=nn.BatchNorm3d(arch.stem_channels),
            relu=nn.ReLU(inplace=True),
        )
        if arch.stem_pool:
            stem["pool"] = MaxPool3d(kernel_size=3, stride=(1, 2, 2), padding=1)
        self.stem = ConvStem(stem)

        features: OrderedDict[str, nn.Module] = OrderedDict()
        slots: list[Slot] = []
        c = arch.stem_channels
        for b, n_layers in enumerate(arch.blocks, start=1):
            layers = []
            for i in range(1, n_layers + 1):
                layers.append(
                    DenseSlot(
                        f"block{b}.layer{i}",
                        c,
                        arch.bottleneck,
                        arch.growth,
                        drop_init,
                        temperature,
                        conv_impl,
                        depth_gate,
                    )
                )
                c += arch.growth
            features[f"block{b}"] = DenseBlock(layers)
            slots.extend(layers)
            if b < len(arch.blocks):
                tr = TransitionSlot(f"transition{b}", c, drop_init, temperature, conv_impl, depth_gate)
                features[f"transition{b}"] = tr
                slots.append(tr)
                c = tr.out_channels
        self.features = nn.Sequential(features)
        self.feature_channels = c
        self.head = nn.Sequential(
            OrderedDict(
                norm=nn.BatchNorm3d(c),
                relu=nn.ReLU(inplace=True),
                pool=nn.AdaptiveAvgPool3d(1),
                flatten=nn.Flatten(1),
                dropout=nn.Dropout(arch.dropout),
                fc=nn.Linear(c, num_classes),
            )
        )
        self._init_slots(slots)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Kaiming-normal conv weights, BatchNorm gamma = 1 and beta = 0 (not gamma = 0 as the
        original code did), zero classifier bias. Gate logits are left at their initial value."""
        init_weights(self)

    # ---- forward ---------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, T, H, W) clips -> (N, num_classes) logits."""
        return self.head(self.features(self.stem(x)))

    def forward_steps(self) -> list[ForwardStep]:
        """``forward`` cut at every slot (``SlotNetwork.forward_steps``): the stem; per dense block its
        start, each layer (the block's features so far as a tuple, one tensor more per layer) and the
        concatenation at its end; each transition; the head."""
        steps = [ForwardStep(0, self.stem)]
        k = 0
        for child in self.features.children():
            if isinstance(child, DenseBlock):
                steps.append(ForwardStep(k, _block_start))
                for layer in child.children():
                    k += 1
                    steps.append(ForwardStep(k, partial(_dense_step, layer)))
                steps.append(ForwardStep(k, _block_end))
            else:
                k += isinstance(child, GatedSlot)
                steps.append(ForwardStep(k, child))
        steps.append(ForwardStep(k, self.head))
        return steps

    def rf_graph(self, strategy: StrategySpec | None = None) -> list:
        """The static receptive-field graph of a sub-network (``fusion3d.models.rf_graph``; ``None`` =
        the full template, every path, as in ``fusion3d.models.macs``): the stem conv (and pool), the
        dense blocks and transitions (each slot followed by its ``Mark``), then ``Mark("head")``.
        Kernels, strides and paddings are read from the modules. The row of a dense slot describes the
        block's running feature map after that layer (what the next layer sees); the head row is one
        position of the last feature map (the global average pool then mixes every position)."""
        units = self.rf_units(strategy)
        return [
            *module_rf_nodes(self.stem),
            *rf_sequence(self.features.children(), units),
            Mark("head", "", "head"),
        ]

    def extra_repr(self) -> str:
        a = self.arch
        return (
            f"preset={a.name}, blocks={list(a.blocks)}, growth={a.growth}, bottleneck={a.bottleneck}, "
            f"slots={self.num_slots}, classes={self.num_classes}, gate_mode={self.gate_mode}, "
            f"conv_impl={self.conv_impl}" + (", depth_gate=True" if self.depth_gate else "")
        )

    def summary(self) -> str:
        """One line per slot: index, name, kind, channels, unit in force, drop probabilities (and the
        depth gate's, ``p_D``, when the template has depth gates)."""
        a = self.arch
        conv = self.stem.conv
        stem = (
            f"Conv {'x'.join(map(str, conv.kernel_size))} {conv.in_channels}->{conv.out_channels} "
            f"stride {tuple(conv.stride)} - BN - ReLU"
            + (" - MaxPool 3x3x3 stride (1, 2, 2)" if a.stem_pool else "")
        )
        depth = self.depth_drop_probs()
        lines = [
            f"FusionTemplate({self.extra_repr()})",
            f"  stem: {stem}",
            f"  {'slot':>4s}  {'name':<16s} {'kind':<10s} {'channels':<12s} {'unit':<5s} {'p_S':>6s} {'p_T':>6s}"
            + (f" {'p_D':>6s}" if depth is not None else ""),
        ]
        probs = self.drop_probs().tolist()
        for i, (slot, (ps, pt)) in enumerate(zip(self._slots, probs)):
            ch = (
                f"{slot.in_channels}->+{slot.out_channels}"
                if slot.kind == "dense"
                else f"{slot.in_channels}->{slot.out_channels}"
            )
            lines.append(
                f"  {i:>4d}  {slot.name:<16s} {slot.kind:<10s} {ch:<12s} {slot.unit:<5s} {ps:6.3f} {pt:6.3f}"
                + (f" {float(depth[i]):6.3f}" if depth is not None else "")
            )
        fc = self.head.fc
        lines.append(
            f"  head: BN - ReLU - global avg pool - Dropout({a.dropout:g}) - Linear {fc.in_features}->{fc.out_features}"
        )
        return "\n".join(lines)
