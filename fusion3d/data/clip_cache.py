"""Evaluation clip cache: decode a fixed list of evaluation views once, read them many times.

Sampling scores hundreds of sub-networks on the same clips, so decoding video for each would
dominate. The cache holds every ``(video, clip, crop)`` view of a table as uint8 after resize and
crop, in one file-backed array (``clips.u8``, a numpy memmap of shape ``(views, T, S, S, 3)``)
with an index (``index.csv``). Its folder name is a hash of everything that determines its
content (each video's path, size and mtime, the labels, the sampling and geometry settings), so a
change of dataset or settings makes a new cache automatically. It is built in a temporary folder
and renamed into place, so an interrupted build never leaves a cache that looks complete.

Size: ``views x T x S x S x 3`` bytes (``cache_bytes``), 2.4 MB per 16x224x224 view, so 48 GB for
the Kinetics-400 validation set at one view per video (docs/resources.md has the table per dataset).
The size is printed before a build starts, and a build that would not fit on the disk of
``data.cache_dir`` (with a margin) is refused. ``data.cache_compression=zlib`` stores each view
compressed instead (``encode_view``: the PNG-like 2D difference of each frame, then zlib level 1;
exact), in ``clips.zlib`` with the byte offsets of the views in ``offsets.npy``; a read decompresses
one view (measured by ``benchmarks/bench_cache.py``).

Under torchrun the ranks build it together (``fusion3d.data.clip_cache_ranks``): each decodes its
contiguous share of the videos into a part folder (``build_clip_part``), then one rank joins the parts
into the cache folder (``merge_clip_parts``), byte for byte what a single-process build writes.
Processes without a process group that want the same cache at the same time (the shards of
``fusion3d sample``, several studies on one dataset) take turns on a lock file next to it
(``.clips.lock`` in ``data.cache_dir``): the first builds it, the others wait and open it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from fusion3d.config import DataConfig
from fusion3d.data.dataset import VIDEO_ERRORS, VideoTable, decode_views, make_loader
from fusion3d.data.transforms import normalize, to_float_cthw
from fusion3d.errors import FusionError
from fusion3d.utils import file_lock, shard_range

COMPRESSIONS = ("none", "zlib")
ZLIB_LEVEL = (
    1  # level 1: most of level 6's ratio at a third of its compression time (benchmarks/bench_cache.py)
)
DISK_MARGIN = 0.05  # a build needs its size plus this share of it free ...
DISK_MARGIN_MIN = 100 * 10**6  # ... and at least this many bytes more
PROBE_VIDEOS = 8  # a compressed build projects its size from this many first videos


class CacheSpaceError(FusionError):
    """The clip cache would not fit on the disk of ``data.cache_dir``."""


GEOMETRY_KEYS = (
    "sampling",
    "clip_len",
    "frame_interval",
    "test_clips",
    "test_crops",
    "short_side",
    "crop_size",
)


def view_bytes(clip_len: int, crop_size: int) -> int:
    """Bytes of one cached view: ``clip_len`` frames of ``crop_size x crop_size`` RGB uint8."""
    return clip_len * crop_size * crop_size * 3


def cache_bytes(num_videos: int, test_clips: int, test_crops: int, clip_len: int, crop_size: int) -> int:
    """Bytes of an uncompressed clip cache (``clips.u8``): one view per video, clip and crop."""
    return num_videos * test_clips * test_crops * view_bytes(clip_len, crop_size)


def format_bytes(n: float) -> str:
    """Decimal units, three significant digits at most (2.41 MB, 47.9 GB, 1.43 TB)."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{int(n)} B"


def _settings(cfg: DataConfig) -> dict:
    """What determines the content; the compression only when it is on, so an uncompressed cache
    keeps the key (and folder) it always had."""
    out = {k: getattr(cfg, k) for k in GEOMETRY_KEYS}
    if cfg.cache_compression != "none":
        out["cache_compression"] = cfg.cache_compression
    return out


def cache_key(table: VideoTable, cfg: DataConfig) -> str:
    """Hash of the inputs that determine the cache content."""
    h = hashlib.sha1()
    h.update(json.dumps(_settings(cfg), sort_keys=True).encode())
    for rec, n in zip(table.records, table.num_frames):
        try:
            st = os.stat(rec.path)
            stamp = (st.st_size, st.st_mtime_ns)
        except OSError:
            stamp = (-1, -1)
        h.update(f"{rec.path}\0{rec.label}\0{n}\0{stamp}\n".encode())
    return h.hexdigest()[:16]


