"""Service benchmarks on the demo model (2 CPU cores):

1. throughput and latency at concurrency 32 (one text per request), slicewise vs a naive PyTorch
   eager service (one request at a time, no batching), interleaved rounds, medians;
2. the raw ONNX Runtime batch throughput of the same model file (the ceiling), two ways: one
   call at a time on all cores (batch 64), and the service's layout (as many single-threaded
   calls at once as it has model workers, batch 16: the fastest layout measured here), in
   every round next to the two services (both idle then), so the ratio is taken side by side;
3. the cost of the slice heads: the exported model vs a plain-head (baseline) model, same backbone;
4. reliability: Redis stopped for 20 s under load, then restarted; a soak at half the peak rate.

Needs the demo bundle (`slicewise export`). Run: .venv/bin/python bench/bench_service.py [--soak-seconds 300]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import aiohttp
import httpx
import numpy as np
import psutil
import redis
from common import ROOT, redis_outage, write

from service.settings import Settings
from slicewise.core import contracts as c
from slicewise.core.redis_server import LocalRedis, free_port
from slicewise.processes import BentoServer
from training.backbone import load_tokenizer
from training.config import load_config
from training.data import load_dataset, split_dataset

parser = argparse.ArgumentParser()
parser.add_argument("--seconds", type=float, default=20.0, help="length of one load round")
parser.add_argument("--rounds", type=int, default=4)
parser.add_argument("--soak-seconds", type=float, default=300.0)
args = parser.parse_args()

cfg = load_config()
bundle = c.Bundle.load(ROOT / ".slicewise" / "bundle")
texts = split_dataset(load_dataset(cfg), cfg.dataset.split).test["text"].tolist()
ckpt = next((ROOT / ".slicewise" / "checkpoints").glob(f"*-{bundle.manifest.version}.pt"))


async def load(url: str, seconds: float, concurrency: int = 32, rate: float | None = None) -> dict:
    """Closed-loop load: `concurrency` clients, one text a request, for `seconds`.

    aiohttp, not httpx: on these 2 cores the load generator shares the CPU with the service,
    and httpx took ~30% of a core at 250 req/s where aiohttp takes ~7%.
    """
    lat, errors, done = [], 0, 0
    deadline = time.perf_counter() + seconds
    rng = np.random.default_rng(0)

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal errors, done
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            try:
                body = {"texts": [texts[rng.integers(len(texts))]]}
                async with session.post(url + "/predict", json=body) as r:
                    await r.read()
                    ok = r.status == 200
            except (TimeoutError, aiohttp.ClientError):
                ok = False
            lat.append(time.perf_counter() - t0)
            done += ok
            errors += not ok
            if rate:
                await asyncio.sleep(max(0.0, concurrency / rate - (time.perf_counter() - t0)))

    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    q = np.percentile(lat, [50, 95, 99]) * 1000 if lat else [np.nan] * 3
    return {
        "rps": done / wall,
        "p50_ms": q[0],
        "p95_ms": q[1],
        "p99_ms": q[2],
        "errors": errors,
        "requests": done + errors,
    }


def raw_ort_throughput(model_file, batch: int, parallel: int = 1, threads: int = 0) -> float:
    """Texts/s of bare `session.run` on pre-tokenised batches (no HTTP, no post-processing).

    `parallel` calls at once from as many threads, each with `threads` intra-op threads
    (0: ONNX Runtime's default, one per core).
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(model_file), opts, providers=["CPUExecutionProvider"])
    tok = load_tokenizer(cfg.backbone)
    rng = np.random.default_rng(1)
    n = max(30, 1920 // batch)
    feeds = []
    for _ in range(n):
        enc = tok(
            [texts[i] for i in rng.integers(0, len(texts), batch)],
            padding=True,
            truncation=True,
            max_length=cfg.backbone.max_length,
            return_tensors="np",
        )
        feeds.append({k: enc[k].astype(np.int64) for k in c.INPUT_NAMES})
    sess.run(None, feeds[0])
    with ThreadPoolExecutor(parallel) as pool:
        t0 = time.perf_counter()
        list(pool.map(lambda f: sess.run(None, f), feeds))
        return batch * n / (time.perf_counter() - t0)


def median_latencies(model_files: dict[str, object], batch: int = 32, rounds: int = 60) -> dict:
    """Median ms per batch for each model file, the sessions run interleaved, one call each a round."""
    import onnxruntime as ort

    tok = load_tokenizer(cfg.backbone)
    enc = tok(
        texts[:batch],
        padding=True,
        truncation=True,
        max_length=cfg.backbone.max_length,
        return_tensors="np",
    )
    f = {k: enc[k].astype(np.int64) for k in c.INPUT_NAMES}
    sessions = {
        name: ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        for name, path in model_files.items()
    }
    ts: dict[str, list[float]] = {name: [] for name in sessions}
    for sess in sessions.values():
        sess.run(None, f)
    for _ in range(rounds):
        for name, sess in sessions.items():
            t0 = time.perf_counter()
            sess.run(None, f)
            ts[name].append(time.perf_counter() - t0)
    return {name: statistics.median(v) * 1000 for name, v in ts.items()}


rds = LocalRedis().start()
server = BentoServer(
    {"SLICEWISE_MODEL_DIR": str(bundle.path), "REDIS_URL": rds.url},
    log_file=ROOT / ".slicewise/bench_service.log",
).start()
naive_port = free_port()
naive = subprocess.Popen(
    [sys.executable, str(ROOT / "bench/naive_service.py"), str(ckpt), str(naive_port)]
)
naive_url = f"http://127.0.0.1:{naive_port}"
for _ in range(120):
    try:
        httpx.post(naive_url + "/predict", json={"texts": ["warm up"]}, timeout=5)
        break
    except httpx.HTTPError:
        time.sleep(1)
served_file = bundle.model_file(prefer_int8=True)
results: dict[str, list[dict]] = {"slicewise": [], "naive": []}
workers = Settings.from_env().model_workers
layouts = {  # name: (batch, calls at once, intra-op threads per call)
    "one call, all cores, batch 64": (64, 1, 0),
    f"{workers} single-thread calls at once, batch 16": (16, workers, 1),
}
raw_runs: dict[str, list[float]] = {name: [] for name in layouts}
try:
    asyncio.run(load(server.url, 3))
    for _ in range(args.rounds):  # interleaved: service, naive, raw ONNX Runtime (both idle)
        results["slicewise"].append(asyncio.run(load(server.url, args.seconds)))
        results["naive"].append(asyncio.run(load(naive_url, args.seconds)))
        for name, (batch, parallel, threads) in layouts.items():
            raw_runs[name].append(raw_ort_throughput(served_file, batch, parallel, threads))
    naive.terminate()
    med = {k: {m: statistics.median(r[m] for r in v) for m in v[0]} for k, v in results.items()}
    raw = {name: statistics.median(v) for name, v in raw_runs.items()}
    ceiling = max(raw.values())

    # reliability: Redis away for 20 s under load
    client = redis.Redis.from_url(rds.url)
    before = client.xlen(c.PREDICTIONS_STREAM)

    t = redis_outage(rds)
    during = asyncio.run(load(server.url, 35, concurrency=16))
    t.join()
    time.sleep(3)
    metrics = httpx.get(server.url + "/metrics").text
    dropped = sum(
        float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith("slicewise_prediction_log_dropped_total")
    )
    after = client.xlen(c.PREDICTIONS_STREAM)
    asyncio.run(load(server.url, 3, concurrency=4))
    time.sleep(1)
    resumed = client.xlen(c.PREDICTIONS_STREAM) > after

    # soak at half the peak rate: errors and resident memory
    procs = [
        psutil.Process(server.proc.pid),
        *psutil.Process(server.proc.pid).children(recursive=True),
    ]
    rss0 = sum(p.memory_info().rss for p in procs if p.is_running())
    soak = asyncio.run(
        load(server.url, args.soak_seconds, concurrency=8, rate=med["slicewise"]["rps"] / 2)
    )
    rss1 = sum(p.memory_info().rss for p in procs if p.is_running())
finally:
    naive.kill()
    server.stop()
    rds.stop()

baseline_dir = ROOT / ".slicewise" / "bundle-baseline"
files = {"slice": bundle.path / c.MODEL_ONNX}
if baseline_dir.exists():
    files["plain"] = baseline_dir / c.MODEL_ONNX
heads = median_latencies(files)
s, n = med["slicewise"], med["naive"]
md = (
    f"""| concurrency 32, 1 text/request, {args.rounds}×{args.seconds:.0f}s interleaved | req/s | p50 ms | p95 ms | p99 ms | errors |
|---|---:|---:|---:|---:|---:|
| slicewise (BentoML, in-process adaptive batching, {workers} model workers, ONNX Runtime {served_file.name}) | {s["rps"]:.1f} | {s["p50_ms"]:.0f} | {s["p95_ms"]:.0f} | {s["p99_ms"]:.0f} | {s["errors"]:.0f} |
| naive (PyTorch eager, one request at a time) | {n["rps"]:.1f} | {n["p50_ms"]:.0f} | {n["p95_ms"]:.0f} | {n["p99_ms"]:.0f} | {n["errors"]:.0f} |

- slicewise / naive throughput: **{s["rps"] / n["rps"]:.2f}×**.
- raw ONNX Runtime throughput of the same file (pre-tokenised, no HTTP; measured in every round, median): """
    + "; ".join(f"{k}: {v:.0f} texts/s" for k, v in raw.items())
    + f""". The service reaches **{s["rps"] / ceiling:.1%}** of the faster.
- slice heads cost (ONNX fp32, batch 32, interleaved, median): {bundle.manifest.model_kind} {heads["slice"]:.1f} ms"""
    + (
        f" vs plain head {heads['plain']:.1f} ms: **{100 * (heads['slice'] / heads['plain'] - 1):+.1f}%**"
        if "plain" in heads
        else " (no baseline bundle)"
    )
    + f"""
- Redis stopped 20 s under load (16 concurrent): {during["requests"]} requests, **{during["errors"]} failed**; dropped log entries counted: {dropped:.0f}; stream {before} → {after} entries, writing resumed: {resumed}.
- Soak {args.soak_seconds:.0f}s at half the peak rate: {soak["requests"]} requests, **{soak["errors"]} errors**, p99 {soak["p99_ms"]:.0f} ms; resident memory {rss0 / 2**20:.0f} → {rss1 / 2**20:.0f} MiB (**{100 * (rss1 / rss0 - 1):+.1f}%**).
- GPU: no GPU machine was available to this task; the CUDA provider path is implemented but not measured."""
)
write(
    "service",
    {
        "load": results,
        "median": med,
        "raw_ort_texts_per_s": raw,
        "raw_ort_runs": raw_runs,
        "service_vs_raw": s["rps"] / ceiling,
        "slice_heads": heads,
        "redis_outage": {
            **during,
            "dropped": dropped,
            "stream_before": before,
            "stream_after": after,
            "resumed": resumed,
        },
        "soak": {**soak, "rss_start": rss0, "rss_end": rss1},
    },
    md,
)
