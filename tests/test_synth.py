"""Synthetic datasets: time-reversal twins, label-independent motion, UCF101 layout, determinism."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import av
import numpy as np
import pytest

from fusion3d.data import synth
from fusion3d.data.synth import (
    APPEARANCE_CLASSES,
    KINDS,
    MOTION_PAIRS,
    class_names,
    generate,
    hflip_pairs,
    make_scene,
    max_classes,
    render_video,
)

T, S = 8, 32  # small videos keep the tests fast


def rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


# --------------------------------------------------------------------------------------------
# class names


def test_class_names_and_limits():
    assert KINDS == ("motion", "appearance", "mixed", "texture", "order")
    assert class_names("motion", 6) == [
        "MoveRight",
        "MoveLeft",
        "RotateCW",
        "RotateCCW",
        "Expand",
        "Contract",
    ]
    assert len(MOTION_PAIRS) >= 8
    for kind in KINDS:
        names = class_names(kind, max_classes(kind))
        assert len(names) == len(set(names)) == max_classes(kind)
        assert all(re.fullmatch(r"([A-Z][a-z]*|CW|CCW)+", n) for n in names), names
    assert class_names("appearance", 4) == list(APPEARANCE_CLASSES[:4])
    assert class_names("mixed", 4) == [
        f"{APPEARANCE_CLASSES[0]}Down",
        f"{APPEARANCE_CLASSES[0]}Up",
        f"{APPEARANCE_CLASSES[1]}Down",
        f"{APPEARANCE_CLASSES[1]}Up",
    ]
    with pytest.raises(ValueError, match="kind"):
        class_names("colour", 4)
    with pytest.raises(ValueError, match="even"):
        class_names("motion", 5)
    with pytest.raises(ValueError, match=f"maximum {max_classes('appearance')}"):
        class_names("appearance", max_classes("appearance") + 1)


def test_hflip_pairs():
    assert hflip_pairs("motion", 6) == [[0, 1], [2, 3]]  # Right<->Left, CW<->CCW; Expand/Contract invariant
    names = class_names("motion", 18)
    for a, b in hflip_pairs("motion", 18):
        assert names[a].replace("Right", "Left").replace("CCW", "CW") == names[b].replace(
            "Right", "Left"
        ).replace("CCW", "CW")
    assert hflip_pairs("appearance", 6) == []


# --------------------------------------------------------------------------------------------
# motion: time-reversed twins


@pytest.mark.parametrize("pair", range(len(MOTION_PAIRS)))
def test_motion_twin_is_exact_reversal(pair):
    n = 2 * len(MOTION_PAIRS)
    for seed in range(3):
        fwd = render_video("motion", 2 * pair, n, T, S, rng(seed))
        rev = render_video("motion", 2 * pair + 1, n, T, S, rng(seed))
        assert fwd.shape == (T, S, S, 3) and fwd.dtype == np.uint8
        np.testing.assert_array_equal(rev, fwd[::-1])
        # the video really changes over time, so the twins differ as sequences
        assert np.abs(fwd[0].astype(int) - fwd[-1].astype(int)).mean() > 1.0
        assert not np.array_equal(fwd, rev)


def test_motion_twins_have_the_same_unordered_frames():
    n, videos = 2 * len(MOTION_PAIRS), 40
    for pair in range(len(MOTION_PAIRS)):
        a = np.stack([render_video("motion", 2 * pair, n, T, 16, rng(s)) for s in range(videos)])
        b = np.stack([render_video("motion", 2 * pair + 1, n, T, 16, rng(s)) for s in range(videos)])
        mean_a = a.reshape(videos, T, -1).mean(axis=(0, 2))  # mean pixel value per frame position
        mean_b = b.reshape(videos, T, -1).mean(axis=(0, 2))
        np.testing.assert_array_equal(mean_a, mean_b[::-1])
        # pooled over positions (unordered), the twins are indistinguishable
        np.testing.assert_array_equal(
            np.bincount(a.ravel(), minlength=256), np.bincount(b.ravel(), minlength=256)
        )
        per_frame_a = np.sort(a.reshape(videos * T, -1).mean(axis=1))
        per_frame_b = np.sort(b.reshape(videos * T, -1).mean(axis=1))
        np.testing.assert_array_equal(per_frame_a, per_frame_b)
        # ... while the frame-position statistic does depend on the order (the clip is not a palindrome)
        assert not np.array_equal(a, b)


def test_motion_is_visible_and_uniform():
    size, frames, n = 64, 16, 2 * len(MOTION_PAIRS)
    for label in range(0, n, 2):
        family = MOTION_PAIRS[label // 2][2]
        for seed in range(5):
            sc = make_scene("motion", label, n, frames, size, rng(seed))
            assert not sc.reverse and make_scene("motion", label + 1, n, frames, size, rng(seed)).reverse
            for obj in sc.objects:
                if family in ("translate", "orbit"):
                    step = np.linalg.norm(np.diff(obj.centers, axis=0), axis=1)
                    np.testing.assert_allclose(step, step[0], rtol=1e-9)  # uniform speed
                    assert step.sum() >= 0.3 * size
                elif family == "rotate":
                    turn = np.diff(obj.angles)
                    np.testing.assert_allclose(turn, turn[0], rtol=1e-9)
                    assert turn[0] > 0 and turn.sum() >= math.radians(
                        90
                    )  # clockwise, a quarter turn at least
                elif family == "scale":
                    grow = np.diff(obj.scales)
                    np.testing.assert_allclose(grow, grow[0], rtol=1e-9)
                    assert obj.scales[-1] / obj.scales[0] >= 1.8
            if family == "scroll":
                assert np.linalg.norm(sc.bg_offsets[-1] - sc.bg_offsets[0]) >= 0.3 * size
    # nominal directions in image coordinates (y down)
    right = make_scene("motion", 0, n, frames, size, rng(1)).objects[0].centers
    assert right[-1, 0] - right[0, 0] > 0.3 * size
    down = make_scene("motion", 6, n, frames, size, rng(1)).objects[0].centers
    assert class_names("motion", n)[6] == "MoveDown" and down[-1, 1] - down[0, 1] > 0.3 * size


# --------------------------------------------------------------------------------------------
# appearance and mixed


def test_appearance_motion_does_not_depend_on_label():
    n = max_classes("appearance")
    for seed in range(5):
        scenes = [make_scene("appearance", label, n, T, S, rng(seed)) for label in range(n)]
        ref = scenes[0]
        for sc in scenes[1:]:
            assert len(sc.objects) == len(ref.objects)
            for o, r in zip(sc.objects, ref.objects):
                np.testing.assert_array_equal(o.centers, r.centers)
                np.testing.assert_array_equal(o.angles, r.angles)
                assert o.radius == r.radius
            np.testing.assert_array_equal(sc.bg_offsets, ref.bg_offsets)
            assert not sc.reverse
        looks = {(sc.objects[0].shape, sc.objects[0].fill) for sc in scenes}
        assert len(looks) == n  # only the look differs
        videos = [render_video("appearance", label, n, T, S, rng(seed)) for label in range(n)]
        assert not np.array_equal(videos[0], videos[1])


def test_mixed_needs_shape_and_direction():
    n = 6
    for seed in range(3):
        down = make_scene("mixed", 2, n, T, S, rng(seed))
        up = make_scene("mixed", 3, n, T, S, rng(seed))
        other = make_scene("mixed", 4, n, T, S, rng(seed))
        assert down.objects[0].shape == up.objects[0].shape != other.objects[0].shape
        np.testing.assert_array_equal(down.objects[0].centers, other.objects[0].centers)
        assert not down.reverse and up.reverse
        c = down.objects[0].centers
        assert c[-1, 1] - c[0, 1] > 0.25 * S  # moves down
        np.testing.assert_array_equal(
            render_video("mixed", 3, n, T, S, rng(seed)), render_video("mixed", 2, n, T, S, rng(seed))[::-1]
        )


def test_render_video_argument_errors():
    with pytest.raises(ValueError, match="label"):
        render_video("motion", 6, 6, T, S, rng(0))
    with pytest.raises(ValueError, match="kind.*motion, appearance, mixed, texture, order"):
        render_video("colour", 0, 6, T, S, rng(0))
    with pytest.raises(ValueError, match="even"):
        render_video("texture", 0, 3, T, S, rng(0))
    with pytest.raises(ValueError, match="render_video"):
        make_scene("order", 0, 2, T, S, rng(0))


# --------------------------------------------------------------------------------------------
# texture (early kind) and order (late kind)


def test_texture_and_order_classes():
    assert class_names("texture", 4) == ["DriftRight", "DriftLeft", "DriftDown", "DriftUp"]
    assert class_names("order", 4) == [
        "WideThenTall",
        "TallThenWide",
        "RisingThenFalling",
        "FallingThenRising",
    ]
    assert max_classes("texture") == 2 * len(synth.TEXTURE_PAIRS) and max_classes("order") == 2 * len(
        synth.ORDER_PAIRS
    )
    assert hflip_pairs("texture", 4) == [[0, 1]]  # Down/Up are mirror-invariant
    assert hflip_pairs("order", 4) == [[2, 3]]  # a mirror turns "/" into "\"; wide and tall stay
    assert synth.hflip_unpaired("order", 2) == [] and synth.hflip_unpaired("texture", 4) == []


@pytest.mark.parametrize("kind", ["texture", "order"])
def test_new_kinds_are_exact_time_reversed_twins(kind):
    n = max_classes(kind)
    for pair in range(n // 2):
        for seed in range(3):
            fwd = render_video(kind, 2 * pair, n, T, S, rng(seed))
            rev = render_video(kind, 2 * pair + 1, n, T, S, rng(seed))
            assert fwd.shape == (T, S, S, 3) and fwd.dtype == np.uint8
            np.testing.assert_array_equal(rev, fwd[::-1])  # the same frames, in the other order
            assert not np.array_equal(fwd, rev)
            np.testing.assert_array_equal(
                fwd, render_video(kind, 2 * pair, n, T, S, rng(seed))
            )  # deterministic


def _pool2(a: np.ndarray) -> np.ndarray:
    """2x2 average pooling over the last two axes."""
    return a.reshape(*a.shape[:-2], a.shape[-2] // 2, 2, a.shape[-1] // 2, 2).mean(axis=(-3, -1))


@pytest.mark.parametrize("label", [0, 2])
def test_texture_signal_is_fine_and_drifts(label):
    axis = synth.TEXTURE_PAIRS[label // 2][2]
    v = synth._TEXTURE_SPEED
    for seed in range(3):
        c = synth.texture_carrier(label, T, S, rng(seed))
        assert c.shape == (T, S, S) and set(np.unique(c)) == {
            -1.0,
            1.0,
        }  # uniform magnitude: no energy pattern
        np.testing.assert_array_equal(_pool2(c), 0.0)  # gone after the first 2x2 average pooling
        np.testing.assert_array_equal(
            c[:, 1::2] + c[:, ::2] if axis == 0 else c[:, :, 1::2] + c[:, :, ::2], 0.0
        )
        # the forward video drifts right (axis 0) or down (axis 1) by v pixels per frame
        along = 2 if axis == 0 else 1
        np.testing.assert_array_equal(
            np.take(c[1:], np.arange(v, S), axis=along), np.take(c[:-1], np.arange(0, S - v), axis=along)
        )
        assert not np.array_equal(c[1:], c[:-1])


def test_texture_signal_vanishes_after_2x2_pooling(monkeypatch):
    """The same video with and without the fine texture: 2x2-pooled, equal up to clipping and rounding."""
    for label in (0, 3):
        for seed in range(3):
            with_texture = render_video("texture", label, 4, T, S, rng(seed)).astype(float)
            monkeypatch.setattr(
                synth, "texture_carrier", lambda *a, f=synth.texture_carrier: 0.0 * f(*a)
            )  # no texture
            without = render_video("texture", label, 4, T, S, rng(seed)).astype(float)
            monkeypatch.undo()
            assert np.abs(with_texture - without).mean() > 15  # strong at full resolution
            pooled = np.abs(
                _pool2(with_texture.transpose(0, 3, 1, 2)) - _pool2(without.transpose(0, 3, 1, 2))
            )
            assert pooled.mean() < 0.5 and pooled.max() <= 4  # rounding and the noise's rare clipping only


def test_order_arrangements():
    for seed in range(20):
        a, b = synth.order_schedule(T, rng(seed))
        assert 0 <= a and b == a + synth._ORDER_SHOW + synth._ORDER_GAP and b + synth._ORDER_SHOW <= T
        for _, _, first, second in synth.ORDER_PAIRS:
            for angle in (first, second):
                dots = synth._dot_pair(angle, S, rng(seed))
                d = dots[1] - dots[0]
                sep = np.hypot(*d)
                assert synth._ORDER_SEPARATION[0] * S - 1e-9 <= sep <= synth._ORDER_SEPARATION[1] * S + 1e-9
                assert abs((math.degrees(math.atan2(d[1], d[0])) - angle + 90) % 180 - 90) <= 10 + 1e-9
                assert np.all(dots >= synth._ORDER_MARGIN * S - 1e-9) and np.all(
                    dots <= S - synth._ORDER_MARGIN * S + 1e-9
                )


def test_order_dots_only_during_the_event(monkeypatch):
    n = max_classes("order")
    for seed in range(5):
        video = render_video("order", 0, n, T, S, rng(seed))
        monkeypatch.setattr(synth, "_draw", lambda *a: None)  # no dots: the same draws, background only
        background = render_video("order", 0, n, T, S, rng(seed))
        monkeypatch.undo()
        shown = np.flatnonzero([not np.array_equal(f, g) for f, g in zip(video, background)])
        a, b = synth.order_schedule(T, synth._streams(rng(seed))["motion"])
        np.testing.assert_array_equal(shown, np.r_[a : a + synth._ORDER_SHOW, b : b + synth._ORDER_SHOW])
        assert np.all(
            np.diff(shown) == 1
        )  # one short event: the second arrangement follows the first at once


def test_order_frames_are_a_permutation_between_twins():
    """Label 2p and 2p + 1 from the same generator: the same set of frames in reverse order, so
    per-frame content (pooled over time) cannot tell the order."""
    for seed in range(5):
        fwd = render_video("order", 0, 2, T, S, rng(seed))
        rev = render_video("order", 1, 2, T, S, rng(seed))
        key = lambda v: sorted(f.tobytes() for f in v)  # noqa: E731
        assert key(fwd) == key(rev) and not np.array_equal(fwd, rev)


def test_generate_test_per_class_and_new_kinds(tmp_path):
    out = generate(
        tmp_path / "t",
        kind="texture",
        classes=2,
        videos_per_class=6,
        frames=T,
        size=S,
        seed=1,
        test_per_class=4,
    )
    test = (out / "ucfTrainTestlist" / "testlist01.txt").read_text().splitlines()
    train = (out / "ucfTrainTestlist" / "trainlist01.txt").read_text().splitlines()
    assert len(test) == 2 * 4 and len(train) == 2 * 2
    assert json.loads((out / "synth.json").read_text())["test_per_class"] == 4
    assert _decode(out / "DriftLeft" / "v_DriftLeft_g01_c01.mp4").shape == (T, S, S, 3)
    # the split does not change a video's bytes; without test_per_class synth.json keeps its old form
    other = generate(tmp_path / "u", kind="texture", classes=2, videos_per_class=6, frames=T, size=S, seed=1)
    assert "test_per_class" not in json.loads((other / "synth.json").read_text())
    rel = "DriftRight/v_DriftRight_g01_c02.mp4"
    assert (out / rel).read_bytes() == (other / rel).read_bytes()
    with pytest.raises(ValueError, match="'test_per_class' must be < videos_per_class"):
        generate(
            tmp_path / "v", kind="order", classes=2, videos_per_class=4, frames=T, size=S, test_per_class=4
        )
    a = _tree(
        generate(tmp_path / "o1", kind="order", classes=2, videos_per_class=3, frames=T, size=S, seed=2)
    )
    b = _tree(
        generate(
            tmp_path / "o2", kind="order", classes=2, videos_per_class=3, frames=T, size=S, seed=2, workers=2
        )
    )
    assert a == b


# --------------------------------------------------------------------------------------------
# generate: UCF101 layout, determinism, up-to-date check


GEN = dict(kind="motion", classes=4, videos_per_class=5, frames=T, size=S, seed=3)


def _decode(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_generate_writes_ucf101_layout(tmp_path):
    out = generate(tmp_path / "d", **GEN)
    assert out == tmp_path / "d"
    names = class_names("motion", 4)
    lists = out / "ucfTrainTestlist"
    assert (lists / "classInd.txt").read_text().splitlines() == [f"{i + 1} {n}" for i, n in enumerate(names)]
    train = [line.split(" ") for line in (lists / "trainlist01.txt").read_text().splitlines()]
    test = (lists / "testlist01.txt").read_text().splitlines()
    assert all(len(t) == 2 for t in train) and all(" " not in t for t in test)
    assert len(train) + len(test) == 4 * 5
    assert not {t[0] for t in train} & set(test)
    for label, name in enumerate(names):
        tr = [p for p, y in train if p.startswith(name + "/")]
        te = [p for p in test if p.startswith(name + "/")]
        assert len(te) == 1 and len(tr) == 4  # about a quarter, at least one
        assert all(int(y) == label + 1 for p, y in train if p.startswith(name + "/"))
    for rel in [t[0] for t in train] + test:
        assert re.fullmatch(r"([A-Za-z]+)/v_\1_g\d\d_c\d\d\.mp4", rel), rel
        video = _decode(out / rel)
        assert video.shape == (T, S, S, 3)
    assert sorted(p.name for p in (out / "MoveRight").iterdir()) == [
        "v_MoveRight_g01_c01.mp4",
        "v_MoveRight_g01_c02.mp4",
        "v_MoveRight_g01_c03.mp4",
        "v_MoveRight_g01_c04.mp4",
        "v_MoveRight_g02_c01.mp4",
    ]
    meta = json.loads((out / "synth.json").read_text())
    assert {k: meta[k] for k in GEN} == GEN and meta["fps"] == 12
    # the decoded video is close to what render_video draws for that (seed, label, index)
    frames = render_video("motion", 1, 4, T, S, np.random.default_rng(synth.video_seed(3, 1, 0)))
    decoded = _decode(out / "MoveLeft" / "v_MoveLeft_g01_c01.mp4").astype(int)
    assert np.abs(decoded - frames).mean() < 6


def test_generate_is_deterministic(tmp_path):
    a = _tree(generate(tmp_path / "a", **GEN))
    b = _tree(generate(tmp_path / "b", **GEN, workers=2))
    assert a.keys() == b.keys() and len(a) == 4 * 5 + 4
    assert all(a[k] == b[k] for k in a)
    c = _tree(generate(tmp_path / "c", **{**GEN, "seed": 4}))
    videos = [k for k in a if k.endswith(".mp4")]
    assert all(a[k] != c[k] for k in videos)


def test_generate_up_to_date_short_circuit(tmp_path, monkeypatch):
    out = generate(tmp_path / "d", **GEN)
    before = _tree(out)

    def boom(job):
        raise AssertionError("should not render")

    monkeypatch.setattr(synth, "_job", boom)
    assert generate(out, **GEN, workers=3, progress=False) == out  # workers/progress do not matter
    assert _tree(out) == before
    # a missing file or different parameters mean work to do
    (out / "RotateCW" / "v_RotateCW_g01_c01.mp4").unlink()
    with pytest.raises(AssertionError, match="should not render"):
        generate(out, **GEN)
    assert not (out / "synth.json").exists()  # an interrupted regeneration is not up to date
    monkeypatch.undo()
    generate(out, **GEN)
    assert _tree(out) == before
    generate(out, **{**GEN, "frames": T + 2})
    assert _decode(out / "RotateCW" / "v_RotateCW_g01_c01.mp4").shape[0] == T + 2


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        (dict(kind="textures"), r"'kind'.*motion, appearance, mixed"),
        (dict(classes=5), r"'classes' must be even"),
        (dict(kind="mixed", classes=3), r"'classes' must be even"),
        (dict(classes=2 * len(MOTION_PAIRS) + 2), rf"'classes'.*maximum {2 * len(MOTION_PAIRS)}"),
        (dict(kind="appearance", classes=11), r"'classes'.*maximum 10"),
        (dict(classes=1), r"'classes' must be >= 2"),
        (dict(videos_per_class=1), r"'videos_per_class'"),
        (dict(frames=1), r"'frames'"),
        (dict(size=33), r"'size' must be even"),
        (dict(size=8), r"'size'"),
        (dict(seed=-1), r"'seed'"),
        (dict(fps=0), r"'fps'"),
        (dict(workers=0), r"'workers'"),
        (dict(classes=4.0), r"'classes' must be an integer"),
    ],
)
def test_generate_rejects_bad_arguments(tmp_path, kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        generate(tmp_path / "d", **{**GEN, **kwargs})
    assert not (tmp_path / "d").exists()
