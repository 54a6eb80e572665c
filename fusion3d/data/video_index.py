"""A per-video index (frames, fps, duration, size) cached in a JSON file, so a dataset is probed once."""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path

from fusion3d.data import decode
from fusion3d.data.decode import VideoInfo
from fusion3d.utils import atomic_write_text, file_lock

_INDEX_VERSION = 1


class VideoIndex:
    """``path -> VideoInfo`` cached in a JSON file, so a dataset is probed once.

    Entries are keyed by absolute path and validated by file size and mtime (ns): a changed file is
    probed again. :meth:`save` writes atomically and merges with the file on disk (several
    processes may share one cache file; a lock file serialises the read-merge-write).
    """

    def __init__(self, cache_file: str | Path):
        self.cache_file = Path(cache_file)
        self._entries: dict[str, dict] = self._load()
        self._new: dict[str, dict] = {}

    def _load(self) -> dict[str, dict]:
        try:
            data = json.loads(self.cache_file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            return {}  # an unreadable cache is only a cache: probe again
        if not isinstance(data, dict) or data.get("version") != _INDEX_VERSION:
            return {}
        videos = data.get("videos")
        return dict(videos) if isinstance(videos, dict) else {}

    @staticmethod
    def _stamp(path: str) -> tuple[int, int]:
        st = decode._stat(path)
        return int(st.st_size), int(st.st_mtime_ns)

    @staticmethod
    def _info(path: str, entry: dict) -> VideoInfo:
        return VideoInfo(
            path=path,
            num_frames=int(entry["num_frames"]),
            fps=float(entry["fps"]),
            duration=float(entry["duration"]),
            height=int(entry["height"]),
            width=int(entry["width"]),
        )

    def get(self, path) -> VideoInfo:
        path = os.path.abspath(os.fspath(path))
        size, mtime_ns = self._stamp(path)
        entry = self._entries.get(path)
        if entry is not None and entry.get("size") == size and entry.get("mtime_ns") == mtime_ns:
            try:
                return self._info(path, entry)
            except (KeyError, TypeError, ValueError):
                pass  # malformed entry: probe again
        info = decode.probe(path)  # looked up at call time (tests count calls by patching the module)
        record = {k: v for k, v in asdict(info).items() if k != "path"}
        record.update(size=size, mtime_ns=mtime_ns)
        self._entries[path] = record
        self._new[path] = record
        return info

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, path) -> bool:
        return os.path.abspath(os.fspath(path)) in self._entries

    def save(self) -> None:
        """Write the cache if anything was probed since the last save (atomic, merged with disk)."""
        if not self._new:
            return
        self.cache_file.parent.mkdir(parents=True, exist_ok=True)
        with file_lock(self.cache_file.with_name(self.cache_file.name + ".lock")):
            merged = self._load()
            merged.update(self._new)
            text = json.dumps({"version": _INDEX_VERSION, "videos": merged}, indent=None, sort_keys=True)
            atomic_write_text(self.cache_file, text)
        self._entries = merged
        self._new = {}
