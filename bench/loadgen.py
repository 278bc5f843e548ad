"""Load generation shared by the service benchmarks (CPU and GPU): a closed-loop HTTP client
and the raw ONNX Runtime ceiling on pre-tokenised batches."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

from slicewise.core import contracts as c


async def load(
    url: str,
    texts: list[str],
    seconds: float,
    concurrency: int = 32,
    rate: float | None = None,
    headers: dict[str, str] | None = None,
) -> dict:
    """Closed-loop load: `concurrency` clients, one random text of `texts` a request, for `seconds`.

    aiohttp, not httpx: on 2 cores the load generator shares the CPU with the service, and
    httpx took ~30% of a core at 250 req/s where aiohttp takes ~7%.
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
                async with session.post(url + "/predict", json=body, headers=headers) as r:
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


def tokenised_batches(
    tokenizer: Any, texts: list[str], batch: int, max_length: int, n: int, seed: int = 1
) -> list[dict[str, np.ndarray]]:
    """`n` feeds of `batch` random texts each, padded to the longest of the batch."""
    rng = np.random.default_rng(seed)
    feeds = []
    for _ in range(n):
        enc = tokenizer(
            [texts[i] for i in rng.integers(0, len(texts), batch)],
            padding=True,
            truncation=True,
            max_length=max_length,
            return_tensors="np",
        )
        feeds.append({k: enc[k].astype(np.int64) for k in c.INPUT_NAMES})
    return feeds


def raw_ort_throughput(
    model_file: Path,
    feeds: list[dict[str, np.ndarray]],
    parallel: int = 1,
    threads: int = 0,
    providers: tuple[str, ...] = ("CPUExecutionProvider",),
    cpu: list[float] | None = None,
) -> float:
    """Texts/s of bare `session.run` over `feeds` (no HTTP, no tokenising, no post-processing).

    `parallel` calls at once from as many threads, each with `threads` intra-op threads
    (0: ONNX Runtime's default, one per core). `cpu`, when given, gets the texts per CPU second
    of this process over the timed part appended (robust to other users' load).
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(model_file), opts, providers=list(providers))
    sess.run(None, feeds[0])
    texts = sum(len(f["input_ids"]) for f in feeds)
    with ThreadPoolExecutor(parallel) as pool:
        t0, c0 = time.perf_counter(), time.process_time()
        list(pool.map(lambda f: sess.run(None, f), feeds))
        wall, used = time.perf_counter() - t0, time.process_time() - c0
    if cpu is not None:
        cpu.append(texts / used)
    return texts / wall
