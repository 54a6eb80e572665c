"""Frame-exact video decoding with PyAV (random access by frame index) and a cached per-video index.

Frame index ``i`` always means "the i-th frame a plain sequential decode outputs" (see
:func:`decode_all`). :func:`read_frames` reaches the requested indices without decoding the whole
video:

* packets are demuxed (cheap, nothing decoded) ahead of the decoder; when a keyframe lies between
  the current position and the next wanted frame, the packets before it are dropped and decoding
  restarts at that keyframe ("skip ahead"). Demuxing tells us where keyframes are, so no keyframe
  interval has to be guessed and a video with a single keyframe is decoded once, never re-seeked;
* only for a far jump (more than ``SEEK_MIN_GAP`` frames) does it seek, to a point a little before
  the wanted frame, and checks where the seek landed: AVI stores pts = dts + 1, so a seek to frame
  t can land on the keyframe t + 1. A landing after the target falls back to the start of the file;
* frame indices come from pts, time_base and the frame rate, relative to the pts of the first
  packet (frame 0). ``stream.start_time`` is not used: AVI reports 0 while its first pts is 1.
  Every decoded frame is checked against the count since the last keyframe; any inconsistency
  (variable frame rate, odd timestamps, discarded leading packets) switches to a plain counted
  sequential decode, so indices are always exact, only slower. AVI is special: its "pts" are
  decode-order guesses (a permutation with B-frames), so there frames are counted from the
  keyframe, whose index its packet gives;
* RGB conversion uses one persistent swscale context per thread: ``frame.to_ndarray(format=...)``
  builds a new one per frame, which can cost milliseconds per frame.

Frame folders (Something-Something V1 / TSN style ``00001.jpg`` ...) are handled by the same API.
"""

from __future__ import annotations

import operator
import os
import re
import threading
from collections.abc import Iterator, Sequence
from fractions import Fraction

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from fusion3d.data.frame_folder import (
    FOLDER_FPS,
    _load_image,
    _probe_folder,
    _read_folder,
    is_frame_folder,
    list_frame_files,
)
from fusion3d.data.video_info import VideoDecodeError, VideoInfo

__all__ = [
    "VideoInfo",
    "VideoDecodeError",
    "probe",
    "read_frames",
    "decode_all",
    "count_decodable_frames",
    "is_frame_folder",
    "list_frame_files",
    "FOLDER_FPS",
    "SEEK_MIN_GAP",
]

# Seek (instead of demuxing forward) only when the next wanted frame is this many frames ahead of
# the demuxer. Demuxing a packet costs ~1% of decoding it, and after demuxing forward the decoder
# still restarts at the last keyframe before the target, exactly where a seek would land.
SEEK_MIN_GAP = 250
# Seek to this many frames before the wanted one (AVI's pts = dts + 1 would otherwise land a seek
# on a keyframe just after the target); demuxing forward then finds the right keyframe.
_SEEK_MARGIN = 8


# Counters for tests and benchmarks (per process): how often each path was taken.
_stats = {"fast": 0, "sequential": 0, "seeks": 0, "bad_seeks": 0, "skips": 0}


class _NeedSequential(Exception):
    """Timestamps cannot be trusted for this stream: count frames from the start instead."""


# --------------------------------------------------------------------------------------------
# Containers
# --------------------------------------------------------------------------------------------


def _stat(path: str) -> os.stat_result:
    """``os.stat`` with failures reported as VideoDecodeError naming the file."""
    try:
        return os.stat(path)
    except FileNotFoundError:
        raise VideoDecodeError(path, "file does not exist") from None
    except OSError as e:
        raise VideoDecodeError(path, f"cannot stat file ({e.strerror or e})") from None


def _check_file(path: str) -> None:
    st = _stat(path)
    if st.st_size == 0:
        raise VideoDecodeError(path, "empty file (0 bytes)")


