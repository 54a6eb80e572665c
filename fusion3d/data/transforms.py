"""Clip transforms as tensor ops.

Frames arrive as uint8 ``(T, H, W, 3)`` arrays from the decoder and leave as float ``(C, T, H, W)``
tensors (a batch is ``N, C, T, H, W``). Geometry (resize, crop, flip) runs on uint8 frames so an
evaluation clip can be cached as uint8 after cropping; ``normalize`` comes last.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def resize_short_side(frames: torch.Tensor, size: int) -> torch.Tensor:
    """Resize ``(T, H, W, 3)`` uint8 frames so the short side is ``size`` (bilinear, antialiased)."""
    t, h, w, _ = frames.shape
    if min(h, w) == size:
        return frames
    if h <= w:
        nh, nw = size, max(1, round(w * size / h))
    else:
        nh, nw = max(1, round(h * size / w)), size
    x = frames.permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False, antialias=True)
    return x.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1)


def crop(frames: torch.Tensor, top: int, left: int, size: int) -> torch.Tensor:
    return frames[:, top : top + size, left : left + size, :]


def random_crop(frames: torch.Tensor, size: int, rng: np.random.Generator) -> torch.Tensor:
    _, h, w, _ = frames.shape
    top = int(rng.integers(0, h - size + 1))
    left = int(rng.integers(0, w - size + 1))
    return crop(frames, top, left, size)


def center_crop(frames: torch.Tensor, size: int) -> torch.Tensor:
    _, h, w, _ = frames.shape
    return crop(frames, (h - size) // 2, (w - size) // 2, size)


def three_crop(frames: torch.Tensor, size: int, which: int) -> torch.Tensor:
    """Crop ``which`` in 0, 1, 2: start, centre and end of the long side (centred on the short side)."""
    if which not in (0, 1, 2):
        raise ValueError(f"three_crop index must be 0, 1 or 2, got {which}")
    _, h, w, _ = frames.shape
    if w >= h:
        top = (h - size) // 2
        left = [0, (w - size) // 2, w - size][which]
    else:
        left = (w - size) // 2
        top = [0, (h - size) // 2, h - size][which]
    return crop(frames, top, left, size)


def hflip(frames: torch.Tensor) -> torch.Tensor:
    return frames.flip(2)


def to_float_cthw(frames: torch.Tensor) -> torch.Tensor:
    """uint8 ``(T, H, W, 3)`` -> float ``(3, T, H, W)`` in [0, 1]."""
    return frames.permute(3, 0, 1, 2).float().div_(255.0)


def normalize(clip: torch.Tensor, mean, std) -> torch.Tensor:
    """Normalise a float ``(C, T, H, W)`` or ``(N, C, T, H, W)`` clip per channel."""
    shape = (-1, 1, 1, 1)
    m = torch.as_tensor(mean, dtype=clip.dtype, device=clip.device).view(shape)
    s = torch.as_tensor(std, dtype=clip.dtype, device=clip.device).view(shape)
    return (clip - m) / s


def swap_label(label: int, pairs) -> int:
    """The label of a horizontally flipped clip under a swap map given as pairs."""
    for a, b in pairs:
        if label == a:
            return b
        if label == b:
            return a
    return label


def train_geometry(
    frames: np.ndarray,
    short_side: int,
    short_side_max: int,
    crop_size: int,
    flip: str,
    rng: np.random.Generator,
) -> tuple[torch.Tensor, bool]:
    """Training geometry on uint8 frames: jittered short-side resize, random crop, random flip.

    Returns the uint8 ``(T, crop, crop, 3)`` clip and whether it was flipped.
    """
    x = torch.from_numpy(np.ascontiguousarray(frames))
    side = int(rng.integers(short_side, short_side_max + 1))
    x = resize_short_side(x, side)
    x = random_crop(x, crop_size, rng)
    flipped = flip != "off" and bool(rng.random() < 0.5)
    if flipped:
        x = hflip(x)
    return x, flipped


def eval_geometry(
    frames: np.ndarray, short_side: int, crop_size: int, num_crops: int, crop_idx: int
) -> torch.Tensor:
    """Evaluation geometry: short-side resize, then the centre crop or one of three crops."""
    x = resize_short_side(torch.from_numpy(np.ascontiguousarray(frames)), short_side)
    return center_crop(x, crop_size) if num_crops == 1 else three_crop(x, crop_size, crop_idx)
