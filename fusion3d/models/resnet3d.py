"""3D ResNets and ResNeXts whose every block is a fusion slot (docs/method.md §8).

ResNet-50, ResNeXt-50 (32x4d), ResNeXt-101 (32x8d): bottleneck block, the first 1x1 conv is the slot:
    S path  Conv 1x1x1 (in -> width)                   gated by ``gate_s``
    T path  Conv 3x1x1 (in -> width), temporal pad 1   gated by ``gate_t``
    sum, BN - ReLU - Conv 1x3x3 (width, the block's spatial stride and groups) - BN - ReLU -
    Conv 1x1x1 (width -> 4 planes) - BN, add the shortcut (identity, or Conv 1x1x1 stride - BN), ReLU.
ResNet-18 (basic block; the paper is silent, our choice, docs/method.md §8): the block's first 3x3 conv is the slot:
    S path  Conv 1x3x3 (in -> planes, spatial stride)  gated by ``gate_s``
    T path  Conv 3x3x3 (in -> planes, spatial stride)  gated by ``gate_t``
    sum, BN - ReLU - Conv 1x3x3 - BN, add the shortcut, ReLU.
    All-S is then exactly the 2D ResNet-18 (with the 5x7x7 stem), all-ST is an MC/R3D-style block
    (a full 3x3x3 conv then a 2D conv), S+ST sums both, and the T path weighs 3x the S path, as in
    the bottleneck. Putting the slot on a 1x1 conv instead would need a conv the 2D net does not have.
Stem: Conv 5x7x7 stride (1, 2, 2) padding (2, 3, 3) - BN - ReLU - MaxPool 3x3x3 stride (1, 2, 2)
padding 1. Head: global average pool - dropout (default 0.5, the template's) - Linear.

Unit ``none``: ``relu(shortcut(x))``, with the projection shortcut when the block has one (identity
blocks pass their input through: it is already the output of a ReLU). Shared behaviour (relaxed mode,
initialisation, ``conv_impl``): ``fusion3d.models.backbone_base``.

Width: ``width_mult`` scales every channel count: stem and stage widths ``round(c * m)`` (at least 1);
a ResNeXt block keeps its cardinality (groups) and has ``groups * max(1, int(planes * width_per_group /
64))`` channels, so groups always divide the width (torchvision's formula at m = 1).

The registered names (``resnet18_3d``, ``resnet50_3d``, ``resnext50_32x4d_3d``, ``resnext101_32x8d_3d``)
are in ``fusion3d.models.backbones``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from torch import nn

from fusion3d.models.backbone_base import Backbone, BlockSlot, _bn, _check_common
from fusion3d.models.convs import ConvStem, FactorConv3d, MaxPool3d, conv1x1x1, conv1xkxk, conv3x1x1


def _conv_path(conv: nn.Module) -> nn.Sequential:
    """A bare-conv path: ``path.conv`` is the gated conv the v-DropPath regulariser weighs."""
    return nn.Sequential(OrderedDict(conv=conv))


def _projection(in_channels: int, out_channels: int, stride: int, impl: str) -> nn.Module:
    """ResNet shortcut: identity, or Conv 1x1x1 (spatial stride) - BN when the shape changes."""
    if stride == 1 and in_channels == out_channels:
        return nn.Identity()
    return nn.Sequential(
        OrderedDict(conv=conv1x1x1(in_channels, out_channels, stride, impl=impl), norm=_bn(out_channels))
    )


class BasicSlot(BlockSlot):
    """ResNet-18 basic block; S path 1x3x3, T path 3x3x3 (see the module docstring)."""

    kind = "basic"
    expansion = 1

    def __init__(
        self,
        name: str,
        in_channels: int,
        planes: int,
        stride: int,
        drop_init: float,
        temperature: float,
        impl: str,
        groups: int = 1,
        width_per_group: int = 64,
    ) -> None:
        if groups != 1 or width_per_group != 64:
            raise ValueError("the basic block has no groups / width_per_group")
        path_s = _conv_path(conv1xkxk(in_channels, planes, 3, stride, impl=impl))
        path_t = _conv_path(FactorConv3d(in_channels, planes, 3, (1, stride, stride), 1, impl=impl))
        branch = nn.Sequential(
            OrderedDict(
                norm1=_bn(planes),
                relu1=nn.ReLU(inplace=True),
                conv2=conv1xkxk(planes, planes, 3, impl=impl),
                norm2=_bn(planes),
            )
        )
        super().__init__(
            name,
            path_s,
            path_t,
            branch,
            _projection(in_channels, planes, stride, impl),
            True,
            True,
            in_channels,
            planes,
            stride,
            drop_init,
            temperature,
        )


class BottleneckSlot(BlockSlot):
    """ResNet / ResNeXt bottleneck; S path 1x1x1, T path 3x1x1 (see the module docstring)."""

    kind = "bottleneck"
    expansion = 4

    def __init__(
        self,
        name: str,
        in_channels: int,
        planes: int,
        stride: int,
        drop_init: float,
        temperature: float,
        impl: str,
        groups: int = 1,
        width_per_group: int = 64,
    ) -> None:
        width = groups * max(1, int(planes * width_per_group / 64))
        out = planes * self.expansion
        branch = nn.Sequential(
            OrderedDict(
                norm1=_bn(width),
                relu1=nn.ReLU(inplace=True),
                conv2=conv1xkxk(width, width, 3, stride, impl=impl, groups=groups),
                norm2=_bn(width),
                relu2=nn.ReLU(inplace=True),
                conv3=conv1x1x1(width, out, impl=impl),
                norm3=_bn(out),
            )
        )
        super().__init__(
            name,
            _conv_path(conv1x1x1(in_channels, width, impl=impl)),
            _conv_path(conv3x1x1(in_channels, width, impl=impl)),
            branch,
            _projection(in_channels, out, stride, impl),
            True,
            True,
            in_channels,
            out,
            stride,
            drop_init,
            temperature,
        )
        self.width = width
        self.groups = groups


def _round(c: float) -> int:
    return max(1, int(round(c)))


class SlotResNet(Backbone):
    """A 3D ResNet / ResNeXt whose every block is a slot (see the module docstring)."""

    def __init__(
        self,
        name: str,
        block: str,
        layers: Sequence[int],
        num_classes: int,
        groups: int = 1,
        width_per_group: int = 64,
        width_mult: float = 1.0,
        dropout: float | None = None,
        drop_init: float = 0.1,
        temperature: float = 0.2,
        conv_impl: str = "auto",
        in_channels: int = 3,
        zero_init_residual: bool = False,
        stem_stride: int = 2,
        stem_pool: bool = True,
    ) -> None:
        super().__init__()
        dropout = 0.5 if dropout is None else float(dropout)
        _check_common(num_classes, width_mult, dropout)
        block_cls = {"basic": BasicSlot, "bottleneck": BottleneckSlot}[block]
        self.name, self.num_classes, self.in_channels = name, int(num_classes), int(in_channels)
        self.width_mult, self.conv_impl = float(width_mult), conv_impl
        self.groups, self.width_per_group = groups, width_per_group
        c = _round(64 * width_mult)
        stem: OrderedDict[str, nn.Module] = OrderedDict(
            conv=nn.Conv3d(
                in_channels, c, (5, 7, 7), stride=(1, stem_stride, stem_stride), padding=(2, 3, 3), bias=False
            ),
            norm=_bn(c),
            relu=nn.ReLU(inplace=True),
        )
        if stem_pool:
            stem["pool"] = MaxPool3d(kernel_size=3, stride=(1, 2, 2), padding=1)
        stem = ConvStem(stem)
        stages = []
        for i, (n_blocks, base) in enumerate(zip(layers, (64, 128, 256, 512)), start=1):
            planes = _round(base * width_mult)
            blocks = OrderedDict()
            for j in range(1, n_blocks + 1):
                stride = 2 if (i > 1 and j == 1) else 1
                blocks[f"block{j}"] = block_cls(
                    f"layer{i}.block{j}",
                    c,
                    planes,
                    stride,
                    drop_init,
                    temperature,
                    conv_impl,
                    groups,
                    width_per_group,
                )
                c = blocks[f"block{j}"].out_channels
            stages.append(nn.Sequential(blocks))
        self.feature_channels = c
        head = nn.Sequential(
            OrderedDict(
                pool=nn.AdaptiveAvgPool3d(1),
                flatten=nn.Flatten(1),
                dropout=nn.Dropout(dropout),
                fc=nn.Linear(c, num_classes),
            )
        )
        self._finish(stem, stages, head, zero_init_residual)
