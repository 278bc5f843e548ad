"""`slicewise demo-traffic`: replay held-out texts against the service, optionally shifted
into chosen slices, so dashboards and alerts can be seen working.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx


@dataclass
class TrafficResult:
    """What a replay sent and how it went."""

    sent: int
    ok: int
    failed: int
    seconds: float
    feedback: int = 0


def shifted_sample(
    texts: list[str], in_slice: list[bool], n: int, shift: float, seed: int = 0
) -> list[str]:
    """`n` texts where a share `shift` comes from the slice members (0 = plain replay)."""
    rng = random.Random(seed)
    members = [t for t, m in zip(texts, in_slice, strict=True) if m]
    if shift > 0 and not members:
        raise ValueError("the shifted slice has no members among the texts to replay")
    out = []
    for _ in range(n):
        out.append(rng.choice(members) if shift > 0 and rng.random() < shift else rng.choice(texts))
    return out


async def replay(
    url: str,
    texts: list[str],
    batch: int = 4,
    concurrency: int = 8,
    rate: float | None = None,
    token: str | None = None,
    feedback: Callable[[str], str | None] | None = None,
    progress: Callable[[int], None] | None = None,
) -> TrafficResult:
    """Send `texts` to `url/predict` in batches; optionally send feedback labels for some."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    batches = [texts[i : i + batch] for i in range(0, len(texts), batch)]
    queue: asyncio.Queue[list[str]] = asyncio.Queue()
    for b in batches:
        queue.put_nowait(b)
    result = TrafficResult(0, 0, 0, 0.0)
    start = time.perf_counter()
    interval = (1.0 / rate) if rate else 0.0

    async def worker(client: httpx.AsyncClient) -> None:
        while not queue.empty():
            b = queue.get_nowait()
            t0 = time.perf_counter()
            try:
                r = await client.post(
                    url + "/predict", json={"texts": b}, headers=headers, timeout=30
                )
                ok = r.status_code == 200
            except httpx.HTTPError:
                ok = False
            result.sent += len(b)
            if ok:
                result.ok += len(b)
                if feedback is not None:
                    for text, p in zip(b, r.json()["predictions"], strict=True):
                        label = feedback(text)
                        if label is not None:
                            fb = await client.post(
                                url + "/feedback",
                                json={"id": p["id"], "label": label},
                                headers=headers,
                                timeout=30,
                            )
                            result.feedback += fb.status_code == 200
            else:
                result.failed += len(b)
            if progress:
                progress(len(b))
            if interval:
                await asyncio.sleep(max(0.0, interval * concurrency - (time.perf_counter() - t0)))

    async with httpx.AsyncClient() as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    result.seconds = time.perf_counter() - start
    return result
