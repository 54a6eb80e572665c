"""Evaluation clip cache: decode a fixed list of evaluation views once, read them many times.

Sampling scores hundreds of sub-networks on the same clips, so decoding video for each would
dominate. The cache holds every ``(video, clip, crop)`` view of a table as uint8 after resize and
crop, in one file-backed array (``clips.u8``, a numpy memmap of shape ``(views, T, S, S, 3)``)
with an index (``index.csv``). Its folder name is a hash of everything that determines its
content (each video's path, size and mtime, the labels, the sampling and geometry settings), so a
change of dataset or settings makes a new cache automatically. It is built in a temporary folder
and renamed into place, so an interrupted build never leaves a cache that looks complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
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

GEOMETRY_KEYS = (
    "sampling",
    "clip_len",
    "frame_interval",
    "test_clips",
    "test_crops",
    "short_side",
    "crop_size",
)


def cache_key(table: VideoTable, cfg: DataConfig) -> str:
    """Hash of the inputs that determine the cache content."""
    h = hashlib.sha1()
    h.update(json.dumps({k: getattr(cfg, k) for k in GEOMETRY_KEYS}, sort_keys=True).encode())
    for rec, n in zip(table.records, table.num_frames):
        try:
            st = os.stat(rec.path)
            stamp = (st.st_size, st.st_mtime_ns)
        except OSError:
            stamp = (-1, -1)
        h.update(f"{rec.path}\0{rec.label}\0{n}\0{stamp}\n".encode())
    return h.hexdigest()[:16]


class _VideoViews(Dataset):
    """All views of one video per item (decoded once per clip), for building the cache."""

    def __init__(self, table: VideoTable, cfg: DataConfig):
        self.table, self.cfg = table, cfg

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, v: int):
        cfg = self.cfg
        out = torch.zeros(
            cfg.test_clips * cfg.test_crops, cfg.clip_len, cfg.crop_size, cfg.crop_size, 3, dtype=torch.uint8
        )
        try:
            for c in range(cfg.test_clips):
                for r, x in enumerate(decode_views(self.table, cfg, v, c)):
                    out[c * cfg.test_crops + r] = x
            return v, out, True, ""
        except VIDEO_ERRORS as e:
            return v, out, False, f"{self.table.records[v].path}: {e}"


def _first(items):
    return items[0]


@dataclass
class ClipCache:
    """A built cache: the uint8 views and their index."""

    folder: Path
    clips: np.ndarray  # memmap (views, T, S, S, 3) uint8
    index: pd.DataFrame  # view, video, clip, crop, label, valid, video_id

    @property
    def num_excluded_videos(self) -> int:
        return int(self.index.loc[~self.index["valid"], "video"].nunique())

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
    clips = np.memmap(folder / "clips.u8", dtype=np.uint8, mode="r", shape=tuple(meta["shape"]))
    index = pd.read_csv(folder / "index.csv", dtype={"video_id": str})
    index["valid"] = index["valid"].astype(bool)
    return ClipCache(folder, clips, index)


def build_clip_cache(
    table: VideoTable,
    cfg: DataConfig,
    cache_dir: str | Path | None = None,
    progress: bool = False,
    num_workers: int | None = None,
) -> ClipCache:
    """Open the cache for ``(table, cfg)``, building it first if it does not exist yet."""
    root = Path(cache_dir if cache_dir is not None else cfg.cache_dir) / "clips"
    folder = root / cache_key(table, cfg)
    if (folder / "meta.json").is_file():
        return _open(folder)
    tmp = root / f".{folder.name}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    per_video = cfg.test_clips * cfg.test_crops
    shape = (len(table) * per_video, cfg.clip_len, cfg.crop_size, cfg.crop_size, 3)
    clips = np.memmap(tmp / "clips.u8", dtype=np.uint8, mode="w+", shape=shape)
    rows = []
    loader = make_loader(
        _VideoViews(table, cfg),
        batch_size=1,
        shuffle=False,
        seed=0,
        num_workers=cfg.num_workers if num_workers is None else num_workers,
        collate_fn=_first,
    )
    it = loader
    if progress:
        from tqdm import tqdm

        it = tqdm(loader, total=len(table), desc="caching evaluation clips", unit="video", leave=False)
    failures = []
    for v, views, ok, why in it:
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
    clips.flush()
    del clips
    if len(failures) == len(table):
        shutil.rmtree(tmp, ignore_errors=True)
        raise FusionError(f"every evaluation video failed to decode ({table.source}); first: {failures[0]}")
    pd.DataFrame(rows).to_csv(tmp / "index.csv", index=False)
    meta = {
        "shape": list(shape),
        "settings": {k: getattr(cfg, k) for k in GEOMETRY_KEYS},
        "source": table.source,
        "videos": len(table),
        "failed_videos": failures,
    }
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
    try:
        os.replace(tmp, folder)
    except OSError:  # another process finished the same cache first
        shutil.rmtree(tmp, ignore_errors=True)
    return _open(folder)
