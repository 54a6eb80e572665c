"""Analytic rendering of the synthetic videos of :mod:`fusion3d.data.synth`.

A :class:`Scene` (a wave background shifted per frame, objects drawn in order, fresh per-pixel
noise) holds everything needed to render one forward video; a :class:`Sprite` is one object, its
look and its per-frame pose. Shapes are signed distance functions evaluated at pixel centres (the
objects sit at sub-pixel positions) with a one-pixel anti-aliased edge, so motion is smooth and
symmetric in time. This module only draws: it knows no class, and its one random draw is the pixel
noise fixed by a scene's ``noise_seed`` (the scenes are drawn in :mod:`fusion3d.data.synth` with
the helpers of :mod:`fusion3d.data.synth_scene`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

# --------------------------------------------------------------------------------------------
# Scene description


@dataclass
class Sprite:
    """One object: its look and its per-frame pose (arrays of length T; pixels, radians)."""

    shape: str
    fill: str  # solid | stripes | checker
    radius: float  # radius in pixels at scale 1 (the shape fits in a circle of this radius)
    centers: np.ndarray  # (T, 2) centre, x right, y down
    angles: np.ndarray  # (T,) orientation, positive = clockwise on screen
    scales: np.ndarray  # (T,) scale
    color1: np.ndarray  # (3,) colour in [0, 1]
    color2: np.ndarray  # (3,) second colour of patterned fills
    pattern_period: float  # stripe / checker period in object units
    pattern_angle: float


@dataclass
class Scene:
    """Everything needed to render one *forward* video; ``reverse`` says the class plays it backwards."""

    size: int
    objects: list[Sprite]  # drawn in this order
    bg_offsets: np.ndarray  # (T, 2) background texture shift in pixels
    bg_color1: np.ndarray
    bg_color2: np.ndarray
    bg_waves: np.ndarray  # (K, 4): wave vector x, y (cycles per pixel), phase, amplitude
    noise_sigma: float
    noise_seed: int
    reverse: bool = False
    info: dict = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# Rendering


def _sd_box(x: np.ndarray, y: np.ndarray, bx: float, by: float) -> np.ndarray:
    qx, qy = np.abs(x) - bx, np.abs(y) - by
    outside = np.hypot(np.maximum(qx, 0.0), np.maximum(qy, 0.0))
    return outside + np.minimum(np.maximum(qx, qy), 0.0)


def _sd_polygon(x: np.ndarray, y: np.ndarray, verts: np.ndarray) -> np.ndarray:
    """Exact signed distance to a simple polygon (negative inside)."""
    d = (x - verts[0, 0]) ** 2 + (y - verts[0, 1]) ** 2
    sign = np.ones_like(x)
    n = len(verts)
    for i in range(n):
        vi, vj = verts[i], verts[i - 1]
        ex, ey = vj[0] - vi[0], vj[1] - vi[1]
        wx, wy = x - vi[0], y - vi[1]
        h = np.clip((wx * ex + wy * ey) / (ex * ex + ey * ey), 0.0, 1.0)
        bx, by = wx - ex * h, wy - ey * h
        d = np.minimum(d, bx * bx + by * by)
        c1 = y >= vi[1]
        c2 = y < vj[1]
        c3 = ex * wy > ey * wx
        flip = (c1 & c2 & c3) | (~c1 & ~c2 & ~c3)
        sign = np.where(flip, -sign, sign)
    return sign * np.sqrt(d)


def _regular(n: int, r_out: float, r_in: float | None = None) -> np.ndarray:
    """Vertices of a regular polygon (r_in None) or an n-pointed star, first vertex pointing up."""
    if r_in is None:
        a = -math.pi / 2 + 2 * math.pi * np.arange(n) / n
        return np.stack([r_out * np.cos(a), r_out * np.sin(a)], axis=1)
    a = -math.pi / 2 + math.pi * np.arange(2 * n) / n
    r = np.where(np.arange(2 * n) % 2 == 0, r_out, r_in)
    return np.stack([r * np.cos(a), r * np.sin(a)], axis=1)


_TRIANGLE = _regular(3, 1.0)
_STAR = _regular(5, 1.0, 0.45)


def _sd_shape(shape: str, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Signed distance in object units (the shape fits in the unit circle)."""
    if shape == "circle":
        return np.hypot(x, y) - 0.85
    if shape == "square":
        return _sd_box(x, y, 0.68, 0.68)
    if shape == "triangle":
        return _sd_polygon(x, y, _TRIANGLE)
    if shape == "cross":
        return np.minimum(_sd_box(x, y, 0.95, 0.3), _sd_box(x, y, 0.3, 0.95))
    if shape == "ring":
        return np.abs(np.hypot(x, y) - 0.66) - 0.24
    if shape == "star":
        return _sd_polygon(x, y, _STAR)
    if shape == "crescent":
        return np.maximum(np.hypot(x, y) - 0.9, -(np.hypot(x - 0.45, y) - 0.7))
    if shape == "frame":
        return np.abs(_sd_box(x, y, 0.55, 0.55)) - 0.15
    raise ValueError(f"unknown shape {shape!r}")


