"""Service benchmarks on the demo model (2 CPU cores):

1. throughput and latency at concurrency 32 (one text per request), like for like: slicewise on
   the int8 and on the fp32 ONNX file, a naive service (one request at a time, no batching) in
   PyTorch eager fp32 and in ONNX Runtime on the same int8 file; interleaved rounds, medians;
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
import json
import statistics
import subprocess
import sys
import time

import httpx
import numpy as np
import psutil
import redis
from common import ROOT, redis_outage, write
from loadgen import load, raw_ort_throughput, tokenised_batches

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


def raw_ort(model_file, batch: int, parallel: int = 1, threads: int = 0) -> float:
    """Raw ONNX Runtime texts/s of `model_file` on random test texts (see loadgen)."""
    tok = load_tokenizer(cfg.backbone)
    feeds = tokenised_batches(tok, texts, batch, cfg.backbone.max_length, max(30, 1920 // batch))
    return raw_ort_throughput(model_file, feeds, parallel, threads)


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
served_file = bundle.model_file(prefer_int8=True)
server = BentoServer(
    {"SLICEWISE_MODEL_DIR": str(bundle.path), "REDIS_URL": rds.url},
    log_file=ROOT / ".slicewise/bench_service.log",
).start()
server_fp32 = BentoServer(  # the same service on the fp32 file: beside the naive fp32 row
    {"SLICEWISE_MODEL_DIR": str(bundle.path), "REDIS_URL": rds.url, "SLICEWISE_PREFER_INT8": "0"},
    log_file=ROOT / ".slicewise/bench_service_fp32.log",
).start()


def start_naive(*model_file: str) -> tuple[subprocess.Popen, str]:
    """The naive service (PyTorch eager, or ONNX Runtime on `model_file`), warmed up."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "bench/naive_service.py"), str(ckpt), str(port), *model_file]
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(120):
        try:
            httpx.post(url + "/predict", json={"texts": ["warm up"]}, timeout=5)
            break
        except httpx.HTTPError:
            time.sleep(1)
    return proc, url


naive, naive_url = start_naive()
naive_int8, naive_int8_url = start_naive(str(served_file))
urls = {  # row: url; slicewise (int8 when the bundle has it) is the headline row
    "slicewise": server.url,
    "slicewise fp32": server_fp32.url,
    "naive": naive_url,
    "naive int8": naive_int8_url,
}
results: dict[str, list[dict]] = {name: [] for name in urls}
workers = Settings.from_env().model_workers
layouts = {  # name: (batch, calls at once, intra-op threads per call)
    "one call, all cores, batch 64": (64, 1, 0),
    f"{workers} single-thread calls at once, batch 16": (16, workers, 1),
}
raw_runs: dict[str, list[float]] = {name: [] for name in layouts}
try:
    asyncio.run(load(server.url, texts, 3))
    asyncio.run(load(server_fp32.url, texts, 3))
    for _ in range(args.rounds):  # interleaved: the four services, raw ONNX Runtime (all idle)
        for name, url in urls.items():
            results[name].append(asyncio.run(load(url, texts, args.seconds)))
        for name, (batch, parallel, threads) in layouts.items():
            raw_runs[name].append(raw_ort(served_file, batch, parallel, threads))
    naive.terminate()
    naive_int8.terminate()
    server_fp32.stop()
    med = {k: {m: statistics.median(r[m] for r in v) for m in v[0]} for k, v in results.items()}
    raw = {name: statistics.median(v) for name, v in raw_runs.items()}
    ceiling = max(raw.values())

    # reliability: Redis away for 20 s under load
    client = redis.Redis.from_url(rds.url)
    before = client.xlen(c.PREDICTIONS_STREAM)

    t = redis_outage(rds)
    during = asyncio.run(load(server.url, texts, 35, concurrency=16))
    t.join()
    time.sleep(3)
    metrics = httpx.get(server.url + "/metrics").text
    dropped = sum(
        float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith("slicewise_prediction_log_dropped_total")
    )
    after = client.xlen(c.PREDICTIONS_STREAM)
    asyncio.run(load(server.url, texts, 3, concurrency=4))
    time.sleep(1)
    resumed = client.xlen(c.PREDICTIONS_STREAM) > after

    # soak at half the peak rate: errors and resident memory
    procs = [
        psutil.Process(server.proc.pid),
        *psutil.Process(server.proc.pid).children(recursive=True),
    ]
    rss0 = sum(p.memory_info().rss for p in procs if p.is_running())
    soak = asyncio.run(
        load(server.url, texts, args.soak_seconds, concurrency=8, rate=med["slicewise"]["rps"] / 2)
    )
    rss1 = sum(p.memory_info().rss for p in procs if p.is_running())
finally:
    naive.kill()
    naive_int8.kill()
    server_fp32.stop()
    server.stop()
    rds.stop()

gpu_file = ROOT / "bench" / "results" / "gpu.json"  # written by bench/bench_gpu.py, if ever run
gpu_result = json.loads(gpu_file.read_text()) if gpu_file.exists() else None
baseline_dir = ROOT / ".slicewise" / "bundle-baseline"
files = {"slice": bundle.path / c.MODEL_ONNX}
if baseline_dir.exists():
    files["plain"] = baseline_dir / c.MODEL_ONNX
heads = median_latencies(files)
s, n = med["slicewise"], med["naive"]
s32, n8 = med["slicewise fp32"], med["naive int8"]
ROWS = {
    "slicewise": f"slicewise (BentoML, in-process adaptive batching, {workers} model workers, ONNX Runtime {served_file.name})",
    "slicewise fp32": f"slicewise, same service on {c.MODEL_ONNX} (fp32)",
    "naive": "naive (PyTorch eager fp32, one request at a time)",
    "naive int8": f"naive on ONNX Runtime {served_file.name} (one request at a time)",
}
md = (
    f"""| concurrency 32, 1 text/request, {args.rounds}×{args.seconds:.0f}s interleaved | req/s | p50 ms | p95 ms | p99 ms | errors |
|---|---:|---:|---:|---:|---:|
"""
    + "\n".join(
        f"| {ROWS[k]} | {v['rps']:.1f} | {v['p50_ms']:.0f} | {v['p95_ms']:.0f} | {v['p99_ms']:.0f} | {v['errors']:.0f} |"
        for k, v in med.items()
    )
    + f"""

- Like for like: slicewise / naive on fp32 **{s32["rps"] / n["rps"]:.2f}×**; on {served_file.name} **{s["rps"] / n8["rps"]:.2f}×** (batching and the service, the model file held equal). Mixed (slicewise {served_file.name} vs naive PyTorch fp32): {s["rps"] / n["rps"]:.2f}×.
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
- GPU: """
    + (
        f"measured on {gpu_result['context']['date']}: see bench/results/gpu.md."
        if gpu_result
        else "not measured (no bench/results/gpu.json; `bench/gpu.sh` measures it on a GPU machine, docs/gpu.md)."
    )
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
