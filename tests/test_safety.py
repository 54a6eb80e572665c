"""Fault injection, fixed: divergence, run-directory safety, resume semantics, atomic writes, report
escaping and annotation paths that leave the data root."""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from conftest import tiny_overrides

from fusion3d.cli import main
from fusion3d.config import ConfigError, explicit_keys, load_config
from fusion3d.data.formats import parse
from fusion3d.data.scan import scan_video
from fusion3d.engine.checkpoint import CHECKPOINT, load_checkpoint, non_finite_tensors
from fusion3d.errors import FusionError
from fusion3d.report.document import Document, Para, Section, Table
from fusion3d.report.render import render_markdown
from fusion3d.run.layout import RunDir
from fusion3d.utils import atomic_write_bytes, clean_stale_temps


def _strict_json_lines(path: Path) -> list[dict]:
    def reject(name):
        raise ValueError(f"bare {name} in {path}")

    return [json.loads(ln, parse_constant=reject) for ln in path.read_text().splitlines() if ln.strip()]


@pytest.fixture(scope="module")
def trained(tiny_motion, tmp_path_factory):
    """A finished 1-epoch tiny run and the overrides that made it."""
    base = tmp_path_factory.mktemp("safety")
    over = tiny_overrides(tiny_motion, base, **{"train.warmup_epochs": 1, "train.epochs": 0})
    assert main(["train", *over]) == 0
    return base / "run", over


def _copy(run: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(run, dst)
    return dst


# ----------------------------------------------------------------------------- 1. divergence


def test_divergence_stops_at_the_first_non_finite_step_and_keeps_the_last_good_checkpoint(
    tiny_motion, tmp_path, capsys
):
    over = tiny_overrides(tiny_motion, tmp_path, **{"train.lr": 1e6, "train.epochs": 2})
    rc = main(["train", *over])
    err = capsys.readouterr().err
    assert rc == 2 and "diverged" in err and "step " in err and "epoch " in err, err
    run = tmp_path / "run"
    assert not (run / "summary.json").exists()
    _strict_json_lines(run / "metrics.jsonl")  # no bare NaN
    if (run / CHECKPOINT).exists():  # the last good state: finite, from before the failing epoch
        state = load_checkpoint(run / CHECKPOINT)
        assert non_finite_tensors(state["model"]) == []
        assert f"holds epoch {state['epoch']}" in err
        assert f"at epoch {state['epoch'] + 1}," in err
    else:
        assert "no checkpoint was written" in err


@pytest.mark.parametrize(
    "override, key",
    [
        ("train.lr=nan", "train.lr"),
        ("train.k=inf", "train.k"),
        ("train.momentum=-.inf", "train.momentum"),
        ("data.std=[0,0,0]", "data.std"),
        ("data.mean=[0.4,.nan,0.4]", "data.mean"),
        ("run.seed=-1", "run.seed"),
        ("model.strategy=S|XX", "model.strategy"),
    ],
)
def test_config_rejects_non_finite_and_out_of_range_values_by_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(None, [override])


def test_sample_and_analyze_refuse_non_finite_weights(trained, tmp_path):
    from fusion3d.run.loading import load_run

    run = _copy(trained[0], tmp_path)
    state = torch.load(run / CHECKPOINT, weights_only=True)
    name = next(k for k, v in state["model"].items() if v.is_floating_point())
    state["model"][name][...] = float("inf")
    torch.save(state, run / CHECKPOINT)
    with pytest.raises(FusionError, match="non-finite"):
        load_run(run)


def test_metrics_log_never_writes_bare_nan(tmp_path):
    from fusion3d.engine.metrics import MetricsLog

    log = MetricsLog(tmp_path / "m.jsonl", True)
    log.write({"kind": "step", "step": 1, "loss": float("nan"), "p": [1.0, float("inf")]})
    assert _strict_json_lines(tmp_path / "m.jsonl") == [
        {"kind": "step", "step": 1, "loss": None, "p": [1.0, None]}
    ]


# ----------------------------------------------------------------------------- 3. run directories


def test_overwrite_moves_the_old_run_aside(trained, tmp_path, capsys):
    run_src, over = trained
    run = _copy(run_src, tmp_path)
    old = (run / CHECKPOINT).read_bytes()
    assert main(["train", *over, f"run.out={run}", "--overwrite"]) == 0
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("copy.old-")]
    assert len(aside) == 1 and (aside[0] / CHECKPOINT).read_bytes() == old
    assert RunDir(run).is_run() and "moved the old run" in capsys.readouterr().out


