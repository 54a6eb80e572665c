"""Frame-exact random access, probing, resource hygiene and the cached index (fusion3d.data.decode)."""

from __future__ import annotations

import json
import os
from fractions import Fraction

import numpy as np
import pytest
from videos import (
    make_garbage,
    make_truncated,
    make_zero_length,
    numbered_frames,
    read_number,
    read_numbers,
    write_bframes_video,
    write_numbered_frame_folder,
    write_numbered_video,
    write_vfr_video,
)

from fusion3d.data import decode as D
from fusion3d.data.decode import VideoDecodeError, VideoInfo, decode_all, probe, read_frames
from fusion3d.data.video_index import VideoIndex

N = 60  # frames per test video
N_FOLDER = 20

# kind -> (frame count, uses the fast timestamp path)
KINDS = {
    "mp4": (N, True),
    "avi": (N, True),
    "webm": (N, True),
    "mkv": (N, True),
    "mp4_bframes": (N, True),
    "avi_bframes": (N, True),
    "mp4_ntsc_bframes": (N, True),
    "folder": (N_FOLDER, True),
}


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    d = tmp_path_factory.mktemp("decode")
    paths = {
        "mp4": write_numbered_video(d / "v.mp4", N, gop=8),
        "avi": write_numbered_video(d / "v.avi", N, gop=8),
        "webm": write_numbered_video(d / "v.webm", N, gop=8),
        "mkv": write_numbered_video(d / "v.mkv", N, gop=8),
        "mp4_bframes": write_bframes_video(d / "b.mp4", N, gop=12),
        "avi_bframes": write_bframes_video(d / "b.avi", N, gop=12),
        "mp4_ntsc_bframes": write_bframes_video(d / "ntsc.mp4", N, fps=Fraction(30000, 1001), gop=12),
        "folder": write_numbered_frame_folder(d / "frames", N_FOLDER),
    }
    return {k: str(v) for k, v in paths.items()}


@pytest.fixture(scope="module")
def references(videos):
    return {k: decode_all(p) for k, p in videos.items()}


