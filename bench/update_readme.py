"""Copy each `bench/results/<name>.md` into bench/README.md (and the project README, if it has
markers) between `<!-- bench:<name> -->` and `<!-- /bench:<name> -->`, so the tables quote
exactly what the benchmarks last wrote. The project README keeps only headline figures."""

from __future__ import annotations

import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _relink(body: str, folder: Path) -> str:
    """Result files write links from the repository root (`docs/gpu.md`); rewrite them for a
    file in `folder`."""

    def fix(m: re.Match[str]) -> str:
        target = m[1]
        if re.match(r"[a-z]+:|#|\.\./", target) or not (ROOT / target.split("#")[0]).exists():
            return m[0]
        return f"]({os.path.relpath(ROOT / target, folder)})"

    return re.sub(r"\]\(([^)\s]+)\)", fix, body)


def fill(path: Path) -> int:
    """Replace every marked block of `path` with its result file; return how many."""
    text = path.read_text()
    names = re.findall(r"<!-- bench:([\w-]+) -->", text)
    for name in names:
        result = ROOT / "bench" / "results" / f"{name}.md"
        body = (
            _relink(result.read_text().strip(), path.parent)
            if result.exists()
            else f"_not measured yet: run bench/bench_{name}.py_"
        )
        text = re.sub(
            rf"(<!-- bench:{name} -->).*?(<!-- /bench:{name} -->)",
            lambda m, body=body: f"{m[1]}\n{body}\n{m[2]}",
            text,
            flags=re.S,
        )
    path.write_text(text)
    return len(names)


if __name__ == "__main__":
    for target in (ROOT / "bench" / "README.md", ROOT / "README.md"):
        if target.exists():
            print(f"{target.relative_to(ROOT)}: {fill(target)} benchmark tables updated")
