"""The evaluation clip cache built by several ranks: parts merged into the cache a single process
builds, byte for byte, under torchrun (gloo, two CPU processes) and in-process; and every rank
building its own full copy where data.cache_dir is not shared."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest
from conftest import tiny_data, torchrun

from fusion3d.config import load_config
from fusion3d.data.clip_cache import build_clip_cache, build_clip_part, cache_key, merge_clip_parts
from fusion3d.data.dataset import load_table
from fusion3d.errors import FusionError

BROKEN = (1, 6)  # one video in each half of the 8 test videos: each rank of two meets one


def _over(root, tmp_path, *extra) -> list[str]:
    data = {**tiny_data(root, tmp_path), "data.test_clips": 2, "data.num_workers": 0}
    return [*(f"{k}={v}" for k, v in data.items()), *extra]


COMPRESSIONS = ([], ["data.cache_compression=zlib"])


@pytest.fixture
def broken_table(tiny_motion, tmp_path):
    """The test table of a copy of ``tiny_motion`` (8 videos), two of them cut to 500 bytes after
    probing: in the table, but failing to decode."""
    root = Path(shutil.copytree(tiny_motion, tmp_path / "data"))
    over = _over(root, tmp_path)
    table = load_table(load_config(None, over).data, "test")
    assert len(table) == 8
    for v in BROKEN:
        with open(table.records[v].path, "r+b") as fh:
            fh.truncate(500)
    return table, root


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _single(table, cfg, cache_dir: Path):
    cache = build_clip_cache(table, cfg.data, cache_dir=cache_dir, say=lambda _: None)
    assert cache.num_excluded_videos == len(BROKEN)
    meta = json.loads((cache.folder / "meta.json").read_text())
    assert [table.records[v].path for v in BROKEN] == [f.split(": ")[0] for f in meta["failed_videos"]]
    return cache


@pytest.mark.parametrize("extra", COMPRESSIONS, ids=["none", "zlib"])
def test_parts_merged_in_order_are_the_single_process_cache_byte_for_byte(broken_table, tmp_path, extra):
    table, root = broken_table
    cfg = load_config(None, _over(root, tmp_path, *extra))
    single = _single(table, cfg, tmp_path / "single")
    for count in (3, 11):  # 11 shares of 8 videos: three of them empty
        clips = tmp_path / f"parts{count}" / "clips"
        parts = [build_clip_part(table, cfg.data, clips, i, count, say=lambda _: None) for i in range(count)]
        assert [p.name for p in parts] == [
            f".{cache_key(table, cfg.data)}.part-{i}-of-{count}" for i in range(count)
        ]
        merge_clip_parts(table, cfg.data, parts, clips / single.folder.name)
        assert [p.name for p in clips.iterdir()] == [single.folder.name]  # the parts are gone
        assert _files(clips / single.folder.name) == _files(single.folder)


def test_a_merge_missing_a_part_fails_and_leaves_nothing_that_looks_complete(broken_table, tmp_path):
    table, root = broken_table
    cfg = load_config(None, _over(root, tmp_path))
    clips = tmp_path / "cache" / "clips"
    parts = [build_clip_part(table, cfg.data, clips, i, 3) for i in range(3)]
    folder = clips / cache_key(table, cfg.data)
    with pytest.raises(FusionError, match=r"part .*part-2-of-3 holds videos \[5, 8\], expected from 2 on"):
        merge_clip_parts(table, cfg.data, [parts[0], parts[2]], folder)
    assert [p.name for p in clips.iterdir()] == [parts[1].name]  # no cache, no temporary folder
    parts = [build_clip_part(table, cfg.data, clips, i, 3) for i in range(2)]
    with pytest.raises(FusionError, match="the clip cache parts hold 5 of 8 videos"):
        merge_clip_parts(table, cfg.data, parts, folder)
    assert not any(clips.iterdir())


_RANK_SCRIPT = """
import json, os, pickle, sys
import torch
from fusion3d.config import load_config
from fusion3d.data.clip_cache_ranks import build_clip_cache_together
from fusion3d.engine.distributed import gather_objects, init_distributed
from fusion3d.errors import FusionError
torch.set_num_threads(1)


def line(text):  # one write per line: the two ranks share the output pipe
    sys.stdout.write(text + "\\n")
    sys.stdout.flush()


