"""`bentoml build` packs the serving bento: service code and contracts only, no torch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@pytest.mark.parametrize("bentofile", ["bentofile.yaml", "bentofile.gpu.yaml"])
def test_bento_holds_the_service_and_no_torch(tmp_path, bentofile) -> None:
    bentoml = Path(sys.executable).with_name("bentoml")
    env = {**os.environ, "BENTOML_HOME": str(tmp_path)}  # locking packages reads the pip settings
    out = subprocess.run(
        [str(bentoml), "build", "-f", bentofile, "--output", "tag"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    (bento,) = (tmp_path / "bentos").glob("*/*/bento.yaml")
    src = sorted(
        str(p.relative_to(bento.parent / "src")) for p in (bento.parent / "src").rglob("*.py")
    )
    assert "service/service.py" in src and "slicewise/core/contracts.py" in src
    assert not any(p.startswith("training/") or p.startswith("monitoring/") for p in src)
    reqs = (bento.parent / "env/python/requirements.txt").read_text().lower()
    assert "onnxruntime" in reqs and "torch" not in reqs and "transformers" not in reqs
    assert "msgspec" in reqs  # the contracts write the prediction log with it
