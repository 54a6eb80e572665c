"""``fusion3d report RUN``: one self-contained HTML page and a Markdown file of a run (or of a demo
folder). Presentation lives in ``fusion3d.report``; this verb only writes it."""

from __future__ import annotations

from fusion3d.report import build


def command(run_dir: str) -> int:
    print(f"wrote {build(run_dir)}")
    return 0
