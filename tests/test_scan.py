"""Dataset pre-scan: every kind of broken file gets its status, nothing raises (fusion3d.data.scan)."""

from __future__ import annotations

import pandas as pd
import pytest
from videos import (
    make_garbage,
    make_truncated,
    make_zero_length,
    write_numbered_frame_folder,
    write_numbered_video,
)

from fusion3d.data.scan import STATUSES, _cut_short, scan_video, scan_videos, summarize

N = 60


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("scan")
    ok_mp4 = write_numbered_video(d / "ok.mp4", N)
    ok_avi = write_numbered_video(d / "ok.avi", N)
    ok_webm = write_numbered_video(d / "ok.webm", N)
    f = {
        "ok_mp4": ok_mp4,
        "ok_avi": ok_avi,
        "ok_webm": ok_webm,
        "ok_folder": write_numbered_frame_folder(d / "frames", 12),
        "short": write_numbered_video(d / "short.mp4", 5),
        "missing": d / "missing.mp4",
        "zero": make_zero_length(d / "zero.mp4"),
        "garbage": make_garbage(d / "garbage.mp4"),
        "garbage_webm": make_garbage(d / "garbage.webm", seed=1),
        # the header survives and still claims 60 frames; the tail is gone
        "trunc_avi": make_truncated(ok_avi, d / "trunc.avi", 0.8),
        # no frame count in the header; the duration still says 5 s
        "trunc_webm": make_truncated(ok_webm, d / "trunc.webm", 0.5),
        # MP4 keeps its index (moov) at the end: a cut file cannot even be opened, but its boxes
        # show that it was cut (and random bytes do not)
        "trunc_mp4": make_truncated(ok_mp4, d / "trunc.mp4", 0.5),
        # cut inside the AVI header area: cannot be opened either, the RIFF size tells
        "trunc_avi_head": make_truncated(ok_avi, d / "trunc_head.avi", 0.3),
        "trunc_webm_head": make_truncated(ok_webm, d / "trunc_head.webm", 0.05),
        "not_a_video": d / "notes.txt",
    }
    (d / "notes.txt").write_text("hello\n")
    return {k: str(v) for k, v in f.items()}


EXPECTED = {
    "ok_mp4": "ok",
    "ok_avi": "ok",
    "ok_webm": "ok",
    "ok_folder": "ok",
    "short": "too_short",
    "missing": "missing",
    "zero": "zero_length",
    "garbage": "unreadable",
    "garbage_webm": "unreadable",
    "trunc_avi": "truncated",
    "trunc_webm": "truncated",
    "trunc_mp4": "truncated",
    "trunc_avi_head": "truncated",
    "trunc_webm_head": "truncated",
    "not_a_video": "unreadable",
}


@pytest.mark.parametrize("full", [False, True])
def test_statuses(files, full):
    keys = list(EXPECTED)
    df = scan_videos([files[k] for k in keys], min_frames=8, full=full)
    assert isinstance(df, pd.DataFrame)
    assert list(df.columns) == ["path", "status", "num_frames", "decodable_frames", "detail"]
    assert list(df["path"]) == [files[k] for k in keys]  # input order
    assert dict(zip(keys, df["status"])) == EXPECTED
    assert set(df["status"]) <= set(STATUSES)
    rows = dict(zip(keys, df.to_dict("records")))
    assert rows["ok_mp4"]["num_frames"] == N
    assert rows["ok_webm"]["num_frames"] == N
    assert rows["missing"]["num_frames"] == 0
    assert rows["trunc_avi"]["num_frames"] == N  # what the container claims
    for k, row in rows.items():
        if row["status"] != "ok":
            assert row["detail"], k
    if full:
        assert rows["ok_mp4"]["decodable_frames"] == N
        assert rows["ok_folder"]["decodable_frames"] == 12
        assert 0 < rows["trunc_avi"]["decodable_frames"] < N
        assert 0 < rows["trunc_webm"]["decodable_frames"] < N
    else:
        assert rows["ok_mp4"]["decodable_frames"] == -1


def test_too_short_threshold(files):
    assert scan_video(files["ok_mp4"], min_frames=N)["status"] == "ok"
    row = scan_video(files["ok_mp4"], min_frames=N + 1)
    assert row["status"] == "too_short" and str(N + 1) in row["detail"]
    assert scan_video(files["ok_mp4"], min_frames=N + 1, full=True)["status"] == "too_short"


def test_full_scan_detects_truncation(files):
    row = scan_video(files["trunc_avi"], full=True)
    assert row["status"] == "truncated"
    assert row["decodable_frames"] < row["num_frames"] == N
    assert "of 60" in row["detail"]


def test_cut_short_detail_only_for_cut_files(files):
    for k in ("trunc_mp4", "trunc_avi_head", "trunc_webm_head"):
        row = scan_video(files[k])
        assert row["status"] == "truncated" and "cut short" in row["detail"], row
    for k in ("ok_mp4", "ok_avi", "ok_webm", "garbage", "garbage_webm"):
        assert _cut_short(files[k]) == "", k


def test_summarize_lists_bad_files(files):
    keys = list(EXPECTED)
    df = scan_videos([files[k] for k in keys], min_frames=8)
    text = summarize(df)
    for status in STATUSES:
        assert status in text
    for k, status in EXPECTED.items():
        if status != "ok":
            assert files[k] in text, k
        else:
            assert files[k] not in text, k
    assert "too_short" in text and "zero_length" in text
    assert "all files ok" in summarize(scan_videos([files["ok_mp4"]]))
    assert "scanned 0" in summarize(scan_videos([]))


def test_progress_does_not_change_result(files, capsys):
    paths = [files["ok_mp4"], files["missing"]]
    df = scan_videos(paths, progress=True)
    assert list(df["status"]) == ["ok", "missing"]
