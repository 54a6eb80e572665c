"""fusion3d works as an installed package, outside the checkout: it declares exactly the distributions it
imports, ships its configs (usable by name) and its license, and a wheel built from the source tree,
installed into a fresh virtual environment, runs ``--version``, ``config --list`` and a tiny training
run from a shipped config in a folder outside the checkout."""

from __future__ import annotations

import ast
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from fusion3d.cli import main, version
from fusion3d.config import ConfigError, load_config
from fusion3d.configs import CONFIG_DIR, config_path, list_configs

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "fusion3d"
SHIPPED = {
    "kinetics400",
    "paper_exact",
    "ssv1",
    "ssv2",
    "synth_appearance",
    "synth_motion",
    "synth_order",
    "synth_texture",
    "ucf101",
}


def _pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _dist_name(requirement: str) -> str:
    name = re.match(r"[A-Za-z0-9._-]+", requirement).group(0)
    return re.sub(r"[-_.]+", "-", name).lower()


def _imported_top_level() -> set[str]:
    """Top-level modules the package imports, anywhere (module level or inside functions)."""
    found = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module.split(".")[0])
    return found - set(sys.stdlib_module_names) - {"fusion3d", "__future__"}


# ----------------------------------------------------------------------------- metadata


def test_dependencies_are_exactly_the_imported_distributions():
    declared = {_dist_name(r) for r in _pyproject()["project"]["dependencies"]}
    providers = importlib.metadata.packages_distributions()
    imported = set()
    for module in _imported_top_level():
        assert module in providers, f"fusion3d imports {module!r}, which no installed distribution provides"
        imported.update(_dist_name(d) for d in providers[module])
    assert declared == imported, (
        f"declared but never imported: {sorted(declared - imported)}; "
        f"imported but not declared: {sorted(imported - declared)}"
    )


def test_the_license_is_declared_and_shipped():
    project = _pyproject()["project"]
    assert project["license"] == "MIT" and project["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License") and "the fusion3d authors" in text


def test_package_data_patterns_match_files():
    patterns = _pyproject()["tool"]["setuptools"]["package-data"]["fusion3d"]
    assert "configs/*.yaml" in patterns
    for pattern in patterns:
        folder = PACKAGE / Path(pattern).parent
        assert folder.is_dir(), f"package-data names {pattern}, but fusion3d/{folder.name} does not exist"


# ----------------------------------------------------------------------------- shipped configs


def test_root_configs_mirror_the_shipped_ones():
    """``configs/`` at the repository root (the README's paths) holds the same files as the package's
    ``fusion3d/configs/`` (what an installed fusion3d reads). Edit both, or copy one over the other."""
    root = {p.name: p.read_bytes() for p in (ROOT / "configs").glob("*.yaml")}
    shipped = {p.name: p.read_bytes() for p in CONFIG_DIR.glob("*.yaml")}
    assert sorted(root) == sorted(shipped)
    differ = sorted(n for n in root if root[n] != shipped[n])
    assert not differ, f"configs/ and fusion3d/configs/ differ in {differ}"


def test_config_names_resolve_to_the_shipped_files(tmp_path, monkeypatch):
    assert set(list_configs()) == SHIPPED
    assert config_path(None) is None
    assert config_path("ucf101") == config_path("ucf101.yaml") == CONFIG_DIR / "ucf101.yaml"
    assert load_config(config_path("ucf101")).model.name == "densenet121_3d"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ucf101.yaml").write_text("model:\n  name: tiny\n")
    assert config_path("ucf101.yaml") == Path("ucf101.yaml")  # an existing file wins over the name
    with pytest.raises(ConfigError, match="shipped configs: kinetics400, paper_exact, ssv1"):
        config_path("ucf102")
    with pytest.raises(ConfigError, match="pass the name ssv2 instead"):
        config_path("configs/ssv2.yaml")  # no such file here: the hint names the shipped config
    with pytest.raises(ConfigError, match="does not exist$"):
        config_path("elsewhere/mine.yaml")


def test_version_and_config_list(capsys):
    assert version() == importlib.metadata.version("fusion3d")
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"fusion3d {version()}"
    assert main(["config", "--list"]) == 0
    out = capsys.readouterr().out
    assert all(re.search(rf"^{name} +\S", out, flags=re.M) for name in SHIPPED), out
    assert main(["config", "synth_motion", "data.clip_len=4"]) == 0
    assert "clip_len: 4" in capsys.readouterr().out


# ----------------------------------------------------------------------------- the built wheel


def _run(cmd: list[str], cwd: Path, env: dict, timeout: float = 120) -> str:
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.mark.slow
def test_the_wheel_works_outside_the_checkout(tmp_path):
    """Build a wheel from a copy of the source tree (no network, no build isolation), install it into a
    fresh venv that borrows torch & co. from this environment through a ``.pth`` file, and use it from
    a folder outside the checkout."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    # 1. a wheel from a clean copy of what a source distribution holds (no build/ leftovers of the checkout)
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(PACKAGE, src / "fusion3d", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    dist = tmp_path / "dist"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    _run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q", "-w", dist, src],
        tmp_path,
        env,
    )
    (wheel,) = dist.glob("fusion3d-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"fusion3d/configs/{n}.yaml" for n in SHIPPED} <= names
    assert {f"fusion3d/bench/specs/{p.name}" for p in (PACKAGE / "bench" / "specs").glob("*.yaml")} <= names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)

    # 2. a fresh venv; the wheel is installed before the .pth exists, so pip never sees this environment
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], tmp_path, env)
    python = venv / "bin" / "python"
    _run([*pip, "--python", python, "install", "--no-deps", "--no-index", "-q", wheel], tmp_path, env)
    site = Path(
        _run(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp_path, env
        ).strip()
    )
    borrowed = dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))
    (site / "_fusion3d_test_deps.pth").write_text("".join(f"{p}\n" for p in borrowed))

    # 3. use it from a folder outside the checkout
    work = tmp_path / "work"
    work.mkdir()
    fusion3d = str(venv / "bin" / "fusion3d")
    where = _run([python, "-c", "import fusion3d; print(fusion3d.__file__)"], work, env).strip()
    assert Path(where).is_relative_to(site), f"imported {where}, not the installed copy"
    assert _run([fusion3d, "--version"], work, env).strip() == f"fusion3d {version()}"
    listed = _run([fusion3d, "config", "--list"], work, env)
    assert all(re.search(rf"^{name} ", listed, flags=re.M) for name in SHIPPED) and str(site) in listed
    _run(
        [fusion3d, "data", "synth", "--kind", "motion", "--out", "videos", "--classes", "2"]
        + ["--videos-per-class", "4", "--test-per-class", "1", "--frames", "8", "--size", "32"],
        work,
        env,
    )
    tiny = [
        "data.root=videos",
        "data.annotations=videos/ucfTrainTestlist",
        "data.cache_dir=cache",
        "data.clip_len=4",
        "run.out=runs/tiny",
        "run.threads=1",
        "train.warmup_epochs=0",
        "train.epochs=1",
        "train.batch_size=4",
        "train.eval_samples=1",
        "train.progress=false",
    ]
    out = _run([fusion3d, "train", "synth_motion", *tiny], work, env, timeout=300)
    assert "training complete" in out
    run = work / "runs" / "tiny"
    assert (run / "checkpoint.pt").stat().st_size > 0 and (run / "summary.json").stat().st_size > 0
    assert "vdroppath" in (run / "metrics.jsonl").read_text()
