"""Reliability of the public surface (issue #15), against a real `bentoml serve` with a token,
the default 1 MiB body limit and a password-protected Redis:

1. bad inputs, one request each: the status, and whether the body is one `{"error": …}` object;
2. a 20 MB body (Content-Length announced, and chunked without a length): time to the 413;
3. a 20 MB body without a token: the 401 arrives although no byte of the body was sent;
4. 60 s at concurrency 32 (one text a request): errors, and the server's resident memory
   (process tree) sampled every second;
5. Redis stopped for 20 s under load (concurrency 16, 35 s): failed predictions.

Run: .venv/bin/python bench/bench_reliability.py [--bundle DIR] [--seconds 60]
(default bundle: .slicewise/bundle, the demo model). Writes bench/results/reliability.{json,md}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import psutil
from common import ROOT, redis_outage, write

from slicewise.core import contracts as c
from slicewise.core.redis_server import LocalRedis
from slicewise.processes import BentoServer

parser = argparse.ArgumentParser()
parser.add_argument("--bundle", type=Path, default=ROOT / ".slicewise" / "bundle")
parser.add_argument("--seconds", type=float, default=60.0, help="length of the steady load")
args = parser.parse_args()

TOKEN = "bench-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
TWENTY_MB = 20 * 1024 * 1024
TEXTS = [
    "I would not fly with them again.",
    "Is my flight delayed?",
    "great crew, smooth flight",
    "lost my bag and nobody answers the phone",
]
J = {"content-type": "application/json"}
BAD_INPUTS: list[tuple[str, str, str, dict[str, str], bytes]] = [
    ("empty list", "POST", "/predict", J, b'{"texts": []}'),
    ("empty text", "POST", "/predict", J, b'{"texts": [""]}'),
    ("zero-width text", "POST", "/predict", J, json.dumps({"texts": ["\u200b\u200d"]}).encode()),
    ("NUL text", "POST", "/predict", J, b'{"texts": ["\\u0000"]}'),
    ("number as text", "POST", "/predict", J, b'{"texts": [3]}'),
    ("65 texts", "POST", "/predict", J, json.dumps({"texts": ["x"] * 65}).encode()),
    ("text of 2001 chars", "POST", "/predict", J, json.dumps({"texts": ["x" * 2001]}).encode()),
    ("lone surrogate", "POST", "/predict", J, b'{"texts": ["\\ud83d"]}'),
    ("invalid JSON", "POST", "/predict", J, b'{"texts": ['),
    ("JSON nested 10 000 deep", "POST", "/predict", J, b"[" * 10000 + b"]" * 10000),
    ("wrong field", "POST", "/predict", J, b'{"text": ["x"]}'),
    ("multipart, no boundary", "POST", "/predict", {"content-type": "multipart/form-data"}, b"--"),
    ("text/plain", "POST", "/predict", {"content-type": "text/plain"}, b"hello"),
    ("2 MB body", "POST", "/predict", J, json.dumps({"texts": ["x" * 1000] * 2000}).encode()),
    ("GET /predict", "GET", "/predict", {}, b""),
    ("unknown route", "POST", "/v2/predict", J, b"{}"),
    (
        "feedback: 20 000-char id",
        "POST",
        "/feedback",
        J,
        json.dumps({"id": "a" * 20000, "label": "x"}).encode(),
    ),
    (
        "feedback: unknown id",
        "POST",
        "/feedback",
        J,
        json.dumps({"id": "0" * 32, "label": "negative"}).encode(),
    ),
    (
        "feedback: unknown label",
        "POST",
        "/feedback",
        J,
        b'{"id": "' + b"0" * 32 + b'", "label": "meh"}',
    ),
]


def bad_inputs(url: str) -> list[dict[str, Any]]:
    rows = []
    with httpx.Client(timeout=30) as client:
        for name, method, path, headers, body in BAD_INPUTS:
            r = client.request(method, url + path, headers={**AUTH, **headers}, content=body)
            try:
                shape = set(r.json()) == {"error"} and len(r.json()["error"]) <= 300
            except ValueError:
                shape = False
            rows.append({"input": name, "status": r.status_code, "one_error_object": shape})
    for name, headers in (("no token", {}), ("wrong token", {"Authorization": "Bearer x"})):
        r = httpx.post(url + "/predict", json={"texts": ["x"]}, headers=headers, timeout=30)
        rows.append(
            {"input": name, "status": r.status_code, "one_error_object": set(r.json()) == {"error"}}
        )
    return rows


def timed_big_body(
    port: int, chunked: bool, token: bool, send_body: bool = True
) -> tuple[int, float]:
    """Status and seconds until the whole response arrived, while a thread streams 20 MB."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    head = "POST /predict HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
    head += f"Authorization: Bearer {TOKEN}\r\n" if token else ""
    head += "Transfer-Encoding: chunked\r\n" if chunked else f"Content-Length: {TWENTY_MB}\r\n"
    piece = b'{"texts": ["' + b"x" * (64 * 1024 - 12)

    def stream() -> None:
        try:
            sent = 0
            while sent < TWENTY_MB:
                data = piece if not chunked else f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
                sock.sendall(data)
                sent += len(piece)
        except OSError:
            pass  # the server answered and closed: what we measure

    t0 = time.perf_counter()
    sock.sendall(head.encode() + b"\r\n")
    writer = threading.Thread(target=stream, daemon=True)
    if send_body:
        writer.start()
    data = b""
    try:
        while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except ConnectionResetError:
        pass  # the server closed with body bytes unread: a reset may follow its answer
    took = time.perf_counter() - t0
    sock.close()
    return (int(data.split()[1]) if data.startswith(b"HTTP/") else 0), took


