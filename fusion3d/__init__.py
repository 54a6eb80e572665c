"""fusion3d: a probabilistic 3D-CNN spatiotemporal fusion analyzer.

The Python API (``fusion3d.api``), loaded on first use so that ``import fusion3d`` loads no torch:

- ``fusion3d.fit(model, train_data, eval_data, cfg)``: train any slot network on any dataset
  (warm-up, then v-DropPath, or one fixed strategy), in memory;
- ``fusion3d.score_strategies(model, eval_loader, recal_loader, strategies)``: score strategies
  before and after BatchNorm recalibration, as a pandas DataFrame.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_API = ("fit", "score_strategies")

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        from fusion3d import api

        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
