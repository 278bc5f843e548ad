"""Service tuning, side by side (issue 19): variants of the same service on the same bundle file,
each a `bentoml serve` with its own settings, measured in interleaved rounds next to the raw
ONNX Runtime throughput of that file; medians over rounds.

Per variant and round: closed-loop load at concurrency 32 (one text per request) and at
concurrency 1 (the latency of a lone request: no change may raise its p99), the server's CPU
seconds per request (process tree; robust to other users' load on a shared machine) and the
texts per model call. Raw ONNX Runtime: bare `session.run` on pre-tokenised random test texts,
padded to each batch's longest (bench/loadgen.py), in several layouts; the ceiling is the best.

Run: .venv/bin/python bench/bench_service_tuning.py [--variants before,default] [--seconds 15]
Writes bench/results/service_tuning.{json,md}.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile

import httpx
import psutil
from common import ROOT, write
from loadgen import load, raw_ort_throughput, tokenised_batches

from slicewise.core import contracts as c
from slicewise.core.redis_server import LocalRedis
from slicewise.processes import BentoServer
from training.backbone import load_tokenizer
from training.config import load_config
from training.data import load_dataset, split_dataset

# name: (what it is, environment of `bentoml serve`)
VARIANTS: dict[str, tuple[str, dict[str, str]]] = {
    "before": (
        "before issue 19's tuning: access log and OpenTelemetry spans on, no gc.freeze",
        {"SLICEWISE_ACCESS_LOG": "1", "SLICEWISE_TRACING": "1", "SLICEWISE_GC_FREEZE": "0"},
    ),
    "no-access-log": ("access log off, spans on", {"SLICEWISE_TRACING": "1"}),
    "no-tracing": ("spans off, access log on", {"SLICEWISE_ACCESS_LOG": "1"}),
    "no-gc-freeze": ("defaults without gc.freeze", {"SLICEWISE_GC_FREEZE": "0"}),
    "default": ("the shipped defaults", {}),
    "bentoml-route": (
        "defaults, /predict through BentoML's router and IO descriptors (before PredictRoute)",
        {"SLICEWISE_FAST_PREDICT": "0"},
    ),
    "bare-asgi": (
        "the floor: uvicorn and a bare ASGI app around the same batcher and runtime, no BentoML, "
        "no validation, ids, prediction log or metrics (bench/bare_asgi.py)",
        {},
    ),
    "1-worker": ("defaults, 1 model worker × 2 ORT threads", {"SLICEWISE_MODEL_WORKERS": "1"}),
    "3-workers": ("defaults, 3 model workers × 1 ORT thread", {"SLICEWISE_MODEL_WORKERS": "3"}),
}
LAYOUTS = {  # name: (batch, calls at once, intra-op threads per call)
    "1 call × 2 threads, batch 64": (64, 1, 0),
    "2 calls × 1 thread, batch 8": (8, 2, 1),
    "2 calls × 1 thread, batch 16": (16, 2, 1),
    "2 calls × 1 thread, batch 32": (32, 2, 1),
}

parser = argparse.ArgumentParser()
parser.add_argument(
    "--variants",
    default="before,bentoml-route,default,bare-asgi",
    help="comma-separated: " + ",".join(VARIANTS),
)
parser.add_argument("--seconds", type=float, default=15.0, help="one round at concurrency 32")
parser.add_argument("--solo-seconds", type=float, default=6.0, help="one round at concurrency 1")
parser.add_argument("--rounds", type=int, default=3)
parser.add_argument("--name", default="service_tuning", help="bench/results/<name>.{json,md}")
args = parser.parse_args()
names = args.variants.split(",")
if unknown := set(names) - set(VARIANTS):
    parser.error(f"unknown variants {sorted(unknown)}; known: {sorted(VARIANTS)}")

cfg = load_config()
bundle = c.Bundle.load(ROOT / ".slicewise" / "bundle")
model_file = bundle.model_file(prefer_int8=True)
texts = split_dataset(load_dataset(cfg), cfg.dataset.split).test["text"].tolist()
tok = load_tokenizer(cfg.backbone)


class BareServer(BentoServer):
    """bench/bare_asgi.py instead of `bentoml serve`."""

    def command(self) -> list[str]:
        """uvicorn and the bare app on this server's port."""
        return [
            sys.executable,
            str(ROOT / "bench" / "bare_asgi.py"),
            str(bundle.path),
            str(self.port),
        ]


def tree(server: BentoServer) -> list[psutil.Process]:
    root = psutil.Process(server.proc.pid)  # type: ignore[union-attr]
    return [root, *root.children(recursive=True)]


def cpu_seconds(procs: list[psutil.Process]) -> float:
    return sum(p.cpu_times().user + p.cpu_times().system for p in procs if p.is_running())


def batch_stats(url: str) -> tuple[float, float]:
    """(sum, count) of the service's texts-per-model-call histogram."""
    out = {"sum": 0.0, "count": 0.0}
    for line in httpx.get(url + "/metrics", timeout=10).text.splitlines():
        for k in out:
            if line.startswith(f"slicewise_batch_size_{k} "):
                out[k] = float(line.split()[-1])
    return out["sum"], out["count"]


