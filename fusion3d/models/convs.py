"""Factorised 3D convolutions (3x1x1 temporal, 1xkxk spatial, 1x1x1 pointwise).

``FactorConv3d`` holds its weight with the exact ``nn.Conv3d`` shape ``(out, in, kt, kh, kw)`` (and an
optional ``bias``), so parameter counts and state-dict keys match ``nn.Conv3d``; only the way the
convolution is computed changes with ``impl``:

- ``"conv3d"``: plain ``F.conv3d``.
- ``"conv2d"``: the same numbers through 2D kernels, which are much faster on a CPU (the CPU backward
  of ``conv3d`` goes through a slow vol2col path):

  * temporal / pointwise (``kh = kw = 1``): the clip ``(N, C, T, H, W)`` is viewed as ``(N, C, T, H*W)``
    and convolved with the kernel ``(kt, 1)``; a spatial stride is applied by subsampling first.
  * spatial (``kt = 1``): frames are folded into the batch, ``(N*T, C, H, W)``, and convolved with
    the kernel ``(kh, kw)``; a temporal stride is applied by subsampling frames first.

- ``"auto"``: ``"conv3d"`` on CUDA (cuDNN handles these shapes well), ``"conv2d"`` elsewhere. It is
  decided at every call from the input's device, so moving a model between devices needs nothing.

Padding, stride and ``groups`` follow ``nn.Conv3d`` exactly (grouped and depthwise 1x3x3 convs of
ResNeXt and MobileNetV2 run through the same 2D kernels). A kernel that is neither ``kt = 1`` nor ``kh = kw = 1``
(a full 3D kernel such as the stem's 5x7x7) is always computed with ``F.conv3d``. Padding along an
axis whose kernel size is 1 is not supported (it would only add zero borders) and raises.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

IMPLS = ("auto", "conv3d", "conv2d")


def _triple(v: int | tuple[int, ...] | list[int]) -> tuple[int, int, int]:
    if isinstance(v, int):
        return (v, v, v)
    t = tuple(int(a) for a in v)
    if len(t) != 3:
        raise ValueError(f"expected an int or 3 ints, got {v!r}")
    return t  # type: ignore[return-value]


def resolve_impl(impl: str, device: torch.device) -> str:
    """``"auto"`` -> ``"conv3d"`` on CUDA, ``"conv2d"`` elsewhere; other values pass through."""
    if impl not in IMPLS:
        raise ValueError(f"conv impl must be one of {', '.join(IMPLS)}, got {impl!r}")
    if impl == "auto":
        return "conv3d" if device.type == "cuda" else "conv2d"
    return impl


class FactorConv3d(nn.Module):
    """A Conv3d whose kernel is temporal (kt x 1 x 1), spatial (1 x kh x kw) or pointwise (1x1x1).

    Same constructor arguments, weight shape, initialisation and output as ``nn.Conv3d`` (no
    dilation); ``impl`` picks how it is computed (see the module docstring).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int, int],
        stride: int | tuple[int, int, int] = 1,
        padding: int | tuple[int, int, int] = 0,
        bias: bool = False,
        impl: str = "auto",
        groups: int = 1,
    ) -> None:
        super().__init__()
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.groups = int(groups)
        if self.groups < 1 or self.in_channels % self.groups or self.out_channels % self.groups:
            raise ValueError(
                f"groups={groups} must divide in_channels={in_channels} and out_channels={out_channels}"
            )
        self.kernel_size = _triple(kernel_size)
        self.stride = _triple(stride)
        self.padding = _triple(padding)
        if impl not in IMPLS:
            raise ValueError(f"conv impl must be one of {', '.join(IMPLS)}, got {impl!r}")
        self.impl = impl
        kt, kh, kw = self.kernel_size
        pt, ph, pw = self.padding
        if kh == 1 and kw == 1:
            self.kind = "pointwise" if kt == 1 else "temporal"
            if ph or pw:
                raise ValueError(f"spatial padding {self.padding} with a {kt}x1x1 kernel is not supported")
            if kt == 1 and pt:
                raise ValueError(f"temporal padding {self.padding} with a 1x1x1 kernel is not supported")
        elif kt == 1:
            self.kind = "spatial"
            if pt:
                raise ValueError(
                    f"temporal padding {self.padding} with a 1x{kh}x{kw} kernel is not supported"
                )
        else:
            self.kind = "full"
        self.weight = nn.Parameter(
            torch.empty(self.out_channels, self.in_channels // self.groups, kt, kh, kw)
        )
        self.bias = nn.Parameter(torch.empty(self.out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The initialisation of ``nn.Conv3d``."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.weight[0].numel()
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
            nn.init.uniform_(self.bias, -bound, bound)

    def output_shape(self, shape: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
        """Output ``(C, T, H, W)`` for an input ``(C, T, H, W)`` (Conv3d arithmetic)."""
        _, *sizes = shape
        out = [
            (s + 2 * p - k) // st + 1
            for s, k, st, p in zip(sizes, self.kernel_size, self.stride, self.padding)
        ]
        return (self.out_channels, *out)  # type: ignore[return-value]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        impl = resolve_impl(self.impl, x.device)
        if impl == "conv3d" or self.kind == "full":
            return F.conv3d(x, self.weight, self.bias, self.stride, self.padding, 1, self.groups)
        st, sh, sw = self.stride
        if self.kind in ("temporal", "pointwise"):
            if sh > 1 or sw > 1:
                x = x[:, :, :, ::sh, ::sw]
            n, c, t, h, w = x.shape
            y = F.conv2d(
                x.reshape(n, c, t, h * w),
                self.weight.squeeze(-1),
                self.bias,
                (st, 1),
                (self.padding[0], 0),
                1,
                self.groups,
            )
            return y.view(n, self.out_channels, y.shape[2], h, w)
        # spatial: fold frames into the batch
        if st > 1:
            x = x[:, :, ::st]
        n, c, t, h, w = x.shape
        y = F.conv2d(
            x.transpose(1, 2).reshape(n * t, c, h, w),
            self.weight.squeeze(2),
            self.bias,
            (sh, sw),
            self.padding[1:],
            1,
            self.groups,
        )
        return y.view(n, t, self.out_channels, y.shape[2], y.shape[3]).transpose(1, 2).contiguous()

    def extra_repr(self) -> str:
        k = "x".join(map(str, self.kernel_size))
        s = f"{self.in_channels}, {self.out_channels}, kernel={k}"
        if self.stride != (1, 1, 1):
            s += f", stride={self.stride}"
        if self.padding != (0, 0, 0):
            s += f", padding={self.padding}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        if self.impl != "auto":
            s += f", impl={self.impl}"
        return s


def conv1x1x1(
    in_channels: int, out_channels: int, stride: int = 1, bias: bool = False, impl: str = "auto"
) -> FactorConv3d:
    """Pointwise conv (a per-frame, per-pixel linear map); ``stride`` is spatial."""
    return FactorConv3d(in_channels, out_channels, 1, (1, stride, stride), 0, bias, impl)


def conv3x1x1(
    in_channels: int, out_channels: int, kt: int = 3, bias: bool = False, impl: str = "auto"
) -> FactorConv3d:
    """Temporal conv, kernel ``kt x 1 x 1``, 'same' temporal padding, stride 1."""
    return FactorConv3d(in_channels, out_channels, (kt, 1, 1), 1, (kt // 2, 0, 0), bias, impl)


def conv1xkxk(
    in_channels: int,
    out_channels: int,
    k: int = 3,
    stride: int = 1,
    bias: bool = False,
    impl: str = "auto",
    groups: int = 1,
) -> FactorConv3d:
    """Spatial conv, kernel ``1 x k x k``, 'same' spatial padding, spatial ``stride``, ``groups``
    (``groups = channels`` is a depthwise conv)."""
    return FactorConv3d(
        in_channels, out_channels, (1, k, k), (1, stride, stride), (0, k // 2, k // 2), bias, impl, groups
    )
