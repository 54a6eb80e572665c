"""A 3D MobileNetV2 whose inverted residuals with expansion > 1 are fusion slots (docs/method.md §8).

Inverted residual, the expansion 1x1 is the slot:
    S path  Conv 1x1x1 (in -> hidden) - BN - ReLU6    gated by ``gate_s``
    T path  Conv 3x1x1 (in -> hidden) - BN - ReLU6    gated by ``gate_t``
    sum (after activation), depthwise Conv 1x3x3 (spatial stride) - BN - ReLU6, Conv 1x1x1 (hidden ->
    out) - BN, plus the input when stride is 1 and in == out.
The first block (expansion 1) has no expansion conv: it is a plain 2D block (depthwise 1x3x3 - BN -
ReLU6 - Conv 1x1x1 - BN), not a slot, so MobileNetV2 has 16 slots. (Gating its depthwise conv instead
would make a slot of another kind, and its unit none would have no output: it has no residual.)
Stem (our choice): Conv 3x3x3 stride (1, 2, 2) padding 1 - BN - ReLU6, the 2D stem's 3x3 inflated to 3
frames like the ResNet stem's 7x7 to 5. Head: Conv 1x1x1 -> 1280 - BN - ReLU6 - global average pool -
dropout (default 0.2, torchvision's) - Linear.

Unit ``none``: residual blocks give ``x``; blocks without a residual (stride 2 or a channel change) give
the parameter-free ``skip(x)`` of He et al.'s "option A" shortcut (``FreeSkip``): space subsampled by
the block's stride (the same output size as the depthwise conv's), channels zero-padded to the output
width (averaged in groups if a block ever narrows). Zeros instead would cut every later block off from
the input, as for the template's transitions. (An average pool over the depthwise conv's window was the
other candidate; torch's pooling refuses maps smaller than the window, which tiny clips reach.) Shared
behaviour (relaxed mode, initialisation, ``conv_impl``): ``fusion3d.models.backbone_base``.

Width: torchvision's rule, every width rounded to a multiple of 8 (at least 8, never 10 % below the exact
value), the last conv ``1280 * max(1, m)``.

The registered name (``mobilenetv2_3d``) is in ``fusion3d.models.backbones``.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from fusion3d.models.backbone_base import Backbone, BlockSlot, _bn, _check_common
from fusion3d.models.convs import conv1x1x1, conv1xkxk, conv3x1x1
from fusion3d.models.network import channel_pool, module_rf_nodes
from fusion3d.models.rf_graph import Op, Par


class FreeSkip(nn.Module):
    """Parameter-free skip for unit none of a block without a residual ("option A"): space subsampled
    by ``stride`` (ceil(H / stride), the depthwise conv's output size), channels zero-padded (or averaged
    in groups) to ``out_channels``."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :, :: self.stride, :: self.stride]
        if self.out_channels >= self.in_channels:
            return F.pad(x, (0, 0, 0, 0, 0, 0, 0, self.out_channels - self.in_channels))
        return channel_pool(x, self.out_channels)

    def rf_nodes(self) -> list:
        """``x[..., ::s, ::s]``: a 1x1x1 window with the block's spatial stride (channels are pointwise)."""
        return [Op(1, (1, self.stride, self.stride), padding=0, name="FreeSkip")]

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, stride={self.stride}"


def _act_path(conv: nn.Module, channels: int) -> nn.Sequential:
    return nn.Sequential(OrderedDict(conv=conv, norm=_bn(channels), relu=nn.ReLU6(inplace=True)))


def _dw_pw(hidden: int, out: int, stride: int, impl: str) -> nn.Sequential:
    """Depthwise 1x3x3 (spatial stride) - BN - ReLU6 - pointwise 1x1x1 - BN."""
    return nn.Sequential(
        OrderedDict(
            dwconv=conv1xkxk(hidden, hidden, 3, stride, impl=impl, groups=hidden),
            norm1=_bn(hidden),
            relu1=nn.ReLU6(inplace=True),
            pwconv=conv1x1x1(hidden, out, impl=impl),
            norm2=_bn(out),
        )
    )