def _open(path: str):
    """Open ``path`` and return (container, video stream) with one decode thread."""
    _check_file(path)
    try:
        container = av.open(path, mode="r")
    except Exception as e:  # av.error.* (InvalidDataError, ...) and OSError
        raise VideoDecodeError(path, f"cannot open container ({_describe(e)})") from None
    try:
        if not container.streams.video:
            raise VideoDecodeError(path, "no video stream")
        stream = container.streams.video[0]
        codec = stream.codec_context
        codec.thread_count = 1
        codec.thread_type = "SLICE"
    except BaseException:
        container.close()
        raise
    return container, stream


def _describe(e: BaseException) -> str:
    text = str(e)
    # av errors read "[Errno 1094995529] Invalid data found when processing input: '/path/x.mp4'"
    text = re.sub(r":\s*'[^']*'$", "", text)
    text = re.sub(r"^\[Errno -?\d+\]\s*", "", text)
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _stream_rate(stream) -> Fraction | None:
    """Frame rate used to map pts to frame indices (prefers the exact nominal rate)."""
    avg = stream.average_rate
    base = stream.base_rate
    if avg and base and abs(float(base) / float(avg) - 1.0) < 0.02:
        return Fraction(base)
    if avg:
        return Fraction(avg)
    if stream.guessed_rate:
        return Fraction(stream.guessed_rate)
    return Fraction(base) if base else None


def _container_claim(container, stream, rate) -> int:
    """Frame count written in the container header; for Matroska/WebM an estimate from duration."""
    if stream.frames and stream.frames > 0:
        return int(stream.frames)
    if rate:
        if stream.duration and stream.time_base:
            return int(round(float(stream.duration * stream.time_base * rate)))
        # the container's duration covers every stream: with audio it may run past the video
        if container.duration and container.duration > 0 and not container.streams.audio:
            return int(round(container.duration / 1e6 * float(rate)))
    return 0


def _packets(container, stream, path: str) -> Iterator:
    """Non-empty packets of the video stream, demux errors past the start read as end of file."""
    it = container.demux(stream)
    while True:
        try:
            packet = next(it)
        except StopIteration:
            return
        except av.FFmpegError:
            return  # a truncated or corrupt tail: what was read so far is all there is
        if packet.size:
            yield packet


def _count_packets(container, stream, path: str) -> int:
    return sum(1 for p in _packets(container, stream, path) if not p.is_discard)


def _probe_video(path: str) -> tuple[VideoInfo, int]:
    """(info with an exact frame count, the container's own claim)."""
    container, stream = _open(path)
    try:
        rate = _stream_rate(stream)
        claim = _container_claim(container, stream, rate)
        if stream.frames and stream.frames > 0:
            n = int(stream.frames)
        else:
            # Matroska/WebM store no frame count, and duration x rate is only an estimate (and
            # wrong for a file cut short): count the packets, one per frame (demuxing, no decoding).
            n = _count_packets(container, stream, path)
        if n <= 0:
            raise VideoDecodeError(path, "video stream holds no frames")
        fps = float(stream.average_rate or rate or 0.0)
        if stream.duration and stream.time_base and stream.frames:
            duration = float(stream.duration * stream.time_base)
        else:
            duration = 0.0
        if fps <= 0:
            fps = n / duration if duration > 0 else 25.0
        if duration <= 0:
            duration = n / fps
        codec = stream.codec_context
        height, width = int(codec.height or stream.height), int(codec.width or stream.width)
        if height <= 0 or width <= 0:
            raise VideoDecodeError(path, f"invalid frame size {width}x{height}")
        return VideoInfo(path, n, fps, duration, height, width), claim
    finally:
        container.close()


def _probe_detailed(path) -> tuple[VideoInfo, int]:
    """Like :func:`probe`, plus the frame count the container claims (used by the scanner)."""
    path = os.path.abspath(os.fspath(path))
    if os.path.isdir(path):
        info = _probe_folder(path)
        return info, info.num_frames
    return _probe_video(path)


def probe(path) -> VideoInfo:
    """Frame count (exact), fps, duration and size of a video file or a JPEG frame folder."""
    return _probe_detailed(path)[0]


# --------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------


def _decode_packet(codec, packet, path: str, near: int):
    try:
        return codec.decode(packet)
    except av.FFmpegError as e:
        raise VideoDecodeError(path, f"decode error near frame {near} ({_describe(e)})") from None


