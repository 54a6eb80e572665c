"""Writing real video files with PyAV (used by the synthetic generator and test fixtures)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

# Container suffix -> (codec, pixel format). H.264 in .mp4/.avi/.mkv; VP9 in .webm (as SSv2 ships).
_CODECS = {
    ".mp4": ("libx264", "yuv420p"),
    ".avi": ("libx264", "yuv420p"),
    ".mkv": ("libx264", "yuv420p"),
    ".webm": ("libvpx-vp9", "yuv420p"),
}


def write_video(path: str | Path, frames: np.ndarray, fps: int = 12, crf: int = 18, gop: int = 8) -> Path:
    """Encode ``frames`` (T, H, W, 3) uint8 RGB to ``path``; the codec follows the suffix.

    Encoding is single-threaded with bit-exact muxing, so the same frames give the same bytes.
    ``gop`` sets the keyframe interval so that seeking is really exercised.
    """
    path = Path(path)
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(
            f"write_video({path}): frames must be (T, H, W, 3) uint8, got {frames.shape} {frames.dtype}"
        )
    codec, pix_fmt = _CODECS.get(path.suffix.lower(), ("libx264", "yuv420p"))
    path.parent.mkdir(parents=True, exist_ok=True)
    t, h, w, _ = frames.shape
    container = av.open(str(path), mode="w", options={"fflags": "+bitexact"})
    try:
        stream = container.add_stream(codec, rate=Fraction(fps))
        stream.width = w + (w % 2)
        stream.height = h + (h % 2)
        stream.pix_fmt = pix_fmt
        stream.thread_count = 1
        stream.gop_size = gop
        opts = {"crf": str(crf)}
        if codec == "libx264":
            opts.update(
                {
                    "preset": "veryfast",
                    "tune": "zerolatency",
                    "threads": "1",
                    "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0",
                }
            )
        else:
            opts.update({"deadline": "realtime", "cpu-used": "8", "b": "0", "row-mt": "0"})
        stream.options = opts
        if (w % 2) or (h % 2):
            frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        for i in range(t):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frames[i]), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    finally:
        container.close()
    return path