def _background(scene: Scene, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """(T, H, W, 3) background: two colours blended by a sum of oriented waves, shifted per frame."""
    frames = len(scene.bg_offsets)
    static = bool(np.all(scene.bg_offsets == scene.bg_offsets[0]))
    offsets = scene.bg_offsets[:1] if static else scene.bg_offsets  # a static one is computed once
    x = xs[None] - offsets[:, 0, None, None]
    y = ys[None] - offsets[:, 1, None, None]
    f = np.zeros_like(x)
    for kx, ky, phase, amp in scene.bg_waves:
        f += amp * np.sin(2 * math.pi * (kx * x + ky * y) + phase)
    f = 0.5 + 0.5 * f / scene.bg_waves[:, 3].sum()
    img = scene.bg_color1 + f[..., None] * (scene.bg_color2 - scene.bg_color1)
    return np.repeat(img, frames, axis=0) if static else img


def _draw(img: np.ndarray, obj: Sprite, coords: np.ndarray) -> None:
    """Composite ``obj`` into ``img`` (T, H, W, 3) in place, with an anti-aliased edge.

    Each frame is drawn only inside the object's bounding square (radius + 1 pixel): outside it the
    signed distance exceeds half a pixel, so the coverage there is exactly zero anyway.
    """
    size = img.shape[1]
    for t in range(img.shape[0]):
        r = obj.radius * obj.scales[t]
        cx, cy = obj.centers[t]
        x0, x1 = max(0, int(math.floor(cx - r - 1.5))), min(size, int(math.ceil(cx + r + 1.5)))
        y0, y1 = max(0, int(math.floor(cy - r - 1.5))), min(size, int(math.ceil(cy + r + 1.5)))
        if x0 >= x1 or y0 >= y1:
            continue
        dx = coords[None, x0:x1] - cx
        dy = coords[y0:y1, None] - cy
        # object coordinates: rotate the pixel offsets by -angle, divide by the current radius
        ca, sa = math.cos(obj.angles[t]), math.sin(obj.angles[t])
        u = (ca * dx + sa * dy) / r
        v = (-sa * dx + ca * dy) / r
        cover = np.clip(0.5 - _sd_shape(obj.shape, u, v) * r, 0.0, 1.0)[..., None]  # distance in pixels
        if obj.fill == "solid":
            fill = obj.color1
        else:
            cp, sp = math.cos(obj.pattern_angle), math.sin(obj.pattern_angle)
            pu = (cp * u + sp * v) * r  # pixels along the pattern axes, moving with the object
            pv = (-sp * u + cp * v) * r
            w = 2 * math.pi / (obj.pattern_period * r)  # radians per pixel
            if obj.fill == "stripes":
                m = np.clip(0.5 + np.sin(w * pu) / w, 0.0, 1.0)  # about one pixel of anti-aliasing
            else:
                m = np.clip(0.5 + 1.5 * np.sin(w * pu) * np.sin(w * pv) / w, 0.0, 1.0)
            fill = obj.color1 + m[..., None] * (obj.color2 - obj.color1)
        window = img[t, y0:y1, x0:x1]
        img[t, y0:y1, x0:x1] = window * (1.0 - cover) + fill * cover


def render_scene(scene: Scene) -> np.ndarray:
    """Render the forward sequence of ``scene`` (``reverse`` is ignored): (T, H, W, 3) float in [0, 1]."""
    coords = np.arange(scene.size, dtype=np.float64) + 0.5
    xs, ys = np.meshgrid(coords, coords)
    img = _background(scene, xs, ys)
    for obj in scene.objects:
        _draw(img, obj, coords)
    noise = np.random.default_rng(scene.noise_seed).normal(0.0, scene.noise_sigma, size=img.shape)
    img += noise
    return np.clip(img, 0.0, 1.0, out=img)


def _to_uint8(img: np.ndarray) -> np.ndarray:
    return np.rint(img * 255.0).astype(np.uint8)
