"""The fusion template, the backbones, and everything around them.

Names are imported lazily, so the torch-free modules (``units``, ``strategy``, ``registry``, ``presets``,
``backbones``, ``spec``, ``rf_graph``) stay importable without loading torch. Importing this package
imports ``presets`` and ``backbones`` (torch-free), whose models register themselves: the registry is
complete before any other module of the package runs.

- ``units``: the unit vocabulary (``UNITS``, ``DESIGN_UNITS``, ``UNIT_TO_KEEP``, ...).
- ``strategy``: ``Strategy`` (one unit per slot) and the one strategy grammar, ``as_strategy`` /
  ``resolve_strategy`` (a unit, a unit string ``S|ST|...``, a JSON file, a list of units).
- ``registry``: ``register_model``, ``create(name, num_classes=..., strategy=...)``, ``list_models()``,
  ``build_model(model_config, num_classes)``.
- ``presets``: the template presets (``tiny``, ``small``, ``densenet121_3d``), registered.
- ``backbones``: the backbones (``resnet18_3d``, ..., ``mobilenetv2_3d``), registered.
- ``spec``: ``ModelConfig`` (config section ``model``), ``PRESETS`` / ``BACKBONES`` / ``ModelName`` (from
  the registry), ``Arch``, ``resolve_arch``, ``check_model_config``.
- ``rf_graph``: the receptive-field algebra (``Op``, ``Par``, ``Mark``, ``compose``, ``trace``, ...).
- ``convs``: ``FactorConv3d`` (3x1x1 / 1xkxk / 1x1x1 convs, groups, Conv3d-shaped weights, conv3d or conv2d impl).
- ``gate``: ``Gate`` (one path's drop logit; modes off / relaxed / hard / sample).
- ``network``: ``GatedSlot``, ``SlotNetwork`` (what the template and the backbones share).
- ``template``: ``FusionTemplate`` and its slots.
- ``backbone_base`` / ``resnet3d`` / ``mobilenet3d``: ``Backbone``, ``SlotResNet``, ``SlotMobileNetV2``.
- ``regularizer``: ``vdroppath_regularizer``, ``template_regularizer``.
- ``macs``: ``count_macs``, ``count_params``, ``macs_breakdown``, ``trace_costs`` (any SlotNetwork).
"""

from __future__ import annotations

import importlib
from typing import Any

from fusion3d.models import backbones as _backbones  # noqa: F401  (registers the backbones)
from fusion3d.models import presets as _presets  # noqa: F401  (registers the template presets)

_EXPORTS = {
    "ModelConfig": "spec",
    "PRESETS": "spec",
    "BACKBONES": "spec",
    "Arch": "spec",
    "resolve_arch": "spec",
    "check_model_config": "spec",
    "UNITS": "units",
    "DESIGN_UNITS": "units",
    "UNIT_TO_KEEP": "units",
    "KEEP_TO_UNIT": "units",
    "TEMPORAL_UNITS": "units",
    "unit_from_keep": "units",
    "Strategy": "strategy",
    "as_strategy": "strategy",
    "resolve_strategy": "strategy",
    "register_model": "registry",
    "create": "registry",
    "list_models": "registry",
    "build_model": "registry",
    "model_entry": "registry",
    "NoReceptiveField": "rf_graph",
    "FactorConv3d": "convs",
    "Gate": "gate",
    "GATE_MODES": "gate",
    "GatedSlot": "network",
    "SlotNetwork": "network",
    "FusionTemplate": "template",
    "Backbone": "backbone_base",
    "SlotResNet": "resnet3d",
    "SlotMobileNetV2": "mobilenet3d",
    "vdroppath_regularizer": "regularizer",
    "template_regularizer": "regularizer",
    "reg_coefficient": "regularizer",
    "count_macs": "macs",
    "count_params": "macs",
    "macs_breakdown": "macs",
    "trace_costs": "macs",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
