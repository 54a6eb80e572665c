"""Synthetic video datasets in the UCF101 layout (the embedded default of fusion3d).

Five kinds of task (``texture`` and ``order`` are the known-answer benchmark's early and late kinds):

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
``texture``
    The class is the drift direction (right / left, down / up: time-reversed twins) of a grey texture
    ``s(x - t) * (-1)^y`` laid over a coarse scene with no label information (waves and shapes moving in
    random directions). Every pair of pixels across the drift cancels, so a 2x2 average pool removes
    the texture exactly: the signal exists only at full resolution. Render at the clip's size (no
    resize, see ``configs/synth_texture.yaml``).
``order``
    The class is the order of two arrangements of two identical dots, shown for a couple of frames each,
    one right after the other: side by side then one above the other, or the reverse (the twin). A
    single dot looks the same in both; only the relation of two dots far apart tells them apart.
    Rendered by :func:`render_video` only (no :class:`Scene`).

A video of the first three kinds shows one to three objects (all following the class's motion pattern, or all of the
class's shape) over a softly textured random background with a little fresh pixel noise in every
frame; several objects give a tiny network more evidence per clip than one.

Rendering is analytic (signed distance functions with a one-pixel anti-aliased edge, evaluated at
sub-pixel positions), so motion is smooth and symmetric in time: there is no motion blur or other
per-frame cue of the direction of travel. Every random choice of a video comes from its own
generator, derived from ``(seed, label, video number)``, so a dataset is byte-for-byte the same for
the same seed whatever the number of worker processes.

This module holds the public API (kinds, class vocabularies and names, :func:`make_scene`,
:func:`render_video`, :func:`generate`) and assembles each kind's videos from three helper modules:
:mod:`fusion3d.data.synth_render` (scene description and rendering), :mod:`fusion3d.data.synth_scene`
(random objects and motion) and :mod:`fusion3d.data.synth_depth` (building blocks of ``texture`` and
``order``). Names the tests read here (e.g. ``texture_carrier``, ``_draw``, ``_streams``) are imported
into this module, and :func:`render_texture` / :func:`render_order` look ``texture_carrier`` and
``_draw`` up here, so that patching them on this module takes effect.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np

from fusion3d.data.encode import write_video
from fusion3d.data.synth_depth import (
    _ORDER_DOT_RADIUS,
    _ORDER_SHOW,
    _TEXTURE_AMPLITUDE,
    _TEXTURE_BG_CONTRAST,
    _TEXTURE_BG_SPEED,
    _TEXTURE_OBJECTS,
    ORDER_PAIRS,
    TEXTURE_PAIRS,
    _dot_pair,
    _plain_scene,
    order_schedule,
    texture_carrier,
)

# the next four are re-exported, unused here: the tests read them from this module
from fusion3d.data.synth_depth import _ORDER_GAP as _ORDER_GAP
from fusion3d.data.synth_depth import _ORDER_MARGIN as _ORDER_MARGIN
from fusion3d.data.synth_depth import _ORDER_SEPARATION as _ORDER_SEPARATION
from fusion3d.data.synth_depth import _TEXTURE_SPEED as _TEXTURE_SPEED
from fusion3d.data.synth_render import Scene, Sprite, _draw, _to_uint8, render_scene
from fusion3d.data.synth_scene import (
    _JITTER_DEG,
    _MIN_CONTRAST,
    _RADIUS,
    _TRAVEL,
    _contrasting,
    _direction,
    _pose,
    _ramp,
    _sprite,
    _streams,
    wave_background,
)
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

KINDS = ("motion", "appearance", "mixed", "texture", "order")

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
APPEARANCE_CLASSES = (
    "Circle",
    "Cross",
    "Ring",
    "Stripes",
    "Triangle",
    "Checker",
    "Square",
    "Star",
    "Crescent",
    "Frame",
)

# Scene parameters of the kinds described by a Scene (the shared object looks, sizes and travel
# ranges are in synth_scene).
_MIXED_JITTER_DEG = 30.0  # random deviation from the nominal down / up direction (mixed)
_BG_CONTRAST = 0.05  # spread of the second background colour around the first
_NOISE = (0.0, 0.015)  # per-pixel Gaussian noise sigma (0-1 scale), fresh in every frame
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
    if kind == "texture":
        return 2 * len(TEXTURE_PAIRS)
    if kind == "order":
        return 2 * len(ORDER_PAIRS)
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
    if kind != "appearance" and num_classes % 2:
        why = "shape groups x 2 directions" if kind == "mixed" else "time-reversed twin pairs"
        raise ValueError(
            f"'{name}' must be even for kind={kind!r} (classes come in {why}), got {num_classes}"
        )
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
    elif kind == "texture":
        names = [n for fwd, rev, _ in TEXTURE_PAIRS for n in (fwd, rev)]
    elif kind == "order":
        names = [n for fwd, rev, _, _ in ORDER_PAIRS for n in (fwd, rev)]
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
    Texture: DriftRight <-> DriftLeft (DriftDown/Up are invariant). Order: RisingThenFalling <->
    FallingThenRising (a mirror turns "/" into "\\"); WideThenTall / TallThenWide are invariant.
    """
    names = class_names(kind, num_classes)
    if kind not in _MIRRORED_KINDS:
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
_MIRRORED_KINDS = ("motion", "texture", "order")  # kinds with classes that a mirror maps to others
_MIRROR_ORDER = {"RisingThenFalling": "FallingThenRising", "FallingThenRising": "RisingThenFalling"}


