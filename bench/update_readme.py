"""Copy each `bench/results/<name>.md` into bench/README.md (and the project README, if it has
markers) between `<!-- bench:<name> -->` and `<!-- /bench:<name> -->`, so the tables quote
exactly what the benchmarks last wrote. The project README keeps only headline figures."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def fill(path: Path) -> int:
    """Replace every marked block of `path` with its result file; return how many."""
    text = path.read_text()
    names = re.findall(r"<!-- bench:([\w-]+) -->", text)
    for name in names:
        result = ROOT / "bench" / "results" / f"{name}.md"
        body = (
            result.read_text().strip()
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
