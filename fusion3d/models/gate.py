"""The v-DropPath gate of one path (S or T) of one slot.

A ``Gate`` holds one learned *drop logit*; ``drop_prob`` p = sigmoid(logit), keep_prob = 1 - p. It
does not touch the path output itself: the slot asks it, once per forward call, for a *multiplier*
(``Gate.draw``) and then

- ``None``            -> the path is dropped: the slot does not call the path's modules at all;
- ``1.0`` (a float)   -> the path is kept, output used as is;
- a tensor ``(N,)``   -> relaxed mode: multiply the path output of sample i by ``m[i] = 1 - z[i]``.

Modes (set explicitly with ``set_mode``; nothing global):

``"off"``      path always on (warm-up, or plain evaluation of the full template).
``"relaxed"``  training: one relaxed Bernoulli drop variable per SAMPLE,
               ``z = sigmoid((logit + log u - log(1 - u)) / tau)``, ``u ~ U(0, 1)`` clamped to
               ``[eps, 1 - eps]``; the multiplier is ``1 - z`` (no ``1/(1-p)`` rescaling).
``"hard"``     a fixed keep/drop decided by a strategy (``keep`` attribute); a dropped path is never
               computed.
``"sample"``   evaluation: one hard Bernoulli draw per forward call, kept with probability
               ``keep_prob`` and shared by the whole batch (posterior-predictive sampling); a dropped
               path is never computed. The last draw is kept in ``last_keep``.

Random numbers come from ``self.generator`` when it is set (a ``torch.Generator``; uniforms are drawn
on the generator's device, then moved to the input's device), else from torch's global RNG (on the
input's device for relaxed draws, on the CPU for the scalar draw of ``"sample"``).
"""

from __future__ import annotations

import math

import torch
from torch import nn

GATE_MODES: tuple[str, ...] = ("off", "relaxed", "hard", "sample")


def logit_of(p: float) -> float:
    """log(p / (1 - p))."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"a drop probability must be in (0, 1), got {p}")
    return math.log(p / (1.0 - p))


class Gate(nn.Module):
    """One path's drop logit and the rule that turns it into a keep multiplier."""

    def __init__(self, drop_init: float = 0.1, temperature: float = 0.2, eps: float = 1e-6) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.logit = nn.Parameter(torch.tensor(logit_of(drop_init)))
        self.temperature = float(temperature)
        self.per_batch = False  # relaxed mode: one draw for the whole batch instead of one per sample
        self.eps = float(eps)
        self.mode: str = "off"
        self.keep: bool = True  # the decision used in "hard" mode
        self.last_keep: bool | None = None  # the latest decision in "hard" / "sample" mode
        self.generator: torch.Generator | None = None

    # ---- state -----------------------------------------------------------------------------
    def set_mode(self, mode: str, keep: bool | None = None, generator: torch.Generator | None = None) -> None:
        """Switch mode; ``keep`` sets the hard decision (only meaningful in "hard" mode);
        ``generator`` (if given) replaces the gate's generator."""
        if mode not in GATE_MODES:
            raise ValueError(f"gate mode must be one of {', '.join(GATE_MODES)}, got {mode!r}")
        self.mode = mode
        if keep is not None:
            self.keep = bool(keep)
        if generator is not None:
            self.generator = generator

    @property
    def drop_prob(self) -> float:
        """p = sigmoid(logit), as a python float (detached)."""
        return float(torch.sigmoid(self.logit.detach()))

    @property
    def keep_prob(self) -> float:
        """1 - p, computed as sigmoid(-logit) (exact near p = 1)."""
        return float(torch.sigmoid(-self.logit.detach()))

    # ---- draws -----------------------------------------------------------------------------
    def _uniform(self, shape: tuple[int, ...], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        g = self.generator
        u = torch.rand(shape, generator=g, device=g.device if g is not None else device, dtype=dtype)
        return u.to(device)

    def relaxed_keep(self, n: int, device: torch.device | None = None) -> torch.Tensor:
        """``1 - z`` for ``n`` samples: ``sigmoid(-(logit + log u - log(1-u)) / tau)``, with gradient
        to the logit. Shape ``(n,)``, dtype of the logit."""
        logit = self.logit
        device = logit.device if device is None else device
        u = self._uniform((n,), device, logit.dtype).clamp(self.eps, 1.0 - self.eps)
        noise = torch.log(u) - torch.log1p(-u)
        return torch.sigmoid(-(logit.to(device) + noise) / self.temperature)

    def draw(self, n: int, device: torch.device | None = None) -> torch.Tensor | float | None:
        """The multiplier for this forward call (see the module docstring)."""
        if self.mode == "off":
            return 1.0
        if self.mode == "relaxed":
            return self.relaxed_keep(1, device).expand(n) if self.per_batch else self.relaxed_keep(n, device)
        if self.mode == "hard":
            keep = self.keep
        else:  # "sample"
            g = self.generator
            u = torch.rand((), generator=g, device=g.device if g is not None else "cpu")
            keep = bool(u.item() < self.keep_prob)
        self.last_keep = keep
        return 1.0 if keep else None

    def extra_repr(self) -> str:
        s = f"p={self.drop_prob:.4f}, mode={self.mode}"
        if self.mode == "hard":
            s += f", keep={self.keep}"
        if self.mode == "relaxed":
            s += f", tau={self.temperature:g}"
        return s
