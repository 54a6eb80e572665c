"""The trainer on real videos: phases, metrics, checkpoints, exact resume, DDP."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import tiny_overrides, torchrun

from fusion3d.config import ConfigError, load_config
from fusion3d.engine.checkpoint import CHECKPOINT, load_checkpoint
from fusion3d.engine.trainer import _validate, _validation_set, lr_factor, train
from fusion3d.errors import FusionError
from fusion3d.models import build_model

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
    """Both ranks end with the same weights, and the validation sharded over the two ranks (predictions
    gathered) equals single-process validation of the saved weights, number for number."""
    over = tiny_overrides(tiny_motion, tmp_path, **{"train.epochs": 1, "train.batch_size": 2})
    code, out = torchrun(["-m", "fusion3d", "train", *over])
    assert code == 0, out[-3000:]
    run = Path(tmp_path / "run")
    shas = [(run / f"weights_rank{r}.sha1").read_text() for r in (0, 1)]
    assert shas[0] == shas[1]
    assert json.loads((run / "summary.json").read_text())["weights_sha1"] + "\n" == shas[0]
    recs = _records(run)
    assert recs[0]["world_size"] == 2
    last = [r for r in recs if r["kind"] == "epoch"][-1]
    cfg = load_config(None, over)
    model = build_model(cfg.model, 4)
    model.load_state_dict(load_checkpoint(run / CHECKPOINT)["model"])
    val = _validation_set(cfg.data, cfg.train, cfg.run.seed, progress=False)
    single = _validate(
        model, val.loader, torch.device("cpu"), "vdroppath", cfg.train.eval_samples, cfg.run.seed, 1
    )
    for k in ("val_top1", "val_top5", "val_single_mean", "val_single_max"):
        assert last[k] == single[k], k


_RANK_SCRIPT = """
import json, os, sys
from fusion3d.config import load_config
from fusion3d.engine.trainer import train
from fusion3d.errors import FusionError
over, per_rank = json.loads(sys.argv[1]), json.loads(sys.argv[2])
mine = per_rank.get(os.environ["RANK"], {})
try:
    train(load_config(None, over + mine.get("overrides", [])), resume=mine.get("resume"))
except FusionError as e:
    # one write() per line: the two ranks share one pipe, and a pipe write under PIPE_BUF bytes
    # is never interleaved with another
    os.write(1, f"rank {os.environ['RANK']} stopped: {e}\\n".encode())
    sys.exit(2)
