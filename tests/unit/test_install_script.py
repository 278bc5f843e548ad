"""`scripts/install.py`: uv is told pip's own settings, so both resolve the same files."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _install_module():
    spec = importlib.util.spec_from_file_location("install", ROOT / "scripts" / "install.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pip_settings_from_files_and_variables_become_uv_options(tmp_path, monkeypatch) -> None:
    install = _install_module()
    conf = tmp_path / "pip.conf"
    conf.write_text(
        "[global]\nfind-links = /wheels/a /wheels/b\nconstraint = /pins.txt\n"
        "[install]\nindex-url = file:///mirror/simple\n"
    )
    monkeypatch.setenv("PIP_CONFIG_FILE", str(conf))
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", "file:///more/simple")
    settings = install.pip_settings(sys.executable)
    assert {"/wheels/a", "/wheels/b"} <= set(settings["find-links"])
    assert "/pins.txt" in settings["constraint"]
    assert settings["index-url"] == ["file:///mirror/simple"]
    assert "file:///more/simple" in settings["extra-index-url"]
    args = install.uv_args(settings)
    assert args[:2] == ["--index-strategy", "unsafe-best-match"]  # pip's: best over all indexes
    pairs = list(zip(args[2::2], args[3::2], strict=True))
    for flag, value in [
        ("--find-links", "/wheels/a"),
        ("--find-links", "/wheels/b"),
        ("--index-url", "file:///mirror/simple"),
        ("--extra-index-url", "file:///more/simple"),
        ("--constraint", "/pins.txt"),
    ]:
        assert (flag, value) in pairs
    assert install.uv_args({}) == ["--index-strategy", "unsafe-best-match"]
