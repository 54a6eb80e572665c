"""Test helpers: videos whose frames carry their own index, and broken files.

Frame ``i`` of :func:`numbered_frames` shows the binary of ``i`` as a 3x4 grid of big black/white
blocks (12 bits, so up to 4096 frames) that survive lossy H.264/VP9/JPEG; :func:`read_number` reads
it back from a decoded frame. Plain functions, not fixtures, so any test module can import them.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np

from fusion3d.data.encode import write_video

GRID_ROWS, GRID_COLS = 3, 4
NUM_BITS = GRID_ROWS * GRID_COLS


def _cells(h: int, w: int):
    """(bit, row slice, col slice) of every block, bit 0 = least significant, row-major."""
    bh, bw = h // GRID_ROWS, w // GRID_COLS
    for b in range(NUM_BITS):
        r, c = divmod(b, GRID_COLS)
        yield b, slice(r * bh, (r + 1) * bh), slice(c * bw, (c + 1) * bw)


def numbered_frames(n: int, h: int = 48, w: int = 64) -> np.ndarray:
    """``(n, h, w, 3)`` uint8 frames; frame ``i`` encodes ``i`` in black/white blocks."""
    if n > 2**NUM_BITS:
        raise ValueError(f"numbered_frames: at most {2**NUM_BITS} frames, got {n}")
    if h < 4 * GRID_ROWS or w < 4 * GRID_COLS:
        raise ValueError(
            f"numbered_frames: frames of {h}x{w} are too small for the {GRID_ROWS}x{GRID_COLS} grid"
        )
    frames = np.zeros((n, h, w, 3), dtype=np.uint8)
    for i in range(n):
        for b, rs, cs in _cells(h, w):
            if (i >> b) & 1:
                frames[i, rs, cs] = 255
    return frames


def read_number(frame: np.ndarray) -> int:
    """The index drawn into ``frame`` by :func:`numbered_frames` (block centres, threshold 128)."""
    frame = np.asarray(frame)
    h, w = frame.shape[:2]
    value = 0
    for b, rs, cs in _cells(h, w):
        block = frame[rs, cs]
        mh, mw = block.shape[0] // 4, block.shape[1] // 4
        centre = block[mh : block.shape[0] - mh, mw : block.shape[1] - mw]
        if centre.mean() > 127.5:
            value |= 1 << b
    return value


def read_numbers(frames: np.ndarray) -> list[int]:
    return [read_number(f) for f in frames]


def write_numbered_video(path, n: int, fps: int = 12, gop: int = 8, h: int = 48, w: int = 64) -> Path:
    """A real H.264 (.mp4/.avi/.mkv) or VP9 (.webm) file of ``n`` numbered frames."""
    return write_video(path, numbered_frames(n, h, w), fps=fps, gop=gop)


def write_bframes_video(
    path, n: int, fps=12, gop: int = 12, bframes: int = 3, h: int = 48, w: int = 64
) -> Path:
    """Numbered H.264 with B-frames (decode order != display order; MP4 gets negative dts and an
    edit list, AVI gets pts that are a permutation). ``write_video`` never makes B-frames.
    ``fps`` may be a Fraction, e.g. ``Fraction(30000, 1001)``."""
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    container = av.open(str(path), mode="w", options={"fflags": "+bitexact"})
    try:
        stream = container.add_stream("libx264", rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.thread_count = 1
        stream.options = {
            "crf": "18",
            "preset": "medium",
            "threads": "1",
            "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes={bframes}:b-pyramid=normal",
        }
        for frame in numbered_frames(n, h, w):
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    finally:
        container.close()
    return path


def write_numbered_frame_folder(
    folder, n: int, h: int = 48, w: int = 64, pattern: str = "{:05d}.jpg", start: int = 1
) -> Path:
    """A Something-Something V1 style folder: ``00001.jpg`` ... (``pattern`` and 1-based ``start``)."""
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(numbered_frames(n, h, w)):
        Image.fromarray(frame).save(folder / pattern.format(start + i), quality=95)
    return folder


def make_truncated(src, dst, keep_fraction: float = 0.5) -> Path:
    """Copy the first ``keep_fraction`` of ``src``'s bytes to ``dst`` (a download cut short)."""
    data = Path(src).read_bytes()
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(data[: int(len(data) * keep_fraction)])
    return dst


def make_zero_length(dst) -> Path:
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(b"")
    return dst


def make_garbage(dst, nbytes: int = 4096, seed: int = 0) -> Path:
    """Random bytes under a video name (``dst`` should carry a video suffix such as .mp4)."""
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(np.random.default_rng(seed).integers(0, 256, nbytes, dtype=np.uint8).tobytes())
    return dst


def write_vfr_video(path, n: int, gop: int = 8, h: int = 48, w: int = 64) -> Path:
    """Numbered H.264 with variable frame rate: every 5th frame is shown twice as long, so pts are
    not ``index / fps``. Frame indices must still follow decode order."""
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    container = av.open(str(path), mode="w", options={"fflags": "+bitexact"})
    try:
        stream = container.add_stream("libx264", rate=12)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.time_base = Fraction(1, 12)
        stream.codec_context.time_base = Fraction(1, 12)
        stream.thread_count = 1
        stream.options = {
            "crf": "18",
            "preset": "veryfast",
            "tune": "zerolatency",
            "threads": "1",
            "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0",
        }
        for i, array in enumerate(numbered_frames(n, h, w)):
            frame = av.VideoFrame.from_ndarray(array, format="rgb24")
            frame.pts = i + i // 5
            frame.time_base = Fraction(1, 12)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    finally:
        container.close()
    return path
