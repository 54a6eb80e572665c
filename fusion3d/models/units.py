"""THE unit vocabulary (torch-free): which of a slot's two paths a unit keeps, and the canonical
strategies every stage scores, retrains and reports.

=======  ======  ======
unit     S path  T path
=======  ======  ======
S        kept    dropped
ST       dropped kept
S+ST     kept    kept
none     dropped dropped
=======  ======  ======
"""

from __future__ import annotations

UNITS: tuple[str, ...] = ("S", "ST", "S+ST", "none")
# Units a design may use (a derived design never removes a whole block).
DESIGN_UNITS: tuple[str, ...] = ("S", "ST", "S+ST")
UNIT_TO_KEEP: dict[str, tuple[bool, bool]] = {
    "S": (True, False),
    "ST": (False, True),
    "S+ST": (True, True),
    "none": (False, False),
}
KEEP_TO_UNIT: dict[tuple[bool, bool], str] = {v: k for k, v in UNIT_TO_KEEP.items()}
# The unit that keeps both paths (the full network: a strategy of None means this unit everywhere) and
# the one that keeps neither (a clean skip).
FULL_UNIT: str = KEEP_TO_UNIT[(True, True)]
NONE_UNIT: str = KEEP_TO_UNIT[(False, False)]
# Units whose T path is kept: "temporal" units.
TEMPORAL_UNITS: tuple[str, ...] = tuple(u for u, (_, t) in UNIT_TO_KEEP.items() if t)

# The canonical strategies (one unit everywhere), as (source name in strategies.csv, unit).
CANONICAL: tuple[tuple[str, str], ...] = (
    ("canonical_S", "S"),
    ("canonical_ST", "ST"),
    ("canonical_S+ST", "S+ST"),
)
# Sources of strategies.csv that are not random draws.
CANONICAL_SOURCES: tuple[str, ...] = (*(src for src, _ in CANONICAL), "most_probable")
# The source of the per-slot ablation's strategies (``fusion3d.analysis.ablation.ablation_plan``).
ABLATION_SOURCE: str = "ablation"


def unit_from_keep(keep_s: bool, keep_t: bool) -> str:
    return KEEP_TO_UNIT[(bool(keep_s), bool(keep_t))]
