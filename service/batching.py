"""Adaptive batching inside the serving process.

Requests queue up; each of `workers` model threads takes everything waiting (up to
`max_batch_size` items; a larger single request runs alone), runs the model once, and hands each
request its slice of the outputs. The batch size adapts to the load without a waiting window: an
idle service answers one request at a time, while under load the requests that arrive during one
model call form the next batch. With two workers one batch is tokenised and post-processed while
the other is in ONNX Runtime (on 2 cores: 19% more requests served than one worker;
bench/README.md, "Serving").

The model threads are the batcher's own and take the next batch themselves, so a thread whose
batch is done starts the next one without waiting for the event loop, which only queues requests
and sets their results. Against running each batch through `asyncio.to_thread` from a task on
the loop: 1.5% and 2.4% more requests served at concurrency 32 on 2 cores, 2% less CPU per
request, in two side-by-side runs (bench/results/service_tuning_faster_machine.md).

Why not BentoML's batchable API: it needs the model in a second BentoML service, so every
request crosses a second HTTP hop with BentoML's middleware on both sides. On 2 CPU cores that
hop, not the model, capped throughput (bench/README.md, "Serving": measured both ways).
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from service.validation import Unavailable

T = TypeVar("T")
SHUTTING_DOWN = "the service is shutting down"  # the error of requests that close() cut off
Waiting = list[tuple[list[Any], "asyncio.Future[Any]"]]


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
        self._waiting: deque[tuple[list[Any], asyncio.Future[list[T]]]] = deque()
        self._ready = threading.Condition()  # guards _waiting and _closed
        self._closed = False
        self._threads: list[threading.Thread] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    async def submit(self, items: list[Any]) -> list[T]:
        """Results for `items`, computed in a batch with whatever else is waiting."""
        if not self._threads and not self._closed:  # started on first use, from the serving loop
            self._loop = asyncio.get_running_loop()
            self._threads = [
                threading.Thread(target=self._run, name=f"model-{i}", daemon=True)
                for i in range(self.workers)
            ]
            for t in self._threads:
                t.start()
        future: asyncio.Future[list[T]] = asyncio.get_running_loop().create_future()
        with self._ready:
            if self._closed:
                raise Unavailable(SHUTTING_DOWN)
            self._waiting.append((items, future))
            self._ready.notify()
        return await future

    def _take(self) -> Waiting | None:
        """Everything waiting that fits one batch (a larger single request alone); None once
        closed.
        """
        with self._ready:
            while not self._waiting and not self._closed:
                self._ready.wait()
            if self._closed:
                return None
            taken = [self._waiting.popleft()]
            size = len(taken[0][0])
            while self._waiting and size + len(self._waiting[0][0]) <= self.max_batch_size:
                size += len(self._waiting[0][0])
                taken.append(self._waiting.popleft())
            return taken

    def _run(self) -> None:
        """One model thread: take what is waiting, run it, hand the results to the loop."""
        while (waiting := self._take()) is not None:
            batch = [item for items, _ in waiting for item in items]
            try:
                results: list[T] | BaseException = self.fn(batch)
            except Exception as exc:  # every request of the batch gets the error
                results = exc
            try:
                self._loop.call_soon_threadsafe(self._deliver, waiting, results)  # type: ignore[union-attr]
            except RuntimeError:  # the loop is closed: nobody waits for these any more
                return

    def _deliver(self, waiting: Waiting, results: list[Any] | BaseException) -> None:
        """On the event loop: each request gets its slice of the results (or the error)."""
        if self._closed:  # close() came while the batch was in the model
            results = Unavailable(SHUTTING_DOWN)
        if isinstance(results, BaseException):
            _fail(waiting, results)
            return
        start = 0
        for items, future in waiting:
            if not future.done():  # a cancelled request (client gone) is skipped
                future.set_result(results[start : start + len(items)])
            start += len(items)

    def close(self) -> None:
        """Stop the model threads; requests still waiting, and those of a batch in the model,
        get an error instead of waiting forever.

        Call it from the serving event loop (BentoML runs shutdown hooks there).
        """
        with self._ready:
            self._closed = True
            left = list(self._waiting)
            self._waiting.clear()
            self._ready.notify_all()
        _fail(left, Unavailable(SHUTTING_DOWN))


def _fail(waiting: Waiting, exc: BaseException) -> None:
    for _, future in waiting:
        if not future.done():
            future.set_exception(exc)