def encode_view(x: np.ndarray, level: int = ZLIB_LEVEL) -> bytes:
    """A uint8 ``(T, H, W, 3)`` view, compressed exactly: each pixel minus its left and upper
    neighbours plus its upper-left one (per frame and channel, modulo 256; PNG's idea), then zlib.
    Neighbouring pixels of natural video are close, so the differences are mostly small numbers,
    which zlib stores in fewer bytes than the pixels themselves."""
    d = np.array(x, dtype=np.uint8, copy=True)
    d[:, :, 1:] -= x[:, :, :-1]  # along the width (uint8 arithmetic wraps: exact modulo 256)
    d[:, 1:] -= d[:, :-1].copy()  # then along the height
    return zlib.compress(np.ascontiguousarray(d).data, level)


def decode_view(blob, shape: tuple[int, ...]) -> np.ndarray:
    """The exact inverse of ``encode_view`` for a view of ``shape``."""
    d = np.frombuffer(zlib.decompress(blob), dtype=np.uint8).reshape(shape)
    return np.cumsum(np.cumsum(d, axis=1, dtype=np.uint8), axis=2, dtype=np.uint8)


class CompressedViews:
    """The views of a compressed cache, indexable like the uncompressed memmap: ``views[k]`` is the
    exact uint8 ``(T, S, S, 3)`` array, read and decompressed on access. It pickles as its file name
    and offsets (a data-loader worker opens the file itself)."""

    def __init__(self, path: Path, offsets: np.ndarray, shape: tuple[int, ...]):
        self.path, self.offsets, self.shape = Path(path), offsets, tuple(shape)
        self._data: np.ndarray | None = None

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, k: int) -> np.ndarray:
        if self._data is None:
            self._data = np.memmap(self.path, dtype=np.uint8, mode="r")
        k = range(len(self))[k]  # negative indices, and an IndexError past the end
        return decode_view(self._data[self.offsets[k] : self.offsets[k + 1]], self.shape[1:])

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_data": None}

    @property
    def stored_bytes(self) -> int:
        return int(self.offsets[-1])


class _VideoViews(Dataset):
    """All views of one video per item (decoded once per clip), for building the cache; with
    compression, each view comes back compressed (in the data-loader worker that decoded it)."""

    def __init__(self, table: VideoTable, cfg: DataConfig, positions: range):
        self.table, self.cfg, self.positions = table, cfg, positions

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, k: int):
        cfg, v = self.cfg, self.positions[k]
        out = torch.zeros(
            cfg.test_clips * cfg.test_crops, cfg.clip_len, cfg.crop_size, cfg.crop_size, 3, dtype=torch.uint8
        )
        ok, why = True, ""
        try:
            for c in range(cfg.test_clips):
                for r, x in enumerate(decode_views(self.table, cfg, v, c)):
                    out[c * cfg.test_crops + r] = x
        except VIDEO_ERRORS as e:
            ok, why = False, f"{self.table.records[v].path}: {e}"
        if cfg.cache_compression == "zlib":
            return v, [encode_view(x) for x in out.numpy()], ok, why
        return v, out, ok, why


def _first(items):
    return items[0]


@dataclass
class ClipCache:
    """A built cache: the uint8 views and their index."""

    folder: Path
    clips: np.ndarray | CompressedViews  # (views, T, S, S, 3) uint8: a memmap, or compressed views
    index: pd.DataFrame  # view, video, clip, crop, label, valid, video_id

    @property
    def num_excluded_videos(self) -> int:
        return int(self.index.loc[~self.index["valid"], "video"].nunique())

    @property
    def compressed(self) -> bool:
        return isinstance(self.clips, CompressedViews)

    def read_workers(self, num_workers: int) -> int:
        """Data-loader workers for reading this cache: none for the memmap (a read is a copy), the
        configured ``data.num_workers`` for a compressed cache (a read decompresses)."""
        return num_workers if self.compressed else 0

    def dataset(self, mean, std, valid_only: bool = True) -> CachedViews:
        return CachedViews(self, mean, std, valid_only)


