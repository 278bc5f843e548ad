"""The documentation holds together: the README stays short, every "docs/design.md §n" that
code cites names a section that exists, and relative links in README.md, docs/ and bench/
point at files of the repository (benchmark outputs in bench/results/ excepted)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", ROOT / "bench" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_readme_fits_in_250_lines() -> None:
    assert len((ROOT / "README.md").read_text().splitlines()) <= 250


def test_design_section_references_exist() -> None:
    design = (ROOT / "docs" / "design.md").read_text()
    sections = set(re.findall(r"(?m)^## (\d+)\. ", design))
    cited: dict[str, set[str]] = {}
    for pkg in ("slicewise", "training", "service", "monitoring", "docs"):
        for f in (ROOT / pkg).rglob("*"):
            if f.suffix not in {".py", ".md", ".yml", ".yaml"}:
                continue
            for ref in re.findall(r"design\.md §\s*([\d, §]+)", f.read_text()):
                for n in re.findall(r"\d+", ref):
                    cited.setdefault(n, set()).add(f.name)
    assert cited, "no code cites docs/design.md"
    assert set(cited) <= sections, {n: cited[n] for n in set(cited) - sections}
    assert "DESIGN §" not in "".join(f.read_text() for f in (ROOT / "training").rglob("*.py")), (
        "cite docs/design.md §n, not DESIGN §n"
    )


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(doc: Path) -> None:
    text = re.sub(r"(?s)```.*?```", "", doc.read_text())
    missing = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        path = (doc.parent / target.split("#")[0]).resolve()
        if path.parent == ROOT / "bench" / "results":
            continue  # benchmark outputs: written when the benchmark runs
        if not path.exists():
            missing.append(target)
    assert not missing, f"{doc.name} links to missing files: {missing}"