def index_sets(n: int, seed: int = 0) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    sets = [
        [0],
        [n - 1],
        [0, n - 1],
        [n - 1, 0],
        list(range(n)),
        list(range(n))[::-1],
        [0, 0, 3, 1],
        [n - 1, n - 1, n - 2],
        [5, 5, 5],
    ]
    for _ in range(12):  # dense clips: clip_len frames every interval
        interval = int(rng.integers(1, 4))
        clip_len = min(8, n // interval)
        start = int(rng.integers(0, n - (clip_len - 1) * interval))
        sets.append(list(range(start, start + clip_len * interval, interval)))
    for _ in range(12):  # segment (TSN) sampling: spread over the whole video
        segs = int(rng.integers(2, 9))
        edges = np.linspace(0, n, segs + 1)
        sets.append(
            [int(rng.integers(int(edges[k]), max(int(edges[k]) + 1, int(edges[k + 1])))) for k in range(segs)]
        )
    for _ in range(20):  # anything: unsorted, duplicates
        sets.append([int(x) for x in rng.integers(0, n, int(rng.integers(1, 10)))])
    return sets


def assert_exact(frames, reference, idx):
    assert frames.dtype == np.uint8 and frames.shape == (len(idx),) + reference.shape[1:]
    assert read_numbers(frames) == list(idx)
    np.testing.assert_array_equal(frames, reference[list(idx)])


# ---------------------------------------------------------------------------------------------------
# helpers


def test_numbered_frames_roundtrip():
    frames = numbered_frames(300)
    assert [read_number(f) for f in frames] == list(range(300))
    assert frames.shape == (300, 48, 64, 3) and frames.dtype == np.uint8


# ---------------------------------------------------------------------------------------------------
# probe


@pytest.mark.parametrize("kind", list(KINDS))
def test_probe_exact(videos, references, kind):
    n, _ = KINDS[kind]
    info = probe(videos[kind])
    assert isinstance(info, VideoInfo)
    assert info.path == os.path.abspath(videos[kind])
    assert info.num_frames == n == len(references[kind])
    assert (info.height, info.width) == (48, 64)
    expected_fps = 30000 / 1001 if "ntsc" in kind else 12.0
    assert info.fps == pytest.approx(expected_fps)
    assert info.duration == pytest.approx(n / expected_fps, rel=1e-3)
    assert read_numbers(references[kind]) == list(range(n))


def test_webm_frame_count_uses_fallback(videos):
    import av

    with av.open(videos["webm"]) as c:
        assert c.streams.video[0].frames == 0  # PyAV knows no count for WebM: probe had to count
    assert probe(videos["webm"]).num_frames == N


def test_frame_folder_patterns(tmp_path):
    for pattern, start in [
        ("{:05d}.jpg", 1),
        ("img_{:05d}.jpg", 1),
        ("{:06d}.jpg", 0),
        ("frame{:d}.jpeg", 1),
    ]:
        folder = write_numbered_frame_folder(
            tmp_path / pattern.replace("{", "").replace("}", ""), 12, pattern=pattern, start=start
        )
        info = probe(folder)
        assert info.num_frames == 12 and info.fps == 12.0 and info.duration == pytest.approx(1.0)
        assert read_numbers(read_frames(folder, [11, 0, 5])) == [11, 0, 5]
    # TSN folders hold RGB frames and optical flow side by side: the RGB frames are the video
    tsn = write_numbered_frame_folder(tmp_path / "tsn", 7, pattern="img_{:05d}.jpg")
    write_numbered_frame_folder(tmp_path / "tsn", 9, pattern="flow_x_{:05d}.jpg")
    write_numbered_frame_folder(tmp_path / "tsn", 9, pattern="flow_y_{:05d}.jpg")
    assert probe(tsn).num_frames == 7
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(VideoDecodeError, match="empty"):
        probe(empty)


# ---------------------------------------------------------------------------------------------------
# random access


@pytest.mark.parametrize("kind", list(KINDS))
def test_random_access_exact(videos, references, kind):
    path, ref = videos[kind], references[kind]
    n, fast = KINDS[kind]
    info = probe(path)
    before = dict(D._stats)
    for k, idx in enumerate(index_sets(n, seed=len(kind))):
        frames = read_frames(path, idx, info if k % 2 else None)
        assert_exact(frames, ref, idx)
    if fast and kind != "folder":  # constant frame rate: timestamps must be usable, no fallback
        assert D._stats["sequential"] == before["sequential"]


@pytest.mark.parametrize("kind", ["mp4", "avi", "webm", "mp4_bframes", "avi_bframes"])
def test_random_access_with_seeks(videos, references, kind, monkeypatch):
    """Force real seeks (and, with no margin, AVI's seek landing after the target)."""
    monkeypatch.setattr(D, "SEEK_MIN_GAP", 3)
    monkeypatch.setattr(D, "_SEEK_MARGIN", 0)
    path, ref = videos[kind], references[kind]
    before = dict(D._stats)
    for idx in index_sets(N, seed=7):
        assert_exact(read_frames(path, idx), ref, idx)
    assert D._stats["seeks"] > before["seeks"]
    assert D._stats["sequential"] == before["sequential"]
    if kind.startswith("avi"):  # AVI pts = dts + 1: a seek to frame t lands on keyframe t + 1
        assert D._stats["bad_seeks"] > before["bad_seeks"]


def test_variable_frame_rate_falls_back_to_counting(tmp_path):
    path = str(write_vfr_video(tmp_path / "vfr.mp4", 40))
    ref = decode_all(path)
    assert read_numbers(ref) == list(range(40))
    assert probe(path).num_frames == 40
    before = D._stats["sequential"]
    for idx in ([39], [0, 10, 20, 30], [25, 3, 3]):
        assert_exact(read_frames(path, idx), ref, idx)
    assert D._stats["sequential"] > before


def test_long_video_far_seek(tmp_path):
    n = 700  # longer than SEEK_MIN_GAP: the default path seeks
    path = str(write_numbered_video(tmp_path / "long.mp4", n, gop=16))
    ref = decode_all(path)
    before = D._stats["seeks"]
    for idx in ([650], [3, 690], [600, 20, 400, 401]):
        assert_exact(read_frames(path, idx), ref, idx)
    assert D._stats["seeks"] > before


def test_index_types_and_empty(videos):
    path = videos["mp4"]
    np.testing.assert_array_equal(read_frames(path, np.array([3, 1])), read_frames(path, (3, 1)))
    empty = read_frames(path, [])
    assert empty.shape == (0, 48, 64, 3) and empty.dtype == np.uint8
    with pytest.raises(VideoDecodeError):
        read_frames(path, [1.5])


@pytest.mark.parametrize("kind", ["mp4", "avi", "webm", "folder"])
def test_out_of_range_raises_naming_file(videos, kind):
    path = videos[kind]
    n = KINDS[kind][0]
    info = probe(path)
    for bad in ([n], [0, n + 5], [-1]):
        for inf in (info, None):
            with pytest.raises(VideoDecodeError) as e:
                read_frames(path, bad, inf)
            assert os.path.abspath(path) in str(e.value)
            assert "out of range" in str(e.value) or "decodable" in str(e.value)


def test_broken_files_raise_naming_file(tmp_path, videos):
    cases = {
        "missing": (str(tmp_path / "missing.mp4"), "does not exist"),
        "zero": (str(make_zero_length(tmp_path / "zero.mp4")), "empty"),
        "garbage": (str(make_garbage(tmp_path / "garbage.mp4")), "cannot open"),
    }
    for path, reason in cases.values():
        for fn in (probe, decode_all, lambda p: read_frames(p, [0])):
            with pytest.raises(VideoDecodeError) as e:
                fn(path)
            assert path in str(e.value) and reason in str(e.value)


def test_truncated_file(tmp_path, videos):
    # AVI keeps its header (claims 60 frames) when cut: the tail is gone
    path = str(make_truncated(videos["avi"], tmp_path / "cut.avi", 0.8))
    info = probe(path)
    assert info.num_frames == N
    assert read_number(read_frames(path, [0], info)[0]) == 0
    with pytest.raises(VideoDecodeError, match="cut.avi"):
        read_frames(path, [N - 1], info)
    with pytest.raises(VideoDecodeError, match="cut.avi"):
        decode_all(path)
    # WebM stores no frame count: probe counts what is really there
    cut = str(make_truncated(videos["webm"], tmp_path / "cut.webm", 0.5))
    m = probe(cut).num_frames
    assert 0 < m < N
    frames = read_frames(cut, [m - 1, 0])
    assert read_numbers(frames) == [m - 1, 0]
    with pytest.raises(VideoDecodeError, match="cut.webm"):
        read_frames(cut, [m])


def test_error_is_picklable_and_accepts_a_plain_message():
    import pickle

    e = pickle.loads(pickle.dumps(VideoDecodeError("/x/v.mp4", "file does not exist")))
    assert (
        str(e) == "/x/v.mp4: file does not exist"
        and e.path == "/x/v.mp4"
        and e.reason == "file does not exist"
    )
    assert str(VideoDecodeError("worker failed")) == "worker failed"
    assert isinstance(e, RuntimeError)


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_no_leaked_file_descriptors(videos, tmp_path):
    garbage = str(make_garbage(tmp_path / "g.webm"))
    paths = [videos["mp4"], videos["avi"], videos["webm"], videos["folder"]]
    infos = [probe(p) for p in paths]
    read_frames(paths[0], [1])  # warm up lazy imports
    before = _open_fds()
    rng = np.random.default_rng(3)
    for k in range(200):
        j = k % len(paths)
        idx = [int(x) for x in rng.integers(0, infos[j].num_frames, 4)]
        read_frames(paths[j], idx, infos[j] if k % 3 else None)
        if k % 20 == 0:
            with pytest.raises(VideoDecodeError):
                read_frames(paths[j], [10_000], infos[j])
            with pytest.raises(VideoDecodeError):
                probe(garbage)
    assert _open_fds() == before


# ---------------------------------------------------------------------------------------------------
# VideoIndex


def _counting_probe(monkeypatch):
    calls = []
    real = D.probe

    def counted(path):
        calls.append(os.path.abspath(path))
        return real(path)  # the real probe runs; only the calls are counted

    monkeypatch.setattr(D, "probe", counted)
    return calls


def test_video_index_probes_once_and_persists(tmp_path, videos, monkeypatch):
    calls = _counting_probe(monkeypatch)
    cache = tmp_path / "cache" / "index.json"
    index = VideoIndex(cache)
    info = index.get(videos["webm"])
    assert info == probe(videos["webm"]) and info.num_frames == N
    assert index.get(videos["webm"]) == info
    assert index.get(os.path.relpath(videos["webm"])) == info  # keyed by absolute path
    assert index.get(videos["folder"]).num_frames == N_FOLDER
    assert len(calls) == 2  # once per video (the direct probe() above is the unpatched import)
    index.save()
    data = json.loads(cache.read_text())
    assert os.path.abspath(videos["webm"]) in data["videos"]

    calls.clear()
    again = VideoIndex(cache)
    assert again.get(videos["webm"]) == info
    assert again.get(videos["folder"]).num_frames == N_FOLDER
    assert calls == []
    mtime = cache.stat().st_mtime_ns
    again.save()  # nothing new: no write
    assert cache.stat().st_mtime_ns == mtime


def test_video_index_reprobes_changed_file(tmp_path, monkeypatch):
    calls = _counting_probe(monkeypatch)
    path = write_numbered_video(tmp_path / "v.mp4", 20)
    index = VideoIndex(tmp_path / "index.json")
    assert index.get(path).num_frames == 20
    write_numbered_video(path, 33)  # same name, new content (size and mtime change)
    assert index.get(path).num_frames == 33
    assert len(calls) == 2
    index.save()
    assert VideoIndex(tmp_path / "index.json").get(path).num_frames == 33
    assert len(calls) == 2
    with pytest.raises(VideoDecodeError, match="does not exist"):
        index.get(tmp_path / "nope.mp4")


def test_video_index_merges_concurrent_writers(tmp_path, videos):
    cache = tmp_path / "shared.json"
    a, b = VideoIndex(cache), VideoIndex(cache)
    a.get(videos["mp4"])
    b.get(videos["avi"])
    a.save()
    b.save()  # must not drop a's entry
    merged = VideoIndex(cache)
    assert os.path.abspath(videos["mp4"]) in merged and os.path.abspath(videos["avi"]) in merged
    cache.write_text("{ not json")  # a broken cache is ignored, not fatal
    assert len(VideoIndex(cache)) == 0
