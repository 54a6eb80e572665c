"""Clip samplers: which frame indices of a video make a clip.

Pure functions of (num_frames, settings, rng or view index). Two conventions (docs/data_formats.md,
Clip sampling):
- dense: ``clip_len`` frames every ``interval`` frames; random start in training, evenly spread
  starts over ``num_clips`` views in evaluation (canonical for Kinetics/UCF101);
- segment (TSN): the video split into ``clip_len`` equal segments, one frame per segment; random
  within each segment in training, the middle (shifted per view) in evaluation (Something-Something).
A video shorter than a clip repeats its last frame (no wrap-around: wrapping would glue the end of
a motion to its beginning and invert it).
"""

from __future__ import annotations

import numpy as np


def clip_span(clip_len: int, interval: int) -> int:
    """Number of frames a dense clip covers from its first to its last frame, inclusive."""
    return (clip_len - 1) * interval + 1


def dense_indices(
    num_frames: int,
    clip_len: int,
    interval: int,
    rng: np.random.Generator | None = None,
    view: int = 0,
    num_views: int = 1,
) -> np.ndarray:
    """Frame indices of one dense clip.

    With ``rng`` the start is uniform over all valid starts (training). Without it, view ``view``
    of ``num_views`` starts at the centre of the view's share of the valid start range, so the
    views are evenly spread and a single view is the centre clip.
    """
    if num_frames < 1:
        raise ValueError(f"a clip needs at least one frame, the video has {num_frames}")
    span = clip_span(clip_len, interval)
    slack = max(0, num_frames - span)
    if rng is not None:
        start = int(rng.integers(0, slack + 1))
    else:
        if not 0 <= view < num_views:
            raise ValueError(f"view {view} outside 0..{num_views - 1}")
        start = int((slack + 1) * (view + 0.5) / num_views)
        start = min(start, slack)
    idx = start + np.arange(clip_len) * interval
    return np.minimum(idx, num_frames - 1).astype(np.int64)


def segment_indices(
    num_frames: int,
    num_segments: int,
    rng: np.random.Generator | None = None,
    view: int = 0,
    num_views: int = 1,
) -> np.ndarray:
    """Frame indices of one TSN clip: one frame from each of ``num_segments`` equal segments.

    With ``rng`` a uniformly random frame per segment (training); otherwise the frame at relative
    position (view + 0.5) / num_views inside each segment (the middle for a single view).
    """
    if num_frames < 1:
        raise ValueError(f"a clip needs at least one frame, the video has {num_frames}")
    seg = num_frames / num_segments
    if rng is not None:
        offsets = rng.random(num_segments)
    else:
        if not 0 <= view < num_views:
            raise ValueError(f"view {view} outside 0..{num_views - 1}")
        offsets = np.full(num_segments, (view + 0.5) / num_views)
    idx = np.floor(np.arange(num_segments) * seg + offsets * seg).astype(np.int64)
    return np.clip(idx, 0, num_frames - 1)


def clip_indices(
    sampling: str,
    num_frames: int,
    clip_len: int,
    interval: int,
    rng: np.random.Generator | None = None,
    view: int = 0,
    num_views: int = 1,
) -> np.ndarray:
    """Dispatch on the sampler name ("dense" or "segment")."""
    if sampling == "dense":
        return dense_indices(num_frames, clip_len, interval, rng, view, num_views)
    if sampling == "segment":
        return segment_indices(num_frames, clip_len, rng, view, num_views)
    raise ValueError(f"unknown sampling {sampling!r}; choose dense or segment")
