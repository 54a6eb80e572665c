"""FactorConv3d: numerically the same as F.conv3d in both impls (forward, input/weight/bias grads)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fusion3d.models.convs import FactorConv3d, conv1x1x1, conv1xkxk, conv3x1x1, resolve_impl

# (cin, cout, kernel, stride, padding, (N, T, H, W), bias)
CASES = [
    (3, 5, (3, 1, 1), 1, (1, 0, 0), (2, 5, 7, 6), False),  # temporal, 'same'
    (4, 3, (3, 1, 1), 1, 0, (1, 6, 5, 5), True),  # temporal, valid
    (2, 3, (5, 1, 1), (2, 1, 1), (2, 0, 0), (2, 7, 3, 4), True),  # temporal stride 2
    (3, 4, (3, 1, 1), (1, 2, 2), (1, 0, 0), (2, 4, 7, 5), False),  # temporal + spatial subsampling
    (3, 4, (1, 3, 3), 1, (0, 1, 1), (2, 3, 7, 9), False),  # spatial, 'same'
    (3, 4, (1, 3, 3), (1, 2, 2), (0, 1, 1), (2, 3, 9, 7), True),  # spatial stride 2, odd sizes
    (2, 3, (1, 3, 5), (2, 2, 1), (0, 1, 2), (1, 5, 8, 7), True),  # non-square kernel, temporal stride 2
    (5, 2, (1, 7, 7), (1, 2, 2), (0, 3, 3), (1, 2, 11, 13), False),  # large spatial kernel, odd sizes
    (6, 4, (1, 1, 1), 1, 0, (2, 3, 5, 7), True),  # pointwise
    (6, 4, (1, 1, 1), (1, 2, 2), 0, (2, 3, 5, 7), False),  # pointwise, spatial stride 2, odd sizes
]


@pytest.mark.parametrize("impl", ["conv2d", "conv3d"])
@pytest.mark.parametrize("case", CASES, ids=[f"{c[2]}-s{c[3]}-p{c[4]}" for c in CASES])
def test_matches_conv3d_forward_and_backward(case, impl):
    cin, cout, k, s, p, (n, t, h, w), bias = case
    torch.manual_seed(0)
    conv = FactorConv3d(cin, cout, k, s, p, bias=bias, impl=impl).double()
    x = torch.randn(n, cin, t, h, w, dtype=torch.float64, requires_grad=True)
    y = conv(x)
    x_ref = x.detach().clone().requires_grad_(True)
    w_ref = conv.weight.detach().clone().requires_grad_(True)
    b_ref = conv.bias.detach().clone().requires_grad_(True) if bias else None
    y_ref = F.conv3d(x_ref, w_ref, b_ref, conv.stride, conv.padding)
    assert y.shape == y_ref.shape
    assert tuple(y.shape[1:]) == conv.output_shape((cin, t, h, w))
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-10)
    g = torch.randn_like(y_ref)
    grads = torch.autograd.grad(y, [x, conv.weight] + ([conv.bias] if bias else []), g)
    grads_ref = torch.autograd.grad(y_ref, [x_ref, w_ref] + ([b_ref] if bias else []), g)
    for a, b in zip(grads, grads_ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_random_shapes_conv2d_matches_conv3d():
    gen = torch.Generator().manual_seed(1)
    for _ in range(12):
        r = [int(v) for v in torch.randint(1, 6, (8,), generator=gen)]
        temporal = r[0] % 2 == 0
        k = 2 * (r[1] % 3) + 1
        if temporal:
            kernel, stride, pad = (
                (k, 1, 1),
                (1 + r[2] % 2, 1 + r[3] % 2, 1 + r[3] % 2),
                (r[4] % (k // 2 + 1), 0, 0),
            )
        else:
            kernel, stride, pad = (
                (1, k, k),
                (1 + r[2] % 2, 1 + r[3] % 2, 1 + r[3] % 2),
                (0, r[4] % (k // 2 + 1), k // 2),
            )
        conv = FactorConv3d(r[5], r[6], kernel, stride, pad, impl="conv2d").double()
        x = torch.randn(
            1 + r[7] % 2,
            r[5],
            k + r[2],
            k + r[3] + 2,
            k + r[4] + 1,
            dtype=torch.float64,
            generator=gen,
            requires_grad=True,
        )
        y = conv(x)
        y_ref = F.conv3d(x, conv.weight, None, conv.stride, conv.padding)
        torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-10)
        g = torch.randn(y.shape, dtype=torch.float64, generator=gen)
        for a, b in zip(
            torch.autograd.grad(y, (x, conv.weight), g), torch.autograd.grad(y_ref, (x, conv.weight), g)
        ):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_weight_shape_and_state_dict_match_nn_conv3d():
    for conv, ref in [
        (conv3x1x1(6, 4), nn.Conv3d(6, 4, (3, 1, 1), padding=(1, 0, 0), bias=False)),
        (
            conv1xkxk(6, 4, 3, stride=2),
            nn.Conv3d(6, 4, (1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1), bias=False),
        ),
        (conv1x1x1(6, 4, bias=True), nn.Conv3d(6, 4, 1, bias=True)),
    ]:
        assert conv.weight.shape == ref.weight.shape
        assert sum(p.numel() for p in conv.parameters()) == sum(p.numel() for p in ref.parameters())
        ref.load_state_dict(conv.state_dict(), strict=True)
        conv.load_state_dict(ref.state_dict(), strict=True)
        x = torch.randn(2, 6, 3, 8, 8)
        torch.testing.assert_close(conv(x), ref(x), rtol=1e-4, atol=1e-5)


def test_impl_resolution_and_validation():
    assert resolve_impl("auto", torch.device("cpu")) == "conv2d"
    assert resolve_impl("auto", torch.device("cuda")) == "conv3d"
    assert resolve_impl("conv3d", torch.device("cpu")) == "conv3d"
    with pytest.raises(ValueError):
        resolve_impl("fft", torch.device("cpu"))
    with pytest.raises(ValueError):
        FactorConv3d(2, 2, (3, 1, 1), padding=(1, 1, 0))  # spatial padding with a 1x1 spatial kernel
    with pytest.raises(ValueError):
        FactorConv3d(2, 2, (1, 3, 3), padding=(1, 1, 1))  # temporal padding with kt = 1
    assert FactorConv3d(2, 2, (3, 3, 3), padding=1).kind == "full"
    assert "3x1x1" in repr(conv3x1x1(2, 2))