def _mirror_name(name: str) -> str:
    """The class name of the horizontally mirrored motion (or arrangement order)."""
    if name in _MIRROR_ORDER:
        return _MIRROR_ORDER[name]
    if "Then" in name:  # WideThenTall, TallThenWide: a mirror keeps wide and tall
        return name
    for suffix, other in _MIRROR.items():
        if name.endswith(suffix):
            return name[: -len(suffix)] + other
    return name


def hflip_unpaired(kind: str, num_classes: int) -> list[str]:
    """Classes whose horizontal mirror image is a class missing from the dataset."""
    names = class_names(kind, num_classes) if kind in _MIRRORED_KINDS else []
    return [n for n in names if _mirror_name(n) not in names]


# --------------------------------------------------------------------------------------------
# Scene description


def make_scene(
    kind: str, label: int, num_classes: int, frames: int, size: int, rng: np.random.Generator
) -> Scene:
    """Draw the parameters of one video of class ``label`` (the forward sequence and ``reverse``).

    The random draws come from four independent child streams of ``rng`` (motion, look,
    background, noise). Motion parameters depend on the label only through the motion pair (kind
    ``motion``) and not at all for ``appearance``/``mixed``: the same ``rng`` gives the same object
    trajectories for every appearance class, and the same forward sequence for both twins.
    """
    _check_video_args(kind, label, num_classes, frames, size)
    if kind in _RENDERED_KINDS:
        raise ValueError(f"kind={kind!r} has no Scene description; render it with render_video")
    s = _streams(rng)
    m, lk, b = s["motion"], s["look"], s["background"]

    bg1, bg2, waves = wave_background(b, (0.1, 0.9), _BG_CONTRAST)
    bg_off = np.zeros((frames, 2))

    reverse = kind != "appearance" and bool(label % 2)
    if kind == "motion":
        _, _, family, param = MOTION_PAIRS[label // 2]
        shape_class, jitter = None, _JITTER_DEG
    elif kind == "appearance":
        family, param, shape_class, jitter = "random", 0.0, APPEARANCE_CLASSES[label], 0.0
    else:  # mixed: shape group x (down, up = the reversed down)
        family, param, shape_class, jitter = (
            "translate",
            90.0,
            APPEARANCE_CLASSES[label // 2],
            _MIXED_JITTER_DEG,
        )
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
    return Scene(
        size=size,
        objects=objects,
        bg_offsets=bg_off,
        bg_color1=bg1,
        bg_color2=bg2,
        bg_waves=waves,
        noise_sigma=noise_sigma,
        noise_seed=noise_seed,
        reverse=reverse,
        info={"kind": kind, "label": label},
    )


def _check_video_args(kind: str, label: int, num_classes: int, frames: int, size: int) -> None:
    _check_classes(kind, num_classes, "num_classes")
    _check_int("label", label, 0)
    if label >= num_classes:
        raise ValueError(f"'label' must be < num_classes={num_classes}, got {label}")
    _check_int("frames", frames, 2)
    _check_int("size", size, 8)


# --------------------------------------------------------------------------------------------
# Rendering (the drawing itself is in synth_render)


def render_video(
    kind: str, label: int, num_classes: int, frames: int, size: int, rng: np.random.Generator
) -> np.ndarray:
    """One video of class ``label``: (frames, size, size, 3) uint8 RGB.

    For the twins of kinds ``motion`` and ``mixed`` (labels 2p and 2p + 1) the same ``rng`` gives
    exactly the same frames in reverse order.
    """
    if kind in _RENDERED_KINDS:
        _check_video_args(kind, label, num_classes, frames, size)
        render = render_texture if kind == "texture" else render_order
        video, reverse = _to_uint8(render(label, frames, size, rng)), bool(label % 2)
    else:
        scene = make_scene(kind, label, num_classes, frames, size, rng)
        video, reverse = _to_uint8(render_scene(scene)), scene.reverse
    if reverse:
        video = video[::-1]
    return np.ascontiguousarray(video)


# --------------------------------------------------------------------------------------------
# Kinds rendered directly (no Scene): texture and order. Both come in time-reversed twin pairs:
# label 2p + 1 shows the frames of label 2p in reverse order, so a model that ignores temporal
# order is at chance within a pair. Their building blocks are in synth_depth.

_RENDERED_KINDS = ("texture", "order")


def render_texture(label: int, frames: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """Forward video of kind ``texture`` (label 2p): (T, H, W, 3) float in [0, 1].

    A coarse scene with no label information (wave background drifting in a random direction,
    zero to two solid shapes moving in random directions, a little fresh noise) plus a fine grey
    texture (:func:`texture_carrier`) drifting right (or down) one pixel per frame. Only the drift
    direction of the fine texture carries the class. The scene's contrast is compressed to leave room
    for the texture, so that no pixel clips (clipping one pixel of a cancelling pair would leave a
    coarse trace of the texture).
    """
    s = _streams(rng)
    m, lk, b = s["motion"], s["look"], s["background"]
    scene = _plain_scene(size, frames, b, _TEXTURE_BG_CONTRAST, b.uniform(*_TEXTURE_BG_SPEED))
    for _ in range(int(m.integers(_TEXTURE_OBJECTS[0], _TEXTURE_OBJECTS[1] + 1))):
        radius = m.uniform(*_RADIUS) * size
        pose = _pose("random", 0.0, frames, size, radius, m)
        shape = APPEARANCE_CLASSES[int(lk.integers(len(APPEARANCE_CLASSES)))]
        scene.objects.append(_sprite(shape, radius, pose, lk, scene.bg_color1))
    amplitude = float(lk.uniform(*_TEXTURE_AMPLITUDE))
    texture = texture_carrier(label, frames, size, m)
    img = render_scene(scene)
    img = 0.5 + (img - 0.5) * (
        1.0 - 2.0 * amplitude
    )  # room for the texture: clipping would leak it to coarse scales
    img += amplitude * texture[..., None]
    sigma = float(s["noise"].uniform(*_NOISE))
    img += np.random.default_rng(int(s["noise"].integers(0, 2**63 - 1))).normal(0.0, sigma, size=img.shape)
    return np.clip(img, 0.0, 1.0, out=img)


def render_order(label: int, frames: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """Forward video of kind ``order`` (label 2p): (T, H, W, 3) float in [0, 1].

    A static wave background with fresh noise; for ``_ORDER_SHOW`` frames two identical dots form
    the pair's first arrangement (e.g. side by side), then, after ``_ORDER_GAP`` frames, two dots of
    the same look form the second one (one above the other) at an independent random place; the
    other frames show the background alone. Each dot alone looks the same in both arrangements:
    only the relation between two dots far apart (a wide spatial receptive field) tells them apart.
    """
    s = _streams(rng)
    m, lk, b = s["motion"], s["look"], s["background"]
    _, _, first, second = ORDER_PAIRS[label // 2]
    scene = _plain_scene(size, frames, b, _BG_CONTRAST, 0.0)
    img = render_scene(scene)
    start_a, start_b = order_schedule(frames, m)
    radius = m.uniform(*_ORDER_DOT_RADIUS) * size
    color = _contrasting(lk, scene.bg_color1, _MIN_CONTRAST, 0.4)
    coords = np.arange(size, dtype=np.float64) + 0.5
    for start, angle in ((start_a, first), (start_b, second)):
        for center in _dot_pair(angle, size, m):
            dot = Sprite(
                shape="circle",
                fill="solid",
                radius=radius,
                centers=np.repeat(center[None], _ORDER_SHOW, 0),
                angles=np.zeros(_ORDER_SHOW),
                scales=np.ones(_ORDER_SHOW),
                color1=color,
                color2=color,
                pattern_period=1.0,
                pattern_angle=0.0,
            )
            _draw(img[start : start + _ORDER_SHOW], dot, coords)
    sigma = float(s["noise"].uniform(*_NOISE))
    img += np.random.default_rng(int(s["noise"].integers(0, 2**63 - 1))).normal(0.0, sigma, size=img.shape)
    return np.clip(img, 0.0, 1.0, out=img)


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


def _params(kind, classes, videos_per_class, frames, size, seed, fps, test_per_class=None) -> dict:
    extra = {} if test_per_class is None else {"test_per_class": int(test_per_class)}  # absent: the old rule
    return {
        **extra,
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


def generate(
    out,
    kind: str = "motion",
    classes: int = 6,
    videos_per_class: int = 30,
    frames: int = 16,
    size: int = 64,
    seed: int = 0,
    fps: int = 12,
    workers: int = 1,
    progress: bool = False,
    test_per_class: int | None = None,
) -> Path:
    """Write a synthetic dataset in the UCF101 layout under ``out`` and return ``out`` as a Path.

    Layout: ``out/<ClassName>/v_<ClassName>_g<GG>_c<CC>.mp4`` (4 clips per group, like UCF101's
    numbering), ``out/ucfTrainTestlist/{classInd,trainlist01,testlist01}.txt`` and
    ``out/synth.json`` (the generation parameters). The first quarter of each class's videos (at
    least one) form the test list, or the first ``test_per_class`` of them when it is given (it
    must leave at least one for training; a video's bytes never depend on it). If ``synth.json`` holds the same parameters and every file is
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
    if test_per_class is not None:
        _check_int("test_per_class", test_per_class, 1)
        if test_per_class >= videos_per_class:
            raise ValueError(
                f"'test_per_class' must be < videos_per_class={videos_per_class} (at least one "
                f"video per class for training), got {test_per_class}"
            )
    if kind == "order":
        order_schedule(frames, np.random.default_rng(0))  # enough frames for the event
    out = Path(out)
    names = class_names(kind, classes)
    params = _params(kind, classes, videos_per_class, frames, size, seed, fps, test_per_class)
    lists = out / "ucfTrainTestlist"
    list_files = [lists / "classInd.txt", lists / "trainlist01.txt", lists / "testlist01.txt"]
    rel = [[f"{name}/{_file_name(name, i)}" for i in range(videos_per_class)] for name in names]
    meta = out / "synth.json"
    if (
        _read_json(meta) == params
        and all(p.exists() for p in list_files)
        and all((out / r).exists() for rs in rel for r in rs)
    ):
        return out

    out.mkdir(parents=True, exist_ok=True)
    if meta.exists():  # an interrupted regeneration must not look up to date
        meta.unlink()
    jobs = [
        (kind, label, classes, i, frames, size, seed, fps, str(out / rel[label][i]))
        for label in range(classes)
        for i in range(videos_per_class)
    ]
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

    n_test = _num_test(videos_per_class) if test_per_class is None else int(test_per_class)
    class_ind = "".join(f"{label + 1} {name}\n" for label, name in enumerate(names))
    train = "".join(f"{r} {label + 1}\n" for label in range(classes) for r in rel[label][n_test:])
    test = "".join(f"{r}\n" for label in range(classes) for r in rel[label][:n_test])
    for path, text in zip(list_files, (class_ind, train, test)):
        atomic_write_text(path, text)
    atomic_write_text(meta, json.dumps(params, indent=2, sort_keys=True) + "\n")
    return out
