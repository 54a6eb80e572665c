"""Clip samplers: dense and segment, training and multi-view test."""

import numpy as np
import pytest

from fusion3d.data.clip_sampling import clip_indices, dense_indices, segment_indices


def test_dense_training_clip_has_fixed_stride_and_stays_inside():
    rng = np.random.default_rng(0)
    starts = set()
    for _ in range(200):
        idx = dense_indices(16, 4, 2, rng=rng)
        assert np.all(np.diff(idx) == 2) and idx[0] >= 0 and idx[-1] <= 15
        starts.add(int(idx[0]))
    assert starts == set(range(0, 16 - 7 + 1))  # every valid start is reachable


def test_dense_single_view_is_the_centre_clip():
    # 14 valid starts (0..13); the single view starts at the centre of that range
    assert dense_indices(20, 4, 2).tolist() == [7, 9, 11, 13]


def test_dense_views_are_evenly_spread_and_distinct():
    views = [dense_indices(100, 8, 2, view=v, num_views=10)[0] for v in range(10)]
    assert views == sorted(views) and len(set(views)) == 10
    gaps = np.diff(views)
    assert gaps.max() - gaps.min() <= 1


def test_dense_short_video_repeats_the_last_frame_without_wrapping():
    assert dense_indices(5, 4, 2).tolist() == [0, 2, 4, 4]


def test_segment_test_clip_takes_segment_middles():
    assert segment_indices(16, 4).tolist() == [2, 6, 10, 14]


def test_segment_training_clip_takes_one_frame_per_segment():
    rng = np.random.default_rng(1)
    for _ in range(100):
        idx = segment_indices(40, 8, rng=rng)
        assert np.all(idx // 5 == np.arange(8))


def test_segment_short_video_is_monotone_and_in_range():
    idx = segment_indices(3, 8)
    assert idx.min() >= 0 and idx.max() <= 2 and np.all(np.diff(idx) >= 0)


def test_unknown_sampler_is_named():
    with pytest.raises(ValueError, match="random"):
        clip_indices("random", 10, 4, 2)
