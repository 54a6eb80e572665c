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

Inference kernels (``fast_inference``, on by default): without autograd (``torch.no_grad``, evaluation,
scoring, BatchNorm recalibration) and outside tracing, four CPU kernels are replaced by faster ones that
give the same numbers (exactly, or to float rounding where a sum is ordered differently):

- ``MaxPool3d`` (the stems' 3x3x3 max pool) is computed as separable maxima of strided views
  (width, height, then time), exactly ``F.max_pool3d``'s output (a max is exact), 3-6x faster than
  torch's CPU ``max_pool3d`` (measured: it was a fifth to a third of a tiny template's forward);
- a spatial (1 x kh x kw, groups 1) ``FactorConv3d`` with ``impl="auto"`` runs ``F.conv3d`` directly on
  a CPU batch of float32 clips instead of folding frames into the batch (two copies less; the same
  oneDNN kernel; measured bit-identical outputs and 15-25% faster). Not for a single clip, which torch
  would send through its slow vol2col kernel;
- ``ConvStem`` (the stems' conv - BatchNorm - ReLU - max pool) folds the eval-mode BatchNorm into the
  conv and pools before the ReLU (equal to float rounding);
- a pointwise (1x1x1, groups 1) ``FactorConv3d`` with ``impl="auto"`` on float32 CPU clips is one matrix
  product per clip, ``W (out, in) @ x (in, T*H*W)`` (``torch.matmul``): measured 1.2-2x faster than
  ``conv2d`` at the tiny template's sizes (torch sends a 1x1 conv of 16 clips or more to oneDNN, slower
  single-threaded than a plain GEMM), as fast at 16x112x112; the same sums (bit-identical in our
  measurements, equal to float rounding in any case).

With autograd (training) nothing changes. ``fast_inference(False)`` (a context manager) switches them
off, to measure what they bring.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

IMPLS = ("auto", "conv3d", "conv2d")

_FAST_INFERENCE = [True]


@contextmanager
def fast_inference(enabled: bool = True) -> Iterator[None]:
    """Switch the inference kernels (see the module docstring) on or off inside the block."""
    previous = _FAST_INFERENCE[0]
    _FAST_INFERENCE[0] = bool(enabled)
    try:
        yield
    finally:
        _FAST_INFERENCE[0] = previous


def inference_kernels(x: torch.Tensor) -> bool:
    """Whether a forward call on ``x`` may use the inference kernels: switched on, no autograd, no
    TorchScript tracing or scripting (an exported graph keeps the plain ops), not the meta device."""
    return (
        _FAST_INFERENCE[0]
        and not torch.is_grad_enabled()
        and not torch.jit.is_tracing()
        and not torch.jit.is_scripting()
        and x.device.type != "meta"
    )


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
        if (
            impl == "conv2d"
            and self.impl == "auto"
            and self.groups == 1
            and x.dtype == torch.float32
            and self.kind in ("spatial", "pointwise")
            and inference_kernels(x)
        ):
            if self.kind == "pointwise":  # a matrix product, faster than torch's conv kernels (docstring)
                _, sh, sw = self.stride
                if sh > 1 or sw > 1:
                    x = x[:, :, :, ::sh, ::sw]
                n, c, t, h, w = x.shape
                # detached: a weight that requires grad makes matmul fold into one mm with two copies
                y = torch.matmul(self.weight.detach().view(self.out_channels, c), x.reshape(n, c, t * h * w))
                if self.bias is not None:
                    y = y + self.bias.view(1, -1, 1)
                return y.view(n, self.out_channels, t, h, w)
            if x.shape[0] > 1:  # torch runs a single clip's conv3d through its slow vol2col kernel
                impl = "conv3d"  # without autograd the direct kernel is faster (module docstring)
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