def _iter_decoded(container, stream, path: str, tolerate_errors: bool = False) -> Iterator:
    """Every frame in output order (the definition of frame indices). Drains the decoder at EOF."""
    codec = stream.codec_context
    n = 0
    try:
        for packet in _packets(container, stream, path):
            for frame in _decode_packet(codec, packet, path, n):
                n += 1
                yield frame
        for frame in _decode_packet(codec, None, path, n):
            n += 1
            yield frame
    except VideoDecodeError:
        if not tolerate_errors:
            raise


_local = threading.local()


def _to_rgb(frame) -> np.ndarray:
    """RGB24 array of a decoded frame.

    One reformatter per thread: ``frame.to_ndarray(format=...)`` builds a fresh swscale context per
    frame, which costs milliseconds when only a few frames of a video are converted.
    """
    reformatter = getattr(_local, "reformatter", None)
    if reformatter is None:
        reformatter = _local.reformatter = VideoReformatter()
    return reformatter.reformat(frame, format="rgb24").to_ndarray()


def _missing_frame(path: str, stream, index: int, have: int) -> VideoDecodeError:
    """The error for a frame the decoder never produced (the stream ended before it)."""
    if stream.frames and index < stream.frames:
        return VideoDecodeError(
            path,
            f"frame {index} requested but only {have} of the {stream.frames} frames the container claims "
            f"are decodable (truncated file?)",
        )
    return VideoDecodeError(path, f"frame index {index} out of range: the video has {have} frames")


def _read_sequential(path: str, wanted: list[int]) -> dict[int, np.ndarray]:
    container, stream = _open(path)
    try:
        out: dict[int, np.ndarray] = {}
        wi = 0
        count = 0
        for frame in _iter_decoded(container, stream, path):
            if count == wanted[wi]:
                out[count] = _to_rgb(frame)
                wi += 1
                if wi == len(wanted):
                    return out
            count += 1
        raise _missing_frame(path, stream, wanted[wi], count)
    finally:
        container.close()