class InvertedResidualSlot(BlockSlot):
    """MobileNetV2 inverted residual whose expansion 1x1 is the slot (see the module docstring)."""

    kind = "inverted"

    def __init__(
        self,
        name: str,
        in_channels: int,
        out_channels: int,
        stride: int,
        expand_ratio: int,
        drop_init: float,
        temperature: float,
        impl: str,
    ) -> None:
        hidden = int(round(in_channels * expand_ratio))
        residual = stride == 1 and in_channels == out_channels
        shortcut = nn.Identity() if residual else FreeSkip(in_channels, out_channels, stride)
        super().__init__(
            name,
            _act_path(conv1x1x1(in_channels, hidden, impl=impl), hidden),
            _act_path(conv3x1x1(in_channels, hidden, impl=impl), hidden),
            _dw_pw(hidden, out_channels, stride, impl),
            shortcut,
            residual,
            False,
            in_channels,
            out_channels,
            stride,
            drop_init,
            temperature,
        )
        self.hidden = hidden


class InvertedResidual(nn.Module):
    """MobileNetV2's first block (expansion 1, no expansion conv): a plain 2D block, not a slot."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, impl: str) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.stride = stride
        self.residual = stride == 1 and in_channels == out_channels
        self.branch = _dw_pw(in_channels, out_channels, stride, impl)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.branch(x)
        return x + out if self.residual else out

    def rf_nodes(self) -> list:
        """This block's receptive-field nodes (no slot: the same for every strategy)."""
        branch = module_rf_nodes(self.branch)
        return [Par(((), branch))] if self.residual else branch

    def summary_text(self) -> str:
        """What ``Backbone.summary`` says of this block (not a slot)."""
        return (
            f"depthwise 1x3x3 - pointwise {self.in_channels}->{self.out_channels} (expansion 1, not a slot)"
        )


def make_divisible(v: float, divisor: int = 8) -> int:
    """torchvision's MobileNet rounding: nearest multiple of ``divisor``, at least ``divisor``, and never
    more than 10 % below ``v``."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


# (expansion t, channels c, blocks n, first stride s) per stage, as in MobileNetV2 (Sandler et al. 2018).
MOBILENETV2_SETTINGS: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


class SlotMobileNetV2(Backbone):
    """A 3D MobileNetV2 whose inverted residuals with expansion > 1 are slots (see the module docstring)."""

    def __init__(
        self,
        name: str,
        num_classes: int,
        width_mult: float = 1.0,
        dropout: float | None = None,
        drop_init: float = 0.1,
        temperature: float = 0.2,
        conv_impl: str = "auto",
        in_channels: int = 3,
        zero_init_residual: bool = False,
        stem_stride: int = 2,
        stem_pool: bool | None = None,
    ) -> None:
        super().__init__()
        if stem_pool:
            raise ValueError(
                f"config key 'model.stem_pool': {name} has no stem pool (its stem is one strided conv)"
            )
        dropout = 0.2 if dropout is None else float(dropout)
        _check_common(num_classes, width_mult, dropout)
        self.name, self.num_classes, self.in_channels = name, int(num_classes), int(in_channels)
        self.width_mult, self.conv_impl = float(width_mult), conv_impl
        c = make_divisible(32 * width_mult)
        last = make_divisible(1280 * max(1.0, width_mult))
        stem = nn.Sequential(
            OrderedDict(
                conv=nn.Conv3d(
                    in_channels, c, 3, stride=(1, stem_stride, stem_stride), padding=1, bias=False
                ),
                norm=_bn(c),
                relu=nn.ReLU6(inplace=True),
            )
        )
        stages = []
        for i, (t, channels, n_blocks, s) in enumerate(MOBILENETV2_SETTINGS, start=1):
            out = make_divisible(channels * width_mult)
            blocks: OrderedDict[str, nn.Module] = OrderedDict()
            for j in range(1, n_blocks + 1):
                stride = s if j == 1 else 1
                if t == 1:
                    blocks[f"block{j}"] = InvertedResidual(c, out, stride, conv_impl)
                else:
                    blocks[f"block{j}"] = InvertedResidualSlot(
                        f"layer{i}.block{j}", c, out, stride, t, drop_init, temperature, conv_impl
                    )
                c = out
            stages.append(nn.Sequential(blocks))
        self.feature_channels = last
        head = nn.Sequential(
            OrderedDict(
                conv=conv1x1x1(c, last, impl=conv_impl),
                norm=_bn(last),
                relu=nn.ReLU6(inplace=True),
                pool=nn.AdaptiveAvgPool3d(1),
                flatten=nn.Flatten(1),
                dropout=nn.Dropout(dropout),
                fc=nn.Linear(last, num_classes),
            )
        )
        self._finish(stem, stages, head, zero_init_residual)
