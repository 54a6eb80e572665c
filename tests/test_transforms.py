"""Transforms are tensor ops with exact geometry."""

import numpy as np
import torch

from fusion3d.data.transforms import (
    center_crop,
    eval_geometry,
    hflip,
    normalize,
    resize_short_side,
    swap_label,
    three_crop,
    to_float_cthw,
    train_geometry,
)


def _frames(t=2, h=40, w=60):
    x = np.zeros((t, h, w, 3), np.uint8)
    x[..., 0] = np.arange(w)[None, None, :]
    x[..., 1] = np.arange(h)[None, :, None]
    return torch.from_numpy(x)


def test_resize_short_side_keeps_aspect():
    assert resize_short_side(_frames(h=40, w=60), 20).shape == (2, 20, 30, 3)
    assert resize_short_side(_frames(h=60, w=40), 20).shape == (2, 30, 20, 3)


def test_center_and_three_crops_take_the_expected_windows():
    x = _frames(h=40, w=60)
    c = center_crop(x, 40)
    assert c[0, 0, 0, 0] == 10
    lefts = [int(three_crop(x, 40, i)[0, 0, 0, 0]) for i in range(3)]
    assert lefts == [0, 10, 20]


def test_hflip_mirrors_width():
    x = _frames()
    assert hflip(x)[0, 0, 0, 0] == 59


def test_output_layout_is_c_t_h_w_and_normalised():
    x = to_float_cthw(_frames())
    assert x.shape == (3, 2, 40, 60) and x.max() <= 1.0
    n = normalize(x, [0.5] * 3, [0.25] * 3)
    assert torch.allclose(n, (x - 0.5) / 0.25)


def test_swap_label_uses_the_pairs_both_ways():
    assert [swap_label(i, [(1, 2)]) for i in range(4)] == [0, 2, 1, 3]


def test_train_geometry_is_deterministic_for_a_seed():
    f = _frames(h=48, w=64).numpy()
    a, fa = train_geometry(f, 40, 48, 32, "on", np.random.default_rng(5))
    b, fb = train_geometry(f, 40, 48, 32, "on", np.random.default_rng(5))
    assert torch.equal(a, b) and fa == fb and a.shape == (2, 32, 32, 3)


def test_train_geometry_never_flips_when_off():
    f = _frames(h=48, w=64).numpy()
    assert not any(train_geometry(f, 40, 40, 32, "off", np.random.default_rng(s))[1] for s in range(30))


def test_eval_geometry_three_crops_differ():
    f = _frames(h=48, w=96).numpy()
    crops = [eval_geometry(f, 48, 48, 3, r) for r in range(3)]
    assert crops[0].shape == (2, 48, 48, 3) and not torch.equal(crops[0], crops[2])
