"""Every command shown in the README is exercised: parsed by the real CLI, and run at a tiny scale."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from fusion3d.cli import main, parse_args

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def readme_commands(prefix: str) -> list[list[str]]:
    """Commands in the README's code blocks that start with ``prefix`` (comments stripped)."""
    out = []
    for block in re.findall(r"```(?:bash)?\n(.*?)```", README, flags=re.S):
        for line in block.splitlines():
            line = line.split("  #")[0].strip()
            if line.startswith(prefix):
                out.append(shlex.split(line.replace("[--quick]", "--quick")))
    return out


def test_readme_shows_the_two_commands():
    assert "make demo" in README and "make test" in README


def test_every_fusion3d_command_in_the_readme_parses():
    cmds = readme_commands("fusion3d ")
    assert len(cmds) >= 8
    for cmd in cmds:
        parse_args(cmd[1:])  # raises SystemExit on a command the CLI does not accept


def test_torchrun_commands_in_the_readme_name_our_module_and_valid_keys():
    from fusion3d.config import load_config

    cmds = readme_commands("torchrun ")
    assert {c[c.index("fusion3d") + 1] for c in cmds} == {"train", "sample"}
    for cmd in cmds:
        args = parse_args(cmd[cmd.index("fusion3d") + 1 :])
        if args.verb == "train":
            load_config(ROOT / args.config, args.overrides)
        else:  # run under torchrun by tests/test_sample.py::test_sampling_under_torchrun_gives_the_single_process_file
            assert args.num == 100


def test_first_run_commands_work_end_to_end(tmp_path, monkeypatch, capsys):
    """The README's step-by-step first run, with tiny sizes appended as overrides."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    tiny = [
        "run.threads=1",
        "train.warmup_epochs=1",
        "train.epochs=1",
        "train.batch_size=4",
        "train.eval_samples=2",
        "train.progress=false",
        "data.clip_len=4",
    ]
    extra = {
        "data": ["--classes", "4", "--videos-per-class", "5", "--frames", "12", "--size", "48"],
        "train": tiny,
        "sample": ["--num", "4", "--recal-clips", "8"],
        "analyze": [],
        "retrain": ["train.warmup_epochs=0"],
        "derive": [],
        "report": [],
    }
    block = README.split("A first run on the embedded default")[1].split("```")[1]
    steps = [shlex.split(ln) for ln in block.splitlines() if ln.startswith("fusion3d ")]
    assert [s[1] for s in steps] == ["data", "train", "sample", "analyze", "retrain", "derive", "report"]
    for cmd in steps:
        assert main(cmd[1:] + extra[cmd[1]]) == 0, cmd
    run = tmp_path / "runs" / "synth_motion"
    for name in (
        "config.yaml",
        "checkpoint.pt",
        "metrics.jsonl",
        "strategies.csv",
        "marginals.csv",
        "figure4.png",
        "opt_strategy.json",
        "retrain.csv",
        "derived/resnet18_3d_ablation.json",
        "report.html",
        "report.md",
        "rf_vs_accuracy.png",
    ):
        assert (run / name).stat().st_size > 0, name
    assert len(pd.read_csv(run / "strategies.csv")) >= 4
    assert main(["data", "scan", "configs/synth_motion.yaml", "--subset", "train"]) == 0
    assert main(["config", "--schema"]) == 0
    assert main(["config", "configs/synth_motion.yaml", "data.clip_len=4"]) == 0
    assert "clip_len: 4" in capsys.readouterr().out


def test_config_error_is_reported_with_the_key_and_exit_code_2(capsys):
    assert main(["config", "data.clip_lenn=3"]) == 2
    assert "data.clip_lenn" in capsys.readouterr().err


@pytest.mark.parametrize(
    "script,args",
    [
        (
            "bench_train.py",
            ["--preset", "tiny", "--repeats", "1", "--batch", "2", "--size", "32", "--threads", "1"],
        ),
        ("bench_decode.py", ["--skip-real", "--seconds", "0.2", "--videos-per-class", "2"]),
        ("bench_sample.py", ["--num", "1", "--repeats", "1", "--threads", "1"]),
        (
            "bench_cache.py",
            [
                "--synthetic",
                "--short-side",
                "64",
                "--crop-size",
                "56",
                "--clip-len",
                "4",
                "--clips",
                "1",
                "--crops",
                "1",
            ],
        ),
    ],
)
def test_benchmark_scripts_run(script, args, tmp_path):
    extra = {
        "bench_decode.py": ["--cache", str(tmp_path)],
        "bench_cache.py": ["--cache", str(tmp_path)],
        "bench_sample.py": ["--work", str(tmp_path)],
    }.get(script, [])
    res = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *args, *extra],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert "ratio" in res.stdout or "speedup" in res.stdout


def test_readme_images_exist():
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", README)
    assert images
    for rel in images:
        assert (ROOT / rel).stat().st_size > 1000, rel
