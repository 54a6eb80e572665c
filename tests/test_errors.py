"""One error path: bad inputs of every kind (config, arguments, data, run directories, checkpoints)
through ``fusion3d.cli.main``. Each must exit 2 with exactly one line on stderr that names the
problem, print no traceback, and leave the run directory byte-identical (every file hashed)."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import tiny_overrides

from fusion3d.cli import main
from fusion3d.engine.checkpoint import CHECKPOINT

PY = sys.executable


@pytest.fixture(scope="module")
def env(tiny_motion, tmp_path_factory):
    """One tiny trained run (1 epoch), a dataset whose videos are all broken, one whose list escapes
    its root, and the overrides that train on each."""
    base = tmp_path_factory.mktemp("errors")
    over = tiny_overrides(tiny_motion, base, **{"train.warmup_epochs": 1, "train.epochs": 0})
    assert main(["train", *over]) == 0
    broken = base / "broken"
    shutil.copytree(tiny_motion, broken)
    for video in broken.rglob("*.mp4"):
        video.write_bytes(b"\x00not a video\x00" * 8)
    escape = base / "escape"
    shutil.copytree(tiny_motion, escape)
    lst = escape / "ucfTrainTestlist" / "trainlist01.txt"
    first = lst.read_text().splitlines()[0].split()
    cls = first[0].split("/")[0]
    lst.write_text(lst.read_text() + f"{cls}/../../outside.mp4 {first[1]}\n")
    bad_json = base / "bad_strategy.json"
    bad_json.write_text('{"units": ["S", "ST"')
    bad_yaml = base / "bad.yaml"
    bad_yaml.write_text("train: {lr: [1, 2\n")
    return {
        "base": base,
        "run": base / "run",
        "over": over,
        "motion": tiny_motion,
        "broken": broken,
        "escape": escape,
        "bad_json": bad_json,
        "bad_yaml": bad_yaml,
    }


def _with(over: list[str], **extra) -> list[str]:
    """``over`` with some keys replaced (later keys win, but replacing keeps the argv readable)."""
    keep = [o for o in over if o.split("=", 1)[0] not in extra]
    return keep + [f"{k}={v}" for k, v in extra.items()]


def _copy_run(env, name: str) -> Path:
    dst = env["base"] / f"copy_{name}"
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(env["run"], dst)
    return dst


def _edit_checkpoint(path: Path, edit) -> None:
    state = torch.load(path / CHECKPOINT, map_location="cpu", weights_only=True)
    edit(state)
    torch.save(state, path / CHECKPOINT)


def _nan_weight(state):
    name = next(k for k, v in state["model"].items() if v.is_floating_point())
    state["model"][name] = torch.full_like(state["model"][name], float("nan"))


def _drop_weight(state):
    state["model"].pop(next(iter(state["model"])))


def _unfinished(state):
    state["config"]["train"]["epochs"] = 3  # the run now plans 4 epochs and has trained 1


def _hash_tree(root: Path) -> dict[str, str]:
    if not root.exists():
        return {}
    return {
        str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


class _Holder:
    """A second process holding a lock file (as a running trainer or sampler would)."""

    def __init__(self, path: Path):
        code = (
            "import sys, time; from filelock import FileLock; "
            f"l = FileLock({str(path)!r}); l.acquire(); print('held', flush=True); time.sleep(120)"
        )
        self.proc = subprocess.Popen([PY, "-c", code], stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline().strip() == "held"

    def close(self):
        self.proc.kill()
        self.proc.wait()


def _cases():
    """(id, setup(env) -> (argv, watched dir, resource to close or None), expected text)."""

    def train(**extra):
        def setup(env):
            out = env["base"] / "fresh"
            return ["train", *_with(env["over"], **{"run.out": out, **extra})], out, None

        return setup

    def train_args(*args, **extra):
        def setup(env):
            out = extra.pop("run.out", None) or env["base"] / "fresh"
            return ["train", *_with(env["over"], **{"run.out": out, **extra}), *args], out, None

        return setup

    def init_without_weights(env):
        import torch

        path = env["base"] / "weights_only_elsewhere.pt"
        torch.save({"state_dict": {}}, path)
        return train_args("--init", str(path))(env)

    def on_run(*args, **extra):
        def setup(env):
            return ["train", *_with(env["over"], **extra), *args], env["run"], None

        return setup

    def verb(name, *args, copy=None, edit=None):
        def setup(env):
            run = env["run"]
            if copy is not None:
                run = _copy_run(env, copy)
                if edit is not None:
                    _edit_checkpoint(run, edit)
            argv = [name, str(run), *[a.format(**env) if isinstance(a, str) else a for a in args]]
            return argv, run, None

        return setup

    def locked(lock_name, argv_of):
        def setup(env):
            holder = _Holder(env["run"] / lock_name)
            return argv_of(env), env["run"], holder

        return setup

    def bad_data(which, text):
        def setup(env):
            root = env[which]
            out = env["base"] / "fresh"
            argv = _with(
                env["over"],
                **{"data.root": root, "data.annotations": root / "ucfTrainTestlist", "run.out": out},
            )
            return ["train", *argv], out, None

        return setup

    def not_a_run(name, *args):
        def setup(env):
            empty = env["base"] / "not_a_run"
            empty.mkdir(exist_ok=True)
            return [name, str(empty), *args], empty, None

        return setup

    return [
        # config
        ("lr-nan", train(**{"train.lr": "nan"}), "train.lr"),
        ("k-inf", train(**{"train.k": "inf"}), "train.k"),
        ("std-zero", train(**{"data.std": "[0,0,0]"}), "data.std"),
        ("seed-negative", train(**{"run.seed": -1}), "run.seed"),
        ("strategy-bad-unit", train(**{"model.strategy": "S|XX"}), "model.strategy"),
        ("strategy-length", train(**{"model.strategy": "S|ST"}), "model.strategy"),
        ("unknown-key", train(**{"train.lrr": 1}), "train.lrr"),
        ("clip-len-zero", train(**{"data.clip_len": 0}), "data.clip_len"),
        ("bad-choice", train(**{"data.flip": "sideways"}), "data.flip"),
        (
            "config-file-missing",
            lambda env: (["config", str(env["base"] / "nothing.yaml")], env["base"] / "fresh", None),
            "nothing.yaml",
        ),
        (
            "config-file-bad-yaml",
            lambda env: (["train", str(env["bad_yaml"])], env["base"] / "fresh", None),
            "bad.yaml",
        ),
        (
            "config-verb-strategy",
            lambda env: (["config", "model.strategy=S|XX"], env["base"] / "fresh", None),
            "model.strategy",
        ),
        ("batch-larger-than-split", train(**{"train.batch_size": 64}), "train.batch_size"),
        ("device-unknown", train(**{"run.device": "tpu0"}), "tpu0"),
        ("device-absent-cuda", train(**{"run.device": "cuda:99"}), "cuda:99"),
        # arguments
        ("max-epochs-negative", train_args("--max-epochs", "-2"), "--max-epochs"),
        ("resume-missing-file", train_args("--resume", "/nonexistent/ckpt.pt"), "/nonexistent/ckpt.pt"),
        ("init-not-a-fusion3d-checkpoint", init_without_weights, "not a fusion3d checkpoint"),
        ("overwrite-and-resume", on_run("--resume", "auto", "--overwrite"), "--overwrite"),
        ("sample-recal-negative", verb("sample", "--recal-clips", "-5"), "--recal-clips"),
        ("sample-num-negative", verb("sample", "-n", "-1"), "--num"),
        ("sample-device-unknown", verb("sample", "--device", "tpu0"), "tpu0"),
        ("analyze-top-k-zero", verb("analyze", "--top-k", "0"), "--top-k"),
        ("retrain-top-abc", verb("retrain", "--strategy", "top:abc"), "top:abc"),
        ("retrain-strategy-bad-json", verb("retrain", "--strategy", "{bad_json}"), "bad_strategy.json"),
        ("derive-input", verb("derive", "--backbone", "r3d18", "--input", "8x32"), "--input"),
        # data
        ("every-video-broken", bad_data("broken", "no usable video"), "no usable video"),
        ("annotation-escapes-root", bad_data("escape", "outside"), "outside data.root"),
        ("data-root-missing", train(**{"data.root": "/nonexistent/videos"}), "/nonexistent/videos"),
        # run directories
        ("train-into-existing-run", on_run(), "already holds a run"),
        ("resume-changed-lr", on_run("--resume", "auto", **{"train.lr": 0.5}), "train.lr"),
        ("resume-changed-model", on_run("--resume", "auto", **{"model.drop_init": 0.3}), "model.drop_init"),
        (
            "another-trainer",
            locked(".train.lock", lambda env: ["train", *env["over"], "--resume", "auto"]),
            "another process is training",
        ),
        (
            "another-sampler",
            locked(".strategies.csv.lock", lambda env: ["sample", str(env["run"]), "-n", "1"]),
            "another process is sampling",
        ),
        ("analyze-before-sample", verb("analyze"), "strategies.csv"),
        ("sample-not-a-run", not_a_run("sample"), "not a run directory"),
        # checkpoints
        ("sample-unfinished", verb("sample", "-n", "1", copy="unfinished", edit=_unfinished), "not finished"),
        ("sample-nan-weights", verb("sample", "-n", "1", copy="nan", edit=_nan_weight), "non-finite"),
        ("analyze-nan-weights", verb("analyze", copy="nan2", edit=_nan_weight), "non-finite"),
        (
            "sample-weights-mismatch",
            verb("sample", "-n", "1", copy="mismatch", edit=_drop_weight),
            "do not fit",
        ),
        ("sample-corrupt-checkpoint", lambda env: _corrupt(env, ["sample", "-n", "1"]), "could not be read"),
        ("resume-corrupt-checkpoint", lambda env: _corrupt(env, None), "could not be read"),
    ]


def _corrupt(env, argv):
    run = _copy_run(env, "corrupt" + ("_t" if argv is None else "_s"))
    data = (run / CHECKPOINT).read_bytes()
    (run / CHECKPOINT).write_bytes(data[: len(data) // 3])
    if argv is None:
        return ["train", *_with(env["over"], **{"run.out": run}), "--resume", "auto"], run, None
    return [argv[0], str(run), *argv[1:]], run, None


CASES = _cases()


def test_the_table_is_large_enough():
    assert len(CASES) >= 30 and len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gives_one_line_exit_2_and_leaves_the_run_alone(case, env, capsys):
    _, setup, expected = case
    argv, watched, resource = setup(env)
    before = _hash_tree(watched)
    capsys.readouterr()
    t0 = time.time()
    try:
        rc = main([str(a) for a in argv])
    finally:
        if resource is not None:
            resource.close()
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2, (argv, err)
    assert len(lines) == 1, err
    assert lines[0].startswith("fusion3d: error: ") and expected in lines[0], lines[0]
    assert "Traceback" not in err
    assert _hash_tree(watched) == before, f"{watched} changed"
    assert time.time() - t0 < 120


def test_debug_shows_the_traceback(env):
    with pytest.raises(Exception, match="train.lr"):
        main(["--debug", "train", *_with(env["over"], **{"train.lr": "nan"})])
