"""The env-gated memory snapshots of the service (`service/diagnostics.py`)."""

from __future__ import annotations

import time
import tracemalloc

from service.diagnostics import TRACE_DIR_ENV, TRACE_INTERVAL_ENV, start_from_env


def test_off_unless_asked_for(monkeypatch) -> None:
    monkeypatch.delenv(TRACE_DIR_ENV, raising=False)
    assert start_from_env() is None and not tracemalloc.is_tracing()


def test_snapshots_are_written_and_readable(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv(TRACE_DIR_ENV, str(tmp_path))
    monkeypatch.setenv(TRACE_INTERVAL_ENV, "0.2")
    thread = start_from_env(frames=2)
    try:
        held = [bytearray(1000) for _ in range(200)]  # something to trace
        deadline = time.monotonic() + 10
        while len(list(tmp_path.glob("*.tracemalloc"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        tracemalloc.stop()
    thread.join(timeout=2)
    assert not thread.is_alive()  # it ends once tracing stops
    snaps = sorted(tmp_path.glob("*.tracemalloc"))
    assert len(snaps) >= 2 and len(held) == 200
    stats = tracemalloc.Snapshot.load(str(snaps[-1])).statistics("lineno")
    assert any("test_diagnostics.py" in s.traceback[0].filename for s in stats)
    lines = next(tmp_path.glob("*.log")).read_text().splitlines()
    assert len(lines) >= 2 and all(len(line.split()) == 3 for line in lines)
