"""The first `make run` after the install, stage by stage (issue 19): what `slicewise demo-run`
does before it serves, from a cold cache, on the demo.

In a fresh temporary working directory (so `.slicewise/cache`, checkpoints and the bundle start
empty) with its own `BENTOML_HOME`: `train_and_export` as `demo-run` calls it (load, split,
slice, export the encoder, embed every split, train the exported head kind, export the bundle,
register it), then `bentoml serve` on the new bundle until `/readyz` answers. Every stage is
timed by wrapping the function that does it (exclusive wall seconds: a stage's time excludes the
stages nested in it). The Python imports are timed in a fresh interpreter first.

`--end-to-end` also runs `slicewise demo-run` itself in another fresh directory and times it
from the command to its "slicewise is serving" line (Prometheus, Alertmanager and the webhook
included when installed).

Run: .venv/bin/python bench/bench_first_run.py [--end-to-end]
Writes bench/results/first_run.{json,md}.
"""

from __future__ import annotations

import argparse
import functools
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import ROOT, write

parser = argparse.ArgumentParser()
parser.add_argument("--end-to-end", action="store_true", help="also time `slicewise demo-run`")
parser.add_argument("--layout-texts", type=int, default=3000, help="texts per embedding-layout run")
parser.add_argument("--layout-rounds", type=int, default=3)
args = parser.parse_args()

work = Path(tempfile.mkdtemp(prefix="slicewise-first-run-"))
env = {**os.environ, "BENTOML_HOME": str(work / "bentoml"), "PYTHONPATH": str(ROOT)}
os.environ["BENTOML_HOME"] = env["BENTOML_HOME"]

t = time.perf_counter()
imports = subprocess.run(
    [
        sys.executable,
        "-c",
        "import time, training.export, training.train, slicewise.demo; print(time.process_time())",
    ],
    check=True,
    env=env,
    capture_output=True,
    text=True,
)
import_s, import_cpu = time.perf_counter() - t, float(imports.stdout.split()[-1])

import psutil  # noqa: E402

import training.backbone as backbone  # noqa: E402
import training.export as export  # noqa: E402
import training.prepared as prepared  # noqa: E402
import training.registry as registry  # noqa: E402
import training.train as train  # noqa: E402
from slicewise.processes import BentoServer  # noqa: E402
from training.config import load_config  # noqa: E402

times: dict[str, float] = {}  # wall seconds
cpu: dict[str, float] = {}  # CPU seconds of this process (all its threads)
stack: list[list[float]] = []  # per open stage: [wall, cpu] spent in stages nested in it


def timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """`fn`, adding its exclusive wall and CPU time to `times[name]` and `cpu[name]`."""

    @functools.wraps(fn)
    def wrapper(*a: Any, **kw: Any) -> Any:
        stack.append([0.0, 0.0])
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            return fn(*a, **kw)
        finally:
            took = [time.perf_counter() - t0, time.process_time() - c0]
            nested = stack.pop()
            times[name] = times.get(name, 0.0) + took[0] - nested[0]
            cpu[name] = cpu.get(name, 0.0) + took[1] - nested[1]
            if stack:
                stack[-1][0] += took[0]
                stack[-1][1] += took[1]

    return wrapper


def patch(module: Any, attr: str, name: str) -> None:
    setattr(module, attr, timed(name, getattr(module, attr)))


STAGES = [  # (module or class, function, stage name)
    (prepared, "load_dataset", "load the dataset"),
    (prepared, "split_dataset", "split"),
    (prepared, "slice_membership", "slice (evaluate the slice rules)"),
    (prepared, "embed_texts", "embed every split"),
    (backbone, "encoder_onnx", "export the encoder for embedding (ONNX, the served precision)"),
    (train, "train_head", "train the head"),
    (train, "load_encoder", "load the torch encoder for the export"),
    (train, "save_checkpoint", "save the checkpoint"),
    (export, "export_onnx", "bundle: torch.onnx.export"),
    (export, "optimize_onnx", "bundle: ONNX Runtime fusions"),
    (export, "quantize_onnx", "bundle: int8 quantisation"),
    (export, "check_parity", "bundle: ONNX/torch parity"),
    (export.OnnxRunner, "run", "bundle: ONNX runs (thresholds, evaluation, reference, check)"),
    (export, "reference_profile", "bundle: reference profile"),
    (registry, "register_bundle", "register in the BentoML model store"),
]
for owner, attr, stage_name in STAGES:
    patch(owner, attr, stage_name)

