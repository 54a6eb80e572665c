"""Shared fixtures: small real datasets generated once per session."""

from __future__ import annotations

from pathlib import Path

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


def tiny_data(root, tmp_path) -> dict:
    """The data keys of the tests' small clips (4x40x40 from 48-52 px) on a dataset in the UCF101 layout."""
    return {
        "data.root": root,
        "data.annotations": root / "ucfTrainTestlist",
        "data.cache_dir": tmp_path / "cache",
        "data.short_side": 48,
        "data.short_side_max": 52,
        "data.crop_size": 40,
        "data.clip_len": 4,
    }


def tiny_overrides(root, tmp_path, **extra) -> list[str]:
    """Config overrides for a fast run of the tiny preset on a dataset in the UCF101 layout."""
    base = {
        **tiny_data(root, tmp_path),
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


def torchrun(args: list[str], timeout: int = 300) -> tuple[int, str]:
    """Two CPU processes (gloo) under torchrun running ``args``; (exit code, their output)."""
    import os
    import signal
    import socket
    import subprocess
    import sys

    repo = str(Path(__file__).resolve().parent.parent)  # this checkout's fusion3d, not an installed one
    path = os.pathsep.join(p for p in (repo, os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path}
    with socket.socket() as s:  # torchrun's --master_port=0 hangs the rendezvous: pick a free port
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    finally:  # never leave worker processes behind, whatever happened
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode, out
