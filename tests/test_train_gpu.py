"""Training for GPUs with the CPU first-class: precision, channels-last, the loader built once per run,
mid-epoch checkpoints with exact resume (issue 15, item 3)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import tiny_overrides

import fusion3d.engine.trainer as trainer
from fusion3d.config import ConfigError, load_config
from fusion3d.data.samplers import EpochSampler
from fusion3d.engine.checkpoint import CHECKPOINT, load_checkpoint
from fusion3d.engine.precision import Precision
from fusion3d.engine.trainer import train
from fusion3d.errors import FusionError
from fusion3d.models import build_model
from fusion3d.models.regularizer import template_regularizer
from fusion3d.models.spec import ModelConfig


class _Items(torch.utils.data.Dataset):
    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return i


@pytest.mark.parametrize("n", [13, 24])
def test_epoch_sampler_serves_the_order_of_the_loader_rebuilt_every_epoch(n):
    """Index for index what the trainer's old per-epoch loaders drew (one process and DistributedSampler):
    a seeded run with a loader built once ends with the weights it had before."""
    seed, batch = 3, 4
    s = EpochSampler(n, lambda e: seed * 1000 + e, seed)
    for epoch in range(3):
        old = torch.utils.data.DataLoader(
            _Items(n),
            batch_size=batch,
            shuffle=True,
            drop_last=True,
            generator=torch.Generator().manual_seed(seed * 1000 + epoch),
        )
        s.set_epoch(epoch)
        assert [i for b in old for i in b.tolist()] == s.order(epoch)[: (n // batch) * batch]
        for rank in (0, 1):
            d = torch.utils.data.distributed.DistributedSampler(
                _Items(n), num_replicas=2, rank=rank, shuffle=True, seed=seed, drop_last=True
            )
            d.set_epoch(epoch)
            assert list(d) == EpochSampler(n, None, seed, 2, rank).order(epoch)
    s.set_epoch(1)
    s.skip = 5  # a run resumed mid-epoch: the rest of the epoch, then whole epochs again
    assert list(s) == [(1, i) for i in s.order(1)[5:]] and len(list(s)) == n


def test_new_keys_are_checked_with_one_line_errors(tmp_path):
    for key, value in (
        ("train.checkpoint_every_steps", -1),
        ("run.dist_timeout_s", -5),
        ("data.prefetch_factor", 0),
        ("train.precision", "fp8"),
    ):
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")) as e:
            load_config(None, [f"{key}={value}"])
        assert "\n" not in str(e.value)


def test_fp16_on_a_cpu_is_refused_before_anything_is_written(tiny_motion, tmp_path):
    cfg = load_config(
        None, tiny_overrides(tiny_motion, tmp_path, **{"train.precision": "fp16", "run.device": "cpu"})
    )
    with pytest.raises(FusionError, match=r"fp16 needs a CUDA device.*use train.precision=bf16"):
        train(cfg)
    assert not (tmp_path / "run").exists()


def test_bf16_autocast_keeps_gates_regulariser_and_loss_fp32():
    model = build_model(ModelConfig(name="tiny"), 4)
    model.set_gate_mode("relaxed")
    prec = Precision("bf16", torch.device("cpu"))
    with prec.autocast():
        out = model(torch.randn(2, 3, 4, 32, 32))
        keep = model.gates()[0].relaxed_keep(2)
    assert out.dtype == torch.bfloat16 and keep.dtype == torch.float32
    assert template_regularizer(model, 1.0, 100).dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in model.drop_logits())


def test_channels_last_gives_the_same_network_output():
    torch.manual_seed(0)
    model = build_model(ModelConfig(name="tiny"), 4).eval()
    x = torch.randn(2, 3, 4, 32, 32)
    ref = model(x)
    prec = Precision("fp32", torch.device("cpu"), channels_last=True)
    prec.prepare_model(model)
    assert torch.allclose(model(prec.prepare_input(x)), ref, atol=1e-5)


def test_bf16_run_on_the_tiny_preset_trains_with_finite_loss_and_fp32_weights(tiny_motion, tmp_path):
    over = tiny_overrides(
        tiny_motion, tmp_path, **{"train.precision": "bf16", "train.warmup_epochs": 0, "train.epochs": 1}
    )
    summary = train(load_config(None, over))
    recs = [json.loads(ln) for ln in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in recs if r["kind"] == "step"]
    assert recs[0]["precision"] == "bf16" and steps
    assert all(torch.isfinite(torch.tensor([r["loss"], r["reg"]])).all() for r in steps)
    assert steps[0]["reg"] > 0  # the v-DropPath phase ran, regulariser and all
    state = load_checkpoint(tmp_path / "run" / CHECKPOINT)
    assert all(t.dtype == torch.float32 for t in state["model"].values() if t.is_floating_point())
    assert summary["complete"] and 0.0 <= summary["val_top1"] <= 100.0


class _Killed(Exception):
    pass


def _records(run):
    return [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]


def test_run_killed_mid_epoch_resumes_to_identical_weights(tiny_motion, tmp_path, monkeypatch):
    """The uninterrupted run with default keys (epoch-end checkpoints only) against one that saves every
    step and dies right after the checkpoint of batch 1 of its v-DropPath epoch, then resumes."""
    extra = {"train.warmup_epochs": 0, "train.epochs": 1}
    ref = train(load_config(None, tiny_overrides(tiny_motion, tmp_path / "ref", **extra)))
    over = tiny_overrides(tiny_motion, tmp_path, **extra, **{"train.checkpoint_every_steps": 1})
    real = trainer.save_checkpoint

    def save_then_die(path, payload):
        real(path, payload)
        if payload["epoch"] == 0 and payload["batch"] == 1:
            raise _Killed

    monkeypatch.setattr(trainer, "save_checkpoint", save_then_die)
    with pytest.raises(_Killed):
        train(load_config(None, over))
    monkeypatch.setattr(trainer, "save_checkpoint", real)
    state = load_checkpoint(tmp_path / "run" / CHECKPOINT)
    assert (state["epoch"], state["batch"]) == (0, 1) and not (tmp_path / "run" / "summary.json").exists()
    resumed = train(load_config(None, over), resume="auto")
    assert resumed["weights_sha1"] == ref["weights_sha1"]
    assert resumed["drop_probs"] == ref["drop_probs"]
    recs, ref_recs = _records(tmp_path / "run"), _records(tmp_path / "ref" / "run")
    steps = [r["step"] for r in recs if r["kind"] == "step"]
    assert steps == sorted(set(steps)) == [r["step"] for r in ref_recs if r["kind"] == "step"]
    (epoch,) = [r for r in recs if r["kind"] == "epoch"]
    (ref_epoch,) = [r for r in ref_recs if r["kind"] == "epoch"]
    for k in ("loss", "ce", "reg", "train_acc", "val_top1", "drop_probs"):
        assert epoch[k] == ref_epoch[k], k


def test_run_sigkilled_mid_epoch_resumes_to_identical_weights(tiny_motion, tmp_path):
    """A real process, ``fusion3d train`` saving every step, killed with SIGKILL in the middle of its
    v-DropPath epoch (wherever it is: in a step, in a checkpoint write), then resumed in this process:
    the same weights, drop probabilities and step records as the uninterrupted run."""
    extra = {"train.warmup_epochs": 1, "train.epochs": 2, "train.batch_size": 1}
    ref = train(load_config(None, tiny_overrides(tiny_motion, tmp_path / "ref", **extra)))
    over = tiny_overrides(tiny_motion, tmp_path, **extra, **{"train.checkpoint_every_steps": 1})
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "fusion3d", "train", *over],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    ckpt = tmp_path / "run" / CHECKPOINT
    deadline = time.time() + 300
    seen = None
    while time.time() < deadline and proc.poll() is None:
        if ckpt.exists():
            state = load_checkpoint(ckpt)
            seen = (state["epoch"], state["batch"])
            if state["epoch"] == 1 and 1 <= state["batch"] <= 5:  # of 8 steps an epoch
                break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, f"the run ended before it could be killed (last seen {seen})"
    state = load_checkpoint(ckpt)
    assert state["epoch"] == 1 and state["batch"] >= 1, "the kill did not land mid-epoch"
    assert not (tmp_path / "run" / "summary.json").exists()
    resumed = train(load_config(None, over), resume="auto")
    assert resumed["weights_sha1"] == ref["weights_sha1"]
    assert resumed["drop_probs"] == ref["drop_probs"]
    recs, ref_recs = _records(tmp_path / "run"), _records(tmp_path / "ref" / "run")
    steps = [(r["step"], r["loss"]) for r in recs if r["kind"] == "step"]
    assert steps == [(r["step"], r["loss"]) for r in ref_recs if r["kind"] == "step"]
