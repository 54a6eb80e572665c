"""The fusion template: an inflated DenseNet whose dense layers and transitions are *slots*.

Layout (METHOD.md sections 2-3), temporal stride 1 everywhere:

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
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from fusion3d.models.convs import FactorConv3d, conv1x1x1, conv1xkxk, conv3x1x1
from fusion3d.models.gate import GATE_MODES, Gate
from fusion3d.models.spec import Arch, ModelConfig, resolve_arch
from fusion3d.models.strategy import Strategy, as_strategy, unit_from_keep

Multiplier = torch.Tensor | float | None


def _path(in_channels: int, out_channels: int, temporal: bool, impl: str) -> nn.Sequential:
    conv = conv3x1x1(in_channels, out_channels, impl=impl) if temporal else conv1x1x1(in_channels, out_channels, impl=impl)
    return nn.Sequential(OrderedDict(norm=nn.BatchNorm3d(in_channels), relu=nn.ReLU(inplace=True), conv=conv))


def _scale(y: torch.Tensor, m: torch.Tensor | float) -> torch.Tensor:
    if isinstance(m, torch.Tensor):
        return y * m.to(y.dtype).view(-1, *([1] * (y.dim() - 1)))
    return y


def _drop_var(m: Multiplier) -> torch.Tensor | float:
    """z = 1 - m, with None (dropped) -> 1.0 and 1.0 (kept) -> 0.0."""
    if m is None:
        return 1.0
    if isinstance(m, torch.Tensor):
        return 1.0 - m
    return 0.0


def _both_dropped(ms: Multiplier, mt: Multiplier) -> torch.Tensor | float:
    """z_s * z_t: 1.0 when both paths are dropped, 0.0 when one is kept, a tensor when relaxed."""
    zs, zt = _drop_var(ms), _drop_var(mt)
    if (isinstance(zs, float) and zs == 0.0) or (isinstance(zt, float) and zt == 0.0):
        return 0.0
    return zs * zt


class Slot(nn.Module):
    """Base of the two slot kinds: two gated paths (``path_s``, ``path_t``) and their gates."""

    kind = "slot"

    def __init__(self, name: str, in_channels: int, path_channels: int, drop_init: float, temperature: float,
                 impl: str) -> None:
        super().__init__()
        self.name = name
        self.in_channels = in_channels
        self.path_channels = path_channels
        self.path_s = _path(in_channels, path_channels, temporal=False, impl=impl)
        self.path_t = _path(in_channels, path_channels, temporal=True, impl=impl)
        self.gate_s = Gate(drop_init, temperature)
        self.gate_t = Gate(drop_init, temperature)

    @property
    def unit(self) -> str:
        """The fixed unit in "hard" mode; otherwise "S+ST" (both paths present)."""
        if self.gate_s.mode == "hard" and self.gate_t.mode == "hard":
            return unit_from_keep(self.gate_s.keep, self.gate_t.keep)
        return "S+ST"

    def computed_modules(self, keep_s: bool, keep_t: bool) -> list[nn.Module]:
        """The modules whose parameters a sub-network with this unit uses."""
        mods: list[nn.Module] = []
        if keep_s:
            mods.append(self.path_s)
        if keep_t:
            mods.append(self.path_t)
        return mods

    def _paths(self, x: torch.Tensor) -> tuple[torch.Tensor | None, Multiplier, Multiplier]:
        ms = self.gate_s.draw(x.shape[0], x.device)
        mt = self.gate_t.draw(x.shape[0], x.device)
        h = None
        if ms is not None:
            h = _scale(self.path_s(x), ms)
        if mt is not None:
            t = _scale(self.path_t(x), mt)
            h = t if h is None else h + t
        return h, ms, mt

    def extra_repr(self) -> str:
        return (f"name={self.name}, unit={self.unit}, mode={self.gate_s.mode}, "
                f"p_S={self.gate_s.drop_prob:.3f}, p_T={self.gate_t.drop_prob:.3f}")


class DenseSlot(Slot):
    """A dense layer: returns its ``growth`` new channels."""

    kind = "dense"

    def __init__(self, name: str, in_channels: int, bottleneck: int, growth: int, drop_init: float,
                 temperature: float, impl: str) -> None:
        super().__init__(name, in_channels, bottleneck, drop_init, temperature, impl)
        self.out_channels = growth
        self.shared = nn.Sequential(OrderedDict(norm=nn.BatchNorm3d(bottleneck), relu=nn.ReLU(inplace=True),
                                                conv=conv1xkxk(bottleneck, growth, 3, impl=impl)))

    def computed_modules(self, keep_s: bool, keep_t: bool) -> list[nn.Module]:
        mods = super().computed_modules(keep_s, keep_t)
        return mods + [self.shared] if mods else mods

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, ms, mt = self._paths(x)
        if h is None:  # unit none: zeros, nothing computed
            n, _, t, hh, ww = x.shape
            return x.new_zeros(n, self.out_channels, t, hh, ww)
        out = self.shared(h)
        both = _both_dropped(ms, mt)
        if isinstance(both, torch.Tensor):
            out = _scale(out, 1.0 - both)
        return out


def channel_pool(x: torch.Tensor, out_channels: int) -> torch.Tensor:
    """Average groups of consecutive channels: (N, C, ...) -> (N, out_channels, ...), parameter-free."""
    n, c, *rest = x.shape
    if c % out_channels == 0:
        return x.reshape(n, out_channels, c // out_channels, *rest).mean(2)
    y = F.adaptive_avg_pool1d(x.movedim(1, -1).reshape(-1, 1, c), out_channels)
    return y.reshape(n, *rest, out_channels).movedim(-1, 1)


class TransitionSlot(Slot):
    """A transition: halves channels (``c // 2``), pools space by 2, keeps time."""

    kind = "transition"

    def __init__(self, name: str, in_channels: int, drop_init: float, temperature: float, impl: str) -> None:
        super().__init__(name, in_channels, in_channels // 2, drop_init, temperature, impl)
        self.out_channels = in_channels // 2
        self.pool = nn.AvgPool3d(kernel_size=(1, 2, 2), stride=(1, 2, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, ms, mt = self._paths(x)
        both = _both_dropped(ms, mt)
        if isinstance(both, torch.Tensor) or both == 1.0:
            skip = _scale(channel_pool(x, self.out_channels), both)
            h = skip if h is None else h + skip
        return self.pool(h)


class DenseBlock(nn.Module):
    """Dense layers ``layer1..layerL``; each sees the concatenation of all earlier features."""

    def __init__(self, layers: Sequence[DenseSlot]) -> None:
        super().__init__()
        for i, layer in enumerate(layers):
            self.add_module(f"layer{i + 1}", layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [x]
        for layer in self.children():
            feats.append(layer(torch.cat(feats, 1) if len(feats) > 1 else x))
        return torch.cat(feats, 1)


class FusionTemplate(nn.Module):
    """The v-DropPath fusion template (see the module docstring).

    Gate modes are set on the whole template with ``set_gate_mode`` / ``apply_strategy``; the
    current one is ``gate_mode``.
    """

    def __init__(self, arch: Arch, num_classes: int, drop_init: float = 0.1, temperature: float = 0.2,
                 conv_impl: str = "auto", in_channels: int = 3) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.arch = arch
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.conv_impl = conv_impl
        kt, kh, kw = arch.stem_kernel
        stem: OrderedDict[str, nn.Module] = OrderedDict(
            conv=nn.Conv3d(in_channels, arch.stem_channels, arch.stem_kernel, stride=(1, arch.stem_stride, arch.stem_stride),
                           padding=(kt // 2, kh // 2, kw // 2), bias=False),
            norm=nn.BatchNorm3d(arch.stem_channels),
            relu=nn.ReLU(inplace=True),
        )
        if arch.stem_pool:
            stem["pool"] = nn.MaxPool3d(kernel_size=3, stride=(1, 2, 2), padding=1)
        self.stem = nn.Sequential(stem)

        features: OrderedDict[str, nn.Module] = OrderedDict()
        slots: list[Slot] = []
        c = arch.stem_channels
        for b, n_layers in enumerate(arch.blocks, start=1):
            layers = []
            for i in range(1, n_layers + 1):
                layers.append(DenseSlot(f"block{b}.layer{i}", c, arch.bottleneck, arch.growth, drop_init,
                                        temperature, conv_impl))
                c += arch.growth
            features[f"block{b}"] = DenseBlock(layers)
            slots.extend(layers)
            if b < len(arch.blocks):
                tr = TransitionSlot(f"transition{b}", c, drop_init, temperature, conv_impl)
                features[f"transition{b}"] = tr
                slots.append(tr)
                c = tr.out_channels
        self.features = nn.Sequential(features)
        self.feature_channels = c
        self.head = nn.Sequential(OrderedDict(
            norm=nn.BatchNorm3d(c), relu=nn.ReLU(inplace=True), pool=nn.AdaptiveAvgPool3d(1),
            flatten=nn.Flatten(1), dropout=nn.Dropout(arch.dropout), fc=nn.Linear(c, num_classes)))
        self._slots: list[Slot] = slots  # a plain list: the modules are registered under features
        self.gate_mode = "off"
        self._mode_before_hard = "off"
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Kaiming-normal conv weights, BatchNorm gamma = 1 and beta = 0 (not gamma = 0 as the
        original code did), zero classifier bias. Gate logits are left at their initial value."""
        for m in self.modules():
            if isinstance(m, (nn.Conv3d, FactorConv3d)):
                nn.init.kaiming_normal_(m.weight)
            elif isinstance(m, nn.BatchNorm3d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    # ---- forward ---------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, T, H, W) clips -> (N, num_classes) logits."""
        return self.head(self.features(self.stem(x)))

    # ---- slots and gates -------------------------------------------------------------------
    @property
    def slots(self) -> list[Slot]:
        return list(self._slots)

    @property
    def num_slots(self) -> int:
        return len(self._slots)

    @property
    def slot_names(self) -> list[str]:
        return [s.name for s in self._slots]

    def gates(self) -> list[Gate]:
        """All gates, ``[slot0.S, slot0.T, slot1.S, ...]``."""
        return [g for s in self._slots for g in (s.gate_s, s.gate_t)]

    def set_gate_mode(self, mode: str, generator: torch.Generator | None = None) -> None:
        """Put every gate in ``mode`` ("off", "relaxed", "hard", "sample"). "hard" keeps each gate's
        current keep decision (use ``apply_strategy`` to set them); any other mode resets the keep
        decisions to "keep" (so ``current_strategy()`` is all S+ST). ``generator`` (optional) is the
        torch.Generator the gates draw from (None keeps each gate's current one; default global RNG)."""
        if mode not in GATE_MODES:
            raise ValueError(f"gate mode must be one of {', '.join(GATE_MODES)}, got {mode!r}")
        if mode == "hard" and self.gate_mode != "hard":
            self._mode_before_hard = self.gate_mode
        for g in self.gates():
            g.set_mode(mode, keep=None if mode == "hard" else True, generator=generator)
        self.gate_mode = mode

    def apply_strategy(self, strategy: Strategy | str | Sequence[str] | None) -> None:
        """Hard mode with one fixed unit per slot (dropped paths are not computed). ``None`` goes
        back to the mode in force before the first ``apply_strategy`` (``"off"`` by default)."""
        if strategy is None:
            self.set_gate_mode(self._mode_before_hard)
            return
        strategy = as_strategy(strategy, self.num_slots)
        if self.gate_mode != "hard":
            self._mode_before_hard = self.gate_mode
        for slot, (ks, kt) in zip(self._slots, strategy.keep()):
            slot.gate_s.set_mode("hard", keep=ks)
            slot.gate_t.set_mode("hard", keep=kt)
        self.gate_mode = "hard"

    def current_strategy(self) -> Strategy:
        """The units in force: the fixed ones in hard mode, all S+ST otherwise."""
        return Strategy(tuple(s.unit for s in self._slots))

    def last_sampled_strategy(self) -> Strategy | None:
        """The sub-network drawn by the latest forward call in "sample" mode (None before any)."""
        keeps = [(s.gate_s.last_keep, s.gate_t.last_keep) for s in self._slots]
        if any(k is None for pair in keeps for k in pair):
            return None
        return Strategy.from_keep(keeps)

    def drop_logits(self) -> list[nn.Parameter]:
        """The drop-logit parameters (for their own optimizer group, weight decay 0)."""
        return [g.logit for g in self.gates()]

    def network_parameters(self) -> list[nn.Parameter]:
        """Every parameter that is not a drop logit."""
        ids = {id(p) for p in self.drop_logits()}
        return [p for p in self.parameters() if id(p) not in ids]

    def drop_probs(self) -> torch.Tensor:
        """(num_slots, 2) drop probabilities, columns [S, T], detached, on the CPU."""
        logits = torch.stack([torch.stack([s.gate_s.logit, s.gate_t.logit]) for s in self._slots])
        return torch.sigmoid(logits.detach().float()).cpu()

    def gated_weights(self) -> list[tuple[nn.Parameter, nn.Parameter]]:
        """(drop logit, gated conv weight) for every path, ``[slot0.S, slot0.T, slot1.S, ...]``."""
        return [(g.logit, path.conv.weight) for s in self._slots
                for g, path in ((s.gate_s, s.path_s), (s.gate_t, s.path_t))]

    def sample_strategy(self, generator: torch.Generator | None = None) -> Strategy:
        """Keep each path independently with probability 1 - p (hard Bernoulli). Uniforms come from
        ``generator`` (a CPU torch.Generator) or torch's global CPU RNG."""
        u = torch.rand(self.num_slots, 2, generator=generator)
        return Strategy.from_keep((u >= self.drop_probs()).tolist())

    def most_probable_strategy(self) -> Strategy:
        """Each path kept iff its keep_prob >= 0.5 (the mode of the independent Bernoullis)."""
        return Strategy.from_keep((self.drop_probs() <= 0.5).tolist())

    def extra_repr(self) -> str:
        a = self.arch
        return (f"preset={a.name}, blocks={list(a.blocks)}, growth={a.growth}, bottleneck={a.bottleneck}, "
                f"slots={self.num_slots}, classes={self.num_classes}, gate_mode={self.gate_mode}, "
                f"conv_impl={self.conv_impl}")

    def summary(self) -> str:
        """One line per slot: index, name, kind, channels, unit in force, drop probabilities."""
        a = self.arch
        conv = self.stem.conv
        stem = (f"Conv {'x'.join(map(str, conv.kernel_size))} {conv.in_channels}->{conv.out_channels} "
                f"stride {tuple(conv.stride)} - BN - ReLU" + (" - MaxPool 3x3x3 stride (1, 2, 2)" if a.stem_pool else ""))
        lines = [f"FusionTemplate({self.extra_repr()})", f"  stem: {stem}",
                 f"  {'slot':>4s}  {'name':<16s} {'kind':<10s} {'channels':<12s} {'unit':<5s} {'p_S':>6s} {'p_T':>6s}"]
        probs = self.drop_probs().tolist()
        for i, (slot, (ps, pt)) in enumerate(zip(self._slots, probs)):
            ch = f"{slot.in_channels}->+{slot.out_channels}" if slot.kind == "dense" else f"{slot.in_channels}->{slot.out_channels}"
            lines.append(f"  {i:>4d}  {slot.name:<16s} {slot.kind:<10s} {ch:<12s} {slot.unit:<5s} {ps:6.3f} {pt:6.3f}")
        fc = self.head.fc
        lines.append(f"  head: BN - ReLU - global avg pool - Dropout({a.dropout:g}) - Linear {fc.in_features}->{fc.out_features}")
        return "\n".join(lines)

    def tree(self) -> str:
        """The full ``nn.Module`` tree (what ``print`` shows for other modules)."""
        return super().__repr__()

    def __repr__(self) -> str:
        return self.summary()


def build_model(cfg: ModelConfig, num_classes: int | None = None) -> FusionTemplate:
    """The template described by ``cfg``; ``num_classes`` is used when ``cfg.num_classes`` is 0."""
    n = cfg.num_classes or num_classes
    if not n:
        raise ValueError("model.num_classes is 0 (take from the dataset) and no num_classes was given")
    return FusionTemplate(resolve_arch(cfg), int(n), drop_init=cfg.drop_init, temperature=cfg.temperature,
                          conv_impl=cfg.conv_impl)
