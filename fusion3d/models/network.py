"""What every network with gated fusion slots shares: the fusion template and the backbones.

A *slot* (``GatedSlot``) owns two paths, ``path_s`` (spatial, S) and ``path_t`` (temporal, T), each a
module with a ``conv`` attribute (the gated convolution the regulariser weighs), and one ``Gate`` per
path. ``GatedSlot._paths`` computes the kept paths and sums them; what a slot does with that sum is
the subclass's business (a dense layer, a transition, a residual block, an inverted residual).

A ``SlotNetwork`` lists its slots in depth order in ``self._slots`` (a plain list; the modules are
registered wherever the network keeps them) and gets from this base everything the trainer, the
sampler and the analyzer use: gate modes, ``apply_strategy``, drop probabilities, sampling a
strategy, the drop-logit parameter group. ``in_channels`` and ``num_classes`` are set by subclasses.

Depth gate (optional, ``GatedSlot(..., depth_gate=True)``; the template's ``model.depth_gate``): a third
``Gate``, ``gate_d``, that multiplies the whole slot's contribution, so v-DropPath also learns which
layers are needed. A dropped depth gate makes the slot unit ``none`` whatever its S and T gates say
(nothing of the slot is computed). With per-sample multipliers ``m = 1 - z`` the slot is "none" with
the relaxed indicator ``z_slot = 1 - m_d (1 - z_s z_t)`` (1 when the depth gate or both paths drop);
each slot kind folds ``m_d`` into its relaxed formula so that ``m_d`` in {0, 1} gives the hard units
exactly (see ``fusion3d.models.template``). Without the depth gate ``gate_d`` is None and nothing
(parameters, state-dict keys, outputs, random draws) differs from a network built before it existed.

Strategies stay one unit (S / ST / S+ST / none) per slot: ``sample_strategy`` draws the depth gate and
gives ``none`` where it drops; ``apply_strategy`` puts every depth gate in hard *keep* and expresses
``none`` through the S and T gates (both hard-dropped), so a hard sub-network is described by its
strategy alone and computes nothing at a ``none`` slot either way.

Activation checkpointing (``SlotNetwork.set_activation_checkpointing``; ``train.activation_checkpointing``):
a slot in training mode with gradients enabled then runs under ``torch.utils.checkpoint`` and keeps
only its input, recomputing its activations in the backward pass. ``GatedSlot.forward`` draws the
gates' multipliers first, outside the checkpointed part (``draw_gates``), and hands them to
``gated_forward``; the recomputation therefore uses the multipliers of the forward (the same relaxed
drop variables, the same hard decisions) and draws nothing, and the drop logits get their gradient
through the multipliers. The recomputation restores the slot's buffers afterwards, so BatchNorm's
running statistics move once per step, as without checkpointing. The gradients are those of the plain
forward (tested); only memory and time change. A slot may take a tuple of tensors (the template's dense
layers take the block's features and concatenate them under the checkpoint); the gates draw for the
first one's batch.

Forward steps (``SlotNetwork.forward_steps``): the forward pass cut into steps whose output depends on
the units of the first ``slots`` slots only, so that strategies agreeing on their first slots can share
the activations up to there (``fusion3d.engine.prefix``). The template and the backbones describe
theirs; the default is one step, the whole forward (no sharing, still correct).

Receptive fields: every network describes itself for ``fusion3d.models.rf_graph`` with
``rf_graph(strategy)``. The pieces: ``GatedSlot.rf_nodes(keep_s, keep_t)`` (each slot kind, for one
unit), ``module_rf_nodes`` (convs, pools, pointwise layers, ``nn.Sequential`` and modules with their own
``rf_nodes()``) and ``rf_sequence`` (modules in order, a ``Mark`` after each slot). ``SlotNetwork``
itself has no description (``NoReceptiveField``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from fusion3d.models.convs import FactorConv3d
from fusion3d.models.gate import GATE_MODES, Gate
from fusion3d.models.rf_graph import Mark, NoReceptiveField, Op
from fusion3d.models.strategy import Strategy, StrategySpec, as_strategy, strategy_or_full, unit_from_keep
from fusion3d.models.units import FULL_UNIT, NONE_UNIT, UNIT_TO_KEEP

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


@dataclass(frozen=True)
class ForwardStep:
    """One step of ``SlotNetwork.forward_steps``: ``fn`` maps the state after the previous step (the
    clip batch for the first step) to the next state (a tensor or a tuple of tensors; the last step's is
    the logits). Its output depends on the units of the first ``slots`` slots and on nothing else that a
    strategy sets. ``fn`` must not modify its input in place: a state is the input of every continuation
    that shares it."""

    slots: int
    fn: Callable[[Any], Any]


def init_weights(model: nn.Module) -> None:
    """The initialisation every slot network uses: Kaiming-normal conv weights, BatchNorm gamma = 1
    and beta = 0 (not gamma = 0 as the original code did), zero classifier bias."""
    for m in model.modules():
        if isinstance(m, (nn.Conv3d, FactorConv3d)):
            nn.init.kaiming_normal_(m.weight)
        elif isinstance(m, nn.BatchNorm3d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.zeros_(m.bias)


def channel_pool(x: torch.Tensor, out_channels: int) -> torch.Tensor:
    """Average groups of consecutive channels: (N, C, ...) -> (N, out_channels, ...), parameter-free."""
    n, c, *rest = x.shape
    if c % out_channels == 0:
        return x.reshape(n, out_channels, c // out_channels, *rest).mean(2)
    y = F.adaptive_avg_pool1d(x.movedim(1, -1).reshape(-1, 1, c), out_channels)
    return y.reshape(n, *rest, out_channels).movedim(-1, 1)


# ---- receptive-field descriptions (fusion3d.models.rf_graph) -------------------------------------

_RF_WINDOWS = (nn.Conv3d, FactorConv3d, nn.MaxPool3d, nn.AvgPool3d)
_RF_POINTWISE = (nn.BatchNorm3d, nn.ReLU, nn.ReLU6, nn.Identity, nn.Dropout, nn.Flatten)


def module_rf_nodes(module: nn.Module) -> list:
    """The receptive-field nodes of a module that has no slot: an ``Op`` per conv / pooling window, the
    module's own ``rf_nodes()`` when it describes itself (a block that is not a slot, a parameter-free
    skip), the nodes of each child of an ``nn.Sequential`` in order, none for a pointwise layer (BN,
    activations, identity, dropout). Anything else raises ``TypeError`` naming its class, so a graph
    never silently misses a window."""
    if isinstance(module, _RF_WINDOWS):
        return [Op.from_module(module)]
    own = getattr(module, "rf_nodes", None)
    if callable(own) and not isinstance(module, GatedSlot):
        return list(own())
    if isinstance(module, nn.Sequential):
        return [op for m in module for op in module_rf_nodes(m)]
    if isinstance(module, _RF_POINTWISE):
        return []
    raise TypeError(f"no receptive-field rule for {type(module).__name__}")


def rf_sequence(modules: Iterable[nn.Module], units: Mapping[str, str]) -> list:
    """The receptive-field graph of ``modules`` applied in order: a slot gives its ``rf_nodes`` for its
    unit ``units[slot.name]`` then ``Mark(slot name, unit, kind)``; a block of slots (a module with
    ``rf_graph(units)``, such as the template's ``DenseBlock``) its own graph; any other module its
    ``module_rf_nodes``."""
    graph: list = []
    for m in modules:
        if isinstance(m, GatedSlot):
            unit = units[m.name]
            graph += [*m.rf_nodes(*UNIT_TO_KEEP[unit]), Mark(m.name, unit, m.kind)]
        elif callable(getattr(m, "rf_graph", None)):
            graph += m.rf_graph(units)
        else:
            graph += module_rf_nodes(m)
    return graph


@contextlib.contextmanager
def _buffers_kept(module: nn.Module) -> Iterator[None]:
    """Put ``module``'s buffers back as they were on leaving (BatchNorm's running statistics and its
    batch counter, which a recomputation in training mode would otherwise update a second time)."""
    saved = [(b, b.clone()) for b in module.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for b, value in saved:
                b.copy_(value)


def _recompute_contexts(module: nn.Module) -> tuple[contextlib.AbstractContextManager, ...]:
    """``checkpoint``'s ``context_fn``: nothing around the forward, ``_buffers_kept`` around the
    recomputation in the backward pass."""
    return contextlib.nullcontext(), _buffers_kept(module)


class GatedSlot(nn.Module):
    """Two gated paths (``path_s``, ``path_t``) and their gates; subclasses define ``gated_forward``.

    ``depth_gate=True`` adds ``gate_d`` (same initial drop probability and temperature), the slot's
    depth gate (see the module docstring); otherwise ``gate_d`` is None (a plain attribute: no
    parameter, no state-dict key)."""

    kind = "slot"

    def __init__(
        self,
        name: str,
        path_s: nn.Module,
        path_t: nn.Module,
        drop_init: float,
        temperature: float,
        depth_gate: bool = False,
    ) -> None:
        super().__init__()
        self.name = name
        self.path_s = path_s
        self.path_t = path_t
        self.gate_s = Gate(drop_init, temperature)
        self.gate_t = Gate(drop_init, temperature)
        self.gate_d: Gate | None = Gate(drop_init, temperature) if depth_gate else None
        self.activation_checkpointing = False  # SlotNetwork.set_activation_checkpointing

    @property
    def unit(self) -> str:
        """The fixed unit in "hard" mode ("none" whenever the depth gate is hard-dropped); otherwise
        "S+ST" (both paths present)."""
        if self.gate_d is not None and self.gate_d.mode == "hard" and not self.gate_d.keep:
            return NONE_UNIT
        if self.gate_s.mode == "hard" and self.gate_t.mode == "hard":
            return unit_from_keep(self.gate_s.keep, self.gate_t.keep)
        return FULL_UNIT

    def computed_modules(self, keep_s: bool, keep_t: bool) -> list[nn.Module]:
        """The modules whose parameters a sub-network with this unit uses (subclasses add theirs)."""
        mods: list[nn.Module] = []
        if keep_s:
            mods.append(self.path_s)
        if keep_t:
            mods.append(self.path_t)
        return mods

    def depth_weights(self) -> list[nn.Parameter]:
        """The conv weights the depth gate's regulariser term weighs: every convolution of the modules
        a kept slot computes (``computed_modules(True, True)``: both paths' convs and, in a dense layer,
        the shared 1x3x3 conv), in module order; BatchNorm parameters are not weighed (as for S / T)."""
        seen: set[int] = set()
        out: list[nn.Parameter] = []
        for mod in self.computed_modules(True, True):
            for m in mod.modules():
                if (
                    isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, FactorConv3d))
                    and id(m.weight) not in seen
                ):
                    seen.add(id(m.weight))
                    out.append(m.weight)
        return out

    def rf_paths(self, keep_s: bool, keep_t: bool) -> list[list]:
        """The receptive-field nodes of each kept path (S first): the branches of the paths' ``Par``."""
        return [module_rf_nodes(p) for keep, p in ((keep_s, self.path_s), (keep_t, self.path_t)) if keep]

    def rf_nodes(self, keep_s: bool, keep_t: bool) -> list:
        """This slot's receptive-field nodes for one unit (``fusion3d.models.rf_graph``): from the slot's
        input to its output. Each slot kind describes itself; a kind that does not leaves its network's
        description incomplete: ``TypeError`` (not ``NoReceptiveField``, which is for a network without
        any description)."""
        raise TypeError(
            f"no receptive-field rule for the slot kind {type(self).__name__}: it defines no "
            "rf_nodes(keep_s, keep_t)"
        )

    def _draw_depth(self, x: torch.Tensor) -> Multiplier:
        """The depth gate's multiplier for this call: 1.0 without a depth gate (no random draw)."""
        return 1.0 if self.gate_d is None else self.gate_d.draw(x.shape[0], x.device)

    def draw_gates(self, x: torch.Tensor) -> tuple[Multiplier, Multiplier, Multiplier]:
        """The multipliers ``(m_d, m_s, m_t)`` of this call for a batch ``x``, drawn in that order (the
        depth gate first, when there is one). Every gate draws once per call, so in "sample" mode
        ``last_keep`` is always current, also when the depth gate drops the slot."""
        md = self._draw_depth(x)
        ms = self.gate_s.draw(x.shape[0], x.device)
        mt = self.gate_t.draw(x.shape[0], x.device)
        return md, ms, mt

    def forward(self, x: torch.Tensor | tuple[torch.Tensor, ...]) -> torch.Tensor:
        """Draw the gates (``draw_gates``), then ``gated_forward``; the latter under
        ``torch.utils.checkpoint`` when ``checkpointing_now()`` (the module docstring)."""
        md, ms, mt = self.draw_gates(x[0] if isinstance(x, tuple) else x)
        if self.checkpointing_now():
            return checkpoint(
                self.gated_forward,
                x,
                md,
                ms,
                mt,
                use_reentrant=False,
                context_fn=partial(_recompute_contexts, self),
            )
        return self.gated_forward(x, md, ms, mt)

    def checkpointing_now(self) -> bool:
        """Whether a call now runs under ``torch.utils.checkpoint``: activation checkpointing on, training
        mode, gradients enabled."""
        return self.activation_checkpointing and self.training and torch.is_grad_enabled()

    def gated_forward(self, x: torch.Tensor, md: Multiplier, ms: Multiplier, mt: Multiplier) -> torch.Tensor:
        """The slot's output for the multipliers ``draw_gates`` gave; draws nothing. Each slot kind
        defines it (or, like a user's slot, defines ``forward`` itself and never reaches this)."""
        raise NotImplementedError(
            f"{type(self).__name__} defines neither gated_forward nor forward: a slot kind needs one of them"
        )

    def _paths(
        self, x: torch.Tensor, md: Multiplier = 1.0
    ) -> tuple[torch.Tensor | None, Multiplier, Multiplier]:
        """For a slot kind that defines ``forward`` itself: draw the S and T gates, then
        ``_kept_paths`` (``md``: the depth gate's multiplier, ``_draw_depth``). Such a slot is not
        checkpointed (``set_activation_checkpointing`` refuses it); one that defines ``gated_forward``
        is."""
        ms = self.gate_s.draw(x.shape[0], x.device)
        mt = self.gate_t.draw(x.shape[0], x.device)
        return self._kept_paths(x, md, ms, mt)

    def _kept_paths(
        self, x: torch.Tensor, md: Multiplier, ms: Multiplier, mt: Multiplier
    ) -> tuple[torch.Tensor | None, Multiplier, Multiplier]:
        """Sum of the kept paths (None if both are dropped) and the S and T multipliers in force. A
        dropped depth gate (``md`` None) computes no path and returns ``(None, None, None)`` (unit
        none). Draws nothing."""
        if md is None:
            return None, None, None
        h = None
        if ms is not None:
            h = _scale(self.path_s(x), ms)
        if mt is not None:
            t = _scale(self.path_t(x), mt)
            h = t if h is None else h + t
        return h, ms, mt

    def extra_repr(self) -> str:
        s = (
            f"name={self.name}, unit={self.unit}, mode={self.gate_s.mode}, "
            f"p_S={self.gate_s.drop_prob:.3f}, p_T={self.gate_t.drop_prob:.3f}"
        )
        if self.gate_d is not None:
            s += f", p_D={self.gate_d.drop_prob:.3f}"
        return s


