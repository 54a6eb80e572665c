"""Synthetic video datasets in the UCF101 layout (the embedded default of fusion3d).

Three kinds of task:

``motion``
    The class is a motion pattern; everything about the look of a video (object shape, colours,
    size, background texture, noise) is random with one distribution for every class. Classes come
    in time-reversed twin pairs: the parameters of a *forward* sequence for pair ``p`` are drawn
    from one distribution, label ``2p`` shows that sequence and label ``2p + 1`` shows the very
    same frames in reverse order. The frames of a class, taken as an unordered set, are therefore
    distributed exactly like those of its twin: a model that ignores temporal order can at best
    tell the pairs apart (a 50% ceiling within a pair).
``appearance``
    The class is the object's shape or texture; its motion (direction, speed) is drawn from one
    distribution for every class and carries no label information. A per-frame model solves it.
``mixed``
    label = 2 * shape group + direction: the object of shape group ``g`` moves down (``2g``) or up
    (``2g + 1``, the time-reversed twin). Shape alone or direction alone gives at most half.

A video shows one to three objects (all following the class's motion pattern, or all of the
class's shape) over a softly textured random background with a little fresh pixel noise in every
frame; several objects give a tiny network more evidence per clip than one.

Rendering is analytic (signed distance functions with a one-pixel anti-aliased edge, evaluated at
sub-pixel positions), so motion is smooth and symmetric in time: there is no motion blur or other
per-frame cue of the direction of travel. Every random choice of a video comes from its own
generator, derived from ``(seed, label, video number)``, so a dataset is byte-for-byte the same for
the same seed whatever the number of worker processes.
"""

from __future__ import annotations

import json
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fusion3d.data.encode import write_video
from fusion3d.utils import atomic_write_text

__all__ = [
    "KINDS",
    "MOTION_PAIRS",
    "APPEARANCE_CLASSES",
    "Scene",
    "Sprite",
    "class_names",
    "max_classes",
    "hflip_pairs",
    "hflip_unpaired",
    "make_scene",
    "render_scene",
    "render_video",
    "video_seed",
    "generate",
]

KINDS = ("motion", "appearance", "mixed")

# Bump when the rendering changes, so that ``generate`` regenerates datasets made by older code.
GENERATOR_VERSION = 1

# (forward name, time-reversed name, motion family, family parameter). Pair p -> labels 2p, 2p+1.
# Angles are in degrees in image coordinates (x right, y down): 0 = right, 90 = down; a positive
# rotation is clockwise on screen.
MOTION_PAIRS: tuple[tuple[str, str, str, float], ...] = (
    ("MoveRight", "MoveLeft", "translate", 0.0),
    ("RotateCW", "RotateCCW", "rotate", 1.0),
    ("Expand", "Contract", "scale", 1.0),
    ("MoveDown", "MoveUp", "translate", 90.0),
    ("MoveDownRight", "MoveUpLeft", "translate", 45.0),
    ("MoveDownLeft", "MoveUpRight", "translate", 135.0),
    ("OrbitCW", "OrbitCCW", "orbit", 1.0),
    ("ScrollRight", "ScrollLeft", "scroll", 0.0),
    ("ScrollDown", "ScrollUp", "scroll", 90.0),
)

# Appearance classes: a shape with a solid fill, or a disc with a patterned fill.
# Ordered so that the first few (the default 6, and the 3 groups of a default mixed set) are the
# most distinct at 64x64: circle, square and triangle are the ones a tiny CNN confuses most.
APPEARANCE_CLASSES = ("Circle", "Cross", "Ring", "Stripes", "Triangle", "Checker", "Square", "Star", "Crescent", "Frame")
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
_MIXED_JITTER_DEG = 30.0
_ROTATION_DEG = (120.0, 200.0)  # total rotation over the video
_SCALE_RATIO = (1.35, 1.6)  # expansion from radius/k to radius*k
_ORBIT_RADIUS = (0.15, 0.2)
_ORBIT_DEG = (150.0, 240.0)
_BG_CONTRAST = 0.05  # spread of the second background colour around the first
_NOISE = (0.0, 0.015)  # per-pixel Gaussian noise sigma (0-1 scale), fresh in every frame
_MIN_CONTRAST = 0.3  # least luminance difference between an object and the background
_OBJECTS = (1, 3)  # objects per video, all of the class (same motion pattern / same shape)
_PLACEMENT_TRIES = 20  # attempts at placing an object clear of the others (then it may overlap)
_CLIPS_PER_GROUP = 4  # UCF101-like numbering: v_<Class>_g<GG>_c<CC>


