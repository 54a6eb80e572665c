"""Pre-scan of a video dataset: find missing, empty, unreadable, truncated and too-short videos.

Real datasets always hold some of these (Kinetics: a few hundred missing clips per split). The scan
reports them so that training can skip them knowingly; it never raises for a bad file.
"""

from __future__ import annotations

import os
import stat
import struct
import sys
from collections.abc import Sequence

import pandas as pd

from fusion3d.data.decode import VideoDecodeError, _probe_detailed, count_decodable_frames, read_frames

STATUSES = (
    "ok",
    "missing",
    "zero_length",
    "unreadable",
    "truncated",
    "too_short",
    "not_a_video",
    "escapes_root",
)
# Suffixes of video files: a directory named like one is not a frame folder but a mistake.
VIDEO_SUFFIXES = (".mp4", ".avi", ".webm", ".mkv", ".mov", ".m4v", ".mpg", ".mpeg")
COLUMNS = ("path", "status", "num_frames", "decodable_frames", "detail")

# Matroska/WebM store no frame count; the claim is duration x rate, which may be off by one frame.
_ESTIMATE_TOLERANCE = 1


def _row(path: str, status: str, num_frames: int = 0, decodable: int = -1, detail: str = "") -> dict:
    return {
        "path": path,
        "status": status,
        "num_frames": int(num_frames),
        "decodable_frames": int(decodable),
        "detail": detail,
    }


