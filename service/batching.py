"""Adaptive batching inside the serving process.

Requests queue up; each of `workers` tasks takes everything waiting (up to `max_batch_size`
items; a larger single request runs alone), runs the model once in a worker thread, and hands
each request its slice of the outputs. The batch size adapts to the load without a waiting
window: an idle service answers one request at a time, while under load the requests that
arrive during one model call form the next batch. With two workers one batch is tokenised and
post-processed while the other is in ONNX Runtime (on 2 cores: 19% more requests served than
one worker; README, "Serving").

Why not BentoML's batchable API: it needs the model in a second BentoML service, so every
request crosses a second HTTP hop with BentoML's middleware on both sides. On 2 CPU cores that
hop, not the model, capped throughput (README, "Serving": measured both ways).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from service.validation import Unavailable

T = TypeVar("T")
SHUTTING_DOWN = "the service is shutting down"  # the error of requests that close() cut off


class AdaptiveBatcher(Generic[T]):
    """Merge concurrent `submit(items)` calls into calls of `fn(all_items) -> results`."""

    def __init__(
        self, fn: Callable[[list[Any]], list[T]], max_batch_size: int = 64, workers: int = 1
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.fn = fn
        self.max_batch_size = max_batch_size
        self.workers = workers
        self._queue: asyncio.Queue[tuple[list[Any], asyncio.Future[list[T]]]] | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def submit(self, items: list[Any]) -> list[T]:
        """Results for `items`, computed in a batch with whatever else is waiting."""
        if self._queue is None:  # created on first use, inside the serving event loop
            self._queue = asyncio.Queue()
            self._tasks = [asyncio.create_task(self._run()) for _ in range(self.workers)]
        future: asyncio.Future[list[T]] = asyncio.get_running_loop().create_future()
        await self._queue.put((items, future))
        return await future

    async def _run(self) -> None:
        assert self._queue is not None
        carried: tuple[list[Any], asyncio.Future[list[T]]] | None = None  # did not fit last time
        while True:
            waiting = [carried or await self._queue.get()]
            carried, size = None, len(waiting[0][0])
            while not self._queue.empty():
                nxt = self._queue.get_nowait()
                if size + len(nxt[0]) > self.max_batch_size:
                    carried = nxt
                    break
                waiting.append(nxt)
                size += len(nxt[0])
            batch = [item for items, _ in waiting for item in items]
            try:
                results = await asyncio.to_thread(self.fn, batch)
            except asyncio.CancelledError:  # close(): the batch in the model gets an error too
                _fail([*waiting, carried] if carried else waiting, Unavailable(SHUTTING_DOWN))
                raise
            except Exception as exc:  # every request of the batch gets the error
                _fail(waiting, exc)
                continue
            start = 0
            for items, future in waiting:
                if not future.done():  # a cancelled request (client gone) is skipped
                    future.set_result(results[start : start + len(items)])
                start += len(items)

    def close(self) -> None:
        """Stop the workers; requests still queued get an error instead of waiting forever.

        Call it from the serving event loop (BentoML runs shutdown hooks there).
        """
        for task in self._tasks:
            task.cancel()
        self._tasks = []
        while self._queue is not None and not self._queue.empty():
            _fail([self._queue.get_nowait()], Unavailable(SHUTTING_DOWN))


def _fail(waiting: list[tuple[list[Any], asyncio.Future[Any]]], exc: BaseException) -> None:
    for _, future in waiting:
        if not future.done():
            future.set_exception(exc)