"""


def test_ranks_that_disagree_on_the_run_directory_or_the_checkpoint_all_stop_with_a_clear_error(
    tiny_motion, tmp_path
):
    over = tiny_overrides(tiny_motion, tmp_path, **{"train.epochs": 1, "train.batch_size": 2})
    script = tmp_path / "rank_script.py"
    script.write_text(_RANK_SCRIPT)
    # rank 1 on a node where run.out is another (empty) directory: run.out is not shared
    code, out = torchrun(
        [
            str(script),
            json.dumps(over),
            json.dumps({"1": {"overrides": [f"run.out={tmp_path / 'elsewhere'}"]}}),
        ]
    )
    assert code != 0
    for r, where in ((0, "run"), (1, "elsewhere")):  # each names run.out as it sees it
        assert (
            f"rank {r} stopped: run.out {tmp_path / where} is not shared by every rank: rank(s) 1 of 2" in out
        )
    assert not (tmp_path / "run" / "config.yaml").exists()
    # a checkpoint (one warm-up epoch), then rank 1 resumes from a file it cannot see
    train(load_config(None, over), max_epochs=1)
    ckpt = tmp_path / "run" / CHECKPOINT
    ranks = {"0": {"resume": str(ckpt)}, "1": {"resume": str(tmp_path / "missing.pt")}}
    code, out = torchrun([str(script), json.dumps(over), json.dumps(ranks)])
    assert code != 0
    for r in (0, 1):
        assert f"rank {r} stopped: cannot resume: rank 1: --resume {tmp_path / 'missing.pt'}" in out, out[
            -3000:
        ]


def test_ranks_resuming_from_different_checkpoints_are_refused(monkeypatch):
    """What every rank raises when the checkpoints the ranks read differ (the gather is faked)."""
    import fusion3d.engine.distributed as d

    a, b = (2, 0, 12, "ab" * 20), (2, 3, 15, "cd" * 20)
    monkeypatch.setattr(d, "gather_objects", lambda v, w: [(a, None), v])
    d.agree_on_resume(a, None, 0, 2)  # the same checkpoint everywhere
    with pytest.raises(
        FusionError,
        match=r"different checkpoints \(rank 0: epoch 2, batch 0, step 12.*rank 1: epoch 2, batch 3",
    ):
        d.agree_on_resume(b, None, 1, 2)
    with pytest.raises(FusionError, match=r"rank 1: no checkpoint \(a fresh start\)"):
        d.agree_on_resume(None, None, 1, 2)


def test_single_path_draws_are_fair_uniform_and_reproducible():
    from collections import Counter

    from fusion3d.models.strategy import single_path_strategy
    from fusion3d.models.units import UNITS

    fair = Counter()
    for step in range(4 * 25):  # 25 blocks of 4 steps: every unit of every slot exactly once per block
        fair.update(enumerate(single_path_strategy(6, step, seed=3, fair=True)))
        if step % 4 == 3:
            assert set(fair.values()) == {step // 4 + 1}
    assert len(fair) == 6 * len(UNITS)
    uniform = Counter(u for step in range(2000) for u in single_path_strategy(6, step, seed=3))
    assert all(abs(uniform[u] / 12000 - 0.25) < 0.02 for u in UNITS)  # 12000 draws: sd of a share ~0.004
    assert single_path_strategy(6, 17, seed=3) == single_path_strategy(6, 17, seed=3)
    assert single_path_strategy(6, 17, seed=3) != single_path_strategy(6, 17, seed=4)


def test_single_path_warmup_trains_sub_networks_and_validates_the_full_template(tiny_motion, tmp_path):
    over = tiny_overrides(tiny_motion, tmp_path, **{"train.warmup_sampling": "fair", "train.epochs": 1})
    summary = train(load_config(None, over))
    full = train(load_config(None, tiny_overrides(tiny_motion, tmp_path / "full", **{"train.epochs": 1})))
    assert summary["complete"] and summary["weights_sha1"] != full["weights_sha1"]
    epochs = [r for r in _records(tmp_path / "run") if r["kind"] == "epoch"]
    assert epochs[0]["phase"] == "warmup" and epochs[0]["val_measure"] == "template, every path on"
    assert "posterior predictive" in epochs[1]["val_measure"]  # v-DropPath follows as usual
    # every warm-up epoch kept full: the same weights as the full warm-up, step for step
    over = tiny_overrides(
        tiny_motion,
        tmp_path / "kept",
        **{"train.warmup_sampling": "fair", "train.warmup_full_epochs": 1, "train.epochs": 1},
    )
    assert train(load_config(None, over))["weights_sha1"] == full["weights_sha1"]


def test_annealed_temperature_and_per_batch_masks_change_v_droppath_only(tiny_motion, tmp_path):
    base = tiny_overrides(tiny_motion, tmp_path / "base", **{"train.epochs": 2})
    warm = train(load_config(None, base), max_epochs=1)["weights_sha1"]  # the warm-up alone
    full = train(load_config(None, base), resume="auto")["weights_sha1"]
    for i, extra in enumerate(({"train.temperature_from": 1.0}, {"train.relaxed_masks": "per_batch"})):
        over = tiny_overrides(tiny_motion, tmp_path / f"run{i}", **{"train.epochs": 2, **extra})
        assert train(load_config(None, over), max_epochs=1)["weights_sha1"] == warm  # untouched by either key
        done = train(load_config(None, over), resume="auto")
        assert done["complete"] and done["weights_sha1"] != full


def test_full_warmup_epochs_come_before_single_path_ones():
    from fusion3d.config import TrainConfig
    from fusion3d.engine.epoch import single_path_epoch

    t = TrainConfig(warmup_sampling="fair", warmup_full_epochs=2)
    assert [single_path_epoch(t, "warmup", e) for e in range(4)] == [False, False, True, True]
    assert not single_path_epoch(t, "vdroppath", 3)
    assert not single_path_epoch(TrainConfig(warmup_full_epochs=0), "warmup", 0)  # full sampling
    with pytest.raises(ConfigError, match="train.warmup_full_epochs"):
        load_config(None, ["train.warmup_full_epochs=-1"])


def test_k_auto_measures_k_once_and_a_resumed_run_keeps_it(tiny_motion, tmp_path):
    over = tiny_overrides(tiny_motion, tmp_path, **{"train.k_auto": 0.5, "train.epochs": 2})
    ref = train(load_config(None, over))
    c = ref["k_calibration"]
    assert ref["k"] == c["k"] > 0 and c["batches"] >= 1
    from fusion3d.models.regularizer import calibrated_k

    assert c["k"] == pytest.approx(calibrated_k(c["ce_pull"], c["unit_pull"], 0.5))
    # stopped after the first v-DropPath epoch, then resumed: the same k and the same weights
    shutil.rmtree(tmp_path / "run")
    train(load_config(None, over), max_epochs=2)
    resumed = train(load_config(None, over), resume="auto")
    assert resumed["k"] == ref["k"] and resumed["weights_sha1"] == ref["weights_sha1"]


def test_collapse_warnings_closed_form():
    from fusion3d.analysis.verdicts import at_chance, collapse_warnings

    # 6 classes on 300 videos: chance 16.7%, two standard errors 4.3 points
    assert at_chance(17.3, 6, 300) and at_chance(12.5, 6, 300) and not at_chance(21.5, 6, 300)
    assert collapse_warnings([[0.2, 0.9]] * 6, 80.0, 6, 300) == []
    assert len(collapse_warnings([[0.6, 0.99]] * 6, 80.0, 6, 300)) == 1  # every path dropped
    both = collapse_warnings([[0.6, 0.99]] * 6, 17.0, 6, 300)
    assert len(both) == 2 and "17.0% is at chance (16.7% for 6 classes" in both[0]


def test_a_collapsed_template_is_flagged_by_train_and_in_the_report(tiny_motion, tmp_path, capfd):
    from fusion3d.report import build_report

    over = tiny_overrides(
        tiny_motion, tmp_path, **{"train.epochs": 1, "train.k": 1000.0, "train.logit_lr": 5.0}
    )
    summary = train(load_config(None, over))
    assert any("dropped every path" in w for w in summary["warnings"])
    assert "warning: v-DropPath dropped every path" in capfd.readouterr().err
    _, md = build_report(tmp_path / "run")
    assert "**Warning: v-DropPath dropped every path" in md.read_text()
    fine = train(load_config(None, tiny_overrides(tiny_motion, tmp_path / "fine", **{"train.epochs": 1})))
    assert not any("dropped every path" in w for w in fine.get("warnings", []))  # (2 epochs: at chance)