def test_failed_checks_write_nothing_into_an_existing_directory(tiny_motion, tmp_path):
    """A train whose data checks fail leaves an existing (non-run) directory as it was."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine\n")
    over = tiny_overrides(tiny_motion, tmp_path, **{"train.batch_size": 64})
    assert main(["train", *over]) == 2
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_resume_repairs_a_torn_metrics_line_and_applies_safe_overrides(trained, tmp_path, capsys):
    run_src, over = trained
    run = _copy(run_src, tmp_path)
    with open(run / "metrics.jsonl", "a") as fh:
        fh.write('{"kind": "step", "step": 99, "lo')  # a crash in the middle of a write
    rc = main(["train", *over, f"run.out={run}", "train.epochs=1", "--resume", "auto"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert "torn last line" in out.err and str(run / "metrics.jsonl") in out.err
    assert "applying train.epochs=1" in out.out
    recs = _strict_json_lines(run / "metrics.jsonl")
    assert [r["epoch"] for r in recs if r["kind"] == "epoch"] == [1, 2]
    assert load_checkpoint(run / CHECKPOINT)["epoch"] == 2


def test_resume_refuses_an_unsafe_override_by_key(trained, tmp_path):
    run_src, over = trained
    run = _copy(run_src, tmp_path)
    with pytest.raises(FusionError, match=r"train\.lr=0\.5 \(the run has 0\.05\)"):
        from fusion3d.engine.trainer import train

        cfg = load_config(None, [*over, f"run.out={run}", "train.lr=0.5"])
        train(cfg, resume="auto", explicit=explicit_keys(None, [*over, "train.lr=0.5"]))


def test_explicit_keys_come_from_the_file_and_the_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("train:\n  lr: 0.1\n  epochs: 2\nrun: {out: x}\n")
    assert explicit_keys(f, ["data.clip_len=4", "model={name: tiny}"]) == {
        "train.lr",
        "train.epochs",
        "run.out",
        "data.clip_len",
        "model.name",
    }


def test_sample_refuses_an_unfinished_run_unless_asked(trained, tmp_path):
    from fusion3d.stages.sample import run_sample

    run = _copy(trained[0], tmp_path)
    state = torch.load(run / CHECKPOINT, weights_only=True)
    state["config"]["train"]["epochs"] = 2
    torch.save(state, run / CHECKPOINT)
    with pytest.raises(FusionError, match="--allow-unfinished"):
        run_sample(run, num=0, progress=False, recalibrate=False)
    df = run_sample(run, num=0, progress=False, recalibrate=False, allow_unfinished=True, limit=1)
    assert len(df) == 1


# ----------------------------------------------------------------------------- 6. atomic writes


def test_atomic_write_uses_the_umask_mode_and_cleans_dead_writers_temp_files(tmp_path):
    target = tmp_path / "f.json"
    old = os.umask(0o027)
    try:
        atomic_write_bytes(target, b"1")
    finally:
        os.umask(old)
    assert (target.stat().st_mode & 0o777) == 0o640
    host = __import__("socket").gethostname()
    tag = "".join(c if c.isalnum() or c in "-_" else "_" for c in host)
    dead = tmp_path / f".f.json.{tag}-999999999.abc123.tmp"  # pid beyond pid_max: never alive
    alive = tmp_path / f".f.json.{tag}-{os.getpid()}.abc124.tmp"
    foreign = tmp_path / ".f.json.otherhost-1.abc125.tmp"
    for p in (dead, alive, foreign):
        p.write_bytes(b"half")
    atomic_write_bytes(target, b"2")
    assert not dead.exists() and alive.exists() and foreign.exists() and target.read_bytes() == b"2"
    assert clean_stale_temps(tmp_path) == []


def test_a_full_disk_is_one_clear_error_and_the_old_file_survives(tmp_path, monkeypatch):
    target = tmp_path / "checkpoint.pt"
    target.write_bytes(b"old")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(FusionError, match="no space left.*checkpoint.pt"):
        atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]


# ----------------------------------------------------------------------------- 7. report.md


def test_report_markdown_escapes_html_from_data(tmp_path):
    evil = "<img src=x onerror=alert(1)>"
    doc = Document(
        title=f"run {evil}",
        meta=[evil],
        sections=[Section("s", evil, [Para(f"strategy {evil} and `code <b>`"), Table(["label"], [[evil]])])],
    )
    md = render_markdown(doc, tmp_path)
    assert "<img" not in md and "&lt;img src=x onerror=alert(1)&gt;" in md
    assert "`code <b>`" in md  # code spans are literal already


# ----------------------------------------------------------------------------- 8. annotation paths


def test_annotation_paths_that_leave_the_root_are_refused_and_scanned(tiny_motion, tmp_path, capsys):
    root = tmp_path / "data"
    shutil.copytree(tiny_motion, root)
    lst = root / "ucfTrainTestlist" / "trainlist01.txt"
    first = lst.read_text().splitlines()[0].split()
    line = f"{first[0].split('/')[0]}/../../outside.mp4 {first[1]}"
    lst.write_text(lst.read_text() + line + "\n")
    (tmp_path / "outside.mp4").write_bytes((sorted(root.rglob("*.mp4"))[0]).read_bytes())
    parsed = parse("ucf101", root, root / "ucfTrainTestlist", "train")
    assert len(parsed.escaped) == 1 and all("outside" not in r.path for r in parsed.records)
    over = tiny_overrides(root, tmp_path)
    assert main(["train", *over]) == 2
    assert "outside data.root" in capsys.readouterr().err
    assert main(["data", "scan", *over, "--csv", str(tmp_path / "scan.csv")]) == 0
    out = capsys.readouterr().out
    assert "escapes_root" in out and "outside.mp4" in out


def test_scan_names_device_files_and_directories_named_like_videos(tmp_path):
    row = scan_video("/dev/zero")
    assert row["status"] == "not_a_video" and "character device" in row["detail"]
    folder = tmp_path / "clip.mp4"
    folder.mkdir()
    row = scan_video(folder)
    assert row["status"] == "not_a_video" and "directory" in row["detail"]
