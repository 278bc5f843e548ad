"""Helpers shared by the benchmark scripts: result files and machine context."""

from __future__ import annotations

import json
import os
import platform
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def context() -> dict[str, Any]:
    """Where and when a result was measured (load average included: these machines are shared)."""
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "load_avg_1m": os.getloadavg()[0],
    }


def write(name: str, data: dict[str, Any], markdown: str) -> None:
    """Write `bench/results/<name>.json` and `<name>.md`."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    data = {"context": context(), **data}
    (RESULTS / f"{name}.json").write_text(json.dumps(data, indent=2, default=float) + "\n")
    (RESULTS / f"{name}.md").write_text(
        markdown.rstrip() + f"\n\n_Measured {data['context']['date']} on "
        f"{data['context']['cpus']} CPUs (load {data['context']['load_avg_1m']:.1f})._\n"
    )
    print(markdown)


def redis_outage(server: Any, after: float = 5.0, down: float = 20.0) -> threading.Thread:
    """Start a thread that stops a `LocalRedis` after `after` s and restarts it `down` s later."""

    def run() -> None:
        time.sleep(after)
        server.stop()
        time.sleep(down)
        server.start()

    thread = threading.Thread(target=run)
    thread.start()
    return thread