class CachedViews(Dataset):
    """Normalised float views read from a ``ClipCache``; by default only the valid ones."""

    def __init__(self, cache: ClipCache, mean, std, valid_only: bool = True):
        self.cache, self.mean, self.std = cache, mean, std
        idx = cache.index
        self.rows = idx[idx["valid"]] if valid_only else idx
        self._views = self.rows["view"].to_numpy()
        self._labels = self.rows["label"].to_numpy()
        self._videos = self.rows["video"].to_numpy()

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, k: int) -> dict:
        x = torch.from_numpy(np.array(self.cache.clips[self._views[k]]))
        clip = normalize(to_float_cthw(x), self.mean, self.std)
        return {"clip": clip, "label": int(self._labels[k]), "video": int(self._videos[k])}


def _open(folder: Path) -> ClipCache:
    meta = json.loads((folder / "meta.json").read_text())
    shape = tuple(meta["shape"])
    if meta.get("compression", "none") == "zlib":
        clips: np.ndarray | CompressedViews = CompressedViews(
            folder / "clips.zlib", np.load(folder / "offsets.npy"), shape
        )
    else:
        clips = np.memmap(folder / "clips.u8", dtype=np.uint8, mode="r", shape=shape)
    index = pd.read_csv(folder / "index.csv", dtype={"video_id": str})
    index["valid"] = index["valid"].astype(bool)
    return ClipCache(folder, clips, index)


def _existing(path: Path) -> Path:
    """``path`` or its nearest existing parent (what ``shutil.disk_usage`` can measure)."""
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_free_space(root: Path, need: int, what: str) -> int:
    """Free bytes on the disk of ``root``; a ``CacheSpaceError`` when fewer than ``need`` plus the
    margin (``DISK_MARGIN`` of it, at least ``DISK_MARGIN_MIN``) are free."""
    free = shutil.disk_usage(_existing(root)).free
    margin = max(DISK_MARGIN_MIN, int(DISK_MARGIN * need))
    if free < need + margin:
        raise CacheSpaceError(
            f"the evaluation clip cache needs {what} plus a {format_bytes(margin)} margin in {root}, but "
            f"only {format_bytes(free)} are free there; free some space, point data.cache_dir at a larger "
            "disk, or store it compressed (data.cache_compression=zlib, docs/resources.md)"
        )
    return free


def _announce(table: VideoTable, cfg: DataConfig, root: Path, say) -> None:
    """Print the cache's size, and refuse the build when the disk cannot hold it (uncompressed: the
    exact size; compressed: only the margin now, the projected size after ``PROBE_VIDEOS`` videos)."""
    views = len(table) * cfg.test_clips * cfg.test_crops
    raw = cache_bytes(len(table), cfg.test_clips, cfg.test_crops, cfg.clip_len, cfg.crop_size)
    what = (
        f"{len(table)} videos x {cfg.test_clips} clip(s) x {cfg.test_crops} crop(s) = {views} views of "
        f"{cfg.clip_len}x{cfg.crop_size}x{cfg.crop_size}x3 uint8 = {format_bytes(raw)}"
    )
    if cfg.cache_compression == "none":
        free = check_free_space(root, raw, format_bytes(raw))
        say(f"clip cache: {what} in {root} ({format_bytes(free)} free)")
    else:
        free = check_free_space(root, 0, "room to start")
        say(
            f"clip cache: {what} uncompressed, stored with {cfg.cache_compression} in {root} "
            f"({format_bytes(free)} free; the stored size is projected after the first videos)"
        )


def build_clip_cache(
    table: VideoTable,
    cfg: DataConfig,
    cache_dir: str | Path | None = None,
    progress: bool = False,
    num_workers: int | None = None,
    say=print,
) -> ClipCache:
    """Open the cache for ``(table, cfg)``, building it first if it does not exist yet (in one
    process; under torchrun, ``fusion3d.data.clip_cache_ranks.build_clip_cache_together``).

    Before a build, ``say`` gets one line with the cache's size and the free disk space, and a
    ``CacheSpaceError`` refuses a build that would not fit (see ``check_free_space``)."""
    root = Path(cache_dir if cache_dir is not None else cfg.cache_dir) / "clips"
    folder = root / cache_key(table, cfg)
    if (folder / "meta.json").is_file():
        return _open(folder)
    _announce(table, cfg, root, say)  # the size line and the disk check, before anything is written
    with file_lock(root.parent / ".clips.lock"):  # concurrent processes: one builds, the others open it
        if not (folder / "meta.json").is_file():
            workers = cfg.num_workers if num_workers is None else num_workers
            _build_alone(table, cfg, root, folder, progress, workers, say)
    return _open(folder)


