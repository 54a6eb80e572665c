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

    def __init__(self, table: VideoTable, cfg: DataConfig):
        self.table, self.cfg = table, cfg

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, v: int):
        cfg = self.cfg
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
    """Open the cache for ``(table, cfg)``, building it first if it does not exist yet.

    Before a build, ``say`` gets one line with the cache's size and the free disk space, and a
    ``CacheSpaceError`` refuses a build that would not fit (see ``check_free_space``)."""
    root = Path(cache_dir if cache_dir is not None else cfg.cache_dir) / "clips"
    folder = root / cache_key(table, cfg)
    if (folder / "meta.json").is_file():
        return _open(folder)
    _announce(table, cfg, root, say)
    tmp = root / f".{folder.name}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        _build(table, cfg, tmp, root, progress, cfg.num_workers if num_workers is None else num_workers, say)
    except BaseException:  # an interrupted or refused build leaves nothing behind
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    try:
        os.replace(tmp, folder)
    except OSError:  # another process finished the same cache first
        shutil.rmtree(tmp, ignore_errors=True)
    return _open(folder)


def _build(
    table: VideoTable, cfg: DataConfig, tmp: Path, root: Path, progress: bool, workers: int, say
) -> None:
    per_video = cfg.test_clips * cfg.test_crops
    shape = (len(table) * per_video, cfg.clip_len, cfg.crop_size, cfg.crop_size, 3)
    compressed = cfg.cache_compression != "none"
    if compressed:
        blob_file = open(tmp / "clips.zlib", "wb")
        offsets = [0]
    else:
        clips = np.memmap(tmp / "clips.u8", dtype=np.uint8, mode="w+", shape=shape)
    rows = []
    loader = make_loader(
        _VideoViews(table, cfg), batch_size=1, shuffle=False, seed=0, num_workers=workers, collate_fn=_first
    )
    it = loader
    if progress:
        from tqdm import tqdm

        it = tqdm(loader, total=len(table), desc="caching evaluation clips", unit="video", leave=False)
    failures = []
    for v, views, ok, why in it:
        if compressed:
            for blob in views:
                blob_file.write(blob)
                offsets.append(offsets[-1] + len(blob))
            if v + 1 == min(PROBE_VIDEOS, len(table)):
                _check_projection(offsets[-1], v + 1, table, cfg, root, say)
        else:
            clips[v * per_video : (v + 1) * per_video] = views.numpy()
        if not ok:
            failures.append(why)
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
    if compressed:
        blob_file.close()
        np.save(tmp / "offsets.npy", np.asarray(offsets, dtype=np.int64))
    else:
        clips.flush()
        del clips
    if len(failures) == len(table):
        raise FusionError(f"every evaluation video failed to decode ({table.source}); first: {failures[0]}")
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


def _check_projection(stored: int, done: int, table: VideoTable, cfg: DataConfig, root: Path, say) -> None:
    """After the first ``done`` videos of a compressed build: project its size, print it, check the disk."""
    raw = cache_bytes(done, cfg.test_clips, cfg.test_crops, cfg.clip_len, cfg.crop_size)
    projected = stored * len(table) / done
    say(
        f"clip cache: the first {done} videos stored at {stored / raw:.2f} of their raw size; "
        f"about {format_bytes(projected)} projected for {len(table)} videos"
    )
    check_free_space(
        root, int(projected - stored), f"about {format_bytes(projected - stored)} more (projected)"
    )
