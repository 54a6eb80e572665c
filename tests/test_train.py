"""The trainer on real videos: phases, metrics, checkpoints, exact resume, DDP."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import tiny_overrides

from fusion3d.config import load_config
from fusion3d.engine.checkpoint import CHECKPOINT, load_checkpoint
from fusion3d.engine.trainer import lr_factor, train

PY = sys.executable


def _records(run):
    return [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]


def test_lr_schedules_have_closed_forms():
    assert lr_factor("multistep", 3.5, 10, [2, 4], 0.1) == pytest.approx(0.1)
    assert lr_factor("multistep", 4.0, 10, [2, 4], 0.1) == pytest.approx(0.01)
    assert lr_factor("cosine", 0.0, 10, [], 0.1) == 1.0
    assert lr_factor("cosine", 5.0, 10, [], 0.1) == pytest.approx(0.5)
    assert lr_factor("constant", 7.0, 10, [], 0.1) == 1.0


def test_training_run_writes_config_metrics_checkpoint_and_summary(tiny_motion, tmp_path):
    cfg = load_config(None, tiny_overrides(tiny_motion, tmp_path))
    summary = train(cfg)
    run = tmp_path / "run"
    assert (run / "config.yaml").is_file() and (run / CHECKPOINT).is_file() and summary["complete"]
    recs = _records(run)
    epochs = [r for r in recs if r["kind"] == "epoch"]
    assert [r["phase"] for r in epochs] == ["warmup", "vdroppath", "vdroppath"]
    assert epochs[0]["reg"] == 0 and epochs[1]["reg"] > 0
    assert all("val_top1" in r and "data_time" in r and "step_time" in r for r in epochs)
    assert "posterior predictive" in epochs[-1]["val_measure"]
    steps = [r for r in recs if r["kind"] == "step"]
    assert steps and all({"loss", "ce", "reg", "lr", "p_s_mean", "p_t_mean"} <= r.keys() for r in steps)
    # warm-up leaves the drop probabilities at their initial value; v-DropPath moves them
    p0 = torch.tensor(epochs[0]["drop_probs"])
    assert torch.allclose(p0, torch.full_like(p0, 0.1), atol=1e-6)
    assert not torch.allclose(torch.tensor(epochs[-1]["drop_probs"]), p0, atol=1e-4)
    state = load_checkpoint(run / CHECKPOINT)
    assert state["epoch"] == 3 and {"model", "optimizer", "scheduler", "rng", "config"} <= state.keys()


def test_large_k_raises_every_drop_probability(tiny_motion, tmp_path):
    cfg = load_config(
        None,
        tiny_overrides(
            tiny_motion, tmp_path, **{"train.k": 50.0, "train.warmup_epochs": 0, "train.epochs": 1}
        ),
    )
    p = torch.tensor(train(cfg)["drop_probs"])
    assert (p > 0.1).all()


def test_killed_run_resumes_to_identical_weights(tiny_motion, tmp_path):
    over = tiny_overrides(tiny_motion, tmp_path, **{"train.epochs": 3})
    ref = train(load_config(None, over))
    shutil.rmtree(tmp_path / "run")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [PY, "-m", "fusion3d", "train", *over], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    ckpt = tmp_path / "run" / CHECKPOINT
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if ckpt.exists() and load_checkpoint(ckpt)["epoch"] >= 2:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (tmp_path / "run" / "summary.json").exists()
    resumed = train(load_config(None, over), resume="auto")
    assert resumed["weights_sha1"] == ref["weights_sha1"]
    assert resumed["drop_probs"] == ref["drop_probs"]
    epochs = [r["epoch"] for r in _records(tmp_path / "run") if r["kind"] == "epoch"]
    assert epochs == [1, 2, 3, 4]


def test_init_loads_weights_only(tiny_motion, tmp_path):
    over = tiny_overrides(tiny_motion, tmp_path, **{"train.warmup_epochs": 1, "train.epochs": 0})
    train(load_config(None, over))
    other = tiny_overrides(
        tiny_motion,
        tmp_path,
        **{"run.out": tmp_path / "run2", "train.warmup_epochs": 1, "train.epochs": 0, "train.lr": 1e-9},
    )
    train(load_config(None, other), init=str(tmp_path / "run" / CHECKPOINT))
    a = load_checkpoint(tmp_path / "run" / CHECKPOINT)["model"]
    b = load_checkpoint(tmp_path / "run2" / CHECKPOINT)["model"]
    w = "classifier.weight" if "classifier.weight" in a else next(k for k in a if k.endswith("weight"))
    assert torch.allclose(a[w], b[w], atol=1e-5)


def test_unreadable_training_video_is_excluded_and_counted(tiny_motion, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(tiny_motion, root)
    bad = sorted(root.rglob("*.mp4"))[0]
    bad.write_bytes(b"\x00" * 100)
    cfg = load_config(None, tiny_overrides(root, tmp_path, **{"train.warmup_epochs": 1, "train.epochs": 0}))
    assert train(cfg)["complete"]
    start = _records(tmp_path / "run")[0]
    assert start["kind"] == "start"
    assert start["excluded_train_videos"] + start["excluded_val_videos"] == 1


def test_resume_refuses_a_different_model(tiny_motion, tmp_path):
    over = tiny_overrides(tiny_motion, tmp_path, **{"train.warmup_epochs": 1, "train.epochs": 0})
    train(load_config(None, over))
    with pytest.raises(RuntimeError, match="model config differs"):
        train(load_config(None, over + ["model.name=small"]), resume="auto")


def test_resume_refuses_a_changed_split(tiny_motion, tmp_path):
    over = tiny_overrides(tiny_motion, tmp_path, **{"train.warmup_epochs": 1, "train.epochs": 1})
    train(load_config(None, over), max_epochs=1)
    splits = tmp_path / "run" / "splits.json"
    recorded = json.loads(splits.read_text())
    recorded["fit"] = recorded["fit"][1:]  # what an older split rule or a changed dataset leaves behind
    splits.write_text(json.dumps(recorded))
    with pytest.raises(RuntimeError, match="split rebuilt from the config differs"):
        train(load_config(None, over), resume="auto")


def test_two_process_ddp_run_ends_with_identical_weights(tiny_motion, tmp_path):
    over = tiny_overrides(tiny_motion, tmp_path, **{"train.epochs": 1, "train.batch_size": 2})
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with socket.socket() as s:  # torchrun's --master_port=0 hangs the rendezvous: pick a free port
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [
            PY,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node=2",
            f"--master_port={port}",
            "-m",
            "fusion3d",
            "train",
            *over,
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=300)
    finally:  # never leave worker processes behind, whatever happened
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, out[-3000:]
    run = Path(tmp_path / "run")
    shas = [(run / f"weights_rank{r}.sha1").read_text() for r in (0, 1)]
    assert shas[0] == shas[1]
    assert json.loads((run / "summary.json").read_text())["weights_sha1"] + "\n" == shas[0]
    start = _records(run)[0]
    assert start["world_size"] == 2
