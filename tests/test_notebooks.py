"""The analysis notebooks run top to bottom, in a real Jupyter kernel, against the quick demo's output.

``.ci/run`` writes ``runs/ci_demo`` (``fusion3d demo --quick``) before the suite runs; when that is
absent (a plain ``make test``), one quick demo is run here, once per session. The notebooks receive
their run directories through the environment variables their parameter cells read, and execute
in an empty working directory, so nothing is written into the repository.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
CI_DEMO = ROOT / "runs" / "ci_demo"
KINDS = ("motion", "appearance")
RUN_FILES = ("summary.json", "metrics.jsonl", "strategies.csv", "marginals.csv", "analysis.json")
CELL_TIMEOUT = 180  # seconds per cell; each cell takes a second or two
ALLOWED_IMPORTS = {"os", "json", "pathlib", "numpy", "pandas", "matplotlib", "IPython"}


def _complete(run: Path) -> bool:
    return all((run / name).is_file() for name in RUN_FILES)


@pytest.fixture(scope="session")
def demo_runs(tmp_path_factory) -> dict[str, Path]:
    """``runs/ci_demo/{motion,appearance}`` when CI wrote them, else a quick demo run here (~30-60 s)."""
    if all(_complete(CI_DEMO / kind) for kind in KINDS):
        return {kind: CI_DEMO / kind for kind in KINDS}
    from fusion3d.demo import run_demo

    out = tmp_path_factory.mktemp("quick_demo")
    assert run_demo(out=str(out), quick=True) == 0
    runs = {kind: out / kind for kind in KINDS}
    assert all(_complete(r) for r in runs.values())
    return runs


def execute(name: str, env: dict[str, Path], tmp_path: Path, monkeypatch) -> nbformat.NotebookNode:
    """Run notebook ``name`` in a ``python3`` kernel on this interpreter; returns the executed notebook."""
    # A kernelspec of our own, first on the search path: the kernel is this venv's Python whatever
    # other python3 kernelspecs the machine has.
    data_dir = tmp_path / "jupyter_data"
    spec = data_dir / "kernels" / "python3"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "Python 3 (fusion3d tests)",
                "language": "python",
            }
        )
    )
    monkeypatch.delenv("JUPYTER_PATH", raising=False)
    monkeypatch.delenv("MPLBACKEND", raising=False)
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(data_dir))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "jupyter_runtime"))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    for key, value in env.items():
        monkeypatch.setenv(key, str(value))
    work = tmp_path / "cwd"
    work.mkdir()
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(
        nb,
        timeout=CELL_TIMEOUT,
        startup_timeout=120,
        kernel_name="python3",
        resources={"metadata": {"path": str(work)}},
    ).execute()
    return nb


def tagged(nb, tag: str):
    cells = [c for c in nb.cells if tag in c.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1, f"expected one cell tagged {tag!r}, found {len(cells)}"
    return cells[0]


def images(cell) -> int:
    return sum("image/png" in out.get("data", {}) for out in cell.outputs)


def text(cell) -> str:
    parts = []
    for out in cell.outputs:
        parts.append(out.get("text", ""))
        parts.extend(str(out.get("data", {}).get(kind, "")) for kind in ("text/plain", "text/html"))
    return "\n".join(parts)


def check_executed(nb) -> None:
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.execution_count is not None, cell.source[:80]
            assert not [o for o in cell.outputs if o.output_type == "error"], cell.source[:80]
    for cell in nb.cells:
        if any(t.startswith("figure-") for t in cell.get("metadata", {}).get("tags", [])):
            assert images(cell) >= 1, f"no image from the cell tagged {cell.metadata['tags']}"


# --------------------------------------------------------------------------- the committed files


@pytest.mark.parametrize("name", ["01_explore_run.ipynb", "02_compare_runs.ipynb"])
def test_committed_notebooks_are_valid_with_outputs_cleared_and_plain_imports(name):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(nb)
    assert nb.nbformat == 4
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.outputs == [] and c.execution_count is None for c in code)
    assert sum(c.cell_type == "markdown" for c in nb.cells) >= len(code)  # every step is explained
    modules = {
        m.split(".")[0] for c in code for m in re.findall(r"^\s*(?:from|import)\s+([\w.]+)", c.source, re.M)
    }
    assert modules <= ALLOWED_IMPORTS, modules - ALLOWED_IMPORTS
    params = tagged(nb, "parameters").source
    if name.startswith("01"):
        assert 'os.environ.get("FUSION3D_RUN", "runs/demo/motion")' in params
    else:
        assert 'os.environ.get("FUSION3D_RUN_A", "runs/demo/motion")' in params
        assert 'os.environ.get("FUSION3D_RUN_B", "runs/demo/appearance")' in params


# --------------------------------------------------------------------------- executed


def test_explore_run_notebook_executes_on_the_quick_demo(demo_runs, tmp_path, monkeypatch):
    run = demo_runs["motion"]
    nb = execute("01_explore_run.ipynb", {"FUSION3D_RUN": run}, tmp_path, monkeypatch)
    check_executed(nb)
    analysis = json.loads((run / "analysis.json").read_text())
    assert str(run.resolve()) in text(tagged(nb, "load"))
    table = text(tagged(nb, "table-top"))
    assert f"best strategy: id {analysis['opt']['id']}" in table
    assert f"Opt in analysis.json: id {analysis['opt']['id']} (the same strategy)" in table
    assert images(tagged(nb, "figure-marginals")) >= 1 and images(tagged(nb, "figure-drop")) >= 1
    slots = len(json.loads((run / "summary.json").read_text())["slot_names"])
    assert f"/{slots} slots" in text(tagged(nb, "figure-drop"))  # p_S > p_T counted over every slot


def test_compare_runs_notebook_executes_on_the_quick_demo(demo_runs, tmp_path, monkeypatch):
    a, b = demo_runs["motion"], demo_runs["appearance"]
    nb = execute("02_compare_runs.ipynb", {"FUSION3D_RUN_A": a, "FUSION3D_RUN_B": b}, tmp_path, monkeypatch)
    check_executed(nb)
    loaded = text(tagged(nb, "load"))
    assert str(a.resolve()) in loaded and str(b.resolve()) in loaded
    canonical = text(tagged(nb, "table-canonical"))
    for run in (a, b):
        opt = json.loads((run / "analysis.json").read_text())["opt"]
        assert f"Opt id {opt['id']} = {opt['strategy']}" in canonical
    assert "all-S+ST" in canonical and "most probable" in canonical
    for tag in ("figure-marginals", "figure-diff", "table-canonical", "figure-hist"):
        assert images(tagged(nb, tag)) >= 1, tag
    assert text(tagged(nb, "figure-diff")).count("p_S > p_T in") == 2
