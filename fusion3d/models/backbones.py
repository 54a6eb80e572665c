"""3D backbones whose every block is a fusion slot (docs/method.md §8): their registration.

This module imports no torch: each registered factory imports its network class when it is called.
The networks live in ``fusion3d.models.resnet3d`` (ResNet-18 / -50, ResNeXt-50 32x4d / -101 32x8d:
``SlotResNet``), ``fusion3d.models.mobilenet3d`` (MobileNetV2: ``SlotMobileNetV2``) and what they share in
``fusion3d.models.backbone_base`` (``BlockSlot``, ``Backbone``); their classes are re-exported here
(loaded on first access). A backbone is a ``SlotNetwork`` like the template, so the same trainer,
sampler and analyzer work on it, and a strategy turns it into a fixed 2D, (2+1)D or mixed network.

Registry (``fusion3d.models.registry``): ``create(name, num_classes=..., strategy=...)`` builds any
backbone or template preset, ``list_models()`` lists the names; both are re-exported here.
"""

from __future__ import annotations

import importlib
from typing import Any

from fusion3d.models.registry import Factory, create, list_models, register_model

__all__ = [
    "create",
    "list_models",
    "mobilenetv2_3d",
    "resnet18_3d",
    "resnet50_3d",
    "resnext50_32x4d_3d",
    "resnext101_32x8d_3d",
]


def backbone_from_config(cfg: Any, num_classes: int) -> Any:
    """The backbone a ``ModelConfig`` names, checked (``check_model_config``: template-only keys and
    ``depth_gate`` are refused); ``width_mult``, ``dropout``, ``drop_init``, ``temperature``,
    ``conv_impl``, ``stem_stride`` and ``stem_pool`` (when set) come from ``cfg``."""
    from fusion3d.models.spec import check_model_config

    check_model_config(cfg)
    stem: dict[str, Any] = {"stem_stride": cfg.stem_stride} if cfg.stem_stride else {}
    if cfg.stem_pool is not None:
        stem["stem_pool"] = bool(cfg.stem_pool)
    return _REGISTRY[cfg.name](
        num_classes,
        width_mult=cfg.width_mult,
        dropout=cfg.dropout,
        drop_init=cfg.drop_init,
        temperature=cfg.temperature,
        conv_impl=cfg.conv_impl,
        **stem,
    )


# The backbone factories by name (the same functions the model registry holds).
_REGISTRY: dict[str, Factory] = {}


def _backbone(fn: Factory) -> Factory:
    _REGISTRY[fn.__name__] = fn
    return register_model(fn.__name__, kind="backbone", from_config=backbone_from_config)(fn)


@_backbone
def resnet18_3d(num_classes: int, **kwargs: Any) -> Any:
    """ResNet-18, basic blocks [2, 2, 2, 2]: 8 slots."""
    from fusion3d.models.resnet3d import SlotResNet

    return SlotResNet("resnet18_3d", "basic", (2, 2, 2, 2), num_classes, **kwargs)


@_backbone
def resnet50_3d(num_classes: int, **kwargs: Any) -> Any:
    """ResNet-50, bottlenecks [3, 4, 6, 3]: 16 slots."""
    from fusion3d.models.resnet3d import SlotResNet

    return SlotResNet("resnet50_3d", "bottleneck", (3, 4, 6, 3), num_classes, **kwargs)


@_backbone
def resnext50_32x4d_3d(num_classes: int, **kwargs: Any) -> Any:
    """ResNeXt-50 32x4d, bottlenecks [3, 4, 6, 3] with 32 groups of 4 channels (at width 64): 16 slots."""
    from fusion3d.models.resnet3d import SlotResNet

    return SlotResNet(
        "resnext50_32x4d_3d", "bottleneck", (3, 4, 6, 3), num_classes, groups=32, width_per_group=4, **kwargs
    )


@_backbone
def resnext101_32x8d_3d(num_classes: int, **kwargs: Any) -> Any:
    """ResNeXt-101 32x8d, bottlenecks [3, 4, 23, 3] with 32 groups of 8 channels (at width 64): 33 slots."""
    from fusion3d.models.resnet3d import SlotResNet

    return SlotResNet(
        "resnext101_32x8d_3d",
        "bottleneck",
        (3, 4, 23, 3),
        num_classes,
        groups=32,
        width_per_group=8,
        **kwargs,
    )


@_backbone
def mobilenetv2_3d(num_classes: int, **kwargs: Any) -> Any:
    """MobileNetV2 (width 1.0: 32-16-24-32-64-96-160-320, last conv 1280): 16 slots."""
    from fusion3d.models.mobilenet3d import SlotMobileNetV2

    return SlotMobileNetV2("mobilenetv2_3d", num_classes, **kwargs)


# Classes and helpers that lived here before the split, re-exported lazily (they import torch).
_MOVED = {
    "BlockSlot": "backbone_base",
    "Backbone": "backbone_base",
    "BasicSlot": "resnet3d",
    "BottleneckSlot": "resnet3d",
    "SlotResNet": "resnet3d",
    "FreeSkip": "mobilenet3d",
    "InvertedResidualSlot": "mobilenet3d",
    "InvertedResidual": "mobilenet3d",
    "SlotMobileNetV2": "mobilenet3d",
    "make_divisible": "mobilenet3d",
    "MOBILENETV2_SETTINGS": "mobilenet3d",
}


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        return getattr(importlib.import_module(f"fusion3d.models.{_MOVED[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_MOVED])