async def load(url: str, seconds: float, concurrency: int, sample=None) -> dict[str, Any]:
    """Closed-loop load, one text a request; `sample` is called every second meanwhile."""
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
                async with session.post(url + "/predict", json=body, headers=AUTH) as r:
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
            await asyncio.sleep(1.0)

    timeout = aiohttp.ClientTimeout(total=30)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        t0 = time.perf_counter()
        await asyncio.gather(sampler(), *(worker(session, i * 10**6) for i in range(concurrency)))
        wall = time.perf_counter() - t0
    return {"ok": ok, "failed": failed, "statuses": statuses, "rps": ok / wall, "seconds": wall}


def tree_rss(pid: int) -> int:
    root = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)])


bundle = c.Bundle.load(args.bundle)
rds = LocalRedis(password="bench-redis-password").start()
server = BentoServer(
    {
        "SLICEWISE_MODEL_DIR": str(bundle.path),
        "REDIS_URL": rds.url,
        "SLICEWISE_API_TOKEN": TOKEN,
        "SLICEWISE_REQUIRE_TOKEN": "1",
    },
    log_file=ROOT / ".slicewise/bench_reliability.log",
).start()
try:
    bad = bad_inputs(server.url)
    big = {
        "content-length": [timed_big_body(server.port, False, True) for _ in range(5)],
        "chunked": [timed_big_body(server.port, True, True) for _ in range(5)],
        "no token": [timed_big_body(server.port, False, False, send_body=False) for _ in range(5)],
    }
    asyncio.run(load(server.url, 3, 8))  # warm up
    rss: list[tuple[float, int]] = []
    t_start = time.perf_counter()
    steady = asyncio.run(
        load(
            server.url,
            args.seconds,
            32,
            lambda: rss.append((time.perf_counter() - t_start, tree_rss(server.proc.pid))),
        )
    )

    t = redis_outage(rds)
    during = asyncio.run(load(server.url, 35, 16))
    t.join()
finally:
    server.stop()
    rds.stop()

mib = [r / 2**20 for _, r in rss]
early = statistics.mean(mib[10:20]) if len(mib) >= 30 else mib[0]
late = statistics.mean(mib[-10:])
result = {
    "bundle": bundle.manifest.version,
    "model_kind": bundle.manifest.model_kind,
    "bad_inputs": bad,
    "big_body_seconds": {k: [round(s, 4) for _, s in v] for k, v in big.items()},
    "big_body_status": {k: sorted({st for st, _ in v}) for k, v in big.items()},
    "steady": steady,
    "rss_mib": {"first": mib[0], "max": max(mib), "last": mib[-1], "s10_20": early, "last10": late},
    "redis_outage": during,
}
max_ms = {k: 1000 * max(s for _, s in v) for k, v in big.items()}
rows = "\n".join(
    f"| {r['input']} | {r['status']} | {'yes' if r['one_error_object'] else 'NO'} |" for r in bad
)
fivexx = sum(r["status"] >= 500 for r in bad)
md = f"""## Reliability (`bench/bench_reliability.py`)

Model {bundle.manifest.model_kind} `{bundle.manifest.version}`, token required, body limit
1 MiB, Redis with a password. The machine is shared (2 cores, other jobs running).

| bad input | status | one `{{"error"}}` object |
|---|---|---|
{rows}

{len(bad)} bad inputs, {fivexx} answered with a 5xx.

| check | result |
|---|---|
| 20 MB body, Content-Length announced → {big["content-length"][0][0]} | max {max_ms["content-length"]:.1f} ms over 5 tries |
| 20 MB body, chunked (no length) → {big["chunked"][0][0]} | max {max_ms["chunked"]:.1f} ms over 5 tries |
| 20 MB announced, no token, no body byte sent → {big["no token"][0][0]} | max {max_ms["no token"]:.1f} ms over 5 tries |
| {args.seconds:.0f} s at concurrency 32 | {steady["ok"]} ok, {steady["failed"]} failed, {steady["rps"]:.0f} req/s |
| resident memory (server process tree) | {early:.0f} MiB at 10-20 s, {late:.0f} MiB in the last 10 s (max {max(mib):.0f}) |
| Redis stopped 20 s under load (concurrency 16, 35 s) | {during["ok"]} ok, {during["failed"]} failed predictions |
"""
write("reliability", result, md)
