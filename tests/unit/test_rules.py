"""The shipped alert rules pass their promtool unit tests with the shipped `for:` durations; the
shortened copies (demo `--alert-for`, scenario test) change only `for:` and only in the copy."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import yaml

from slicewise.alerting import MONITORING, rules_copy

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is not installed (make test installs the prometheus package)"
)
RULES = MONITORING / "prometheus" / "rules.yml"


@needs_promtool
def test_promtool_unit_tests_pass_on_the_shipped_rules() -> None:
    res = subprocess.run(
        [PROMTOOL, "test", "rules", "rules_test.yml"],
        cwd=RULES.parent,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS" in res.stdout + res.stderr


@needs_promtool
def test_a_shortened_copy_changes_every_for_and_nothing_else(tmp_path) -> None:
    shipped = RULES.read_text()
    copy = rules_copy(tmp_path / "rules.yml", "4s")
    assert RULES.read_text() == shipped  # the shipped file is never touched
    fors = [r.get("for") for g in yaml.safe_load(copy.read_text())["groups"] for r in g["rules"]]
    assert fors and set(fors) == {"4s"}
    assert re.sub(r"for: \S+", "", copy.read_text()) == re.sub(r"for: \S+", "", shipped)
    res = subprocess.run([PROMTOOL, "check", "rules", str(copy)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_a_bad_duration_is_refused(tmp_path) -> None:
    with pytest.raises(ValueError, match="like 30s"):
        rules_copy(tmp_path / "rules.yml", "soon")