rank, world, _ = init_distributed("cpu")
table = pickle.loads(open(sys.argv[1], "rb").read())
overrides, cache_dirs = json.loads(sys.argv[2]), json.loads(sys.argv[3])
for over in overrides:
    for attempt in (1, 2):  # the second finds the finished cache and just opens it
        cache = build_clip_cache_together(
            table, load_config(None, over).data, rank, world, lambda value: gather_objects(value, world),
            cache_dir=cache_dirs[rank],
            say=lambda said: line(f"rank {rank} said: {said}"),
        )
        line(f"rank {rank} attempt {attempt}: {cache.folder} {cache.num_excluded_videos} excluded")
try:  # a table of broken videos only: every rank stops with the same error
    build_clip_cache_together(
        pickle.loads(open(sys.argv[4], "rb").read()), load_config(None, overrides[0]).data, rank, world,
        lambda value: gather_objects(value, world), cache_dir=cache_dirs[rank], say=lambda said: None,
    )
except FusionError as e:
    line(f"rank {rank} stopped: {e}")
"""


def _run_ranks(table, root, tmp_path, cache_dirs) -> str:
    (tmp_path / "table.pkl").write_bytes(pickle.dumps(table))
    (tmp_path / "broken.pkl").write_bytes(pickle.dumps(table.subset(BROKEN)))
    (tmp_path / "ranks.py").write_text(_RANK_SCRIPT)
    overrides = [_over(root, tmp_path, *extra) for extra in COMPRESSIONS]
    args = [str(tmp_path / "ranks.py"), str(tmp_path / "table.pkl"), json.dumps(overrides)]
    code, out = torchrun([*args, json.dumps([str(d) for d in cache_dirs]), str(tmp_path / "broken.pkl")])
    assert code == 0, out[-3000:]
    stops = {ln.split(" stopped: ", 1)[1] for ln in out.splitlines() if " stopped: " in ln}
    assert sum(ln.startswith(("rank 0 stopped: ", "rank 1 stopped: ")) for ln in out.splitlines()) == 2, out
    assert len(stops) == 1 and stops.pop().startswith("every evaluation video failed to decode"), out
    return out


def _said(out: str, rank: int) -> list[str]:
    return [ln.split(" said: ", 1)[1] for ln in out.splitlines() if ln.startswith(f"rank {rank} said: ")]


def test_two_ranks_build_the_cache_together_byte_for_byte_a_single_process_build(broken_table, tmp_path):
    table, root = broken_table
    shared = tmp_path / "shared"
    out = _run_ranks(table, root, tmp_path, [shared, shared])
    singles = [
        _single(table, load_config(None, _over(root, tmp_path, *e)), tmp_path / "single")
        for e in COMPRESSIONS
    ]
    for s in singles:
        for rank in (0, 1):
            for attempt in (1, 2):
                assert f"rank {rank} attempt {attempt}: {shared / 'clips' / s.folder.name} 2 excluded" in out
        assert _files(shared / "clips" / s.folder.name) == _files(s.folder)
    assert sorted(p.name for p in (shared / "clips").iterdir()) == sorted(s.folder.name for s in singles)
    said = _said(out, 0)  # the size once per cache, from rank 0; a compressed build's projection too
    assert len(said) == 3 and said[0].startswith("clip cache: 8 videos x 2 clip(s) x 1 crop(s) = 16 views")
    assert "stored with zlib" in said[1] and "the first 4 videos stored at" in said[2]
    assert _said(out, 1) == []


def test_ranks_that_do_not_share_the_cache_dir_each_build_the_full_cache(broken_table, tmp_path):
    table, root = broken_table
    dirs = [tmp_path / "node0", tmp_path / "node1"]
    out = _run_ranks(table, root, tmp_path, dirs)
    singles = [
        _single(table, load_config(None, _over(root, tmp_path, *e)), tmp_path / "single")
        for e in COMPRESSIONS
    ]
    for d in dirs:
        assert sorted(p.name for p in (d / "clips").iterdir()) == sorted(s.folder.name for s in singles)
        for s in singles:
            assert _files(d / "clips" / s.folder.name) == _files(s.folder)
    said = [_said(out, r) for r in (0, 1)]
    alone = (
        f"clip cache: data.cache_dir {dirs[0] / 'clips'} is not shared by the 2 ranks, so each rank builds"
    )
    assert said[0][0].startswith(alone) and sum("not shared" in ln for ln in said[0] + said[1]) == 2
    for r in (0, 1):  # each rank announces its own builds (and checks its own disk), once per cache
        sizes = [ln for ln in said[r] if ln.startswith("clip cache: 8 videos x")]
        assert len(sizes) == 2 and all(str(dirs[r] / "clips") in ln for ln in sizes)
