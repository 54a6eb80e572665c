"""The evaluation clip cache's size, its disk check and its compressed store (exact round trip)."""

from __future__ import annotations

import importlib.util
import pickle
import shutil
import sys
import time
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_data

from fusion3d.config import ConfigError, check_config, load_config
from fusion3d.data import clip_cache
from fusion3d.data.clip_cache import (
    CacheSpaceError,
    CompressedViews,
    build_clip_cache,
    cache_bytes,
    decode_view,
    encode_view,
    format_bytes,
    view_bytes,
)
from fusion3d.data.dataset import load_table
from fusion3d.errors import FusionError


def _cfg(root, tmp_path, *extra):
    return load_config(None, [*(f"{k}={v}" for k, v in tiny_data(root, tmp_path).items()), *extra])


def test_cache_size_is_views_times_frames_times_pixels_times_three_bytes():
    assert view_bytes(16, 224) == 16 * 224 * 224 * 3 == 2_408_448  # the 2.4 MB per view
    assert cache_bytes(3783, 1, 1, 16, 224) == 3783 * 2_408_448
    assert format_bytes(cache_bytes(19881, 1, 1, 16, 224)) == "47.9 GB"  # Kinetics-400 val, 1 view
    assert format_bytes(cache_bytes(24777, 2, 3, 16, 224)) == "358 GB"  # SSv2 val, 2 clips x 3 crops
    assert cache_bytes(10, 2, 3, 4, 40) == 10 * 6 * cache_bytes(1, 1, 1, 4, 40)
    assert (format_bytes(999), format_bytes(2_408_448), format_bytes(1.43e12)) == (
        "999 B",
        "2.41 MB",
        "1.43 TB",
    )


def test_a_view_survives_compression_exactly_even_where_differences_wrap():
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, size=(3, 7, 9, 3), dtype=np.uint8)
    edges = np.zeros((2, 5, 6, 3), np.uint8)
    edges[:, ::2, 1::2] = 255  # every difference wraps modulo 256
    ramp = np.broadcast_to(np.arange(64, dtype=np.uint8)[None, None, :, None] * 4, (4, 64, 64, 3)).copy()
    for x in (noise, edges, ramp):
        y = decode_view(encode_view(x), x.shape)
        assert y.dtype == np.uint8 and np.array_equal(y, x)
    assert len(encode_view(ramp)) < ramp.nbytes / 50  # a smooth image is mostly zero differences


def test_compressed_cache_reads_back_the_uncompressed_views_exactly(tiny_motion, tmp_path):
    plain_cfg = _cfg(tiny_motion, tmp_path, "data.test_clips=2", "data.test_crops=3")
    zlib_cfg = _cfg(
        tiny_motion, tmp_path, "data.test_clips=2", "data.test_crops=3", "data.cache_compression=zlib"
    )
    table = load_table(plain_cfg.data, "test")
    plain = build_clip_cache(table, plain_cfg.data, say=lambda _: None)
    packed = build_clip_cache(table, zlib_cfg.data, say=lambda _: None)
    assert packed.folder != plain.folder and isinstance(packed.clips, CompressedViews)
    assert packed.clips.shape == plain.clips.shape and len(packed.clips) == len(table) * 6
    for k in range(len(plain.clips)):
        assert np.array_equal(packed.clips[k], plain.clips[k])
    a, b = (
        plain.dataset(plain_cfg.data.mean, plain_cfg.data.std),
        packed.dataset(plain_cfg.data.mean, plain_cfg.data.std),
    )
    assert len(a) == len(b) and all(np.array_equal(a[k]["clip"], b[k]["clip"]) for k in (0, len(a) - 1))
    assert packed.clips.stored_bytes < cache_bytes(len(table), 2, 3, 4, 40) == plain.clips.nbytes
    assert (plain.read_workers(4), packed.read_workers(4)) == (0, 4)
    assert len(pickle.dumps(packed.clips)) < 4096  # a data-loader worker gets the file name, not the data
    assert build_clip_cache(table, zlib_cfg.data, say=pytest.fail).folder == packed.folder  # built once


def test_an_uncompressed_cache_keeps_the_files_it_always_had(tiny_motion, tmp_path):
    cfg = _cfg(tiny_motion, tmp_path)
    cache = build_clip_cache(load_table(cfg.data, "test"), cfg.data, say=lambda _: None)
    assert sorted(p.name for p in cache.folder.iterdir()) == ["clips.u8", "index.csv", "meta.json"]
    meta = clip_cache.json.loads((cache.folder / "meta.json").read_text())
    assert list(meta) == ["shape", "settings", "source", "videos", "failed_videos"]
    assert list(meta["settings"]) == list(clip_cache.GEOMETRY_KEYS)


def test_the_size_is_printed_before_a_build_and_not_when_the_cache_exists(tiny_motion, tmp_path):
    cfg = _cfg(tiny_motion, tmp_path, "data.test_clips=2")
    table = load_table(cfg.data, "test")
    said = []
    build_clip_cache(table, cfg.data, say=said.append)
    size = format_bytes(cache_bytes(len(table), 2, 1, 4, 40))
    assert len(said) == 1 and f"= {2 * len(table)} views of 4x40x40x3 uint8 = {size} in" in said[0]
    assert "free)" in said[0]
    build_clip_cache(table, cfg.data, say=said.append)
    assert len(said) == 1


