"""The package layers (docs/design.md, "Layers"): core at the bottom imports nothing of the
project; training, service and monitoring import core only (never each other); the CLI and
demo sit on top. Checked on the source (every import statement), so a lazy import inside a
function counts too. Also: no import cycle between modules, and every exception class the
project defines derives from `SlicewiseError`.
"""

from __future__ import annotations

import ast
import builtins
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROJECT = ("slicewise", "training", "service", "monitoring")

# layer -> the project layers it may import
ALLOWED = {
    "slicewise.core": {"slicewise.core"},
    "training": {"slicewise.core", "training"},
    "service": {"slicewise.core", "service"},
    "monitoring": {"slicewise.core", "monitoring"},
}


def _layer(module: str) -> str | None:
    if module == "slicewise.core" or module.startswith("slicewise.core."):
        return "slicewise.core"
    top = module.split(".")[0]
    if top == "slicewise":
        return "slicewise"  # the top layer: CLI, demo, process launchers
    return top if top in PROJECT else None


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append(node.module)
            # `from slicewise import core` names a submodule
            out += [f"{node.module}.{a.name}" for a in node.names if node.module == "slicewise"]
    return out


def _modules() -> list[tuple[str, Path]]:
    found = []
    for pkg in PROJECT:
        for f in sorted((ROOT / pkg).rglob("*.py")):
            module = ".".join(f.relative_to(ROOT).with_suffix("").parts)
            found.append((module, f))
    return found


@pytest.mark.parametrize(("module", "path"), _modules(), ids=[m for m, _ in _modules()])
def test_module_imports_only_lower_layers(module: str, path: Path) -> None:
    layer = _layer(module)
    if layer not in ALLOWED:
        return  # the top layer may import anything
    bad = []
    for imported in _imports(path):
        target = _layer(imported)
        if target is None or imported == "slicewise":
            continue
        if target not in ALLOWED[layer]:
            bad.append(imported)
    assert not bad, f"{module} ({layer}) imports {bad}; allowed: {sorted(ALLOWED[layer])}"


def test_core_never_imports_heavy_libraries() -> None:
    heavy = {"torch", "transformers", "evidently", "sklearn"}
    for f in sorted((ROOT / "slicewise" / "core").rglob("*.py")):
        tops = {m.split(".")[0] for m in _imports(f)}
        assert not tops & heavy, f"{f.name} imports {sorted(tops & heavy)}"


def _project_imports(module: str, path: Path, known: set[str]) -> set[str]:
    """The project modules `module` imports (relative imports resolved), lazy ones included."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parent = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{parent}.{base}" if base else parent
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        for name in names:
            if name in known and name != module:
                out.add(name)
    return out


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles() -> None:
    """A package's `__init__` importing its own submodules is not a cycle; anything else is."""
    modules = dict(_modules())
    graph = {m: _project_imports(m, p, set(modules)) for m, p in modules.items()}
    for m in graph:  # `import a.b` runs a/__init__ first: not an edge back to `a`
        graph[m] = {t for t in graph[m] if not m.startswith(t + ".")}
    assert _cycles(graph) == []


def test_cycle_check_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]


BUILTIN_ERRORS = {
    name
    for name in dir(builtins)
    if isinstance(getattr(builtins, name), type)
    and issubclass(getattr(builtins, name), BaseException)
}


def test_every_project_exception_derives_from_slicewise_error() -> None:
    """An exception class made only from builtin exceptions escapes the CLI's one handler."""
    bad = []
    for module, path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ClassDef):
                continue
            bases = {b.id if isinstance(b, ast.Name) else ast.unparse(b) for b in node.bases}
            if bases and bases <= BUILTIN_ERRORS and node.name != "SlicewiseError":
                bad.append(f"{module}.{node.name}({', '.join(sorted(bases))})")
    assert not bad, f"derive these from slicewise.core.errors.SlicewiseError: {bad}"
