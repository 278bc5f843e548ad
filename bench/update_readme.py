"""Copy each `bench/results/<name>.md` into the README between `<!-- bench:<name> -->` and
`<!-- /bench:<name> -->`, so the README quotes exactly what the benchmarks last wrote."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
readme = ROOT / "README.md"
text = readme.read_text()
for name in re.findall(r"<!-- bench:([\w-]+) -->", text):
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
readme.write_text(text)
print("README benchmark tables updated")