def _write_folder(tmp: Path, final: Path, write) -> None:
    """``write(tmp)`` into a fresh temporary folder, then rename it to ``final``; an interrupted or
    failed write leaves nothing behind."""
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        write(tmp)
    except BaseException:  # an interrupted or refused build leaves nothing behind
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    try:
        os.replace(tmp, final)
    except OSError:  # another process finished the same cache first
        shutil.rmtree(tmp, ignore_errors=True)


def _build_alone(
    table: VideoTable, cfg: DataConfig, root: Path, folder: Path, progress: bool, workers: int, say
) -> None:
    tmp = root / f".{folder.name}.{os.getpid()}.tmp"
    _write_folder(tmp, folder, lambda t: _build(table, cfg, t, root, progress, workers, say))


def _build(
    table: VideoTable, cfg: DataConfig, tmp: Path, root: Path, progress: bool, workers: int, say
) -> None:
    oks, failures, offsets = _decode(table, cfg, range(len(table)), tmp, root, progress, workers, say)
    _finish(table, cfg, tmp, oks, failures, offsets)


def _decode(
    table: VideoTable,
    cfg: DataConfig,
    positions: range,
    tmp: Path,
    root: Path,
    progress: bool,
    workers: int,
    say,
) -> tuple[list[bool], list[str], list[int] | None]:
    """Decode the views of the videos at ``positions`` into ``tmp`` (``clips.u8``, or ``clips.zlib``);
    (whether each video decoded, the failures, the byte offsets of the compressed views or None)."""
    per_video = cfg.test_clips * cfg.test_crops
    shape = (len(positions) * per_video, cfg.clip_len, cfg.crop_size, cfg.crop_size, 3)
    compressed = cfg.cache_compression != "none"
    if compressed:
        blob_file = open(tmp / "clips.zlib", "wb")
        offsets = [0]
    elif len(positions):
        clips = np.memmap(tmp / "clips.u8", dtype=np.uint8, mode="w+", shape=shape)
    else:  # an empty share (more ranks than videos): numpy cannot map an empty file
        (tmp / "clips.u8").write_bytes(b"")
    loader = make_loader(
        _VideoViews(table, cfg, positions),
        batch_size=1,
        shuffle=False,
        seed=0,
        num_workers=workers,
        collate_fn=_first,
    )
    it = loader
    if progress:
        from tqdm import tqdm

        it = tqdm(loader, total=len(positions), desc="caching evaluation clips", unit="video", leave=False)
    oks, failures = [], []
    for v, views, ok, why in it:
        k = v - positions.start
        if compressed:
            for blob in views:
                blob_file.write(blob)
                offsets.append(offsets[-1] + len(blob))
            if k + 1 == min(PROBE_VIDEOS, len(positions)):
                _check_projection(offsets[-1], k + 1, len(table), cfg, root, say)
        else:
            clips[k * per_video : (k + 1) * per_video] = views.numpy()
        oks.append(ok)
        if not ok:
            failures.append(why)
    if compressed:
        blob_file.close()
        return oks, failures, offsets
    if len(positions):
        clips.flush()
        del clips
    return oks, failures, None


def _finish(
    table: VideoTable, cfg: DataConfig, tmp: Path, oks: list[bool], failures: list[str], offsets
) -> None:
    """The offsets (compressed), ``index.csv`` and ``meta.json`` of a cache whose views are in ``tmp``."""
    per_video = cfg.test_clips * cfg.test_crops
    shape = (len(table) * per_video, cfg.clip_len, cfg.crop_size, cfg.crop_size, 3)
    compressed = offsets is not None
    if compressed:
        np.save(tmp / "offsets.npy", np.asarray(offsets, dtype=np.int64))
    if len(failures) == len(table):
        raise FusionError(f"every evaluation video failed to decode ({table.source}); first: {failures[0]}")
    rows = []
    for v, ok in enumerate(oks):
        rec = table.records[v]
        for c in range(cfg.test_clips):
            for r in range(cfg.test_crops):
                rows.append(
                    {
                        "view": v * per_video + c * cfg.test_crops + r,
                        "video": v,
                        "clip": c,
                        "crop": r,
                        "label": rec.label,
                        "valid": ok,
                        "video_id": rec.video_id,
                    }
                )
    pd.DataFrame(rows).to_csv(tmp / "index.csv", index=False)
    meta = {
        "shape": list(shape),
        "settings": {k: getattr(cfg, k) for k in GEOMETRY_KEYS},
        "source": table.source,
        "videos": len(table),
        "failed_videos": failures,
    }
    if compressed:  # an uncompressed cache keeps exactly the meta.json it always had
        meta.update(
            compression=cfg.cache_compression,
            zlib_level=ZLIB_LEVEL,
            stored_bytes=offsets[-1],
            raw_bytes=math.prod(shape),
        )
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1))


