"""The configs shipped with fusion3d, usable by name wherever a config path goes.

The YAML files beside this module are package data: they are in every installed copy of fusion3d,
so ``fusion3d train synth_motion data.root=...`` works from any folder, without a checkout. In a
checkout, ``configs/`` at the repository root holds identical copies so the paths in the README work
(``tests/test_package.py`` checks that the two folders agree).

``config_path(x)`` resolves a config argument. An existing file is used as given. Otherwise ``x`` names
a shipped config (``ucf101``, or ``ucf101.yaml``). Anything else is a ``ConfigError`` that lists the
shipped names.
"""

from __future__ import annotations

from pathlib import Path

from fusion3d.config import ConfigError

CONFIG_DIR = Path(__file__).resolve().parent
SUFFIXES = (".yaml", ".yml")


def list_configs() -> list[str]:
    """Names of the shipped configs (file stems), sorted."""
    return sorted(p.stem for p in CONFIG_DIR.iterdir() if p.suffix in SUFFIXES and p.is_file())


def shipped_path(name: str) -> Path | None:
    """The file of a shipped config named ``name`` (with or without ``.yaml``), or None."""
    stem = name[: -len(Path(name).suffix)] if Path(name).suffix in SUFFIXES else name
    if not stem or "/" in stem or "\\" in stem:
        return None
    for suffix in SUFFIXES:
        path = CONFIG_DIR / f"{stem}{suffix}"
        if path.is_file():
            return path
    return None


def config_path(name_or_path: str | Path | None) -> Path | None:
    """The config file to load for a command-line config argument (None stays None).

    An existing file wins, so a local ``ucf101.yaml`` is read rather than the shipped one. Otherwise a
    bare name (no folder part) is looked up among the shipped configs. A path that does not exist
    raises ``ConfigError``, which names the shipped config of the same name when there is one.
    """
    if name_or_path is None:
        return None
    path = Path(name_or_path)
    if path.is_file():
        return path
    text = str(name_or_path)
    if path.name == text:  # a bare name, no folder part
        shipped = shipped_path(text)
        if shipped is not None:
            return shipped
        raise ConfigError(
            f"config {text!r} is neither a file nor a shipped config; shipped configs: "
            f"{', '.join(list_configs())} (`fusion3d config --list`)"
        )
    hint = ""
    if shipped_path(path.name) is not None:
        hint = f"; {path.stem!r} is a config shipped with fusion3d: pass the name {path.stem} instead"
    raise ConfigError(f"config file {text!r} does not exist{hint}")


def describe(name: str) -> str:
    """A one-line description of a shipped config: its first comment line, up to the first ' ('."""
    path = shipped_path(name)
    if path is None:
        raise ConfigError(f"no shipped config named {name!r}")
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            text = line.lstrip("#").strip()
            return text.split(" (")[0].rstrip(".")
        if line.strip():
            break
    return ""
