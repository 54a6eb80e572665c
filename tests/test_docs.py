"""The documentation resolves inside the repository: relative links in README.md and docs/*.md point at
files that exist, every docs/*.md path that code, configs, tests and docs mention exists (with the
sections they cite), and no reference to notes that are not in the repository remains."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MARKDOWN = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# Everything that may cite the docs: code, configs (root and shipped), tests, docs, notebooks, benchmarks.
SOURCES = sorted(
    {
        *ROOT.glob("fusion3d/**/*.py"),
        *ROOT.glob("fusion3d/**/*.yaml"),
        *ROOT.glob("configs/*.yaml"),
        *ROOT.glob("tests/*.py"),
        *ROOT.glob("benchmarks/*.py"),
        *ROOT.glob("notebooks/*.ipynb"),
        *MARKDOWN,
        ROOT / "Makefile",
        ROOT / "pyproject.toml",
    }
)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
DOC_PATH = re.compile(r"docs/[A-Za-z0-9_./-]*?\.md")
METHOD_SECTION = re.compile(r"docs/method\.md(?:\]\(docs/method\.md\))?\s+§(\d+)(?:\s*-\s*§(\d+))?")
FORMATS_SECTION = re.compile(r"docs/data_formats\.md,\s+([A-Z][A-Za-z0-9 -]*[A-Za-z0-9])")


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _headings(path: Path) -> list[str]:
    return [line.lstrip("#").strip() for line in path.read_text().splitlines() if line.startswith("## ")]


def test_the_docs_exist():
    for name in ("architecture.md", "method.md", "data_formats.md"):
        assert (ROOT / "docs" / name).is_file(), name


@pytest.mark.parametrize("md", MARKDOWN, ids=_rel)
def test_relative_links_resolve_to_files_without_anchors(md):
    bad = []
    for target in LINK.findall(md.read_text()):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        if "#" in target:
            bad.append(f"{target}: an anchor (links name files only)")
        elif not (md.parent / target).exists():
            bad.append(f"{target}: no such file")
    assert not bad, f"{_rel(md)}: " + "; ".join(bad)


def test_every_docs_path_mentioned_exists():
    missing = sorted(
        {
            f"{_rel(src)}: {p}"
            for src in SOURCES
            for p in DOC_PATH.findall(src.read_text())
            if not (ROOT / p).is_file()
        }
    )
    assert not missing, "\n".join(missing)


def test_cited_sections_of_the_method_exist():
    numbers = {m.group(1) for h in _headings(ROOT / "docs" / "method.md") if (m := re.match(r"(\d+)\.", h))}
    assert numbers >= {str(i) for i in range(1, 9)}
    bad, cited = [], 0
    for src in SOURCES:
        for first, last in METHOD_SECTION.findall(src.read_text()):
            cited += 1
            bad += [f"{_rel(src)}: §{n}" for n in (first, last) if n and n not in numbers]
    assert cited >= 50 and not bad, bad


def test_cited_sections_of_the_data_formats_exist():
    sections = set(_headings(ROOT / "docs" / "data_formats.md"))
    bad, cited = [], 0
    for src in SOURCES:
        for name in FORMATS_SECTION.findall(src.read_text()):
            cited += 1
            if name not in sections:
                bad.append(f"{_rel(src)}: {name!r}")
    assert cited >= 20 and not bad, f"not a section of docs/data_formats.md: {bad}"


def test_no_reference_to_notes_outside_the_repository_remains():
    gone = ("METHOD" + ".md", "DATA_" + "FORMATS")  # spelled apart so this file does not match itself
    hits = [
        f"{_rel(src)}:{i}: {line.strip()}"
        for src in SOURCES
        if src != Path(__file__).resolve()
        for i, line in enumerate(src.read_text().splitlines(), 1)
        if any(g in line for g in gone)
    ]
    assert not hits, "\n".join(hits)
