"""The in-process adaptive batcher: merging, result routing, errors, the size cap."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from service.batching import AdaptiveBatcher


class Recorder:
    """Doubles its inputs; records every batch; the first call blocks a while."""

    def __init__(self, fail_on: int | None = None) -> None:
        self.batches: list[list[int]] = []
        self.fail_on = fail_on
        self.lock = threading.Lock()

    def __call__(self, items: list[int]) -> list[int]:
        with self.lock:
            self.batches.append(list(items))
            first = len(self.batches) == 1
        if first:
            time.sleep(0.1)  # requests arriving meanwhile form the next batch
        if self.fail_on is not None and self.fail_on in items:
            raise ValueError(f"bad item {self.fail_on}")
        return [2 * x for x in items]


async def _submit_all(batcher: AdaptiveBatcher, requests: list[list[int]], fn: Recorder) -> list:
    """The first request alone; the rest once its batch is in the model (so they queue behind it)."""
    tasks = [asyncio.create_task(batcher.submit(requests[0]))]
    while not fn.batches:
        await asyncio.sleep(0.001)
    tasks += [asyncio.create_task(batcher.submit(r)) for r in requests[1:]]
    return await asyncio.gather(*tasks, return_exceptions=True)


def test_concurrent_requests_share_model_calls_and_get_their_own_results() -> None:
    fn = Recorder()
    requests = [[i, 100 + i] for i in range(10)]
    results = asyncio.run(_submit_all(AdaptiveBatcher(fn, max_batch_size=64), requests, fn))
    assert results == [[2 * a, 2 * b] for a, b in requests]
    assert len(fn.batches) == 2  # one alone, then the nine that waited meanwhile
    assert sorted(x for b in fn.batches for x in b) == sorted(x for r in requests for x in r)


def test_batches_respect_the_size_cap() -> None:
    fn = Recorder()
    requests = [[i, i, i] for i in range(12)]
    results = asyncio.run(_submit_all(AdaptiveBatcher(fn, max_batch_size=8), requests, fn))
    assert results == [[2 * i] * 3 for i in range(12)]
    assert all(len(b) <= 8 for b in fn.batches) and len(fn.batches) >= 5


def test_an_error_reaches_every_request_of_its_batch_and_serving_goes_on() -> None:
    fn = Recorder(fail_on=7)

    async def scenario() -> tuple[list, list[int]]:
        batcher = AdaptiveBatcher(fn, max_batch_size=64)
        first = await _submit_all(batcher, [[1], [5], [7], [9]], fn)
        return first, await batcher.submit([3])

    first, after = asyncio.run(scenario())
    assert first[0] == [2]  # ran alone, before the bad batch
    assert all(isinstance(r, ValueError) and "bad item 7" in str(r) for r in first[1:])
    assert after == [6]


def test_a_single_oversized_request_runs_alone() -> None:
    fn = Recorder()
    out = asyncio.run(AdaptiveBatcher(fn, max_batch_size=4).submit(list(range(10))))
    assert out == [2 * x for x in range(10)] and fn.batches == [list(range(10))]


@pytest.mark.parametrize("n", [1, 3])
def test_idle_service_answers_each_request_at_once(n: int) -> None:
    fn = Recorder()

    async def one_by_one() -> list:
        batcher = AdaptiveBatcher(fn, max_batch_size=64)
        return [await batcher.submit([i]) for i in range(n)]

    assert asyncio.run(one_by_one()) == [[2 * i] for i in range(n)]
    assert fn.batches == [[i] for i in range(n)]


def test_two_workers_run_two_batches_at_once() -> None:
    both_in = threading.Barrier(2, timeout=5)  # breaks (an error) unless two calls overlap
    calls: list[list[int]] = []

    def fn(items: list[int]) -> list[int]:
        calls.append(items)
        both_in.wait()
        return [2 * x for x in items]

    async def scenario() -> list:
        batcher = AdaptiveBatcher(fn, max_batch_size=64, workers=2)
        first = asyncio.create_task(batcher.submit([1]))
        while not calls:  # the first batch is in the model...
            await asyncio.sleep(0.001)
        return [await batcher.submit([2]), await first]  # ...when the second one starts

    assert asyncio.run(scenario()) == [[4], [2]]


def test_workers_must_be_positive() -> None:
    with pytest.raises(ValueError, match="workers must be at least 1"):
        AdaptiveBatcher(lambda items: items, workers=0)


def test_close_stops_the_workers_and_fails_what_is_left() -> None:
    release = threading.Event()
    calls: list[list[int]] = []

    def fn(items: list[int]) -> list[int]:
        calls.append(items)
        release.wait(5)
        return items

    async def scenario() -> tuple[list, list]:
        batcher = AdaptiveBatcher(fn, max_batch_size=1)
        requests = [asyncio.create_task(batcher.submit([i])) for i in range(3)]
        while not calls:  # one request in the model, two waiting
            await asyncio.sleep(0.001)
        batcher.close()
        queued = await asyncio.gather(*requests[1:], return_exceptions=True)  # at once
        release.set()  # the batch in the model ends; its request gets the error too
        in_model = await asyncio.gather(requests[0], return_exceptions=True)
        for t in batcher._threads:
            t.join(5)
        late = await asyncio.gather(batcher.submit([9]), return_exceptions=True)
        return [*in_model, *queued, *late], [t.is_alive() for t in batcher._threads]

    results, alive = asyncio.run(scenario())
    assert all(isinstance(r, RuntimeError) and "shutting down" in str(r) for r in results)
    assert len(results) == 4 and alive == [False]