class _FastReader:
    """One forward pass over a video with skip-ahead and far seeks; see the module docstring."""

    def __init__(self, path: str, container, stream, wanted: list[int]):
        self.path = path
        self.container = container
        self.stream = stream
        self.codec = stream.codec_context
        self.wanted = wanted
        self.wi = 0
        self.out: dict[int, np.ndarray] = {}
        self.avi = container.format.name == "avi"
        rate = _stream_rate(stream)
        if not rate or not stream.time_base:
            raise _NeedSequential
        self.step = float(1 / (stream.time_base * rate))  # pts units per frame
        self.cur = -1  # index of the last frame the decoder output
        self.anchor: int | None = 0  # index the next output frame must have (None: take it from pts)
        self.eof = False
        self.drained = False
        self.it = _packets(container, stream, path)

    # pts <-> index -----------------------------------------------------------------------------
    @staticmethod
    def _ts(packet):
        return packet.pts if packet.pts is not None else packet.dts

    def _index(self, ts) -> float:
        return (ts - self.pts0) / self.step

    def _packet_index(self, packet) -> int | None:
        ts = self._ts(packet)
        return None if ts is None else int(round(self._index(ts)))

    def _frame_index(self, frame) -> int:
        if frame.pts is None:
            raise _NeedSequential
        x = self._index(frame.pts)
        i = int(round(x))
        if abs(x - i) > 0.25 or i < 0:
            raise _NeedSequential
        return i

    # decoding -----------------------------------------------------------------------------------
    def _emit(self, frames) -> None:
        wanted = self.wanted
        for frame in frames:
            if self.anchor is not None:  # file start, or an AVI keyframe: the index is known
                i = self.anchor
                self.anchor = None
                if frame.pts is not None and self._frame_index(frame) != i:
                    raise _NeedSequential
            elif self.cur < 0:  # first frame after a restart at a keyframe: pts says where we are
                i = self._frame_index(frame)
            else:
                i = self.cur + 1
                if not self.avi and self._frame_index(frame) != i:
                    raise _NeedSequential  # variable frame rate or odd timestamps
            self.cur = i
            if self.wi < len(wanted):
                if wanted[self.wi] < i:
                    raise _NeedSequential  # a wanted frame was never output: timestamps lie
                if wanted[self.wi] == i:
                    self.out[i] = _to_rgb(frame)
                    self.wi += 1

    def _decode(self, packet) -> None:
        if self.drained:
            return
        if packet is None:
            self.drained = True
        self._emit(_decode_packet(self.codec, packet, self.path, self.cur + 1))

    def _next_packet(self):
        if self.eof:
            return None
        packet = next(self.it, None)
        if packet is None:
            self.eof = True
        return packet

    def _restart(self, anchor_index: int | None) -> None:
        """The decoder restarts at a keyframe: forget its state and where it was."""
        self.codec.flush_buffers()
        self.cur = -1
        self.anchor = anchor_index if self.avi else None

    def _seek(self, t: int) -> bool:
        """Seek to a keyframe at or before frame ``t``; False if the container cannot do it."""
        target = max(t - _SEEK_MARGIN, 0)
        try:
            self.container.seek(
                int(self.pts0 + target * self.step), stream=self.stream, backward=True, any_frame=False
            )
        except av.FFmpegError:
            return False
        _stats["seeks"] += 1
        self.it = _packets(self.container, self.stream, self.path)
        self.eof = False
        self.drained = False
        return True

    def _seek_to_start(self):
        """Back to the first packet (after a seek landed beyond its target)."""
        _stats["bad_seeks"] += 1
        try:
            self.container.seek(self.pts0, stream=self.stream, backward=True, any_frame=False)
        except av.FFmpegError:
            raise _NeedSequential from None
        self.it = _packets(self.container, self.stream, self.path)
        self.eof = False
        self.drained = False
        first = self._next_packet()
        if first is None or self._ts(first) != self.pts0 or not first.is_keyframe:
            raise _NeedSequential
        return first

    # main loop ------------------------------------------------------------------------------------
    def run(self) -> dict[int, np.ndarray]:
        first = self._next_packet()
        if first is None:
            raise VideoDecodeError(self.path, "no video packets (empty or unreadable stream)")
        if not first.is_keyframe or first.is_discard or self._ts(first) is None:
            raise _NeedSequential
        self.pts0 = self._ts(first)
        buf = [first]  # demuxed packets not yet sent to the decoder, in decode order
        last = 0  # index of the last demuxed packet
        can_seek = True
        wanted = self.wanted
        while self.wi < len(wanted):
            t = wanted[self.wi]
            need_key = False
            if can_seek and t - last > SEEK_MIN_GAP and not self.eof and self._seek(t):
                buf = []
                need_key = True
            jump: int | None = None
            # Demux (no decoding) up to the packet of frame t, keeping only the packets from the
            # last keyframe at or before t on: the decoder can start there.
            while not (buf and last >= t):
                packet = self._next_packet()
                if packet is None:
                    break
                i = self._packet_index(packet)
                if need_key:
                    if not packet.is_keyframe:
                        continue
                    if i is None or i > t:  # the seek landed after the wanted frame
                        can_seek = False
                        packet = self._seek_to_start()
                        i = 0
                    need_key = False
                    buf = [packet]
                    jump = i
                elif packet.is_keyframe and i is not None and i <= t and not packet.is_discard:
                    buf = [packet]
                    jump = i
                else:
                    buf.append(packet)
                if i is None:
                    break  # cannot place this packet: decode from here on
                last = i
            if jump is not None:
                _stats["skips"] += 1
                self._restart(jump)
            for packet in buf:
                self._decode(packet)
            buf = []
            # Feed packets until frame t comes out (B-frames delay the output by a few packets).
            while self.wi < len(wanted) and wanted[self.wi] == t:
                if self.drained:
                    raise _missing_frame(self.path, self.stream, t, self.cur + 1)
                packet = self._next_packet()
                if packet is not None:
                    i = self._packet_index(packet)
                    if i is not None:
                        last = max(last, i)
                self._decode(packet)
        return self.out


