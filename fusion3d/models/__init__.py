"""The fusion template, the backbones, and everything around them.

Names are imported lazily, so ``fusion3d.models.spec`` and ``fusion3d.models.strategy`` (no torch)
stay importable without loading torch.

- ``spec``: ``ModelConfig`` (config section ``model``), ``PRESETS`` (template presets), ``BACKBONES``
  (backbone names), ``resolve_arch``.
- ``strategy``: ``Strategy`` (one unit per slot: ``S``, ``ST``, ``S+ST``, ``none``).
- ``convs``: ``FactorConv3d`` (3x1x1 / 1xkxk / 1x1x1 convs, groups, Conv3d-shaped weights, conv3d or conv2d impl).
- ``gate``: ``Gate`` (one path's drop logit; modes off / relaxed / hard / sample).
- ``network``: ``GatedSlot``, ``SlotNetwork`` (what the template and the backbones share).
- ``template``: ``FusionTemplate``, ``build_model`` (template or backbone, from a ``ModelConfig``).
- ``backbones``: ``SlotResNet``, ``SlotMobileNetV2`` (every block a slot), the registry ``create(name,
  num_classes=..., strategy=...)`` and ``list_models()``.
- ``regularizer``: ``vdroppath_regularizer``, ``template_regularizer``.
- ``flops``: ``count_macs``, ``count_params``, ``macs_breakdown``, ``trace_costs`` (any SlotNetwork).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ModelConfig": "spec", "PRESETS": "spec", "BACKBONES": "spec", "Arch": "spec", "resolve_arch": "spec",
    "check_model_config": "spec",
    "Strategy": "strategy", "UNITS": "strategy",
    "FactorConv3d": "convs",
    "Gate": "gate", "GATE_MODES": "gate",
    "GatedSlot": "network", "SlotNetwork": "network",
    "FusionTemplate": "template", "build_model": "template",
    "SlotResNet": "backbones", "SlotMobileNetV2": "backbones", "create": "backbones", "list_models": "backbones",
    "vdroppath_regularizer": "regularizer", "template_regularizer": "regularizer", "reg_coefficient": "regularizer",
    "count_macs": "flops", "count_params": "flops", "macs_breakdown": "flops",
    "trace_costs": "flops",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
