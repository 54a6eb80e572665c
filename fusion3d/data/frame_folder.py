"""Frame folders (Something-Something V1 / TSN style ``00001.jpg`` ...): listing, probing, reading."""

from __future__ import annotations

import os
import re

import numpy as np

from fusion3d.data.video_info import VideoDecodeError, VideoInfo

# Frame folders have no rate of their own; Something-Something is 12 fps.
FOLDER_FPS = 12.0

_IMAGE_RE = re.compile(r"^(?P<prefix>.*?)(?P<num>\d+)\.(?P<ext>jpe?g|png|bmp)$", re.IGNORECASE)


_folder_cache: dict[str, tuple[int, list[str]]] = {}


def is_frame_folder(path) -> bool:
    return os.path.isdir(path)


def list_frame_files(folder) -> list[str]:
    """The frame images of ``folder`` in frame order (index i -> i-th file), full paths.

    The naming pattern is detected from the files: ``00001.jpg``, ``img_00001.jpg``, ``000001.jpg``,
    ... (numbers sorted numerically, which equals name order for zero-padded names). If several
    prefixes are present (TSN folders hold ``img_*``, ``flow_x_*``, ``flow_y_*``), RGB frames win
    over optical flow, then the most numerous group.
    """
    folder = os.path.abspath(os.fspath(folder))
    try:
        mtime = os.stat(folder).st_mtime_ns
    except OSError as e:
        raise VideoDecodeError(folder, f"cannot read frame folder ({e.strerror or e})") from None
    cached = _folder_cache.get(folder)
    if cached is not None and cached[0] == mtime:
        return cached[1]
    groups: dict[tuple[str, str], list[tuple[int, str]]] = {}
    with os.scandir(folder) as entries:
        for entry in entries:
            m = _IMAGE_RE.match(entry.name)
            if m is None or not entry.is_file():
                continue
            ext = m.group("ext").lower().replace("jpeg", "jpg")
            groups.setdefault((m.group("prefix"), ext), []).append((int(m.group("num")), entry.name))
    if not groups:
        files: list[str] = []
    else:

        def rank(key):
            prefix, ext = key
            return ("flow" in prefix.lower(), -len(groups[key]), ext != "jpg", prefix)

        best = min(groups, key=rank)
        files = [os.path.join(folder, name) for _, name in sorted(groups[best])]
    if len(_folder_cache) > 8192:
        _folder_cache.clear()
    _folder_cache[folder] = (mtime, files)
    return files


def _load_image(path: str) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except Exception as e:  # PIL raises many types for broken files
        raise VideoDecodeError(path, f"cannot decode image ({type(e).__name__}: {e})") from None


def _probe_folder(folder: str) -> VideoInfo:
    files = list_frame_files(folder)
    if not files:
        raise VideoDecodeError(folder, "frame folder holds no frame images (expected 00001.jpg, ...)")
    from PIL import Image

    try:
        with Image.open(files[0]) as im:
            width, height = im.size
    except Exception as e:
        raise VideoDecodeError(files[0], f"cannot read image header ({type(e).__name__}: {e})") from None
    n = len(files)
    return VideoInfo(folder, n, FOLDER_FPS, n / FOLDER_FPS, int(height), int(width))


def _read_folder(folder: str, wanted: list[int], num_frames: int | None) -> dict[int, np.ndarray]:
    files = list_frame_files(folder)
    if not files:
        raise VideoDecodeError(folder, "frame folder holds no frame images (expected 00001.jpg, ...)")
    out: dict[int, np.ndarray] = {}
    for i in wanted:
        if i >= len(files):
            raise VideoDecodeError(folder, f"frame index {i} out of range: folder holds {len(files)} frames")
        out[i] = _load_image(files[i])
    return out
