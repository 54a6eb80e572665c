"""Random draws shared by the kinds of :mod:`fusion3d.data.synth`: objects and their motion.

Independent child generators per part of a video (:func:`_streams`), colours that stand out from
a reference (:func:`_contrasting`), per-frame poses under a motion family kept inside the frame
(:func:`_pose`, :func:`_place`) and objects with a random look (:func:`_sprite`), with the object
looks, sizes and travel ranges they draw from (fractions of the frame size). The scene of each
kind is assembled in :mod:`fusion3d.data.synth`; the depth-controlled kinds reuse these helpers.
"""

from __future__ import annotations

import math

import numpy as np

from fusion3d.data.synth_render import Sprite

# Looks of the appearance classes (``synth.APPEARANCE_CLASSES``): a shape with a solid fill, or a
# disc with a patterned fill.
_APPEARANCE_LOOK = {  # class -> (shape, fill)
    "Circle": ("circle", "solid"),
    "Square": ("square", "solid"),
    "Triangle": ("triangle", "solid"),
    "Cross": ("cross", "solid"),
    "Ring": ("ring", "solid"),
    "Stripes": ("circle", "stripes"),
    "Checker": ("circle", "checker"),
    "Star": ("star", "solid"),
    "Crescent": ("crescent", "solid"),
    "Frame": ("frame", "solid"),
}
# Objects of the motion kind: a random shape, always with a two-colour striped fill so that
# rotation is visible whatever the shape (a plain disc does not show rotating).
_MOTION_SHAPES = ("circle", "square", "triangle", "cross", "ring", "star", "crescent", "frame")

# Object size and travel, as fractions of the frame size.
_RADIUS = (0.14, 0.22)  # object radius (the shape fits in a circle of this radius)
_TRAVEL = (0.35, 0.5)  # translation / scroll distance over the whole video (motion, mixed)
_APPEARANCE_TRAVEL = (0.0, 0.45)  # random translation distance (appearance)
_JITTER_DEG = 15.0  # random deviation from a motion pair's nominal direction
_ROTATION_DEG = (120.0, 200.0)  # total rotation over the video
_SCALE_RATIO = (1.35, 1.6)  # expansion from radius/k to radius*k
_ORBIT_RADIUS = (0.15, 0.2)
_ORBIT_DEG = (150.0, 240.0)
_MIN_CONTRAST = 0.3  # least luminance difference between an object and the background


def _streams(rng: np.random.Generator) -> dict[str, np.random.Generator]:
    """Independent child generators, so that what one part draws never shifts another part."""
    seeds = rng.integers(0, 2**63 - 1, size=4, dtype=np.int64)
    names = ("motion", "look", "background", "noise")
    return {n: np.random.default_rng(int(s)) for n, s in zip(names, seeds)}


def _lum(c: np.ndarray) -> float:
    return float(0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2])


def _contrasting(rng: np.random.Generator, ref: np.ndarray, min_lum: float, min_dist: float) -> np.ndarray:
    for _ in range(200):
        c = rng.uniform(0.0, 1.0, size=3)
        if abs(_lum(c) - _lum(ref)) >= min_lum and float(np.linalg.norm(c - ref)) >= min_dist:
            return c
    return np.clip(1.0 - ref, 0.0, 1.0)


def _ramp(frames: int) -> np.ndarray:
    """0 ... 1 over the video, uniform speed."""
    return np.linspace(0.0, 1.0, frames) if frames > 1 else np.zeros(1)


def _direction(deg: float) -> np.ndarray:
    a = math.radians(deg)
    return np.array([math.cos(a), math.sin(a)])