def _read_video(path: str, wanted: list[int], check_count: bool = False) -> dict[int, np.ndarray]:
    container, stream = _open(path)
    try:
        if check_count and stream.frames and wanted[-1] >= stream.frames:  # no VideoInfo was given
            raise VideoDecodeError(path, f"frame index {wanted[-1]} out of range [0, {stream.frames})")
        try:
            out = _FastReader(path, container, stream, wanted).run()
            _stats["fast"] += 1
            return out
        except _NeedSequential:
            pass
    finally:
        container.close()
    _stats["sequential"] += 1
    return _read_sequential(path, wanted)


def _as_indices(path: str, indices) -> list[int]:
    try:
        return [operator.index(i) for i in indices]
    except TypeError:
        raise VideoDecodeError(path, f"frame indices must be integers, got {indices!r}") from None


def read_frames(path, indices: Sequence[int], info: VideoInfo | None = None) -> np.ndarray:
    """Frames ``indices`` of a video (or frame folder) as uint8 RGB ``(len(indices), H, W, 3)``.

    Any order, duplicates allowed. An index outside ``[0, num_frames)``, or a frame that cannot be
    decoded (truncated file), raises :class:`VideoDecodeError`. ``info`` (e.g. from
    :class:`VideoIndex`) is only used for the range check; without it the file is not probed (the
    container's own frame count, where it has one, is checked instead).
    """
    path = os.path.abspath(os.fspath(path))
    idx = _as_indices(path, indices)
    folder = os.path.isdir(path)
    if info is None and not idx:
        info = probe(path)
    num_frames = info.num_frames if info is not None else None
    for i in idx:
        if i < 0 or (num_frames is not None and i >= num_frames):
            raise VideoDecodeError(
                path, f"frame index {i} out of range [0, {num_frames if num_frames is not None else '?'})"
            )
    if not idx:
        return np.zeros((0, info.height, info.width, 3), dtype=np.uint8)
    wanted = sorted(set(idx))
    if folder:
        frames = _read_folder(path, wanted, num_frames)
    else:
        frames = _read_video(path, wanted, check_count=info is None)
    shapes = {f.shape for f in frames.values()}
    if len(shapes) != 1:
        raise VideoDecodeError(path, f"frames change size mid-video: {sorted(shapes)}")
    (shape,) = shapes
    out = np.empty((len(idx),) + shape, dtype=np.uint8)
    for k, i in enumerate(idx):
        out[k] = frames[i]
    return out


def decode_all(path) -> np.ndarray:
    """Every frame, plain sequential decode: ``(num_frames, H, W, 3)`` uint8 RGB.

    This defines what frame index ``i`` means, and is the speed bound random access is compared to.
    """
    path = os.path.abspath(os.fspath(path))
    if os.path.isdir(path):
        files = list_frame_files(path)
        if not files:
            raise VideoDecodeError(path, "frame folder holds no frame images (expected 00001.jpg, ...)")
        frames = [_load_image(f) for f in files]
    else:
        container, stream = _open(path)
        try:
            frames = [_to_rgb(f) for f in _iter_decoded(container, stream, path)]
        finally:
            container.close()
        if not frames:
            raise VideoDecodeError(path, "no decodable frames")
    if len({f.shape for f in frames}) != 1:
        raise VideoDecodeError(path, "frames change size mid-video")
    return np.stack(frames)


def count_decodable_frames(path) -> tuple[int, str]:
    """Decode everything (no colour conversion); (frames decoded, error text or "")."""
    path = os.path.abspath(os.fspath(path))
    if os.path.isdir(path):
        files = list_frame_files(path)
        for n, f in enumerate(files):
            try:
                _load_image(f)
            except VideoDecodeError as e:
                return n, e.reason
        return len(files), ""
    try:
        container, stream = _open(path)
    except VideoDecodeError as e:
        return 0, e.reason
    n = 0
    try:
        for _ in _iter_decoded(container, stream, path):
            n += 1
    except VideoDecodeError as e:
        return n, e.reason
    finally:
        container.close()
    return n, ""
