"""The fusion-template presets: their architecture numbers, registered as models (torch-free).

"densenet121_3d" is the paper's template (Zhou et al. 2020, Table 1: 21.40M parameters with 174
classes). The small presets keep the same structure (dense blocks, 1x1x1 / 3x1x1 paths, 1x3x3 shared
conv, transitions as slots) at CPU scale for 8x56x56 clips. ``fusion3d.models.spec`` reads the numbers
back from the registry (``spec.PRESETS``) and resolves a ``ModelConfig`` naming a preset into an
``Arch`` (``resolve_arch``); the factories below import the network code only when they build one.
"""

from __future__ import annotations

from typing import Any

from fusion3d.models.registry import register_model

# name -> (description, numbers); the numbers are the ModelConfig keys a preset fills in.
_PRESETS: dict[str, tuple[str, dict[str, Any]]] = {
    "tiny": (
        "CPU scale, 8x56x56 clips",
        dict(
            growth=12,
            bottleneck_factor=4,
            blocks=[2, 3],
            stem_channels=24,
            stem_kernel=[1, 5, 5],
            stem_stride=2,
            stem_pool=True,
            dropout=0.0,
        ),
    ),
    "small": (
        "CPU scale, 8x56x56 clips",
        dict(
            growth=16,
            bottleneck_factor=4,
            blocks=[3, 6, 4],
            stem_channels=32,
            stem_kernel=[1, 5, 5],
            stem_stride=2,
            stem_pool=True,
            dropout=0.2,
        ),
    ),
    "densenet121_3d": (
        "the paper's template",
        dict(
            growth=32,
            bottleneck_factor=4,
            blocks=[6, 12, 24, 16],
            stem_channels=64,
            stem_kernel=[5, 7, 7],
            stem_stride=2,
            stem_pool=True,
            dropout=0.5,
        ),
    ),
}


def template_from_config(cfg: Any, num_classes: int) -> Any:
    """The ``FusionTemplate`` of a ``ModelConfig`` naming a preset (checked and resolved by
    ``resolve_arch``); ``drop_init``, ``temperature``, ``conv_impl`` and ``depth_gate`` come from ``cfg``."""
    from fusion3d.models.spec import resolve_arch
    from fusion3d.models.template import FusionTemplate

    return FusionTemplate(
        resolve_arch(cfg),
        num_classes,
        drop_init=cfg.drop_init,
        temperature=cfg.temperature,
        conv_impl=cfg.conv_impl,
        depth_gate=cfg.depth_gate,
    )


def _register(name: str, description: str, numbers: dict[str, Any]) -> None:
    def factory(num_classes: int, **kwargs: Any) -> Any:
        from fusion3d.models.spec import ModelConfig

        return template_from_config(ModelConfig(name=name, **kwargs), num_classes)

    factory.__name__ = factory.__qualname__ = name
    factory.__doc__ = (
        f"The fusion template preset {name!r} ({description}); ``kwargs`` are ``ModelConfig`` "
        "keys (growth, blocks, dropout, depth_gate, ...)."
    )
    register_model(
        name, kind="preset", from_config=template_from_config, defaults=numbers, description=description
    )(factory)


for _name, (_description, _numbers) in _PRESETS.items():
    _register(_name, _description, _numbers)
