"""Memory diagnostics of the serving process, off unless asked for (soak tests only).

`SLICEWISE_TRACEMALLOC_DIR=<dir>` starts `tracemalloc` at service start and writes a snapshot
to `<dir>/<pid>-<seconds>.tracemalloc` every `SLICEWISE_TRACEMALLOC_INTERVAL` seconds (default
30), plus one line per snapshot to `<dir>/<pid>.log` (seconds, traced MiB, peak MiB). The
snapshots are read by `bench/soak_memory.py`, which diffs them to say which Python code holds
the memory that grew. Tracing costs CPU: never on in production.
"""

from __future__ import annotations

import os
import threading
import time
import tracemalloc
from pathlib import Path

TRACE_DIR_ENV = "SLICEWISE_TRACEMALLOC_DIR"
TRACE_INTERVAL_ENV = "SLICEWISE_TRACEMALLOC_INTERVAL"


def start_from_env(frames: int = 8) -> threading.Thread | None:
    """Start tracing and periodic snapshots when `SLICEWISE_TRACEMALLOC_DIR` is set.

    Args:
        frames: stack frames kept per allocation (more: better attribution, slower).

    Returns:
        The snapshot thread (a daemon), or None when the variable is unset.
    """
    directory = os.environ.get(TRACE_DIR_ENV)
    if not directory:
        return None
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    interval = float(os.environ.get(TRACE_INTERVAL_ENV) or 30)
    tracemalloc.start(frames)
    t0 = time.monotonic()
    pid = os.getpid()

    def run() -> None:
        while True:
            time.sleep(interval)
            if not tracemalloc.is_tracing():  # stopped by someone else: nothing to write
                return
            elapsed = round(time.monotonic() - t0)
            snap = tracemalloc.take_snapshot()
            snap.dump(str(out / f"{pid}-{elapsed:05d}.tracemalloc"))
            traced, peak = tracemalloc.get_traced_memory()
            with open(out / f"{pid}.log", "a") as f:
                f.write(f"{elapsed} {traced / 2**20:.2f} {peak / 2**20:.2f}\n")

    thread = threading.Thread(target=run, name="tracemalloc-snapshots", daemon=True)
    thread.start()
    return thread
