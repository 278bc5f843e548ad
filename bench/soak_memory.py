"""Memory soak of the service: closed-loop load at a fixed concurrency, resident memory of every
process of the `bentoml serve` tree sampled meanwhile, and (with `--tracemalloc`) Python
allocation snapshots taken inside the server and diffed, to say where memory grows.

The functions are shared with `bench/bench_reliability.py` (its soak line). Run alone it is a
diagnostic, writing `.slicewise/soak/<label>.json` (not a README result):

    .venv/bin/python bench/soak_memory.py --seconds 240 \
        [--tracemalloc] [--env MALLOC_ARENA_MAX=2] [--label NAME]

Flatness criterion (`flatness`): the tree's RSS grows by less than 2% over the second half of
the soak (mean of the last 10 samples vs the mean of the 10 samples at the half-way point).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import psutil

TEXTS = [
    "I would not fly with them again.",
    "Is my flight delayed?",
    "great crew, smooth flight",
    "lost my bag and nobody answers the phone",
]
FLAT_LIMIT = 0.02  # RSS growth over the second half of the soak that still counts as flat


async def load(
    url: str,
    seconds: float,
    concurrency: int,
    sample: Callable[[], None] | None = None,
    headers: dict[str, str] | None = None,
    every: float = 1.0,
) -> dict[str, Any]:
    """Closed-loop load, one text a request (each text made unique by a counter); `sample` is
    called every `every` seconds meanwhile.
    """
    ok = failed = 0
    statuses: dict[int, int] = {}
    deadline = time.perf_counter() + seconds

    async def worker(session: aiohttp.ClientSession, i: int) -> None:
        nonlocal ok, failed
        n = i
        while time.perf_counter() < deadline:
            n += 1
            try:
                body = {"texts": [TEXTS[n % len(TEXTS)] + f" #{n}"]}
                async with session.post(url + "/predict", json=body, headers=headers) as r:
                    await r.read()
                    statuses[r.status] = statuses.get(r.status, 0) + 1
                    ok += r.status == 200
                    failed += r.status != 200
            except (TimeoutError, aiohttp.ClientError):
                failed += 1

    async def sampler() -> None:
        while time.perf_counter() < deadline:
            if sample:
                sample()
            await asyncio.sleep(every)

    timeout = aiohttp.ClientTimeout(total=30)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        t0 = time.perf_counter()
        await asyncio.gather(sampler(), *(worker(session, i * 10**7) for i in range(concurrency)))
        wall = time.perf_counter() - t0
    return {"ok": ok, "failed": failed, "statuses": statuses, "rps": ok / wall, "seconds": wall}


def role(cmdline: list[str]) -> str:
    """A short name for a process of the `bentoml serve` tree."""
    line = " ".join(cmdline)
    if "_bentoml_impl.worker" in line:
        return "worker"
    if "bentoml" in line and " serve " in line:
        return "serve"
    return (cmdline[0].rsplit("/", 1)[-1] if cmdline else "?")[:30]


def process_rss(pid: int) -> dict[str, int]:
    """RSS in bytes of `pid` and each of its descendants, keyed `<role> <pid>`."""
    out = {}
    root = psutil.Process(pid)
    for p in [root, *root.children(recursive=True)]:
        try:
            out[f"{role(p.cmdline())} {p.pid}"] = p.memory_info().rss
        except psutil.Error:
            continue
    return out


def flatness(mib: list[float], window: int = 10) -> dict[str, float | bool]:
    """Growth of a series over its second half: the mean of the last `window` samples against
    the mean of the `window` samples starting half-way; flat when under `FLAT_LIMIT`.
    """
    half = len(mib) // 2
    mid = statistics.mean(mib[half : half + window])
    last = statistics.mean(mib[-window:])
    growth = (last - mid) / mid
    return {
        "mid_mib": round(mid, 1),
        "last_mib": round(last, 1),
        "second_half_growth": round(growth, 4),
        "flat": growth < FLAT_LIMIT,
    }


def soak(
    url: str, pid: int, seconds: float, concurrency: int, headers: dict[str, str] | None = None
) -> dict[str, Any]:
    """Load `url` for `seconds`, sampling the RSS of the process tree of `pid` every second."""
    samples: list[tuple[float, dict[str, int]]] = []
    t0 = time.perf_counter()
    result = asyncio.run(
        load(
            url,
            seconds,
            concurrency,
            lambda: samples.append((time.perf_counter() - t0, process_rss(pid))),
            headers,
        )
    )
    total = [sum(s.values()) / 2**20 for _, s in samples]
    names = sorted({k for _, s in samples for k in s})
    per_process = {
        name: [round(s.get(name, 0) / 2**20, 1) for _, s in samples[::10]] for name in names
    }
    return {
        **result,
        "concurrency": concurrency,
        "rss_mib": [round(m, 1) for m in total],
        "rss_every_10s": [round(m, 1) for m in total[::10]],
        "per_process_every_10s": per_process,
        **flatness(total),
    }


def diff_snapshots(directory: Path, top: int = 15) -> list[str]:
    """The allocation sites that grew most between the second and the last snapshot of each
    process (the first is taken during warm-up)."""
    import tracemalloc

    out = []
    by_pid: dict[str, list[Path]] = {}
    for f in sorted(directory.glob("*.tracemalloc")):
        by_pid.setdefault(f.name.split("-")[0], []).append(f)
    for pid, files in by_pid.items():
        if len(files) < 3:
            continue
        a = tracemalloc.Snapshot.load(str(files[1]))
        b = tracemalloc.Snapshot.load(str(files[-1]))
        out.append(f"pid {pid}: {files[1].name} -> {files[-1].name}")
        for stat in b.compare_to(a, "traceback")[:top]:
            frames = " <- ".join(
                f"{fr.filename.split('site-packages/')[-1]}:{fr.lineno}"
                for fr in stat.traceback[:4]
            )
            out.append(f"  {stat.size_diff / 2**20:+.2f} MiB {stat.count_diff:+d} blocks  {frames}")
    return out


def main() -> None:
    """Run one diagnostic soak (see the module docstring)."""
    from common import ROOT

    from slicewise.core import contracts as c
    from slicewise.core.redis_server import LocalRedis
    from slicewise.processes import BentoServer

    parser = argparse.ArgumentParser()
    parser.add_argument("--bundle", type=Path, default=ROOT / ".slicewise" / "bundle")
    parser.add_argument("--seconds", type=float, default=240.0)
    parser.add_argument("--warm-up", type=float, default=15.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--tracemalloc", action="store_true")
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE for the server")
    parser.add_argument("--label", default="soak")
    args = parser.parse_args()
    out_dir = ROOT / ".slicewise" / "soak"
    trace_dir = out_dir / f"{args.label}-trace"
    env = dict(kv.split("=", 1) for kv in args.env)
    if args.tracemalloc:
        env |= {"SLICEWISE_TRACEMALLOC_DIR": str(trace_dir), "SLICEWISE_TRACEMALLOC_INTERVAL": "30"}
    bundle = c.Bundle.load(args.bundle)
    out_dir.mkdir(parents=True, exist_ok=True)
    rds = LocalRedis(password="soak").start()
    server = BentoServer(
        {"SLICEWISE_MODEL_DIR": str(bundle.path), "REDIS_URL": rds.url, **env},
        log_file=out_dir / f"{args.label}.log",
    ).start()
    try:
        asyncio.run(load(server.url, args.warm_up, args.concurrency))
        result = soak(server.url, server.proc.pid, args.seconds, args.concurrency)
        redis_rss = psutil.Process(rds.proc.pid).memory_info().rss / 2**20
    finally:
        server.stop()
        rds.stop()
    result |= {
        "label": args.label,
        "env": env,
        "bundle": bundle.manifest.version,
        "redis_rss_mib": round(redis_rss, 1),
        "load_avg_1m": psutil.getloadavg()[0],
        "tracemalloc_top": diff_snapshots(trace_dir) if args.tracemalloc else [],
        "traced_mib": {
            f.stem: f.read_text().split("\n")[:-1] for f in sorted(trace_dir.glob("*.log"))
        },
    }
    (out_dir / f"{args.label}.json").write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "rss_mib"}, indent=2))


if __name__ == "__main__":
    main()
