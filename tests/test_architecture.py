"""The package's structure, enforced: small modules, no import cycles, stages that never import
each other, and run-directory file names spelled only inside ``fusion3d/run/``."""

from __future__ import annotations

import ast
from pathlib import Path

from fusion3d.run.layout import FILES

PACKAGE = Path(__file__).resolve().parents[1] / "fusion3d"
MAX_LINES = 600


def _modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """Package modules ``path`` imports, at module level or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            if name.startswith("fusion3d") and name in modules:
                found.add(name)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(path, modules) - {name} for name, path in modules.items()}


def test_no_module_is_longer_than_600_lines():
    long = {
        str(p.relative_to(PACKAGE)): n
        for p in PACKAGE.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` (a package's ``__init__`` importing its own submodules is not
    one: importing ``a.b`` runs ``a/__init__`` first, so edges from a package to its children and
    from a child to its package are left out), or None."""

    def parent_child(a: str, b: str) -> bool:
        return a.startswith(b + ".") or b.startswith(a + ".")

    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if parent_child(node, nxt):
                continue
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_there_is_no_import_cycle_between_modules():
    assert _cycle(_graph()) is None, f"import cycle: {' -> '.join(_cycle(_graph()))}"


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"p": {"p.x"}, "p.x": {"p"}}) is None


def test_no_stage_imports_another_stage():
    graph = _graph()
    bad = {
        m: sorted(i for i in imps if i.startswith("fusion3d.stages.") and i != m)
        for m, imps in graph.items()
        if m.startswith("fusion3d.stages.")
    }
    assert not {m: v for m, v in bad.items() if v}, bad


def test_libraries_never_import_stages_the_report_or_the_cli():
    """Only the CLI, the demo (which composes stages) and the report verb reach upwards."""
    upper = ("fusion3d.stages", "fusion3d.report", "fusion3d.cli", "fusion3d.demo")
    allowed = ("fusion3d.stages", "fusion3d.cli", "fusion3d.demo", "fusion3d.__main__")
    graph = _graph()
    bad = {
        m: sorted(
            i
            for i in imps
            if i.startswith(upper) and not i.startswith(m.split(".")[0] + "." + m.split(".")[1])
        )
        for m, imps in graph.items()
        if not m.startswith(allowed) and m != "fusion3d"
    }
    assert not {m: v for m, v in bad.items() if v}, bad


def test_analysis_reads_no_run_directory():
    graph = _graph()
    bad = {
        m: sorted(i for i in imps if i.startswith(("fusion3d.run", "fusion3d.engine.checkpoint")))
        for m, imps in graph.items()
        if m.startswith("fusion3d.analysis")
    }
    assert not {m: v for m, v in bad.items() if v}, bad


def _string_constants(path: Path) -> list[tuple[int, str]]:
    """(line, value) of every string constant that is not a docstring."""
    tree = ast.parse(path.read_text())
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    return [
        (n.lineno, n.value)
        for n in ast.walk(tree)
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings
    ]


def test_run_directory_file_names_are_spelled_only_in_run():
    names = set(FILES.values())
    hits = []
    for path in PACKAGE.rglob("*.py"):
        # data/ reads datasets, whose official files may share a name with a run file (Kinetics's validate.csv)
        if path.is_relative_to(PACKAGE / "run") or path.is_relative_to(PACKAGE / "data"):
            continue
        for line, value in _string_constants(path):
            if any(value == n or value.endswith("/" + n) for n in names):
                hits.append(f"{path.relative_to(PACKAGE)}:{line}: {value!r}")
    assert not hits, "\n".join(hits)