def build_clip_part(
    table: VideoTable,
    cfg: DataConfig,
    root: Path,
    index: int,
    count: int,
    progress: bool = False,
    workers: int = 0,
    say=print,
) -> Path:
    """Share ``index`` of ``count`` of the cache of ``(table, cfg)`` in ``root``: the views of those
    videos (``shard_range``), their offsets when compressed and ``part.json`` (the video range, which
    decoded, the failures), in ``root/.<key>.part-<index>-of-<count>`` (renamed into place)."""
    positions = shard_range(len(table), index, count)
    part = root / f".{cache_key(table, cfg)}.part-{index}-of-{count}"
    shutil.rmtree(part, ignore_errors=True)  # a part an interrupted build left behind

    def write(tmp: Path) -> None:
        oks, failures, offsets = _decode(table, cfg, positions, tmp, root, progress, workers, say)
        if offsets is not None:
            np.save(tmp / "offsets.npy", np.asarray(offsets, dtype=np.int64))
        info = {"videos": [positions.start, positions.stop], "valid": oks, "failed_videos": failures}
        (tmp / "part.json").write_text(json.dumps(info))

    _write_folder(root / f".{part.name}.{os.getpid()}.tmp", part, write)
    return part


def merge_clip_parts(table: VideoTable, cfg: DataConfig, parts: list[Path], folder: Path) -> None:
    """Join the ``parts`` (``build_clip_part``, in order) into the cache ``folder``: the files a
    single-process build writes, byte for byte (views concatenated, compressed offsets shifted, the
    index and meta.json written for the whole table). The parts are consumed as they are joined, so
    the disk holds the cache plus one part at most, and removed at the end, also when the merge fails;
    the cache appears under its name only once complete."""
    name = "clips.u8" if cfg.cache_compression == "none" else "clips.zlib"

    def write(tmp: Path) -> None:
        oks, failures, offsets, out = [], [], [0], None
        try:
            for part in parts:
                info = json.loads((part / "part.json").read_text())
                if info["videos"][0] != len(oks) or len(info["valid"]) != info["videos"][1] - len(oks):
                    raise FusionError(
                        f"clip cache part {part} holds videos {info['videos']}, expected from {len(oks)} on"
                    )
                oks += info["valid"]
                failures += info["failed_videos"]
                if name == "clips.zlib":
                    offsets += [int(o) + offsets[-1] for o in np.load(part / "offsets.npy")[1:]]
                if out is None:  # the first part's file becomes the start of the cache's: moved, not copied
                    os.replace(part / name, tmp / name)
                    out = open(tmp / name, "ab")
                    continue
                with open(part / name, "rb") as src:
                    shutil.copyfileobj(src, out, 1 << 24)
                (part / name).unlink()
        finally:
            if out is not None:
                out.close()
        if len(oks) != len(table):
            raise FusionError(f"the clip cache parts hold {len(oks)} of {len(table)} videos")
        _finish(table, cfg, tmp, oks, failures, offsets if name == "clips.zlib" else None)

    try:
        _write_folder(folder.parent / f".{folder.name}.{os.getpid()}.tmp", folder, write)
    finally:
        for part in parts:
            shutil.rmtree(part, ignore_errors=True)


def _check_projection(stored: int, done: int, total: int, cfg: DataConfig, root: Path, say) -> None:
    """After the first ``done`` videos of a compressed build (or share of one): project the size of
    the cache of ``total`` videos, print it, check the disk."""
    raw = cache_bytes(done, cfg.test_clips, cfg.test_crops, cfg.clip_len, cfg.crop_size)
    projected = stored * total / done
    say(
        f"clip cache: the first {done} videos stored at {stored / raw:.2f} of their raw size; "
        f"about {format_bytes(projected)} projected for {total} videos"
    )
    check_free_space(
        root, int(projected - stored), f"about {format_bytes(projected - stored)} more (projected)"
    )
