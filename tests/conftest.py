"""Shared fixtures: small real datasets generated once per session."""

from __future__ import annotations

import pytest
import torch

from fusion3d.data.synth import generate


@pytest.fixture(autouse=True)
def _one_thread():
    """2 OpenMP threads on 2 busy cores run up to 15x slower than 1 (measured): every test uses 1."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def tiny_motion(tmp_path_factory):
    """4 motion classes (2 reversal pairs) x 6 videos, 16 frames of 48x48: real H.264 files."""
    return generate(
        tmp_path_factory.mktemp("tiny_motion") / "motion",
        kind="motion",
        classes=4,
        videos_per_class=6,
        frames=16,
        size=48,
        seed=11,
    )


def tiny_overrides(root, tmp_path, **extra) -> list[str]:
    """Config overrides for a fast run of the tiny preset on a dataset in the UCF101 layout."""
    base = {
        "data.root": root,
        "data.annotations": root / "ucfTrainTestlist",
        "data.cache_dir": tmp_path / "cache",
        "data.short_side": 48,
        "data.short_side_max": 52,
        "data.crop_size": 40,
        "data.clip_len": 4,
        "data.flip": "off",
        "run.out": tmp_path / "run",
        "run.threads": 1,
        "model.name": "tiny",
        "train.batch_size": 4,
        "train.warmup_epochs": 1,
        "train.epochs": 2,
        "train.eval_samples": 2,
        "train.log_every": 1,
        "train.progress": False,
    }
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]
