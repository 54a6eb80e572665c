"""Building blocks of the depth-controlled kinds ``texture`` and ``order`` of :mod:`fusion3d.data.synth`.

Their class tables (:data:`TEXTURE_PAIRS`, :data:`ORDER_PAIRS`) and constants, the label-free wave
background they share (:func:`_plain_scene`), the fine drifting texture that vanishes under a 2x2
average pool (:func:`texture_carrier`), and the timing and placement of the two dot arrangements
(:func:`order_schedule`, :func:`_dot_pair`). :func:`fusion3d.data.synth.render_texture` and
:func:`fusion3d.data.synth.render_order` put them together into videos.
"""

from __future__ import annotations

import numpy as np

from fusion3d.data.synth_render import Scene
from fusion3d.data.synth_scene import _direction, wave_background

# Kind ``texture``: (forward name, time-reversed name, drift axis) per pair; the fine carrier
# alternates along the other axis. Axis 0 = x (the texture drifts right), 1 = y (drifts down).
TEXTURE_PAIRS: tuple[tuple[str, str, int], ...] = (
    ("DriftRight", "DriftLeft", 0),
    ("DriftDown", "DriftUp", 1),
)
_TEXTURE_SPEED = 1  # pixels per video frame (an integer: the carrier stays on the pixel grid)
_TEXTURE_AMPLITUDE = (0.18, 0.3)  # half the luminance swing of the fine texture
_TEXTURE_BG_CONTRAST = 0.25  # contrast of the coarse wave background (random drift, no label information)
_TEXTURE_BG_SPEED = (0.5, 1.5)  # pixels per frame of the coarse background drift, random direction
_TEXTURE_OBJECTS = (0, 2)  # coarse distractor objects moving in random directions

# Kind ``order``: (forward name, time-reversed name, first arrangement, second arrangement) per pair.
# An arrangement is the angle in degrees of the line through a pair of identical dots (0 = wide,
# 90 = tall, 45 = falling "\" in image coordinates, 135 = rising "/").
ORDER_PAIRS: tuple[tuple[str, str, float, float], ...] = (
    ("WideThenTall", "TallThenWide", 0.0, 90.0),
    ("RisingThenFalling", "FallingThenRising", 135.0, 45.0),
)
_ORDER_DOT_RADIUS = (0.1, 0.12)  # dot radius, fraction of the frame size
_ORDER_SEPARATION = (0.4, 0.5)  # distance between the two dots of an arrangement
_ORDER_MARGIN = 0.14  # dot centres stay this far (fraction of the size) from the border
_ORDER_SHOW = 2  # frames each arrangement is shown
_ORDER_GAP = 0  # blank frames between the two arrangements


def _plain_scene(size: int, frames: int, b: np.random.Generator, contrast: float, drift: float) -> Scene:
    """A wave background (like the other kinds'), drifting ``drift`` pixels per frame in a random direction."""
    bg1, bg2, waves = wave_background(b, (0.3, 0.7), contrast)
    step = drift * _direction(b.uniform(0.0, 360.0))
    offsets = np.arange(frames)[:, None] * step[None, :]
    return Scene(
        size=size,
        objects=[],
        bg_offsets=offsets,
        bg_color1=bg1,
        bg_color2=bg2,
        bg_waves=waves,
        noise_sigma=0.0,
        noise_seed=0,
    )


def texture_carrier(label: int, frames: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """The fine texture of the *forward* video of ``label``'s pair: (T, H, W) values in {-1, +1}.

    ``c(x, y, t) = s(x - v t) * (-1)^y`` for a pair drifting along x (x and y swapped for one
    drifting along y): a random +-1 sequence ``s`` (one value per pixel column) drifting ``v``
    pixels per frame, times a carrier alternating every pixel across the drift. Every two
    neighbouring pixels across the drift cancel, so a 2x2 average pool of the texture is exactly
    zero whatever the frame, and its magnitude is 1 everywhere: at any resolution coarser than a
    pixel there is neither a texture nor a moving energy pattern to see.
    """
    axis = TEXTURE_PAIRS[label // 2][2]
    v = _TEXTURE_SPEED
    n = size + v * (frames - 1)
    seq = rng.choice(np.array([-1.0, 1.0]), size=n)
    idx = np.arange(size)[None, :] - v * np.arange(frames)[:, None] + v * (frames - 1)  # (T, size)
    rows = seq[idx]  # (T, size): value per position along the drift axis
    carrier = np.where(np.arange(size) % 2 == 0, 1.0, -1.0)  # across the drift axis
    c = rows[:, None, :] * carrier[None, :, None]  # (T, across, along)
    return c if axis == 0 else np.ascontiguousarray(c.transpose(0, 2, 1))


def order_schedule(frames: int, rng: np.random.Generator) -> tuple[int, int]:
    """First frames of the two arrangements of a forward video: (a, b), b = a + show + gap.

    The event (show + gap + show frames) starts uniformly at random among the positions that keep
    it inside the video; the distribution of positions is symmetric under time reversal.
    """
    span = 2 * _ORDER_SHOW + _ORDER_GAP
    if frames < span:
        raise ValueError(f"kind 'order' needs at least {span} frames, got {frames}")
    a = int(rng.integers(0, frames - span + 1))
    return a, a + _ORDER_SHOW + _ORDER_GAP


def _dot_pair(angle_deg: float, size: int, rng: np.random.Generator) -> np.ndarray:
    """Centres (2, 2) of two dots on a line at ``angle_deg``, separated and placed at random."""
    sep = rng.uniform(*_ORDER_SEPARATION) * size
    half = 0.5 * sep * _direction(angle_deg + rng.uniform(-10.0, 10.0))
    lo = _ORDER_MARGIN * size + np.abs(half)
    hi = size - lo
    center = lo + rng.uniform(0.0, 1.0, size=2) * np.maximum(hi - lo, 0.0)
    return np.stack([center - half, center + half])
