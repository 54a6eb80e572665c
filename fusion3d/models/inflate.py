"""2D -> 3D inflation: an ImageNet checkpoint of a 2D network loaded into its fusion3d network
(docs/method.md §9). ``model.pretrained_2d=PATH`` and ``create(name, ..., pretrained_2d=PATH)`` call
``inflate_2d``; nothing is ever downloaded.

The checkpoint is a local ``.pth`` / ``.pt`` file holding a state dict (possibly nested under
``"state_dict"`` or ``"model"``, possibly with DataParallel's ``module.`` prefix), with torchvision's or
timm's key names:

=============================  ==========================  =========================================
2D family                      fusion3d network            key names
=============================  ==========================  =========================================
densenet121                    the template                torchvision = timm (``features.*``,
                               (``densenet121_3d``)        ``classifier``); torchvision's legacy
                                                           ``denselayerN.norm.1`` keys are renamed
resnet18, resnet50,            ``resnet18_3d``, ...        torchvision = timm (``conv1``, ``bn1``,
resnext50_32x4d,                                           ``layerI.J.*``, ``downsample.0/1``, ``fc``)
resnext101_32x8d
mobilenet_v2                   ``mobilenetv2_3d``          torchvision (``features.N.*``,
                                                           ``classifier.1``); timm's ``mobilenetv2_100``
                                                           keys (``conv_stem``, ``bn1``, ``blocks.I.J.*``,
                                                           ``conv_head``, ``bn2``, ``classifier``) are
                                                           renamed to torchvision's
=============================  ==========================  =========================================

The rule, for a 2D conv of kernel k x k (weights ``(O, I, k, k)``):

- the stem conv becomes ``t x k x k``: the 2D kernel repeated ``t`` times along time, divided by ``t``;
- a slot's first conv (the 1x1 of a dense layer, a transition, a bottleneck or an inverted residual;
  the first 3x3 of a basic block) is copied twice: to the S path as ``1 x k x k`` and to the T path as
  ``3 x k x k`` (repeated along time, divided by 3);
- every other conv becomes ``1 x k x k`` (a copy);
- BatchNorm weight, bias and running statistics are copied; where both paths of a slot have their own
  BatchNorm (the template's pre-activation BN before the path conv, MobileNetV2's BN after the expansion
  conv) each path gets a copy of the 2D one; a BN after the sum of the paths (ResNet's ``bn1``) is copied
  once;
- the classifier is copied when the class count matches and re-initialised otherwise.

So an all-S network computes, on a clip of one repeated frame, what the 2D network computes on that
frame, wherever the stem's zero time-padding is out of reach (tests/test_inflate.py).

Everything is checked before anything is written: a checkpoint of another family, of another depth or
of other widths (``model.width_mult``) is refused with ``InflationError`` naming what differs, and the
model is left as it was. ``inflate_2d`` returns an ``InflationReport``: which keys were mapped (and how),
which checkpoint keys were skipped and which model keys were not loaded (the gate logits, a
re-initialised classifier).
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fusion3d.errors import FusionError
from fusion3d.models.convs import FactorConv3d
from fusion3d.models.mobilenet3d import InvertedResidual, SlotMobileNetV2
from fusion3d.models.network import SlotNetwork
from fusion3d.models.resnet3d import SlotResNet

KEY = "config key 'model.pretrained_2d'"
SUPPORTED = "densenet121, resnet18, resnet50, resnext50_32x4d, resnext101_32x8d, mobilenet_v2"
_BN_OPTIONAL = ("num_batches_tracked",)  # timm and older checkpoints may lack it; BN in eval never reads it


class InflationError(FusionError, ValueError):
    """A 2D checkpoint that cannot be inflated into the model: not a file, not a state dict, another
    family, depth or width. The message names the key and what differs."""


# ---- reading a checkpoint ----------------------------------------------------------------------


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and any(isinstance(v, torch.Tensor) for v in obj.values())


def state_dict_2d(obj: Any, where: str = "the checkpoint") -> tuple[dict[str, torch.Tensor], str]:
    """(state dict with torchvision key names, the key format found) of a loaded checkpoint object:
    unwraps ``"state_dict"`` / ``"model"``, strips DataParallel's ``module.``, renames torchvision's legacy
    DenseNet keys and timm's MobileNetV2 keys."""
    for _ in range(3):  # {"state_dict": {"model": ...}} at most; a state dict has no key "model"
        if not isinstance(obj, Mapping):
            break
        inner = next((obj[k] for k in ("state_dict", "model") if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = inner
    if not _is_state_dict(obj):
        raise InflationError(
            f"{KEY}: {where} holds no state dict (a mapping of tensors, possibly under 'state_dict' or "
            "'model'); save the 2D network's model.state_dict()"
        )
    sd = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if all(k.startswith("module.") for k in sd):
        sd = {k[len("module.") :]: v for k, v in sd.items()}
    fmt = "torchvision/timm"
    legacy = re.compile(
        r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$"
    )
    if any(legacy.match(k) for k in sd):
        sd = {(m.group(1) + m.group(2) if (m := legacy.match(k)) else k): v for k, v in sd.items()}
        fmt = "torchvision (legacy DenseNet keys denselayerN.norm.1, renamed)"
    if "conv_stem.weight" in sd:
        sd = _timm_mobilenetv2(sd)
        fmt = "timm (MobileNetV2 keys conv_stem / blocks / conv_head, renamed)"
    return sd, fmt


def read_checkpoint_2d(path: str | Path) -> tuple[dict[str, torch.Tensor], str]:
    """``state_dict_2d`` of a local file (loaded on the CPU with ``weights_only=True``)."""
    p = Path(path)
    if not p.is_file():
        raise InflationError(
            f"{KEY}: {p} does not exist (a local .pth/.pt state dict of a 2D network; nothing is downloaded)"
        )
    try:  # tensors and plain containers only (timm's training checkpoints add their argparse args)
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the user's input
        first = (str(e).strip().splitlines() or [""])[0][:160]
        raise InflationError(
            f"{KEY}: {p} is not a readable torch state dict ({type(e).__name__}: {first}); it is loaded "
            "with weights_only=True, so a file that pickles other objects must be re-saved as a plain "
            "state dict (torch.save(model.state_dict(), path))"
        ) from None
    return state_dict_2d(obj, str(p))


_TIMM_MBV2 = {  # timm InvertedResidual / DepthwiseSeparableConv names -> torchvision's, inside a block
    "ir": {
        "conv_pw": "conv.0.0",
        "bn1": "conv.0.1",
        "conv_dw": "conv.1.0",
        "bn2": "conv.1.1",
        "conv_pwl": "conv.2",
        "bn3": "conv.3",
    },
    "ds": {"conv_dw": "conv.0.0", "bn1": "conv.0.1", "conv_pw": "conv.1", "bn2": "conv.2"},
}


def _timm_mobilenetv2(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm ``mobilenetv2_*`` keys -> torchvision ``mobilenet_v2`` keys (blocks numbered in order)."""
    blocks = sorted({(int(m[1]), int(m[2])) for k in sd if (m := re.match(r"blocks\.(\d+)\.(\d+)\.", k))})
    index = {ij: n for n, ij in enumerate(blocks, start=1)}
    head = len(blocks) + 1
    out: dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        if m := re.match(r"blocks\.(\d+)\.(\d+)\.([a-z_]+\d?)\.(.+)$", k):
            n = index[(int(m[1]), int(m[2]))]
            kind = "ir" if f"blocks.{m[1]}.{m[2]}.conv_pwl.weight" in sd else "ds"
            sub = _TIMM_MBV2[kind].get(m[3])
            out[f"features.{n}.{sub}.{m[4]}" if sub else k] = v
            continue
        renames = (
            ("conv_stem.", "features.0.0."),
            ("bn1.", "features.0.1."),
            ("conv_head.", f"features.{head}.0."),
            ("bn2.", f"features.{head}.1."),
            ("classifier.", "classifier.1."),
        )
        for a, b in renames:
            if k.startswith(a):
                k = b + k[len(a) :]
                break
        out[k] = v
    return out


# ---- families --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Layout:
    """What must agree between a 2D checkpoint and a model: the family, and its block structure."""

    family: str  # densenet | resnet | mobilenet_v2
    name: str  # e.g. resnet50, or the model's registered name
    structure: tuple


_DENSENETS = {
    (6, 12, 24, 16): "densenet121",
    (6, 12, 32, 32): "densenet169",
    (6, 12, 48, 32): "densenet201",
    (6, 12, 36, 24): "densenet161",
}


def _counts(sd: Mapping[str, Any], pattern: str, group_fmt: str, max_groups: int = 16) -> tuple[int, ...]:
    """Per group g = 1, 2, ...: how many distinct indices ``pattern.format(g)`` captures (stops at 0)."""
    out = []
    for g in range(1, max_groups + 1):
        rx = re.compile(pattern.format(group_fmt.format(g)))
        n = len({m[1] for k in sd if (m := rx.match(k))})
        if not n:
            break
        out.append(n)
    return tuple(out)


def _resnet_name(block: str, layers: tuple[int, ...], groups: int, wpg: float) -> str:
    depth = (2 if block == "basic" else 3) * sum(layers) + 2
    if groups > 1:
        return f"resnext{depth}_{groups}x{int(wpg)}d"
    return f"wide_resnet{depth}_{int(wpg) // 64}" if wpg > 64 else f"resnet{depth}"


def detect_2d(sd: Mapping[str, torch.Tensor]) -> Layout:
    """The 2D family of a state dict with torchvision key names (``state_dict_2d``)."""
    if any(k.startswith("features.denseblock") for k in sd):
        blocks = _counts(sd, r"features\.{}\.denselayer(\d+)\.", "denseblock{}")
        return Layout("densenet", _DENSENETS.get(blocks, f"densenet (blocks {list(blocks)})"), blocks)
    if "conv1.weight" in sd and "layer1.0.conv1.weight" in sd:
        layers = _counts(sd, r"{}\.(\d+)\.", "layer{}", 4)
        if "layer1.0.conv3.weight" not in sd:
            return Layout("resnet", _resnet_name("basic", layers, 1, 64), ("basic", layers, 1))
        conv2, conv3 = sd["layer1.0.conv2.weight"], sd["layer1.0.conv3.weight"]
        groups = conv2.shape[0] // conv2.shape[1]
        wpg = conv2.shape[0] / groups * 64 / (conv3.shape[0] / 4)
        return Layout(
            "resnet", _resnet_name("bottleneck", layers, groups, wpg), ("bottleneck", layers, groups)
        )
    if (
        "features.0.0.weight" in sd
        and "features.1.conv.0.0.weight" in sd
        and not any(k.startswith("blocks.") for k in sd)
    ):
        n = len({m[1] for k in sd if (m := re.match(r"features\.(\d+)\.conv\.", k))})
        return Layout("mobilenet_v2", "mobilenet_v2", (n,))
    head = ", ".join(list(sd)[:4])
    if any(k.startswith("blocks.") for k in sd):
        why = "it is a timm MobileNet / EfficientNet other than mobilenetv2_* (its blocks have other layers)"
    elif any(".gate_s.logit" in k for k in sd):
        why = "it is a fusion3d checkpoint (3D weights with gate logits): load it with --init instead"
    elif "conv1.0.weight" in sd:
        why = "it is a deep-stem ResNet (timm resnet*c / resnet*d): its three-conv stem has no fusion3d counterpart"
    else:
        why = f"its keys ({head}, ...) are not those of a supported torchvision / timm network ({SUPPORTED})"
    raise InflationError(f"{KEY}: cannot inflate this checkpoint: {why}")


def _is_template(model: nn.Module) -> bool:
    """The fusion template (``fusion3d.models.template`` is not imported here: it imports the registry,
    which imports this module)."""
    return isinstance(model, SlotNetwork) and hasattr(model, "arch") and hasattr(model, "features")


def model_layout(model: nn.Module) -> Layout:
    """The 2D family a fusion3d network inflates from, and its block structure."""
    if isinstance(model, SlotResNet):
        layers = tuple(len(getattr(model, n)) for n in model.stage_names)
        return Layout("resnet", model.name, (model.layer1.block1.kind, layers, model.groups))
    if isinstance(model, SlotMobileNetV2):
        return Layout("mobilenet_v2", model.name, (sum(len(getattr(model, n)) for n in model.stage_names),))
    if _is_template(model):
        return Layout("densenet", model.arch.name, tuple(model.arch.blocks))
    raise InflationError(f"{KEY}: {type(model).__name__} has no 2D counterpart to inflate from ({SUPPORTED})")


def _expects(layout: Layout) -> str:
    if layout.family == "densenet":
        return _DENSENETS.get(layout.structure, f"a DenseNet with blocks {list(layout.structure)}")
    if layout.family == "mobilenet_v2":
        return "mobilenet_v2"
    block, layers, groups = layout.structure
    name = layout.name.removesuffix("_3d")
    return f"{name} ({block} blocks {list(layers)}, groups {groups})"


# ---- what goes where: {3D module: 2D module} ----------------------------------------------------


def _slot_pair(dst: str, src_conv: str, src_norm: str | None = None) -> dict[str, str]:
    """A slot's first conv to both paths (and the paths' own BN, when they have one)."""
    plan = {f"{dst}.path_s.conv": src_conv, f"{dst}.path_t.conv": src_conv}
    if src_norm:
        plan |= {f"{dst}.path_s.norm": src_norm, f"{dst}.path_t.norm": src_norm}
    return plan


def _plan_densenet(model: nn.Module) -> dict[str, str]:
    plan = {"stem.conv": "features.conv0", "stem.norm": "features.norm0"}
    for name, mod in model.features.named_children():
        if name.startswith("transition"):
            src = f"features.{name}"
            plan |= _slot_pair(f"features.{name}", f"{src}.conv", f"{src}.norm")
            continue
        for lname, _ in mod.named_children():
            src, dst = (
                f"features.denseblock{name[len('block') :]}.denselayer{lname[len('layer') :]}",
                f"features.{name}.{lname}",
            )
            plan |= _slot_pair(dst, f"{src}.conv1", f"{src}.norm1")
            plan |= {f"{dst}.shared.norm": f"{src}.norm2", f"{dst}.shared.conv": f"{src}.conv2"}
    return plan | {"head.norm": "features.norm5", "head.fc": "classifier"}


def _plan_resnet(model: nn.Module) -> dict[str, str]:
    plan = {"stem.conv": "conv1", "stem.norm": "bn1"}
    for i, stage in enumerate(model.stage_names, start=1):
        for j, (bname, block) in enumerate(getattr(model, stage).named_children()):
            src, dst = f"layer{i}.{j}", f"{stage}.{bname}"
            plan |= _slot_pair(dst, f"{src}.conv1")  # bn1 follows the sum of the paths: one copy
            for n in ("1", "2", "3"):
                if hasattr(block.branch, f"norm{n}"):
                    plan[f"{dst}.branch.norm{n}"] = f"{src}.bn{n}"
                if n != "1" and hasattr(block.branch, f"conv{n}"):
                    plan[f"{dst}.branch.conv{n}"] = f"{src}.conv{n}"
            if isinstance(block.shortcut, nn.Sequential):
                plan |= {
                    f"{dst}.shortcut.conv": f"{src}.downsample.0",
                    f"{dst}.shortcut.norm": f"{src}.downsample.1",
                }
    return plan | {"head.fc": "fc"}


def _plan_mobilenet(model: nn.Module) -> dict[str, str]:
    plan, k = {"stem.conv": "features.0.0", "stem.norm": "features.0.1"}, 1
    for stage in model.stage_names:
        for bname, block in getattr(model, stage).named_children():
            src, dst = f"features.{k}.conv", f"{stage}.{bname}"
            if isinstance(block, InvertedResidual):  # expansion 1: depthwise - BN - pointwise - BN
                names = {"dwconv": "0.0", "norm1": "0.1", "pwconv": "1", "norm2": "2"}
            else:
                plan |= _slot_pair(dst, f"{src}.0.0", f"{src}.0.1")  # each path: conv - BN - ReLU6
                names = {"dwconv": "1.0", "norm1": "1.1", "pwconv": "2", "norm2": "3"}
            plan |= {f"{dst}.branch.{a}": f"{src}.{b}" for a, b in names.items()}
            k += 1
    return plan | {"head.conv": f"features.{k}.0", "head.norm": f"features.{k}.1", "head.fc": "classifier.1"}


_PLANS = {"densenet": _plan_densenet, "resnet": _plan_resnet, "mobilenet_v2": _plan_mobilenet}


# ---- the report ----------------------------------------------------------------------------------


@dataclass
class InflationReport:
    """What ``inflate_2d`` did. ``mapped``: {3D key: (2D key, rule)}; ``skipped``: {2D key: why it was not
    loaded}; ``missing``: {3D key: why it kept its value}."""

    source: str
    family: str
    key_format: str
    model: str
    mapped: dict[str, tuple[str, str]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        """A few lines: counts, the rules used, and the skipped / missing keys grouped by reason."""
        rules = Counter(rule for _, rule in self.mapped.values())
        used = len({src for src, _ in self.mapped.values()})
        lines = [
            f"inflated {self.family} ({self.key_format} keys) from {self.source} into {self.model}: "
            f"{len(self.mapped)} tensors from {used} checkpoint keys, {len(self.skipped)} skipped, "
            f"{len(self.missing)} not loaded",
            "  mapped: " + "; ".join(f"{n} {rule}" for rule, n in sorted(rules.items())),
        ]
        for what, keys in (("skipped", self.skipped), ("not loaded", self.missing)):
            by_reason: dict[str, list[str]] = {}
            for k, why in keys.items():
                by_reason.setdefault(why, []).append(k)
            for why, ks in by_reason.items():
                shown = ", ".join(ks[:3]) + (f", ... ({len(ks)} keys)" if len(ks) > 3 else "")
                lines.append(f"  {what}: {shown}: {why}")
        return "\n".join(lines)

    def table(self) -> str:
        """Every key, one line each: ``3D key <- 2D key (rule)``, then the skipped and missing keys."""
        out = [f"{dst} <- {src} ({rule})" for dst, (src, rule) in self.mapped.items()]
        out += [f"skipped {k}: {why}" for k, why in self.skipped.items()]
        return "\n".join(out + [f"not loaded {k}: {why}" for k, why in self.missing.items()])

    __str__ = summary


# ---- inflation -----------------------------------------------------------------------------------


def _inflate_conv(w: torch.Tensor, shape: torch.Size) -> tuple[torch.Tensor, str] | None:
    """A 2D conv weight ``(O, I, kh, kw)`` as a 3D one of ``shape`` ``(O, I, kt, kh, kw)``: repeated
    ``kt`` times along time and divided by ``kt`` (a copy when ``kt = 1``); None when it does not fit."""
    if w.dim() != 4 or len(shape) != 5 or tuple(w.shape) != (shape[0], shape[1], shape[3], shape[4]):
        return None
    kt = shape[2]
    k = "x".join(map(str, w.shape[2:]))
    if kt == 1:
        return w.unsqueeze(2).clone(), f"{k} -> 1x{k}"
    return w.unsqueeze(2).repeat(1, 1, kt, 1, 1) / kt, f"{k} -> {kt}x{k} (repeated, /{kt})"


def _fmt(shape: Any) -> str:
    return "x".join(map(str, shape)) if len(shape) else "scalar"


def inflate_2d(
    model: nn.Module, source: str | Path | Mapping[str, Any], strict: bool = True
) -> InflationReport:
    """Load a 2D ImageNet checkpoint (a file path, or an already loaded checkpoint / state dict) into
    ``model`` by the rule of the module docstring, and say what was done.

    Checks first, writes after: a checkpoint of another family or depth, a tensor whose shape does not
    fit (other widths: ``model.width_mult``), or, with ``strict``, a model tensor the checkpoint should
    have filled and does not (the gate logits and a re-initialised classifier excepted; also
    ``num_batches_tracked``) raise ``InflationError`` and leave ``model`` untouched."""
    if isinstance(source, Mapping):
        sd, fmt = state_dict_2d(source)
        where = "a state dict"
    else:
        sd, fmt = read_checkpoint_2d(source)
        where = str(source)
    have, want = detect_2d(sd), model_layout(model)
    if have.family != want.family or have.structure != want.structure:
        raise InflationError(
            f"{KEY}: {where} is a {have.name} checkpoint, but the model {want.name} inflates from "
            f"{_expects(want)}: give a checkpoint of that network"
        )
    report = InflationReport(where, have.name, fmt, want.name)
    plan = _PLANS[want.family](model)
    modules = dict(model.named_modules())
    fc = modules["head.fc"]
    src_fc = sd.get(f"{plan['head.fc']}.weight")
    if src_fc is None:
        reinit = "re-initialised: the checkpoint has no classifier"
    elif src_fc.dim() == 2 and src_fc.shape[0] != fc.weight.shape[0]:
        reinit = (
            f"re-initialised: the model has {fc.weight.shape[0]} classes, the checkpoint {src_fc.shape[0]}"
        )
    else:
        reinit = ""
    writes: list[tuple[torch.Tensor, torch.Tensor]] = []
    bad: list[str] = []
    for dst, src in plan.items():
        mod = modules[dst]
        for pname, target in [*mod.named_parameters(recurse=False), *mod.named_buffers(recurse=False)]:
            dkey, skey = f"{dst}.{pname}", f"{src}.{pname}"
            if dst == "head.fc" and reinit:
                report.missing[dkey] = reinit
                if skey in sd:
                    report.skipped[skey] = reinit
                continue
            if skey not in sd:
                report.missing[dkey] = f"{skey} is not in the checkpoint"
                continue
            w = sd[skey]
            if isinstance(mod, (nn.Conv3d, FactorConv3d)) and pname == "weight":
                done = _inflate_conv(w, target.shape)
            else:
                done = (w, "copy") if tuple(w.shape) == tuple(target.shape) else None
            if done is None:
                bad.append(f"{skey} ({_fmt(w.shape)}) -> {dkey} ({_fmt(target.shape)})")
                continue
            writes.append((target, done[0]))
            report.mapped[dkey] = (skey, done[1])
    if bad:
        hint = (
            "the densenet121_3d preset, with no growth / bottleneck_factor / stem_channels override and a "
            "7x7 stem (model.stem_kernel=[kt, 7, 7]); tiny and small are other networks"
            if want.family == "densenet"
            else "model.width_mult=1"
        )
        raise InflationError(
            f"{KEY}: {where} ({have.name}) does not fit {want.name}: {len(bad)} tensors differ in shape, "
            f"e.g. {'; '.join(bad[:3])}. An ImageNet checkpoint needs the full-size network: {hint}"
        )
    for key in model.state_dict():
        if key.rpartition(".")[0] not in plan:  # the plan names the modules that own their tensors
            gate = re.search(r"\.gate_[std]\.logit$", key)
            report.missing[key] = (
                "v-DropPath gate logit: no 2D counterpart, kept (model.drop_init in a new network)"
                if gate
                else "no 2D counterpart"
            )
    used = {src for src, _ in report.mapped.values()}
    for key in sd:
        if key not in used and key not in report.skipped:
            report.skipped[key] = f"no counterpart in {want.name}"
    required = [
        k
        for k, why in report.missing.items()
        if not why.startswith(("re-initialised", "v-DropPath")) and not k.endswith(_BN_OPTIONAL)
    ]
    if strict and required:
        raise InflationError(
            f"{KEY}: {where} ({have.name}) leaves {len(required)} tensors of {want.name} unfilled, e.g. "
            f"{', '.join(required[:3])} ({report.missing[required[0]]}): the checkpoint is incomplete"
        )
    with torch.no_grad():
        for target, value in writes:
            target.copy_(value.to(dtype=target.dtype, device=target.device))
        if reinit:
            fc.reset_parameters()
            nn.init.zeros_(fc.bias)  # the networks' own initialisation (fusion3d.models.network.init_weights)
    return report
