"""Datasets on real synthetic videos: tables, training clips, evaluation views, the clip cache, scan."""

import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from fusion3d.cli import main
from fusion3d.config import load_config
from fusion3d.data.clip_cache import build_clip_cache
from fusion3d.data.dataset import DataError, EvalViews, TrainClips, load_table
from fusion3d.data.synth import generate


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory):
    return generate(
        tmp_path_factory.mktemp("ds") / "motion",
        kind="motion",
        classes=4,
        videos_per_class=4,
        frames=16,
        size=48,
        seed=3,
    )


def _cfg(root, tmp_path, *extra):
    return load_config(
        None,
        [
            f"data.root={root}",
            f"data.annotations={root / 'ucfTrainTestlist'}",
            f"data.cache_dir={tmp_path / 'cache'}",
            "data.short_side=48",
            "data.short_side_max=52",
            "data.crop_size=40",
            *extra,
        ],
    )


def _copy(root, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(root, dst)
    return dst


def test_table_probes_every_video_and_keeps_classind_order(synth_root, tmp_path):
    cfg = _cfg(synth_root, tmp_path)
    train, test = load_table(cfg.data, "train"), load_table(cfg.data, "test")
    assert len(train) + len(test) == 16 and all(n == 16 for n in train.num_frames)
    classind = [
        ln.split()[1]
        for ln in (synth_root / "ucfTrainTestlist" / "classInd.txt").read_text().split("\n")
        if ln
    ]
    assert train.classes == classind
    assert (tmp_path / "cache" / "video_index.json").is_file()


def test_train_clip_shape_and_determinism_per_seed_epoch_index(synth_root, tmp_path):
    cfg = _cfg(synth_root, tmp_path)
    ds = TrainClips(load_table(cfg.data, "train"), cfg.data, seed=1)
    a, b = ds[2], ds[2]
    assert a["clip"].shape == (3, 8, 40, 40) and a["clip"].dtype == torch.float32
    assert torch.equal(a["clip"], b["clip"]) and a["label"] == b["label"] and a["failed"] == ""
    ds.set_epoch(1)
    assert not torch.equal(ds[2]["clip"], a["clip"])


def test_flip_with_swap_map_swaps_labels(synth_root, tmp_path):
    cfg = _cfg(synth_root, tmp_path, "data.flip=swap", "data.flip_swap=[[0, 1], [2, 3]]")
    ds = TrainClips(load_table(cfg.data, "train"), cfg.data, seed=0)
    true = [r.label for r in ds.table.records]
    got = [ds[i]["label"] for i in range(len(ds))]
    assert got != true and all(g == t or {g, t} in ({0, 1}, {2, 3}) for g, t in zip(got, true))


def test_failing_video_is_replaced_and_reported(synth_root, tmp_path):
    root = _copy(synth_root, tmp_path)
    cfg = _cfg(root, tmp_path)
    table = load_table(cfg.data, "train")
    bad = table.records[0].path
    with open(bad, "r+b") as fh:  # corrupt after probing: the failure happens at read time
        fh.truncate(600)
    item = TrainClips(table, cfg.data, seed=0)[0]
    assert item["failed"] == bad and item["index"] != 0 and item["clip"].shape == (3, 8, 40, 40)


def test_every_video_failing_stops_with_a_clear_error(synth_root, tmp_path):
    root = _copy(synth_root, tmp_path)
    cfg = _cfg(root, tmp_path)
    table = load_table(cfg.data, "train")
    for rec in table.records:
        open(rec.path, "wb").close()
    with pytest.raises(DataError, match="scan"):
        TrainClips(table, cfg.data, seed=0)[0]
    shutil.rmtree(tmp_path / "cache")
    with pytest.raises(DataError, match="no usable video"):
        load_table(cfg.data, "train")


def test_unreadable_videos_are_excluded_from_the_table_and_counted(synth_root, tmp_path):
    root = _copy(synth_root, tmp_path)
    cfg = _cfg(root, tmp_path)
    recs = load_table(cfg.data, "test").records
    (root / recs[0].path.split(str(root) + "/")[1]).write_bytes(b"not a video at all" * 10)
    shutil.rmtree(tmp_path / "cache")
    table = load_table(cfg.data, "test")
    assert len(table) == len(recs) - 1 and len(table.excluded) == 1 and table.excluded[0][0] == recs[0].path


def test_eval_views_are_explicit_and_failures_are_marked_invalid(synth_root, tmp_path):
    root = _copy(synth_root, tmp_path)
    cfg = _cfg(root, tmp_path, "data.test_clips=2", "data.test_crops=3")
    table = load_table(cfg.data, "test")
    ds = EvalViews(table, cfg.data)
    assert len(ds) == len(table) * 6 and ds.views[7] == (1, 0, 1)
    open(table.records[1].path, "wb").close()
    item = ds[7]
    assert item["valid"] is False and item["video"] == 1 and item["failed"] == table.records[1].path
    assert ds[0]["valid"] is True


def test_clip_cache_matches_decoding_and_is_built_once(synth_root, tmp_path):
    cfg = _cfg(synth_root, tmp_path, "data.test_clips=2")
    table = load_table(cfg.data, "test")
    cache = build_clip_cache(table, cfg.data)
    stamp = (cache.folder / "clips.u8").stat().st_mtime_ns
    views = EvalViews(table, cfg.data)
    cached = cache.dataset(cfg.data.mean, cfg.data.std)
    assert len(cached) == len(views)
    for k in (0, 3, len(views) - 1):
        assert torch.equal(cached[k]["clip"], views[k]["clip"]) and cached[k]["label"] == views[k]["label"]
    again = build_clip_cache(table, cfg.data)
    assert again.folder == cache.folder and (again.folder / "clips.u8").stat().st_mtime_ns == stamp


def test_clip_cache_is_rebuilt_when_settings_or_files_change(synth_root, tmp_path):
    root = _copy(synth_root, tmp_path)
    cfg = _cfg(root, tmp_path)
    table = load_table(cfg.data, "test")
    first = build_clip_cache(table, cfg.data).folder
    other = _cfg(root, tmp_path, "data.frame_interval=1")
    assert build_clip_cache(table, other.data).folder != first
    p = table.records[0].path
    data = open(p, "rb").read()
    open(p, "wb").write(data)  # same bytes, new mtime: the cache cannot know, so it rebuilds
    assert build_clip_cache(load_table(cfg.data, "test"), cfg.data).folder != first


def test_clip_cache_counts_a_video_that_fails(synth_root, tmp_path):
    root = _copy(synth_root, tmp_path)
    cfg = _cfg(root, tmp_path)
    table = load_table(cfg.data, "test")
    with open(table.records[0].path, "r+b") as fh:
        fh.truncate(500)
    cache = build_clip_cache(table, cfg.data)
    assert cache.num_excluded_videos == 1
    assert len(cache.dataset(cfg.data.mean, cfg.data.std)) == len(table) - 1


def test_scan_command_reports_bad_files_and_writes_csv(synth_root, tmp_path, capsys):
    root = _copy(synth_root, tmp_path)
    recs = load_table(_cfg(root, tmp_path).data, "train").records
    open(recs[0].path, "wb").close()
    (root / recs[1].path.split(str(root) + "/")[1]).write_bytes(np.random.default_rng(0).bytes(3000))
    with open(recs[2].path, "r+b") as fh:
        fh.truncate(fh.seek(0, 2) // 2)
    import os

    os.remove(recs[3].path)
    out_csv = tmp_path / "scan.csv"
    rc = main(
        [
            "data",
            "scan",
            f"data.root={root}",
            f"data.annotations={root / 'ucfTrainTestlist'}",
            f"data.cache_dir={tmp_path / 'c'}",
            "--subset",
            "train",
            "--csv",
            str(out_csv),
        ]
    )
    assert rc == 0
    df = pd.read_csv(out_csv).set_index("path")
    assert df.loc[recs[0].path, "status"] == "zero_length"
    assert df.loc[recs[1].path, "status"] == "unreadable"
    assert df.loc[recs[2].path, "status"] == "truncated"
    assert df.loc[recs[3].path, "status"] == "missing"
    assert (df["status"] == "ok").sum() == len(df) - 4
    printed = capsys.readouterr().out
    assert recs[0].path in printed and "truncated" in printed


def test_selection_split_is_stratified_disjoint_and_deterministic(synth_root, tmp_path):
    from fusion3d.data.dataset import carve_selection, load_splits

    cfg = _cfg(synth_root, tmp_path, "data.selection_fraction=0.34")
    fit, sel = load_splits(cfg.data, seed=0)
    full = load_table(cfg.data, "train")
    assert len(fit) + len(sel) == len(full)
    assert not {r.path for r in fit.records} & {r.path for r in sel.records}
    assert sorted(r.label for r in sel.records) == [0, 1, 2, 3]  # one per class (3 training videos each)
    again = carve_selection(full, 0.34, seed=0)[1]
    assert [r.path for r in again.records] == [r.path for r in sel.records]
    assert [r.path for r in carve_selection(full, 0.34, seed=1)[1].records] != [r.path for r in sel.records]


def test_flip_swap_without_pairs_derives_them_from_class_names(tmp_path):
    from fusion3d.data.dataset import VideoTable
    from fusion3d.data.formats import VideoRecord

    classes = ["Pushing something from left to right", "Pushing something from right to left", "Other"]
    table = VideoTable([VideoRecord("x", 0, "x")], [16], classes, flip_pairs=[(0, 1)])
    cfg = load_config(None, ["data.flip=swap"]).data
    assert TrainClips(table, cfg, seed=0).swap_pairs == [(0, 1)]
    cfg = load_config(None, ["data.flip=swap", "data.flip_swap=[[1, 2]]"]).data
    assert TrainClips(table, cfg, seed=0).swap_pairs == [(1, 2)]


def test_selection_split_never_divides_a_group_of_clips(tmp_path):
    """UCF101 clips of one group (gXX) are cut from one long video: they move together."""
    from fusion3d.data.dataset import VideoTable, carve_selection
    from fusion3d.data.formats import VideoRecord

    records, frames = [], []
    for label in range(3):
        for g in range(1, 7):
            for c in range(1, 2 + g % 3):  # groups of 1 to 3 clips
                records.append(
                    VideoRecord(
                        f"/v/C{label}/v_C{label}_g{g:02d}_c{c:02d}.avi",
                        label,
                        f"C{label}/v_C{label}_g{g:02d}_c{c:02d}",
                        group=f"C{label}/g{g:02d}",
                    )
                )
                frames.append(16)
    table = VideoTable(records, frames, ["C0", "C1", "C2"], [], [], "test table", [])
    fit, sel = carve_selection(table, 0.3, seed=0)
    groups_fit = {r.group for r in fit.records}
    groups_sel = {r.group for r in sel.records}
    assert groups_sel and not groups_fit & groups_sel
    assert len(fit) + len(sel) == len(table)
    for label in range(3):
        n = sum(r.label == label for r in records)
        k = sum(r.label == label for r in sel.records)
        assert round(0.3 * n) <= k < n  # whole groups until the share is reached, one group stays
    assert "whole groups in 3 classes" in sel.source
    assert [r.path for r in carve_selection(table, 0.3, seed=0)[1].records] == [r.path for r in sel.records]


def test_ucf101_records_carry_their_group(synth_root, tmp_path):
    cfg = _cfg(synth_root, tmp_path)
    table = load_table(cfg.data, "train")
    for r in table.records:
        name = r.path.rsplit("/", 1)[1]
        assert r.group == f"{r.path.rsplit('/', 2)[1]}/{name.split('_')[2]}"
