"""The model registry: every network ``create`` builds and ``model.name`` accepts, by name (torch-free).

Models register themselves with ``register_model``: the template presets in ``fusion3d.models.presets``,
the backbones in ``fusion3d.models.backbones``. A registered factory is a light function that imports
its network class when it is called, so registering and listing models need no torch. The package
``fusion3d.models`` imports those two modules when it is first imported (before any of its modules), so
the registry is complete whenever a ``fusion3d.models`` module is in use. Every list of model names
derives from here: ``list_models()``, ``fusion3d.models.spec`` (``PRESETS``, ``BACKBONES``, the
``ModelName`` literal, the ``model.name`` check) and through it the config layer.

A plugin registers its own networks the same way (``kind="backbone"`` with a ``from_config`` that
builds it from a ``ModelConfig``); the config's ``model.name`` is checked against the live registry,
so a name registered at any time before the config is loaded works in ``train``, ``sample`` and
``analyze`` (tests/test_registry.py).

This module imports no other module of the package (everything else imports it), so it closes no
import cycle; the one exception, ``fusion3d.models.inflate`` (imported when a model is built with a 2D
checkpoint), imports neither this module nor any module that does.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

# Kinds in the order ``list_models`` lists them.
KINDS: tuple[str, ...] = ("preset", "backbone")

Factory = Callable[..., Any]  # factory(num_classes, **kwargs) -> SlotNetwork
FromConfig = Callable[[Any, int], Any]  # from_config(model_config, num_classes) -> SlotNetwork


@dataclass(frozen=True)
class ModelEntry:
    """One registered network.

    ``factory(num_classes, **kwargs)`` builds it (``create``); ``from_config(cfg, num_classes)`` builds
    it from a ``ModelConfig`` (``build_model``), checking the config first. ``defaults`` holds a
    template preset's architecture numbers (``fusion3d.models.spec.PRESETS``; empty for a backbone)."""

    name: str
    kind: str
    factory: Factory
    from_config: FromConfig | None = None
    defaults: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""


_MODELS: dict[str, ModelEntry] = {}


def register_model(
    name: str | None = None,
    *,
    kind: str = "backbone",
    from_config: FromConfig | None = None,
    defaults: Mapping[str, Any] | None = None,
    description: str | None = None,
) -> Callable[[Factory], Factory]:
    """Decorator registering ``factory(num_classes, **kwargs)`` under ``name`` (default: the function's
    name). ``description`` defaults to the first line of the factory's docstring. Registering a name
    twice is an error."""
    if kind not in KINDS:
        raise ValueError(f"model kind must be one of {', '.join(KINDS)}, got {kind!r}")

    def decorator(factory: Factory) -> Factory:
        key = name or factory.__name__
        if key in _MODELS:
            raise ValueError(f"model {key!r} is already registered (as a {_MODELS[key].kind})")
        doc = (factory.__doc__ or "").strip().splitlines()
        _MODELS[key] = ModelEntry(
            key,
            kind,
            factory,
            from_config,
            MappingProxyType(copy.deepcopy(dict(defaults or {}))),
            description if description is not None else (doc[0] if doc else ""),
        )
        return factory

    return decorator


def list_models(kind: str | None = None) -> list[str]:
    """Every registered name (the template presets, then the backbones, each in registration order),
    or those of one ``kind``."""
    if kind is not None and kind not in KINDS:
        raise ValueError(f"model kind must be one of {', '.join(KINDS)}, got {kind!r}")
    kinds: Sequence[str] = KINDS if kind is None else (kind,)
    return [name for k in kinds for name, entry in _MODELS.items() if entry.kind == k]


def model_entry(name: str) -> ModelEntry:
    """The registered entry of ``name``; ``ValueError`` listing the registered names otherwise."""
    try:
        return _MODELS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(list_models())}") from None


def create(
    name: str, *, num_classes: int, strategy: Any = None, pretrained_2d: str | None = None, **kwargs: Any
) -> Any:
    """Build the registered network ``name`` with ``num_classes`` outputs.

    ``kwargs`` go to its factory: a backbone's (``width_mult``, ``dropout``, ``drop_init``,
    ``temperature``, ``conv_impl``, ``in_channels``, ``zero_init_residual``, ``stem_stride``,
    ``stem_pool``) or, for a template preset, its ``ModelConfig`` keys (``growth``, ``blocks``,
    ``dropout``, ...). ``strategy`` (any spec of ``fusion3d.models.strategy.as_strategy``: a
    ``Strategy``, a unit for every slot, a unit string ``'S|ST|...'``, a strategy JSON file or a list of
    units) is applied with ``apply_strategy`` (hard mode); None leaves the gates off.
    ``pretrained_2d`` (a local ``.pth`` / ``.pt`` state dict of the 2D network, torchvision or timm keys)
    is inflated into the network first (``fusion3d.models.inflate``, docs/method.md §9); the report is
    printed and kept as ``model.inflation_report``.
    """
    model = model_entry(name).factory(num_classes, **kwargs)
    if pretrained_2d:
        _inflate(model, pretrained_2d)
    if strategy is not None:
        model.apply_strategy(strategy)
    return model


def build_model(cfg: Any, num_classes: int | None = None) -> Any:
    """The network a ``ModelConfig`` (the ``model`` config section) describes; ``num_classes`` is used
    when ``cfg.num_classes`` is 0. The registered ``from_config`` checks the config
    (``check_model_config``) and builds it: a ``FusionTemplate`` for a template preset, the backbone
    otherwise. ``cfg.strategy`` is not applied here (the trainer does); ``cfg.pretrained_2d`` is
    inflated into it, as by ``create``."""
    n = cfg.num_classes or num_classes
    if not n:
        raise ValueError("model.num_classes is 0 (take from the dataset) and no num_classes was given")
    entry = model_entry(cfg.name)
    if entry.from_config is None:  # a user's network: its factory with the class count (the config
        model = entry.factory(int(n))  # was checked when it was loaded)
    else:
        model = entry.from_config(cfg, int(n))
    if getattr(cfg, "pretrained_2d", ""):
        _inflate(model, cfg.pretrained_2d)
    return model


def _inflate(model: Any, path: str) -> None:
    """Inflate the 2D checkpoint ``path`` into ``model``, print the report, keep it on the model."""
    from fusion3d.models.inflate import inflate_2d

    report = inflate_2d(model, path)
    print(report.summary())
    model.inflation_report = report