def _max_along(x: torch.Tensor, dim: int, k: int, stride: int, pad: int) -> torch.Tensor:
    """1D max pooling of ``x`` along ``dim`` (padding counts as -inf, no ceil mode): the maximum of
    ``k`` strided views, one per kernel tap, each over the output positions it reaches."""
    size = x.shape[dim]
    out_size = (size + 2 * pad - k) // stride + 1
    out = None
    for tap in range(k):
        off = tap - pad  # output j reads input j * stride + off
        first = (-off + stride - 1) // stride if off < 0 else 0
        last = min(out_size - 1, (size - 1 - off) // stride)
        if last < first:
            continue
        src = x.narrow(dim, first * stride + off, (last - first) * stride + 1)
        if stride > 1:
            src = src[(slice(None),) * dim + (slice(None, None, stride),)]
        if out is None:
            if first == 0 and last == out_size - 1:
                out = src.clone()
                continue
            out = x.new_full((*x.shape[:dim], out_size, *x.shape[dim + 1 :]), float("-inf"))
        dst = out.narrow(dim, first, last - first + 1)
        torch.maximum(dst, src, out=dst)
    return out


class MaxPool3d(nn.MaxPool3d):
    """``nn.MaxPool3d`` whose inference forward (``inference_kernels``: no autograd) is separable: max
    over width, then height, then time, each by strided views (``_max_along``). The output equals
    ``F.max_pool3d``'s exactly; dilation, ceil mode and returned indices use torch's own kernel."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, s, p, d = (
            _triple(v)
            for v in (self.kernel_size, self.stride or self.kernel_size, self.padding, self.dilation)
        )
        if (
            not inference_kernels(x)
            or self.ceil_mode
            or self.return_indices
            or d != (1, 1, 1)
            or x.dim() != 5
            or not x.is_floating_point()
        ):
            return super().forward(x)
        for dim, kk, ss, pp in ((4, k[2], s[2], p[2]), (3, k[1], s[1], p[1]), (2, k[0], s[0], p[0])):
            if kk > 1 or ss > 1:
                x = _max_along(x, dim, kk, ss, pp)
        return x


class ConvStem(nn.Sequential):
    """A stem ``conv - norm - relu [- pool]`` (an ``nn.Sequential``: same children, same state-dict keys)
    whose inference forward (``inference_kernels``, the BatchNorm in eval mode) folds the BatchNorm into
    the conv (weights scaled, its shift as the conv's bias: one pass over the stem's output less) and
    max-pools before the ReLU (they commute, and the ReLU then sees a quarter of the values). Equal to
    the plain forward up to float rounding; anything else (training, a BatchNorm in training mode, as in
    recalibration, other layers) runs the plain ``nn.Sequential``."""

    def _foldable(self, x: torch.Tensor) -> bool:
        names = list(self._modules)
        conv, norm = self._modules.get("conv"), self._modules.get("norm")
        return (
            names in (["conv", "norm", "relu"], ["conv", "norm", "relu", "pool"])
            and isinstance(conv, nn.Conv3d)
            and conv.padding_mode == "zeros"
            and isinstance(norm, nn.BatchNorm3d)
            and not norm.training
            and norm.running_mean is not None
            and type(self._modules["relu"]) is nn.ReLU
            and ("pool" not in self._modules or isinstance(self._modules["pool"], nn.MaxPool3d))
            and inference_kernels(x)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._foldable(x):
            return super().forward(x)
        conv, norm = self.conv, self.norm
        scale = torch.rsqrt(norm.running_var + norm.eps)
        if norm.weight is not None:
            scale = scale * norm.weight
        shift = -norm.running_mean * scale
        if norm.bias is not None:
            shift = shift + norm.bias
        if conv.bias is not None:
            shift = shift + conv.bias * scale
        weight = conv.weight * scale.view(-1, 1, 1, 1, 1).to(conv.weight.dtype)
        y = F.conv3d(x, weight, shift.to(x.dtype), conv.stride, conv.padding, conv.dilation, conv.groups)
        if "pool" in self._modules:
            y = self.pool(y)
        return torch.relu_(y)