def _place(offsets: np.ndarray, extent: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Shift relative ``offsets`` (T, 2) by a random position keeping the object inside the frame.

    ``extent`` (T,) is the object's radius per frame. The shift is uniform over the positions that
    keep the whole trajectory inside; if none does, the trajectory is centred.
    """
    lo = np.max(extent[:, None] - offsets, axis=0)
    hi = np.min(size - extent[:, None] - offsets, axis=0)
    u = rng.uniform(0.0, 1.0, size=2)
    shift = np.where(hi >= lo, lo + u * (hi - lo), (lo + hi) / 2.0)
    return offsets + shift


def _pose(
    family: str,
    param: float,
    frames: int,
    size: int,
    radius: float,
    rng: np.random.Generator,
    jitter: float = _JITTER_DEG,
):
    """Forward per-frame (centres, angles, scales) of one object under a motion family."""
    t = _ramp(frames)
    theta0 = rng.uniform(0.0, 2 * math.pi)
    angles = np.full(frames, theta0)
    scales = np.ones(frames)
    offsets = np.zeros((frames, 2))
    if family == "translate":
        d = _direction(param + rng.uniform(-jitter, jitter))
        offsets = t[:, None] * rng.uniform(*_TRAVEL) * size * d[None, :]
    elif family == "rotate":
        angles = theta0 + t * param * math.radians(rng.uniform(*_ROTATION_DEG))
    elif family == "scale":
        k = rng.uniform(*_SCALE_RATIO)
        scales = 1.0 / k + t * (k - 1.0 / k)
    elif family == "orbit":
        r_orbit = rng.uniform(*_ORBIT_RADIUS) * size
        phi = rng.uniform(0.0, 2 * math.pi) + param * t * math.radians(rng.uniform(*_ORBIT_DEG))
        offsets = r_orbit * np.stack([np.cos(phi), np.sin(phi)], axis=1)
    elif family == "random":  # appearance: any direction, any speed up to _APPEARANCE_TRAVEL
        d = _direction(rng.uniform(0.0, 360.0))
        offsets = t[:, None] * rng.uniform(*_APPEARANCE_TRAVEL) * size * d[None, :]
    elif family != "static":  # pragma: no cover - table error
        raise ValueError(f"unknown motion family {family!r}")
    centers = _place(offsets, radius * scales, size, rng)
    return centers, angles, scales


def _sprite(shape_class: str | None, radius: float, pose, rng: np.random.Generator, bg: np.ndarray) -> Sprite:
    """An object with a random look; ``shape_class`` None draws a random striped shape (motion)."""
    if shape_class is None:
        shape, fill = _MOTION_SHAPES[int(rng.integers(len(_MOTION_SHAPES)))], "stripes"
    else:
        shape, fill = _APPEARANCE_LOOK[shape_class]
    color1 = _contrasting(rng, bg, _MIN_CONTRAST, 0.4)
    color2 = _contrasting(rng, color1, 0.3, 0.45)
    centers, angles, scales = pose
    return Sprite(
        shape=shape,
        fill=fill,
        radius=radius,
        centers=centers,
        angles=angles,
        scales=scales,
        color1=color1,
        color2=color2,
        pattern_period=float(rng.uniform(0.5, 0.75)),
        pattern_angle=float(rng.uniform(0.0, math.pi)),
    )


def wave_background(b: np.random.Generator, base: tuple[float, float], contrast: float):
    """(colour 1, colour 2, waves) of a soft background: two colours (the second ``contrast`` around
    the first, drawn in ``base``) mixed by three random plane waves, rows (kx, ky, phase, weight)."""
    bg1 = b.uniform(base[0], base[1], size=3)
    bg2 = np.clip(bg1 + b.normal(0.0, contrast, size=3), 0.0, 1.0)
    n_waves = 3
    wavelengths = b.uniform(8.0, 24.0, size=n_waves)
    wave_angles = b.uniform(0.0, 2 * math.pi, size=n_waves)
    waves = np.stack(
        [
            np.cos(wave_angles) / wavelengths,
            np.sin(wave_angles) / wavelengths,
            b.uniform(0.0, 2 * math.pi, size=n_waves),
            b.uniform(0.5, 1.0, size=n_waves),
        ],
        axis=1,
    )
    return bg1, bg2, waves