_MP4_BOXES = {b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot", b"uuid", b"styp", b"moof"}


def _vint(data: bytes, pos: int, keep_marker: bool) -> tuple[int, int] | None:
    """An EBML variable-length integer at ``pos``: (value, next position); None if invalid.
    A size whose value bits are all ones ("unknown size") reads as -1."""
    if pos >= len(data) or data[pos] == 0:
        return None
    length = 8 - data[pos].bit_length() + 1
    if pos + length > len(data):
        return None
    raw = int.from_bytes(data[pos : pos + length], "big")
    if keep_marker:
        return raw, pos + length
    value = raw & ((1 << (7 * length)) - 1)
    return (-1 if value == (1 << (7 * length)) - 1 else value), pos + length


def _cut_short(path: str) -> str:
    """Why the file looks cut short ("" if it does not, or is not a container we recognise).

    Only consulted for files that failed to open or decode, to tell a truncated download (a valid
    container header declaring more bytes than the file holds) from garbage.
    """
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as fh:
            head = fh.read(64)
            if head[4:8] in _MP4_BOXES:  # MP4/MOV: walk the top-level boxes
                pos, seen = 0, set()
                while pos + 8 <= size:
                    fh.seek(pos)
                    header = fh.read(16)
                    box, kind = struct.unpack(">I4s", header[:8])
                    if box == 1 and len(header) >= 16:
                        box = struct.unpack(">Q", header[8:16])[0]
                    if box == 0:  # extends to the end of the file
                        seen.add(kind)
                        break
                    if box < 8 or not kind.isascii() or not kind.decode("ascii").isprintable():
                        return ""
                    seen.add(kind)
                    if pos + box > size:
                        return (
                            f"file cut short: MP4 box '{kind.decode()}' at byte {pos} needs {box} bytes, "
                            f"the file ends after {size - pos}"
                        )
                    pos += box
                if b"moov" not in seen:
                    return "file cut short: MP4 index ('moov' box) missing"
                return ""
            if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
                declared = struct.unpack("<I", head[4:8])[0] + 8
                if declared > size:
                    return f"file cut short: AVI header declares {declared} bytes, the file holds {size}"
                return ""
            if head[:4] == b"\x1a\x45\xdf\xa3":  # Matroska / WebM
                data = fh.seek(0) or fh.read(4096)
                h = _vint(data, 4, keep_marker=False)
                if h is None or h[0] < 0:
                    return ""
                pos = h[1] + h[0]
                seg_id = _vint(data, pos, keep_marker=True)
                if seg_id is None or seg_id[0] != 0x18538067:
                    return ""
                seg = _vint(data, seg_id[1], keep_marker=False)
                if seg is None or seg[0] < 0:
                    return ""
                declared = seg[1] + seg[0]
                if declared > size:
                    return (
                        f"file cut short: Matroska segment declares {declared} bytes, the file holds {size}"
                    )
    except (OSError, struct.error, UnicodeDecodeError):
        return ""
    return ""


def _failed(path: str, claim: int, decodable: int, detail: str) -> dict:
    """A file that failed to open or decode: truncated if its header says it was cut, else unreadable."""
    cut = _cut_short(path)
    if cut:
        return _row(path, "truncated", claim, decodable, f"{cut} ({detail})")
    return _row(path, "unreadable", claim, decodable, detail)


def scan_video(path, min_frames: int = 1, full: bool = False) -> dict:
    """Check one video (or frame folder).

    Returns a dict with ``path``, ``status`` (one of :data:`STATUSES`), ``num_frames`` (what the
    container claims, 0 if unknown), ``decodable_frames`` (-1 unless measured) and ``detail`` (the
    reason, human readable). By default it probes and decodes the first and the last claimed frame,
    which catches truncation cheaply; ``full=True`` decodes every frame and compares the count with
    the claim.
    """
    path = os.path.abspath(os.fspath(path))
    try:
        return _scan(path, int(min_frames), bool(full))
    except Exception as e:  # never raise for a bad file
        return _row(path, "unreadable", detail=f"unexpected {type(e).__name__}: {e}")


def _scan(path: str, min_frames: int, full: bool) -> dict:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return _row(path, "missing", detail="file does not exist")
    except OSError as e:
        return _row(path, "unreadable", detail=f"cannot stat ({e.strerror or e})")
    folder = stat.S_ISDIR(st.st_mode)
    if folder and path.lower().endswith(VIDEO_SUFFIXES):
        return _row(path, "not_a_video", detail="a directory named like a video file, not a video")
    if not folder and not stat.S_ISREG(st.st_mode):
        kind = (
            "a character device"
            if stat.S_ISCHR(st.st_mode)
            else "a block device"
            if stat.S_ISBLK(st.st_mode)
            else "a FIFO"
            if stat.S_ISFIFO(st.st_mode)
            else "a socket"
            if stat.S_ISSOCK(st.st_mode)
            else "a special file"
        )
        return _row(path, "not_a_video", detail=f"{kind}, not a regular file (never opened)")
    if not folder and st.st_size == 0:
        return _row(path, "zero_length", detail="empty file (0 bytes)")

    try:
        info, claim = _probe_detailed(path)
    except VideoDecodeError as e:
        return _failed(path, 0, -1, e.reason)
    n = info.num_frames  # exact for containers without a count (frames were counted)
    claim = claim or n
    estimated = claim != n and not folder  # WebM/Matroska: the claim comes from the duration

    if full:
        decodable, error = count_decodable_frames(path)
        if decodable == 0:
            return _failed(path, claim, 0, f"no frame decodes ({error or 'empty stream'})")
        short_by = claim - decodable
        if short_by > (_ESTIMATE_TOLERANCE if estimated else 0):
            why = f"; stopped on: {error}" if error else ""
            return _row(
                path, "truncated", claim, decodable, f"only {decodable} of {claim} claimed frames decode{why}"
            )
        if error:  # all claimed frames decoded, but the stream ends in an error
            return _row(path, "truncated", claim, decodable, f"decode error after frame {decodable}: {error}")
        if decodable < min_frames:
            return _row(path, "too_short", claim, decodable, f"{decodable} frames < min_frames={min_frames}")
        detail = "" if decodable == claim else f"{decodable} frames decode (container claims {claim})"
        return _row(path, "ok", claim, decodable, detail)

    if estimated and claim - n > _ESTIMATE_TOLERANCE:
        return _row(
            path,
            "truncated",
            claim,
            n,
            f"only {n} frames present, the container duration implies {claim} (cut short?)",
        )
    last = n - 1
    try:
        read_frames(path, [0], info)
    except VideoDecodeError as e:
        return _failed(path, claim, 0, f"first frame does not decode: {e.reason}")
    try:
        read_frames(path, [last], info)
    except VideoDecodeError as e:
        return _row(path, "truncated", claim, -1, f"last claimed frame {last} does not decode: {e.reason}")
    if n < min_frames:
        return _row(path, "too_short", claim, -1, f"{n} frames < min_frames={min_frames}")
    return _row(path, "ok", claim, -1, "")


def escaped_rows(escaped: Sequence[str], root) -> pd.DataFrame:
    """Rows for annotation entries that point outside the data root (never opened)."""
    rows = [_row(e, "escapes_root", detail=f"path leaves data.root {root}; never opened") for e in escaped]
    return pd.DataFrame(rows, columns=list(COLUMNS))


def scan_videos(
    paths: Sequence[str], min_frames: int = 1, full: bool = False, progress: bool = False
) -> pd.DataFrame:
    """:func:`scan_video` for each path: one row per path, in input order."""
    paths = list(paths)
    iterator = paths
    bar = None
    if progress:
        try:
            from tqdm import tqdm

            bar = tqdm(paths, desc="scan", unit="video", file=sys.stderr)
            iterator = bar
        except ImportError:  # pragma: no cover - tqdm is a dependency
            bar = None
    rows = []
    try:
        for k, p in enumerate(iterator):
            rows.append(scan_video(p, min_frames=min_frames, full=full))
            if progress and bar is None and ((k + 1) % 100 == 0 or k + 1 == len(paths)):
                print(f"scan: {k + 1}/{len(paths)}", file=sys.stderr, flush=True)
    finally:
        if bar is not None:
            bar.close()
    return pd.DataFrame(rows, columns=list(COLUMNS))


def summarize(df: pd.DataFrame) -> str:
    """A table for the screen: the count per status, then every non-ok file with its reason."""
    total = len(df)
    counts = df["status"].value_counts() if total else pd.Series(dtype=int)
    lines = [f"scanned {total} video(s)"]
    width = max(len(s) for s in STATUSES)
    for status in STATUSES:
        lines.append(f"  {status:<{width}}  {int(counts.get(status, 0)):>7}")
    for status in sorted(set(counts.index) - set(STATUSES)):
        lines.append(f"  {status:<{width}}  {int(counts[status]):>7}")
    bad = df[df["status"] != "ok"] if total else df
    if len(bad):
        lines.append("")
        lines.append(f"{len(bad)} problem file(s):")
        pw = min(max(len(str(p)) for p in bad["path"]), 100)
        lines.append(f"  {'path':<{pw}}  {'status':<{width}}  detail")
        for row in bad.itertuples(index=False):
            lines.append(f"  {str(row.path):<{pw}}  {row.status:<{width}}  {row.detail}")
    else:
        lines.append("all files ok")
    return "\n".join(lines)
