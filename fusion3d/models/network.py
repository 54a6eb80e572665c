"""What every network with gated fusion slots shares: the fusion template and the backbones.

A *slot* (``GatedSlot``) owns two paths, ``path_s`` (spatial, S) and ``path_t`` (temporal, T), each a
module with a ``conv`` attribute (the gated convolution the regulariser weighs), and one ``Gate`` per
path. ``GatedSlot._paths`` computes the kept paths and sums them; what a slot does with that sum is
the subclass's business (a dense layer, a transition, a residual block, an inverted residual).

A ``SlotNetwork`` lists its slots in depth order in ``self._slots`` (a plain list; the modules are
registered wherever the network keeps them) and gets from this base everything the trainer, the
sampler and the analyzer use: gate modes, ``apply_strategy``, drop probabilities, sampling a
strategy, the drop-logit parameter group. ``in_channels`` and ``num_classes`` are set by subclasses.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from fusion3d.models.gate import GATE_MODES, Gate
from fusion3d.models.strategy import Strategy, as_strategy, unit_from_keep

Multiplier = torch.Tensor | float | None


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



class GatedSlot(nn.Module):
    """Two gated paths (``path_s``, ``path_t``) and their gates; subclasses define ``forward``."""

    kind = "slot"

    def __init__(self, name: str, path_s: nn.Module, path_t: nn.Module, drop_init: float,
                 temperature: float) -> None:
        super().__init__()
        self.name = name
        self.path_s = path_s
        self.path_t = path_t
        self.gate_s = Gate(drop_init, temperature)
        self.gate_t = Gate(drop_init, temperature)

    @property
    def unit(self) -> str:
        """The fixed unit in "hard" mode; otherwise "S+ST" (both paths present)."""
        if self.gate_s.mode == "hard" and self.gate_t.mode == "hard":
            return unit_from_keep(self.gate_s.keep, self.gate_t.keep)
        return "S+ST"

    def computed_modules(self, keep_s: bool, keep_t: bool) -> list[nn.Module]:
        """The modules whose parameters a sub-network with this unit uses (subclasses add theirs)."""
        mods: list[nn.Module] = []
        if keep_s:
            mods.append(self.path_s)
        if keep_t:
            mods.append(self.path_t)
        return mods

    def _paths(self, x: torch.Tensor) -> tuple[torch.Tensor | None, Multiplier, Multiplier]:
        """Sum of the kept paths (None if both are dropped) and the two gates' multipliers."""
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


class SlotNetwork(nn.Module):
    """Base of the template and the backbones: a network whose slots (in depth order) are in
    ``self._slots``. Subclasses call ``_init_slots(slots)`` once their modules exist."""

    in_channels: int = 3
    num_classes: int = 0

    def _init_slots(self, slots: Sequence[GatedSlot]) -> None:
        self._slots: list[GatedSlot] = list(slots)  # a plain list: the modules are registered elsewhere
        self.gate_mode = "off"
        self._mode_before_hard = "off"

    # ---- slots and gates -------------------------------------------------------------------
    @property
    def slots(self) -> list[GatedSlot]:
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