# --------------------------------------------------------------------------------------------
# Classes and argument checks


def max_classes(kind: str) -> int:
    """The largest number of classes that ``kind`` supports."""
    _check_kind(kind)
    if kind == "motion":
        return 2 * len(MOTION_PAIRS)
    if kind == "appearance":
        return len(APPEARANCE_CLASSES)
    return 2 * len(APPEARANCE_CLASSES)


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown 'kind' {kind!r}; valid kinds: {', '.join(KINDS)}")


def _check_int(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"'{name}' must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"'{name}' must be >= {minimum}, got {value}")


def _check_classes(kind: str, num_classes: int, name: str = "classes") -> None:
    _check_kind(kind)
    _check_int(name, num_classes, 2)
    if kind in ("motion", "mixed") and num_classes % 2:
        why = "time-reversed twin pairs" if kind == "motion" else "shape groups x 2 directions"
        raise ValueError(f"'{name}' must be even for kind={kind!r} (classes come in {why}), got {num_classes}")
    top = max_classes(kind)
    if num_classes > top:
        raise ValueError(f"'{name}'={num_classes} is more than kind={kind!r} supports (maximum {top})")


def class_names(kind: str, num_classes: int) -> list[str]:
    """CamelCase class names in label order."""
    _check_classes(kind, num_classes, "num_classes")
    if kind == "motion":
        names = [n for fwd, rev, _, _ in MOTION_PAIRS for n in (fwd, rev)]
    elif kind == "appearance":
        names = list(APPEARANCE_CLASSES)
    else:
        names = [f"{shape}{d}" for shape in APPEARANCE_CLASSES for d in ("Down", "Up")]
    return names[:num_classes]


def hflip_pairs(kind: str, num_classes: int) -> list[list[int]]:
    """Label pairs that a horizontal flip turns into each other (for ``data.flip=swap``).

    Motion: MoveRight/MoveLeft, RotateCW/RotateCCW, OrbitCW/OrbitCCW, ScrollRight/ScrollLeft swap
    within their pair; MoveDownRight <-> MoveDownLeft and MoveUpLeft <-> MoveUpRight swap across
    pairs. Only pairs with both labels present are listed; :func:`hflip_unpaired` names classes
    whose mirror image is missing from the dataset (train those with ``flip=off``). Expand,
    Contract, MoveDown/Up, ScrollDown/Up and every appearance / mixed class are flip-invariant.
    """
    names = class_names(kind, num_classes)
    if kind != "motion":
        return []
    index = {n: i for i, n in enumerate(names)}
    pairs = []
    for i, name in enumerate(names):
        flipped = _mirror_name(name)
        j = index.get(flipped)
        if j is not None and i < j:
            pairs.append([i, j])
    return pairs


_MIRROR = {"CCW": "CW", "CW": "CCW", "Right": "Left", "Left": "Right"}


def _mirror_name(name: str) -> str:
    """The class name of the horizontally mirrored motion."""
    for suffix, other in _MIRROR.items():
        if name.endswith(suffix):
            return name[: -len(suffix)] + other
    return name


def hflip_unpaired(kind: str, num_classes: int) -> list[str]:
    """Classes whose horizontal mirror image is a class missing from the dataset."""
    names = class_names(kind, num_classes) if kind == "motion" else []
    return [n for n in names if _mirror_name(n) not in names]


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


def _pose(family: str, param: float, frames: int, size: int, radius: float, rng: np.random.Generator,
          jitter: float = _JITTER_DEG):
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
    return Sprite(shape=shape, fill=fill, radius=radius, centers=centers, angles=angles, scales=scales,
                  color1=color1, color2=color2, pattern_period=float(rng.uniform(0.5, 0.75)),
                  pattern_angle=float(rng.uniform(0.0, math.pi)))


def make_scene(kind: str, label: int, num_classes: int, frames: int, size: int, rng: np.random.Generator) -> Scene:
    """Draw the parameters of one video of class ``label`` (the forward sequence and ``reverse``).

    The random draws come from four independent child streams of ``rng`` (motion, look,
    background, noise). Motion parameters depend on the label only through the motion pair (kind
    ``motion``) and not at all for ``appearance``/``mixed``: the same ``rng`` gives the same object
    trajectories for every appearance class, and the same forward sequence for both twins.
    """
    _check_classes(kind, num_classes, "num_classes")
    _check_int("label", label, 0)
    if label >= num_classes:
        raise ValueError(f"'label' must be < num_classes={num_classes}, got {label}")
    _check_int("frames", frames, 2)
    _check_int("size", size, 8)
    s = _streams(rng)
    m, lk, b = s["motion"], s["look"], s["background"]

    bg1 = b.uniform(0.1, 0.9, size=3)
    bg2 = np.clip(bg1 + b.normal(0.0, _BG_CONTRAST, size=3), 0.0, 1.0)
    n_waves = 3
    wavelengths = b.uniform(8.0, 24.0, size=n_waves)
    wave_angles = b.uniform(0.0, 2 * math.pi, size=n_waves)
    waves = np.stack([np.cos(wave_angles) / wavelengths, np.sin(wave_angles) / wavelengths,
                      b.uniform(0.0, 2 * math.pi, size=n_waves), b.uniform(0.5, 1.0, size=n_waves)], axis=1)
    bg_off = np.zeros((frames, 2))

    reverse = kind != "appearance" and bool(label % 2)
    if kind == "motion":
        _, _, family, param = MOTION_PAIRS[label // 2]
        shape_class, jitter = None, _JITTER_DEG
    elif kind == "appearance":
        family, param, shape_class, jitter = "random", 0.0, APPEARANCE_CLASSES[label], 0.0
    else:  # mixed: shape group x (down, up = the reversed down)
        family, param, shape_class, jitter = "translate", 90.0, APPEARANCE_CLASSES[label // 2], _MIXED_JITTER_DEG
    if family == "scroll":
        d = _direction(param + m.uniform(-jitter, jitter))
        bg_off = _ramp(frames)[:, None] * m.uniform(*_TRAVEL) * size * d[None, :]
        family = "static"
    n_objects = int(m.integers(_OBJECTS[0], _OBJECTS[1] + 1))
    objects, placed = [], []
    for _ in range(n_objects):
        # a few tries at a pose that keeps clear of the objects already placed
        for _ in range(_PLACEMENT_TRIES):
            radius = m.uniform(*_RADIUS) * size
            pose = _pose(family, param, frames, size, radius, m, jitter)
            extent = radius * pose[2]
            if all(np.all(np.linalg.norm(pose[0] - c, axis=1) >= 0.9 * (extent + e)) for c, e in placed):
                break
        placed.append((pose[0], extent))
        objects.append(_sprite(shape_class, radius, pose, lk, bg1))
    noise_sigma = float(s["noise"].uniform(*_NOISE))
    noise_seed = int(s["noise"].integers(0, 2**63 - 1))
    return Scene(size=size, objects=objects, bg_offsets=bg_off, bg_color1=bg1, bg_color2=bg2, bg_waves=waves,
                 noise_sigma=noise_sigma, noise_seed=noise_seed, reverse=reverse,
                 info={"kind": kind, "label": label})


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


def render_video(kind: str, label: int, num_classes: int, frames: int, size: int,
                 rng: np.random.Generator) -> np.ndarray:
    """One video of class ``label``: (frames, size, size, 3) uint8 RGB.

    For the twins of kinds ``motion`` and ``mixed`` (labels 2p and 2p + 1) the same ``rng`` gives
    exactly the same frames in reverse order.
    """
    scene = make_scene(kind, label, num_classes, frames, size, rng)
    video = _to_uint8(render_scene(scene))
    if scene.reverse:
        video = video[::-1]
    return np.ascontiguousarray(video)


# --------------------------------------------------------------------------------------------
# Dataset generation


def video_seed(seed: int, label: int, index: int) -> np.random.SeedSequence:
    """The seed sequence of video ``index`` (0-based) of class ``label``."""
    return np.random.SeedSequence([int(seed), int(label), int(index)])


def _file_name(name: str, index: int) -> str:
    group, clip = index // _CLIPS_PER_GROUP + 1, index % _CLIPS_PER_GROUP + 1
    return f"v_{name}_g{group:02d}_c{clip:02d}.mp4"


def _num_test(videos_per_class: int) -> int:
    """About a quarter of a class's videos, at least one, and at least one left for training."""
    return min(max(1, (videos_per_class + 2) // 4), videos_per_class - 1)


def _job(args: tuple) -> str:
    kind, label, num_classes, index, frames, size, seed, fps, path = args
    rng = np.random.default_rng(video_seed(seed, label, index))
    video = render_video(kind, label, num_classes, frames, size, rng)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    try:
        write_video(tmp, video, fps=fps)
        os.replace(tmp, path)
    except BaseException:
        if tmp.exists():
            tmp.unlink()
        raise
    return str(path)


def _params(kind, classes, videos_per_class, frames, size, seed, fps) -> dict:
    return {
        "generator": "fusion3d.data.synth",
        "version": GENERATOR_VERSION,
        "kind": kind,
        "classes": int(classes),
        "videos_per_class": int(videos_per_class),
        "frames": int(frames),
        "size": int(size),
        "seed": int(seed),
        "fps": int(fps),
        "class_names": class_names(kind, classes),
        "layout": "ucf101",
    }


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def generate(out, kind: str = "motion", classes: int = 6, videos_per_class: int = 30, frames: int = 16,
             size: int = 64, seed: int = 0, fps: int = 12, workers: int = 1, progress: bool = False) -> Path:
    """Write a synthetic dataset in the UCF101 layout under ``out`` and return ``out`` as a Path.

    Layout: ``out/<ClassName>/v_<ClassName>_g<GG>_c<CC>.mp4`` (4 clips per group, like UCF101's
    numbering), ``out/ucfTrainTestlist/{classInd,trainlist01,testlist01}.txt`` and
    ``out/synth.json`` (the generation parameters). The first quarter of each class's videos (at
    least one) form the test list. If ``synth.json`` holds the same parameters and every file is
    there, nothing is done. ``workers`` > 1 renders and encodes in that many processes; the bytes
    written do not depend on it.
    """
    _check_kind(kind)
    _check_classes(kind, classes)
    _check_int("videos_per_class", videos_per_class, 2)
    _check_int("frames", frames, 2)
    _check_int("size", size, 16)
    if size % 2:
        raise ValueError(f"'size' must be even (H.264 with 4:2:0 chroma), got {size}")
    _check_int("seed", seed, 0)
    _check_int("fps", fps, 1)
    _check_int("workers", workers, 1)
    out = Path(out)
    names = class_names(kind, classes)
    params = _params(kind, classes, videos_per_class, frames, size, seed, fps)
    lists = out / "ucfTrainTestlist"
    list_files = [lists / "classInd.txt", lists / "trainlist01.txt", lists / "testlist01.txt"]
    rel = [[f"{name}/{_file_name(name, i)}" for i in range(videos_per_class)] for name in names]
    meta = out / "synth.json"
    if _read_json(meta) == params and all(p.exists() for p in list_files) and all(
            (out / r).exists() for rs in rel for r in rs):
        return out

    out.mkdir(parents=True, exist_ok=True)
    if meta.exists():  # an interrupted regeneration must not look up to date
        meta.unlink()
    jobs = [(kind, label, classes, i, frames, size, seed, fps, str(out / rel[label][i]))
            for label in range(classes) for i in range(videos_per_class)]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(jobs), desc=f"synth {kind}", unit="video")
    if workers == 1:
        for job in jobs:
            _job(job)
            if bar is not None:
                bar.update(1)
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # fork on Linux: works from scripts without a __main__ guard; the children only run
        # numpy and PyAV. Elsewhere spawn (the caller then needs the usual __main__ guard).
        ctx = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            for _ in pool.map(_job, jobs, chunksize=max(1, len(jobs) // (4 * workers))):
                if bar is not None:
                    bar.update(1)
    if bar is not None:
        bar.close()

    n_test = _num_test(videos_per_class)
    class_ind = "".join(f"{label + 1} {name}\n" for label, name in enumerate(names))
    train = "".join(f"{r} {label + 1}\n" for label in range(classes) for r in rel[label][n_test:])
    test = "".join(f"{r}\n" for label in range(classes) for r in rel[label][:n_test])
    for path, text in zip(list_files, (class_ind, train, test)):
        atomic_write_text(path, text)
    atomic_write_text(meta, json.dumps(params, indent=2, sort_keys=True) + "\n")
    return out
