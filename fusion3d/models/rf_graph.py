"""The receptive-field algebra (torch-free): a graph vocabulary networks describe themselves with, and
the exact arithmetic that composes it. The analysis (tables, distributions under the drop
probabilities, statistics) is ``fusion3d.analysis.receptive_field``.

Graph vocabulary
----------------
- ``Op(kernel, stride, dilation, padding)``: a convolution or a pooling window (kt, kh, kw) with its
  stride, dilation and padding (``padding=None`` means ``(k - 1) * d // 2``, "same" for odd kernels).
  Pointwise layers (BatchNorm, ReLU, gates, the channel-average skip) are not ops: they do not widen
  a receptive field.
- a *sequence*: a list or tuple of nodes, applied in order (the empty sequence is the identity).
- ``Par(branches)``: parallel paths from one input whose outputs are summed or concatenated; a branch
  is a sequence (possibly empty: an identity / skip branch).
- ``Mark(name, unit, kind)``: records the receptive field at that point (slot outputs, the head).
  Only marks at the top level of a graph (nested lists flattened, not inside a ``Par``) are recorded.

Receptive field of one axis (``AxisRF``)
-----------------------------------------
For output position ``i`` of a feature map, the input positions it may depend on lie in
``[i * jump + lo, i * jump + hi]`` (input coordinates; negative or past-the-end coordinates are
padding). ``r_max = hi - lo + 1`` is the size of that hull: the extent of every path through the
graph together. ``r_min`` is the size of the receptive field of the *shortest* path (the path with
the smallest receptive field; for a dense block, the identity branch). Composition with an op of
kernel ``k``, stride ``s``, dilation ``d``, padding ``p``:

    r' = r + (k - 1) * d * jump      (both r_min and r_max)
    jump' = jump * s
    lo' = lo - p * jump,  hi' = hi + ((k - 1) * d - p) * jump

and for a ``Par``: ``lo = min``, ``hi = max``, ``r_min = min`` over the branches (the branches must end
with the same jump, else ``ValueError``). When every branch is centred on the same position (odd
kernels with "same" padding, as everywhere in the template) ``r_max`` is simply the max over the
branches. Padding never changes a size: the sizes count input positions *including padded ones*,
so a receptive field can be larger than the clip (the tiny template's spatial r_max is 77 pixels
on 32 x 32 crops); clip it to the input size yourself if you need the visible part.

Networks describe themselves
----------------------------
Every network measured by the analysis has a method ``rf_graph(strategy)`` returning a top-level
sequence with one ``Mark`` after each slot (in slot order, named by slot, with the slot's unit and
kind) and a final mark named ``head`` (``FusionTemplate``, the backbones: ``fusion3d.models.template``,
``fusion3d.models.backbone_base``). Contract: the nodes between two slot marks depend only on that
slot's unit (``expected_temporal_rf`` relies on it). A network without that method (or a
``SlotNetwork`` subclass that does not override it) has no receptive-field description:
``NoReceptiveField`` (a ``TypeError``) names it. A module inside a network that has no rule raises a
plain ``TypeError`` naming the module's class: that is a bug of the description, not a missing one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

AXES = ("t", "h", "w")


class NoReceptiveField(TypeError):
    """The network has no receptive-field description (no ``rf_graph(strategy)`` method of its own).

    The one case where the analysis reports the receptive-field columns as NaN
    (``fusion3d.analysis.receptive_field.rf_columns``); every other error surfaces."""

    def __init__(self, network: Any) -> None:
        name = network if isinstance(network, str) else type(network).__name__
        super().__init__(
            f"network {name} has no receptive-field description: it defines no rf_graph(strategy) method"
        )
        self.network = name


def _triple(v: Any, what: str) -> tuple[int, int, int]:
    t = (int(v),) * 3 if isinstance(v, int) or hasattr(v, "__index__") else tuple(int(a) for a in v)
    if len(t) != 3:
        raise ValueError(f"{what} must be an int or 3 ints, got {v!r}")
    return t  # type: ignore[return-value]


# ----------------------------------------------------------------------------- graph vocabulary


@dataclass(frozen=True)
class Op:
    """A conv or pooling window: ``kernel`` (kt, kh, kw), ``stride``, ``dilation``, ``padding``
    (``None``: ``(k - 1) * d // 2`` per axis). Ints are broadcast to the three axes."""

    kernel: tuple[int, int, int]
    stride: tuple[int, int, int] = (1, 1, 1)
    dilation: tuple[int, int, int] = (1, 1, 1)
    padding: tuple[int, int, int] | None = None
    name: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        k = _triple(self.kernel, "kernel")
        s = _triple(self.stride, "stride")
        d = _triple(self.dilation, "dilation")
        p = (
            tuple((kk - 1) * dd // 2 for kk, dd in zip(k, d))
            if self.padding is None
            else _triple(self.padding, "padding")
        )
        if min(k) < 1 or min(s) < 1 or min(d) < 1 or min(p) < 0:
            raise ValueError(f"invalid op: kernel {k}, stride {s}, dilation {d}, padding {p}")
        object.__setattr__(self, "kernel", k)
        object.__setattr__(self, "stride", s)
        object.__setattr__(self, "dilation", d)
        object.__setattr__(self, "padding", p)

    @classmethod
    def from_module(cls, m: Any) -> Op:
        """From an ``nn.Conv3d``, ``FactorConv3d``, ``MaxPool3d`` or ``AvgPool3d`` (read by attribute)."""
        d = getattr(m, "dilation", 1)
        pad = getattr(m, "padding", 0)
        if isinstance(pad, str):
            raise ValueError(f"string padding {pad!r} is not supported; use explicit padding")
        return cls(
            kernel=m.kernel_size,
            stride=m.stride if m.stride is not None else m.kernel_size,
            dilation=d,
            padding=pad,
            name=type(m).__name__,
        )


def _as_branch(b: Any) -> tuple:
    if isinstance(b, (Op, Par, Mark)):
        return (b,)
    return tuple(b)


@dataclass(frozen=True)
class Par:
    """Parallel branches from one input (summed or concatenated); an empty branch is the identity."""

    branches: tuple[tuple, ...]
    name: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        branches = tuple(_as_branch(b) for b in self.branches)
        if not branches:
            raise ValueError("a Par needs at least one branch (use an empty branch for the identity)")
        object.__setattr__(self, "branches", branches)


@dataclass(frozen=True)
class Mark:
    """A named point of a graph where the receptive field is recorded (slot outputs, the head)."""

    name: str
    unit: str = ""
    kind: str = ""


# ----------------------------------------------------------------------------- arithmetic


@dataclass(frozen=True)
class AxisRF:
    """Receptive field along one axis: hull ``[i * jump + lo, i * jump + hi]`` of output position i,
    and ``r_min``, the size of the shortest path's receptive field."""

    lo: int = 0
    hi: int = 0
    jump: int = 1
    r_min: int = 1

    @property
    def r_max(self) -> int:
        return self.hi - self.lo + 1

    def apply(self, k: int, s: int, d: int, p: int) -> AxisRF:
        ext = (k - 1) * d
        j = self.jump
        return AxisRF(self.lo - p * j, self.hi + (ext - p) * j, j * s, self.r_min + ext * j)


def merge_axis(branches: Sequence[AxisRF]) -> AxisRF:
    """The ``Par`` rule: hull of the branches (lo = min, hi = max), r_min = min; jumps must agree."""
    jumps = {b.jump for b in branches}
    if len(jumps) != 1:
        raise ValueError(
            f"parallel branches end with different jumps {sorted(jumps)}: their outputs cannot be "
            "summed or concatenated position by position"
        )
    return AxisRF(
        min(b.lo for b in branches),
        max(b.hi for b in branches),
        branches[0].jump,
        min(b.r_min for b in branches),
    )


@dataclass(frozen=True)
class RF:
    """Receptive field along the three axes (T, H, W) of a feature map, in input positions."""

    t: AxisRF = AxisRF()
    h: AxisRF = AxisRF()
    w: AxisRF = AxisRF()

    def axis(self, name: str) -> AxisRF:
        return getattr(self, name)


def flatten(graph: Any) -> list:
    """Top-level nodes with nested sequences flattened (a ``Par`` is one node)."""
    if isinstance(graph, (Op, Par, Mark)):
        return [graph]
    out: list = []
    for n in graph:
        out.extend(flatten(n))
    return out


def apply_axis(graph: Any, rf: AxisRF, axis: int) -> AxisRF:
    """Compose ``graph`` onto the receptive field ``rf`` of one axis (0 = T, 1 = H, 2 = W)."""
    for node in flatten(graph):
        if isinstance(node, Op):
            rf = rf.apply(node.kernel[axis], node.stride[axis], node.dilation[axis], node.padding[axis])
        elif isinstance(node, Par):
            rf = merge_axis([apply_axis(b, rf, axis) for b in node.branches])
    return rf


def compose(graph: Any, start: RF | None = None) -> RF:
    """The receptive field at the end of ``graph`` (from the input, or from ``start``)."""
    start = start or RF()
    return RF(*(apply_axis(graph, start.axis(a), i) for i, a in enumerate(AXES)))


def trace(graph: Any, start: RF | None = None) -> list[tuple[Mark, RF]]:
    """(mark, receptive field) at every top-level ``Mark`` of ``graph``, in order."""
    rf = start or RF()
    out = []
    for node in flatten(graph):
        if isinstance(node, Mark):
            out.append((node, rf))
        else:
            rf = compose([node], rf)
    return out