def test_processes_wanting_the_same_cache_at_once_build_it_once(tiny_motion, tmp_path, monkeypatch):
    import threading

    cfg = _cfg(tiny_motion, tmp_path)
    table = load_table(cfg.data, "test")
    builds, caches, start = [], [], threading.Barrier(3)
    build = clip_cache._build_alone

    def slow_build(*a):  # every process would see no cache before the first one finishes
        builds.append(1)
        time.sleep(0.3)
        build(*a)

    monkeypatch.setattr(clip_cache, "_build_alone", slow_build)

    def want():
        start.wait()
        caches.append(build_clip_cache(table, cfg.data, say=lambda _: None))

    threads = [threading.Thread(target=want) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(builds) == 1 and len({c.folder for c in caches}) == 1  # one build, one cache for all
    assert all(len(c.index) == len(caches[0].index) > 0 for c in caches)


def _free(n):
    usage = namedtuple("usage", "total used free")
    return lambda path: usage(n, 0, n)


def test_a_build_that_would_not_fit_is_refused_in_one_line_and_leaves_nothing(
    tiny_motion, tmp_path, monkeypatch
):
    cfg = _cfg(tiny_motion, tmp_path)
    table = load_table(cfg.data, "test")
    need = cache_bytes(len(table), 1, 1, 4, 40)
    monkeypatch.setattr(shutil, "disk_usage", _free(need + clip_cache.DISK_MARGIN_MIN - 1))
    with pytest.raises(CacheSpaceError) as err:
        build_clip_cache(table, cfg.data, say=pytest.fail)
    msg = str(err.value)
    assert isinstance(err.value, FusionError) and "\n" not in msg
    assert format_bytes(need) in msg and "data.cache_dir" in msg and "data.cache_compression=zlib" in msg
    assert not (tmp_path / "cache" / "clips").exists()  # refused before anything was written
    monkeypatch.setattr(shutil, "disk_usage", _free(need + clip_cache.DISK_MARGIN_MIN))
    assert build_clip_cache(table, cfg.data, say=lambda _: None).clips.nbytes == need


def test_a_compressed_build_is_refused_once_its_projected_size_does_not_fit(
    tiny_motion, tmp_path, monkeypatch
):
    cfg = _cfg(tiny_motion, tmp_path, "data.cache_compression=zlib")
    table = load_table(cfg.data, "test")
    monkeypatch.setattr(clip_cache, "PROBE_VIDEOS", 1)
    monkeypatch.setattr(shutil, "disk_usage", _free(clip_cache.DISK_MARGIN_MIN))  # room to start, no more
    said = []
    with pytest.raises(CacheSpaceError, match="projected"):
        build_clip_cache(table, cfg.data, say=said.append)
    assert "stored with zlib" in said[0] and "the first 1 videos stored at" in said[1]
    assert not any((tmp_path / "cache" / "clips").iterdir())  # the partial build is removed


def test_cache_compression_is_checked_by_name():
    with pytest.raises(ConfigError, match="data.cache_compression.*none, zlib"):
        load_config(None, ["data.cache_compression=lz4"])
    cfg = load_config(None, [])
    cfg.data.cache_compression = "gzip"  # set in Python, past the YAML type check
    with pytest.raises(ConfigError, match="'data.cache_compression': 'gzip'"):
        check_config(cfg)


ROOT = Path(__file__).resolve().parent.parent


def _guide():
    spec = importlib.util.spec_from_file_location("resource_guide", ROOT / "benchmarks" / "resource_guide.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    return module


def test_the_cache_table_per_official_dataset_is_the_closed_form_and_the_docs_show_it():
    guide = _guide()
    rows = {(name, label.split(" (")[0]): (n, per, size) for name, label, n, per, size in guide.cache_table()}
    view = 16 * 224 * 224 * 3
    assert rows["UCF101 split 1", "validation"] == (3783, 1, 3783 * view)
    assert rows["Kinetics-400", "validation"] == (19881, 1, 19881 * view)
    assert rows["Something-Something V1", "validation"] == (11522, 1, 11522 * view)
    assert rows["Something-Something V2", "final numbers"] == (24777, 6, 24777 * 6 * view)  # the 358 GB line
    assert rows["Something-Something V2", "selection split"][0] == round(0.05 * 168913)
    doc = (ROOT / "docs" / "resources.md").read_text()
    for name, label, n, per, size in guide.cache_table():
        assert f"| {name} | {label} | {n:,} | {per} | {format_bytes(size)} |" in doc, (name, label)


def test_the_guide_counts_validations_like_the_trainer():
    guide = _guide()
    assert guide.validations(140, 4) == 35  # epochs 4, 8, ..., 140
    assert guide.validations(140, 4, 0, 50) == 12  # warm-up: epochs 4 ... 48
    assert guide.validations(10, 4) == 3  # 4, 8 and the last
    mem = {"weights": 10, "state": 20, "train_peak_b1": 120, "infer_peak_b1": 7}
    assert guide.train_memory(mem, 4) == 10 + 20 + 4 * 100 and guide.infer_memory(mem, 16) == 10 + 16 * 7