class SlotNetwork(nn.Module):
    """Base of the template and the backbones: a network whose slots (in depth order) are in
    ``self._slots``. Subclasses call ``_init_slots(slots)`` once their modules exist."""

    in_channels: int = 3
    num_classes: int = 0

    def summary(self) -> str:
        """One line per slot (subclasses say what); ``print(model)`` shows it."""
        return nn.Module.__repr__(self)

    def tree(self) -> str:
        """The full ``nn.Module`` tree (what ``print`` shows for other modules)."""
        return nn.Module.__repr__(self)

    def __repr__(self) -> str:
        return self.summary()

    def rf_graph(self, strategy: StrategySpec | None = None) -> list:
        """The static receptive-field graph of a sub-network (``fusion3d.models.rf_graph``; ``None`` =
        the full network, S+ST everywhere): one ``Mark`` per slot in slot order and a final ``head``
        mark. Every network describes itself (``FusionTemplate``, ``Backbone``); this base has no
        description and raises ``NoReceptiveField``."""
        raise NoReceptiveField(self)

    def forward_steps(self) -> list[ForwardStep]:
        """The forward pass as steps (``ForwardStep``), in order: applied one after the other to a clip
        batch they make the same module calls as ``forward`` and give its logits exactly. ``slots`` never
        decreases and is ``num_slots`` at the last step. This default is a single step, the whole forward
        (nothing is shared); the template and the backbones cut theirs at every slot."""
        return [ForwardStep(self.num_slots, self.forward)]

    def rf_units(self, strategy: StrategySpec | None = None) -> dict[str, str]:
        """{slot name: unit} of ``strategy`` (``None``: the full network), for ``rf_sequence``."""
        return dict(zip(self.slot_names, strategy_or_full(strategy, self.num_slots).units))

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

    @property
    def has_depth_gate(self) -> bool:
        """Whether every slot has a depth gate (``gate_d``)."""
        return bool(self._slots) and all(getattr(s, "gate_d", None) is not None for s in self._slots)

    def depth_gates(self) -> list[Gate]:
        """The depth gates in slot order (empty without them)."""
        return [s.gate_d for s in self._slots if getattr(s, "gate_d", None) is not None]

    def gates(self) -> list[Gate]:
        """All gates, ``[slot0.S, slot0.T, slot1.S, ...]``, then the depth gates ``[slot0.D, slot1.D, ...]``
        when present (appended, so the first ``2 * num_slots`` entries keep their order)."""
        return [g for s in self._slots for g in (s.gate_s, s.gate_t)] + self.depth_gates()

    def set_relaxation(self, temperature: float, per_batch: bool = False) -> None:
        """The relaxed-Bernoulli draws of every gate: ``temperature`` and whether one draw serves the whole
        batch (``per_batch``) instead of one per sample."""
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        for g in self.gates():
            g.temperature, g.per_batch = float(temperature), bool(per_batch)

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

    def apply_strategy(self, strategy: StrategySpec | None) -> None:
        """Hard mode with one fixed unit per slot (dropped paths are not computed); ``strategy`` is any
        spec of ``as_strategy`` (a ``Strategy``, a unit, a unit string, a JSON file, a list of units).
        ``None`` goes back to the mode in force before the first ``apply_strategy`` (``"off"`` by default).
        Depth gates, when present, are put in hard *keep*: a unit ``none`` is expressed by dropping
        both paths (nothing is computed, exactly as a hard-dropped depth gate)."""
        if strategy is None:
            self.set_gate_mode(self._mode_before_hard)
            return
        strategy = as_strategy(strategy, self.num_slots)
        if self.gate_mode != "hard":
            self._mode_before_hard = self.gate_mode
        for slot, (ks, kt) in zip(self._slots, strategy.keep()):
            slot.gate_s.set_mode("hard", keep=ks)
            slot.gate_t.set_mode("hard", keep=kt)
            if getattr(slot, "gate_d", None) is not None:
                slot.gate_d.set_mode("hard", keep=True)
        self.gate_mode = "hard"

    def set_activation_checkpointing(self, on: bool) -> None:
        """Recompute each slot's activations in the backward pass instead of keeping them (training
        mode with gradients enabled only; see the module docstring). Less memory, one more forward of
        every slot per step, the same gradients."""
        if on:
            own = sorted({type(s).__name__ for s in self._slots if type(s).forward is not GatedSlot.forward})
            if own:
                raise ValueError(
                    f"activation checkpointing needs slots that define gated_forward(x, md, ms, mt) and "
                    f"leave forward to GatedSlot; {', '.join(own)} define forward"
                )
        for slot in self._slots:
            slot.activation_checkpointing = bool(on)

    @property
    def activation_checkpointing(self) -> bool:
        """Whether the slots are checkpointed (``set_activation_checkpointing``)."""
        return any(s.activation_checkpointing for s in self._slots)

    def current_strategy(self) -> Strategy:
        """The units in force: the fixed ones in hard mode, all S+ST otherwise."""
        return Strategy(tuple(s.unit for s in self._slots))

    def last_sampled_strategy(self) -> Strategy | None:
        """The sub-network drawn by the latest forward call in "sample" mode (None before any)."""
        keeps = [(s.gate_s.last_keep, s.gate_t.last_keep) for s in self._slots]
        if any(k is None for pair in keeps for k in pair):
            return None
        if self.has_depth_gate:  # a dropped depth gate makes the slot none
            kept = [s.gate_d.last_keep for s in self._slots]
            if any(k is None for k in kept):
                return None
            keeps = [(ks and kd, kt and kd) for (ks, kt), kd in zip(keeps, kept)]
        return Strategy.from_keep(keeps)

    def drop_logits(self) -> list[nn.Parameter]:
        """The drop-logit parameters (for their own optimizer group, weight decay 0), in ``gates()``
        order: the S / T logits, then the depth logits when present."""
        return [g.logit for g in self.gates()]

    def network_parameters(self) -> list[nn.Parameter]:
        """Every parameter that is not a drop logit."""
        ids = {id(p) for p in self.drop_logits()}
        return [p for p in self.parameters() if id(p) not in ids]

    def drop_probs(self) -> torch.Tensor:
        """(num_slots, 2) drop probabilities, columns [S, T], detached, on the CPU."""
        logits = torch.stack([torch.stack([s.gate_s.logit, s.gate_t.logit]) for s in self._slots])
        return torch.sigmoid(logits.detach().float()).cpu()

    def depth_drop_probs(self) -> torch.Tensor | None:
        """(num_slots,) drop probabilities of the depth gates, detached, on the CPU; None without them."""
        if not self.has_depth_gate:
            return None
        logits = torch.stack([s.gate_d.logit for s in self._slots])
        return torch.sigmoid(logits.detach().float()).cpu()

    def gated_weights(self) -> list[tuple[nn.Parameter, nn.Parameter]]:
        """(drop logit, gated conv weight) for every path, ``[slot0.S, slot0.T, slot1.S, ...]``."""
        return [
            (g.logit, path.conv.weight)
            for s in self._slots
            for g, path in ((s.gate_s, s.path_s), (s.gate_t, s.path_t))
        ]

    def depth_gated_weights(self) -> list[tuple[nn.Parameter, list[nn.Parameter]]]:
        """(depth-gate logit, the slot's conv weights ``GatedSlot.depth_weights()``) per slot; empty
        without depth gates."""
        return [
            (s.gate_d.logit, s.depth_weights()) for s in self._slots if getattr(s, "gate_d", None) is not None
        ]

    def sample_strategy(self, generator: torch.Generator | None = None) -> Strategy:
        """Keep each path independently with probability 1 - p (hard Bernoulli). Uniforms come from
        ``generator`` (a CPU torch.Generator) or torch's global CPU RNG. With depth gates, a further
        ``num_slots`` uniforms (drawn after the path uniforms) drop each slot with probability p_D:
        a dropped slot is ``none`` whatever its paths drew."""
        u = torch.rand(self.num_slots, 2, generator=generator)
        keep = u >= self.drop_probs()
        pd = self.depth_drop_probs()
        if pd is not None:
            keep = keep & (torch.rand(self.num_slots, generator=generator) >= pd)[:, None]
        return Strategy.from_keep(keep.tolist())

    def most_probable_strategy(self) -> Strategy:
        """Each path kept iff its keep_prob >= 0.5 (the mode of the independent Bernoullis); with depth
        gates, a slot whose p_D > 0.5 is ``none`` (the mode of the three gates of the slot, which is not
        always the most probable unit: P(none) = p_D + (1 - p_D) p_S p_T can exceed 0.5 with p_D <= 0.5)."""
        keep = self.drop_probs() <= 0.5
        pd = self.depth_drop_probs()
        if pd is not None:
            keep = keep & (pd <= 0.5)[:, None]
        return Strategy.from_keep(keep.tolist())