def measure(server: BentoServer, concurrency: int, seconds: float) -> dict[str, float]:
    procs, me = tree(server), [psutil.Process()]
    c0, (s0, n0), g0 = cpu_seconds(procs), batch_stats(server.url), cpu_seconds(me)
    r = asyncio.run(load(server.url, texts, seconds, concurrency=concurrency))
    c1, (s1, n1), g1 = cpu_seconds(procs), batch_stats(server.url), cpu_seconds(me)
    r["server_cpu_ms_per_request"] = 1000 * (c1 - c0) / max(1, r["requests"])
    r["loadgen_cpu_ms_per_request"] = 1000 * (g1 - g0) / max(1, r["requests"])
    r["texts_per_call"] = (s1 - s0) / max(1.0, n1 - n0)
    return r


rds = LocalRedis().start()
servers: dict[str, BentoServer] = {}
try:
    for name in names:
        # its own BENTOML_HOME: `bentoml serve` empties the Prometheus multiprocess folder there
        # at start, which would wipe the metrics of the servers started before it
        home = tempfile.mkdtemp(prefix=f"bentoml-{name}-")
        env = {"SLICEWISE_MODEL_DIR": str(bundle.path), "REDIS_URL": rds.url, "BENTOML_HOME": home}
        servers[name] = (BareServer if name == "bare-asgi" else BentoServer)(
            {**env, **VARIANTS[name][1]},
            log_file=ROOT / f".slicewise/bench_tuning_{name}.log",
        ).start()
    for s in servers.values():
        asyncio.run(load(s.url, texts, 3))
    runs: dict[str, dict[str, list[dict]]] = {n: {"c32": [], "c1": []} for n in names}
    raw_runs: dict[str, list[float]] = {k: [] for k in LAYOUTS}
    raw_cpu: dict[str, list[float]] = {k: [] for k in LAYOUTS}  # texts per CPU second
    for r in range(args.rounds):
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            runs[name]["c32"].append(measure(servers[name], 32, args.seconds))
            runs[name]["c1"].append(measure(servers[name], 1, args.solo_seconds))
            print(name, runs[name]["c32"][-1], runs[name]["c1"][-1], flush=True)
        for lay, (batch, parallel, threads) in LAYOUTS.items():
            feeds = tokenised_batches(
                tok, texts, batch, cfg.backbone.max_length, max(30, 1920 // batch), seed=r
            )
            raw_runs[lay].append(
                raw_ort_throughput(model_file, feeds, parallel, threads, cpu=raw_cpu[lay])
            )
        print({k: v[-1] for k, v in raw_runs.items()}, flush=True)
finally:
    for s in servers.values():
        s.stop()
    rds.stop()

med = {
    n: {
        level: {k: statistics.median(x[k] for x in v) for k in v[0]} for level, v in runs[n].items()
    }
    for n in names
}
raw = {k: statistics.median(v) for k, v in raw_runs.items()}
ceiling_name = max(raw, key=raw.__getitem__)
ceiling = raw[ceiling_name]
raw_cpu_med = {k: statistics.median(v) for k, v in raw_cpu.items()}
cpu_ceiling = max(raw_cpu_med.values())  # texts per CPU second, the most efficient layout
rows = []
for n in names:
    a, b = med[n]["c32"], med[n]["c1"]
    rows.append(
        f"| {n}: {VARIANTS[n][0]} | {a['rps']:.1f} | **{a['rps'] / ceiling:.1%}** | {a['p50_ms']:.0f} "
        f"| {a['p95_ms']:.0f} | {a['p99_ms']:.0f} | {a['p99_ms'] / a['p50_ms']:.2f} "
        f"| {a['server_cpu_ms_per_request']:.2f} | {a['loadgen_cpu_ms_per_request']:.2f} "
        f"| {a['texts_per_call']:.1f} "
        f"| {1000 / (a['server_cpu_ms_per_request'] + a['loadgen_cpu_ms_per_request']) / cpu_ceiling:.1%} "
        f"| {b['p50_ms']:.1f} | {b['p99_ms']:.1f} |"
    )
md = "\n".join(
    [
        f"| variant ({args.rounds} interleaved rounds, medians; {model_file.name}) | req/s at c=32 | of raw ORT | p50 ms | p95 ms | p99 ms | p99/p50 | server CPU ms/request | load generator CPU ms/request | texts per model call | per CPU second, of raw ORT's | c=1 p50 ms | c=1 p99 ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        *rows,
        "",
        "Raw ONNX Runtime on the same file, same rounds (pre-tokenised random test texts padded to "
        "each batch's longest, no HTTP, no tokenising; texts/s, median): "
        + "; ".join(f"{k}: {v:.0f}" for k, v in raw.items())
        + f". Ceiling: {ceiling_name}. Texts per CPU second (median): "
        + "; ".join(f"{k}: {v:.0f}" for k, v in raw_cpu_med.items())
        + ". One text per request; the load generator runs on the same 2 cores as the service "
        "(as the service bench's does). *Per CPU second, of raw ORT's*: requests per CPU second "
        "of the service and the load generator together over the best raw texts per CPU second, "
        "a ratio other users' load on the shared machine moves far less than req/s.",
    ]
)
write(
    args.name,
    {
        "variants": {n: {"what": VARIANTS[n][0], "env": VARIANTS[n][1]} for n in names},
        "runs": runs,
        "median": med,
        "raw_ort_runs": raw_runs,
        "raw_ort_texts_per_s": raw,
        "raw_ort_cpu_runs": raw_cpu,
        "raw_ort_texts_per_cpu_s": raw_cpu_med,
        "ceiling": {"layout": ceiling_name, "texts_per_s": ceiling},
        "seconds": args.seconds,
        "rounds": args.rounds,
    },
    md,
)
