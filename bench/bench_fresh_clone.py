"""The README's `make run` from a fresh clone, timed as a new user meets it (issue 19), and the
install with pip beside it.

1. `git clone` of this repository's HEAD into a temporary folder, then `make run` there with
   empty uv and pip caches and its own BentoML home: the install (`scripts/install.py`, uv),
   then `slicewise demo-run` (train the demo from a cold embedding cache, export, serve,
   monitor). Timed from the command to the install's "ready" line and to demo-run's
   "slicewise is serving" line; then the demo is stopped.
2. Side by side in the same run: the same install with pip (`scripts/install.py --pip`) into
   another fresh environment, with an empty pip cache.

Run: .venv/bin/python bench/bench_fresh_clone.py [--skip-pip]
Writes bench/results/fresh_clone.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, write

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("--skip-pip", action="store_true", help="time only the uv `make run`")
parser.add_argument("--timeout", type=float, default=1800, help="give up after this many s")
args = parser.parse_args()

work = Path(tempfile.mkdtemp(prefix="slicewise-fresh-clone-"))
clone = work / "slicewise"
commit = subprocess.run(
    ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
).stdout.strip()
subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
env = {
    k: v
    for k, v in os.environ.items()
    if not k.startswith(("VIRTUAL_ENV", "PYTHONPATH", "BENTOML_", "SLICEWISE_", "REDIS_"))
}
env |= {
    "UV_CACHE_DIR": str(work / "uv-cache"),
    "PIP_CACHE_DIR": str(work / "pip-cache"),
    "BENTOML_HOME": str(work / "bentoml"),
    "PATH": ":".join(p for p in env["PATH"].split(":") if ".venv" not in p),
}
ports = range(8720, 8726)
run_args = (
    f"--port {ports[0]} --monitor-port {ports[1]} --redis-port {ports[2]} "
    f"--prometheus-port {ports[3]} --alertmanager-port {ports[4]} --webhook-port {ports[5]}"
)
marks: dict[str, float] = {}
log_lines: list[str] = []
load_before = os.getloadavg()
t0 = time.perf_counter()
proc = subprocess.Popen(
    ["make", "run", f"RUN_ARGS={run_args}"],
    cwd=clone,
    env=env,
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
    text=True,
    start_new_session=True,
)
assert proc.stdout is not None
try:
    for line in proc.stdout:
        log_lines.append(line)
        elapsed = time.perf_counter() - t0
        if "install:" in line and "ready with" in line:
            marks["install"] = elapsed
        if "slicewise is serving" in line:
            marks["serving"] = elapsed
            break
        if elapsed > args.timeout:
            break
finally:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
load_during = os.getloadavg()
(work / "make-run.log").write_text("".join(log_lines))
if "serving" not in marks:
    sys.exit(f"make run did not reach serving; its output is in {work / 'make-run.log'}")

pip_s = None
if not args.skip_pip:
    t = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            str(clone / "scripts" / "install.py"),
            "--pip",
            "--venv",
            str(work / "pip-venv"),
        ],
        check=True,
        env=env,
        capture_output=True,
    )
    pip_s = time.perf_counter() - t

install, serving = marks["install"], marks["serving"]
rows = [
    "| from a fresh clone (commit " + commit + "), empty caches | wall s |",
    "|---|---:|",
    f"| install with uv (`scripts/install.py`, as `make run` does it) | {install:.0f} |",
    *(
        [f"| install with pip (`scripts/install.py --pip`), side by side | {pip_s:.0f} |"]
        if pip_s
        else []
    ),
    f"| `slicewise demo-run`: train the demo from a cold cache, export, serve, monitor | {serving - install:.0f} |",
    f'| **`make run`, to "slicewise is serving"** | **{serving:.0f}** ({serving / 60:.2f} min) |',
]
md = "\n".join(rows) + (
    f"\n\nLoad average before: {load_before[0]:.1f}; after the `make run`: {load_during[0]:.1f}."
)
write(
    "fresh_clone",
    {
        "commit": commit,
        "install_uv_s": install,
        "install_pip_s": pip_s,
        "make_run_to_serving_s": serving,
        "load_before": load_before,
        "load_after_make_run": load_during,
    },
    md,
)
