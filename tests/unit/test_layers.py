"""The package layers (docs/design.md, "Layers"): core at the bottom imports nothing of the
project; training, service and monitoring import core only (never each other); the CLI and
demo sit on top. Checked on the source (every import statement), so a lazy import inside a
function counts too.
"""

from __future__ import annotations

import ast
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


# Command-line modules belong to the top layer wherever they live.
TOP = {"training.cli", "monitoring.cli"}


def _layer(module: str) -> str | None:
    if module in TOP:
        return "slicewise"
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