os.chdir(work)
cfg = load_config()
t0, c0 = time.perf_counter(), time.process_time()
bundle = timed("other (manifest, files, ...)", export.train_and_export)(
    cfg, out_dir=work / ".slicewise" / "bundle"
)
train_s, train_cpu = time.perf_counter() - t0, time.process_time() - c0
t = time.perf_counter()
server = BentoServer({"SLICEWISE_MODEL_DIR": str(bundle.path)}).start()
times["start the service (until /readyz)"] = time.perf_counter() - t
root = psutil.Process(server.proc.pid)  # type: ignore[union-attr]
cpu["start the service (until /readyz)"] = sum(
    sum(p.cpu_times()[:2]) for p in [root, *root.children(recursive=True)]
)
server.stop()
total = import_s + train_s + times["start the service (until /readyz)"]
total_cpu = import_cpu + train_cpu + cpu["start the service (until /readyz)"]
n = len(prepared.load_dataset.__wrapped__(cfg))

# embedding layouts on the same texts, interleaved: ONNX Runtime's pool on every core for one
# call at a time (the layout before issue 19) vs one single-threaded call per core at once
import statistics  # noqa: E402

frames = prepared.split_dataset.__wrapped__(
    prepared.load_dataset.__wrapped__(cfg), cfg.dataset.split
)
sample = list(dict.fromkeys(frames.train["text"].tolist()))[: args.layout_texts]
cache = work / cfg.train.cache_dir
layouts = {"1 call × all cores": 1, "1 single-thread call per core": None}
layout_runs: dict[str, list[float]] = {k: [] for k in layouts}
for _ in range(args.layout_rounds):
    for name, calls in layouts.items():
        t = time.perf_counter()
        backbone._embed_onnx(cfg.backbone, sample, cfg.train.embed_batch_size, cache, False, calls)
        layout_runs[name].append(len(sample) / (time.perf_counter() - t))
layout_tps = {k: statistics.median(v) for k, v in layout_runs.items() if v}

e2e = None
if args.end_to_end:
    fresh = Path(tempfile.mkdtemp(prefix="slicewise-demo-run-"))
    cli = Path(sys.executable).with_name("slicewise")
    ports = [str(p) for p in range(8710, 8716)]
    t = time.perf_counter()
    proc = subprocess.Popen(
        [
            *(str(cli), "demo-run", "--port", ports[0], "--monitor-port", ports[1]),
            *("--redis-port", ports[2], "--prometheus-port", ports[3]),
            *("--alertmanager-port", ports[4], "--webhook-port", ports[5]),
        ],
        cwd=fresh,
        env={**env, "BENTOML_HOME": str(fresh / "bentoml")},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if "slicewise is serving" in line:
            e2e = time.perf_counter() - t
            break
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=60)

rows = sorted(((k, v) for k, v in times.items()), key=lambda kv: -kv[1])
md = "\n".join(
    [
        f"| first run on the demo ({n} texts), cold cache, as `slicewise demo-run` does it | wall s | CPU s |",
        "|---|---:|---:|",
        f"| Python imports (fresh interpreter) | {import_s:.1f} | {import_cpu:.1f} |",
        *(f"| {k} | {v:.1f} | {cpu.get(k, 0.0):.1f} |" for k, v in rows),
        f"| **total, to serving** | **{total:.0f}** ({total / 60:.2f} min) | {total_cpu:.0f} (÷ 2 cores: {total_cpu / 120:.2f} min) |",
        f"| of which frozen demo training (load … export) | {train_s:.0f} ({train_s / 60:.2f} min) | {train_cpu:.0f} (÷ 2 cores: {train_cpu / 120:.2f} min) |",
        *(
            [
                f"| `slicewise demo-run` end to end, to its serving line | {e2e:.0f} ({e2e / 60:.2f} min) |"
            ]
            if e2e is not None
            else []
        ),
    ]
)
if layout_tps:
    md += (
        f"\n\nEmbedding layouts ({cfg.backbone.embed_runtime}, {len(sample)} distinct training texts, "
        f"batch {cfg.train.embed_batch_size}, {args.layout_rounds} interleaved rounds, texts/s, "
        "median): " + "; ".join(f"{k}: {v:.0f}" for k, v in layout_tps.items()) + "."
    )
md += (
    "\n\nWall seconds on the shared 2 cores (other users' jobs running; the load is below); CPU "
    "seconds are this process's (all threads) and, for the service, its process tree's."
)
write(
    "first_run",
    {
        "import_s": import_s,
        "import_cpu_s": import_cpu,
        "stages_s": times,
        "stages_cpu_s": cpu,
        "train_and_export_s": train_s,
        "train_and_export_cpu_s": train_cpu,
        "total_s": total,
        "total_cpu_s": total_cpu,
        "demo_run_s": e2e,
        "embed_layouts_texts_per_s": layout_tps,
        "embed_layout_runs": layout_runs,
        "texts": n,
        "embed_runtime": cfg.backbone.embed_runtime,
        "kind": cfg.train.kind,
    },
    md,
)
