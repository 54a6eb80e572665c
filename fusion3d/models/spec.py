"""Model configuration (the ``model`` config section), and the model names and template presets as
the registry (``fusion3d.models.registry``) lists them.

This module imports no torch: the config layer can validate a model section and resolve a preset
without loading the network code. ``resolve_arch`` turns a ``ModelConfig`` naming a template preset
into an ``Arch``, the concrete numbers ``fusion3d.models.template.FusionTemplate`` is built from; a
backbone name is built by its registered factory instead (``fusion3d.models.backbones``; same gates,
same strategies). ``registry.build_model`` builds either from a ``ModelConfig``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Literal

from fusion3d.models.registry import list_models, model_entry


def _f(default: Any, help: str) -> Any:
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: copy.deepcopy(d), metadata={"help": help})
    return field(default=default, metadata={"help": help})


# Template presets (their numbers, registered by fusion3d.models.presets) and backbones whose blocks
# are fusion slots (docs/method.md §8; registered by fusion3d.models.backbones), as registered when
# this module is first imported. The paper's DenseNet-121 backbone is the template preset
# "densenet121_3d", not a backbone.
PRESETS: dict[str, dict[str, Any]] = {
    name: copy.deepcopy(dict(model_entry(name).defaults)) for name in list_models("preset")
}
BACKBONES: tuple[str, ...] = tuple(list_models("backbone"))

# The names registered when this module was imported (for documentation); ``model.name`` itself is a
# string checked against the live registry by ``check_model_config``, so a model a user registers later
# (``fusion3d.models.registry.register_model``) is accepted by the config too.
ModelName = Literal[tuple(list_models())]  # type: ignore[valid-type]
_NAME_HELP = (
    "a registered model (fusion3d.models.list_models()): a template preset, "
    + ", ".join(f"{n} ({model_entry(n).description})" for n in PRESETS)
    + "; or a backbone with a slot per block: "
    + ", ".join(BACKBONES)
)

# Keys that only shape the template; setting one together with a backbone name is an error.
TEMPLATE_ONLY_KEYS: tuple[str, ...] = (
    "growth",
    "bottleneck_factor",
    "blocks",
    "stem_channels",
    "stem_kernel",
)
# stem_stride and stem_pool also shape a backbone's stem (small inputs: stride 1, no pool); MobileNetV2
# has no stem pool, so stem_pool=true/false is refused for it by the backbone constructor.


@dataclass(frozen=True)
class Arch:
    """Concrete architecture numbers of a fusion template (a resolved preset)."""

    name: str
    growth: int  # new channels per dense layer
    bottleneck: int  # width of the S / T paths (bottleneck_factor * growth)
    blocks: tuple[int, ...]  # dense layers per block
    stem_channels: int
    stem_kernel: tuple[int, int, int]  # (kt, kh, kw), 'same' padding, stride (1, s, s)
    stem_stride: int  # spatial stride of the stem conv
    stem_pool: bool  # MaxPool 3x3x3, stride (1, 2, 2), padding 1 after the stem conv
    dropout: float  # before the classifier

    @property
    def num_slots(self) -> int:
        return sum(self.blocks) + len(self.blocks) - 1


@dataclass
class ModelConfig:
    """The fusion template or a backbone: a name, optional overrides, and the v-DropPath gate settings."""

    name: str = _f("tiny", _NAME_HELP)
    growth: int = _f(0, "dense-layer growth rate (new channels per layer); 0 = the preset's value")
    bottleneck_factor: int = _f(0, "S/T path width = bottleneck_factor * growth; 0 = the preset's value")
    blocks: list = _f([], "dense layers per block, e.g. [6, 12, 24, 16]; [] = the preset's value")
    stem_channels: int = _f(0, "output channels of the stem conv; 0 = the preset's value")
    stem_kernel: list = _f(
        [], "stem conv kernel [kt, kh, kw] (odd sizes, 'same' padding); [] = the preset's value"
    )
    stem_stride: int = _f(
        0,
        "spatial stride of the stem conv (temporal stride is always 1); 0 = the preset's / "
        "backbone's value (2); 1 suits small inputs",
    )
    stem_pool: bool | None = _f(
        None,
        "MaxPool 3x3x3 stride (1,2,2) after the stem conv; null = the preset's / "
        "backbone's value (ResNets: true)",
    )
    dropout: float | None = _f(None, "dropout before the classifier; null = the preset's / backbone's value")
    width_mult: float = _f(1.0, "backbones only: multiplies every channel count (small widths for CPU runs)")
    num_classes: int = _f(0, "classifier outputs; 0 = take the number of classes from the dataset")
    drop_init: float = _f(0.1, "initial drop probability p of every S and T path (logit = log(p/(1-p)))")
    temperature: float = _f(0.2, "relaxed-Bernoulli temperature tau of the v-DropPath gates (fixed)")
    depth_gate: bool = _f(
        False,
        "template only: a third v-DropPath gate per slot that drops the whole slot (unit "
        "none); learns which layers are needed. Same drop_init and temperature",
    )
    conv_impl: Literal["auto", "conv3d", "conv2d"] = _f(
        "auto", "how 3x1x1 / 1xkxk / 1x1x1 convs run: conv3d, conv2d (frames folded), auto"
    )
    strategy: str = _f(
        "",
        "train one fixed strategy alone: S, ST or S+ST (every slot), a unit string "
        "'S|ST|...', or a strategy JSON file; empty: the template with v-DropPath",
    )
    pretrained_2d: str = _f(
        "",
        "a local ImageNet checkpoint of the model's 2D network (.pth/.pt state dict, torchvision or timm "
        "keys: densenet121, resnet18/50, resnext50_32x4d, resnext101_32x8d, mobilenet_v2), inflated into "
        "it when it is built (docs/method.md §9); empty: random init. Never downloads",
    )


def check_model_config(cfg: ModelConfig) -> None:
    """Cross-key checks; raises ``ValueError`` naming the key (``model.<key>``)."""
    names = list_models()  # the registry now (a model registered after this module was imported included)
    if cfg.name not in names:
        raise ValueError(
            f"config key 'model.name': {cfg.name!r} is not a registered model; choose one of "
            f"{', '.join(names)}"
        )
    defaults = ModelConfig()
    if model_entry(cfg.name).kind != "preset":
        for key in TEMPLATE_ONLY_KEYS:
            if getattr(cfg, key) != getattr(defaults, key):
                raise ValueError(
                    f"config key 'model.{key}' shapes the fusion template only; the backbone "
                    f"{cfg.name!r} does not take it (leave it at its default)"
                )
        if cfg.depth_gate:
            raise ValueError(
                f"config key 'model.depth_gate' applies to the fusion template only; the backbone "
                f"{cfg.name!r} has no depth gate (leave it false)"
            )
    elif cfg.width_mult != 1.0:
        raise ValueError(
            f"config key 'model.width_mult' applies to backbones only; the template preset "
            f"{cfg.name!r} is sized by growth / bottleneck_factor / blocks / stem_channels"
        )
    if not cfg.width_mult > 0.0:
        raise ValueError(f"config key 'model.width_mult' must be > 0, got {cfg.width_mult}")
    for key in ("growth", "bottleneck_factor", "stem_channels", "stem_stride", "num_classes"):
        if getattr(cfg, key) < 0:
            raise ValueError(
                f"config key 'model.{key}' must be >= 0 (0 = preset's value), got {getattr(cfg, key)}"
            )
    if any((not isinstance(b, int)) or isinstance(b, bool) or b < 1 for b in cfg.blocks):
        raise ValueError(f"config key 'model.blocks' must be a list of positive ints, got {cfg.blocks!r}")
    if cfg.stem_kernel and (
        len(cfg.stem_kernel) != 3
        or any(
            (not isinstance(k, int)) or isinstance(k, bool) or k < 1 or k % 2 == 0 for k in cfg.stem_kernel
        )
    ):
        raise ValueError(
            f"config key 'model.stem_kernel' must be 3 odd positive ints [kt, kh, kw], got {cfg.stem_kernel!r}"
        )
    if cfg.dropout is not None and not 0.0 <= cfg.dropout < 1.0:
        raise ValueError(f"config key 'model.dropout' must be in [0, 1), got {cfg.dropout}")
    if not 0.0 < cfg.drop_init < 1.0:
        raise ValueError(f"config key 'model.drop_init' must be in (0, 1), got {cfg.drop_init}")
    if not cfg.temperature > 0.0:
        raise ValueError(f"config key 'model.temperature' must be > 0, got {cfg.temperature}")
    if cfg.strategy:
        _check_strategy(cfg)


def _check_strategy(cfg: ModelConfig) -> None:
    """``model.strategy`` parses (a unit, a unit string, or an existing strategy JSON file), and a unit
    string has one unit per slot of a template preset. A JSON file that is gone is left to the trainer
    (a finished run's config still loads after its strategy file moved)."""
    from pathlib import Path

    from fusion3d.models.strategy import Strategy, as_strategy

    spec = cfg.strategy.strip()
    path = Path(spec)
    if spec.endswith(".json") or path.is_file():
        if path.is_file():
            try:
                Strategy.load(path)
            except (ValueError, OSError) as e:
                raise ValueError(f"config key 'model.strategy': {e}") from None
        return
    import dataclasses

    preset = model_entry(cfg.name).kind == "preset"
    slots = resolve_arch(dataclasses.replace(cfg, strategy="")).num_slots if preset else None
    try:
        if slots is None:
            as_strategy(spec, len(spec.split("|")))
        else:
            as_strategy(spec, slots)
    except (ValueError, TypeError) as e:
        raise ValueError(f"config key 'model.strategy': {e}") from None


def resolve_arch(cfg: ModelConfig) -> Arch:
    """The preset named by ``cfg.name`` with every non-default override applied."""
    check_model_config(cfg)
    entry = model_entry(cfg.name)
    if entry.kind != "preset":
        raise ValueError(f"config key 'model.name': {cfg.name!r} is a {entry.kind}, not a template preset")
    p = copy.deepcopy(dict(entry.defaults))
    for key in ("growth", "bottleneck_factor", "stem_channels", "stem_stride"):
        if getattr(cfg, key):
            p[key] = getattr(cfg, key)
    if cfg.blocks:
        p["blocks"] = list(cfg.blocks)
    if cfg.stem_kernel:
        p["stem_kernel"] = list(cfg.stem_kernel)
    if cfg.stem_pool is not None:
        p["stem_pool"] = bool(cfg.stem_pool)
    if cfg.dropout is not None:
        p["dropout"] = float(cfg.dropout)
    return Arch(
        name=cfg.name,
        growth=int(p["growth"]),
        bottleneck=int(p["bottleneck_factor"] * p["growth"]),
        blocks=tuple(int(b) for b in p["blocks"]),
        stem_channels=int(p["stem_channels"]),
        stem_kernel=tuple(int(k) for k in p["stem_kernel"]),  # type: ignore[arg-type]
        stem_stride=int(p["stem_stride"]),
        stem_pool=bool(p["stem_pool"]),
        dropout=float(p["dropout"]),
    )
