"""Non-blocking prediction log: a bounded in-memory buffer flushed to Redis by a thread.

`append` never blocks and never raises. A background thread drains the buffer into the
`slicewise:predictions` stream, each flush as one entry of many records
(`slicewise.core.log_entries`), the stream capped at `maxlen` predictions. While Redis is down,
records wait in the buffer; when it is full the oldest are dropped and counted. Writing resumes
by itself when Redis answers again.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable

import redis

from slicewise.core.contracts import PREDICTION_ROWS_KEY, PREDICTIONS_STREAM, PredictionRecord
from slicewise.core.feedback import (
    FEEDBACK_TTL_S,
    MAX_FEEDBACK_LABELS,
    record_feedback,
    trim_feedback,
)
from slicewise.core.log_entries import encode_batches, log_script

log = logging.getLogger("slicewise.service")
PREDICTION_KEY = "slicewise:prediction:"  # + id -> model version, for feedback lookups
TRIM_INTERVAL_S = 60.0  # feedback labels past their TTL go at least this often, writes or not
FLUSH_MAX = 500  # records per flush at most (one entry or a few)


class PredictionLog:
    """Buffer + background writer for one Redis URL, and the feedback store.

    `feedback_ttl_s`: a prediction takes feedback for this long (its lookup key expires), and
    a label is kept for this long; `max_feedback_labels`: labels kept at most, the oldest go
    first (`slicewise.core.feedback.trim_feedback`, on each feedback and every minute);
    `maxlen`: predictions the stream keeps (its oldest entries go); `flush_interval`: how long
    records gather in the buffer before one entry takes them (at most `FLUSH_MAX` a flush).
    """

    def __init__(
        self,
        redis_url: str,
        maxlen: int = 100_000,
        buffer: int = 10_000,
        on_drop: Callable[[int], None] | None = None,
        flush_interval: float = 0.25,
        feedback_ttl_s: float = FEEDBACK_TTL_S,
        max_feedback_labels: int = MAX_FEEDBACK_LABELS,
    ) -> None:
        self.client = redis.Redis.from_url(
            redis_url, socket_timeout=0.5, socket_connect_timeout=0.5
        )
        self._log = log_script(self.client)
        self.maxlen, self.flush_interval = maxlen, flush_interval
        self.feedback_ttl_s, self.max_feedback_labels = feedback_ttl_s, max_feedback_labels
        self._next_trim = time.monotonic()
        self.buffer: collections.deque[PredictionRecord] = collections.deque()
        self.capacity = buffer
        self.on_drop = on_drop or (lambda n: None)
        self.dropped = self.written = 0
        self.healthy = True
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    def append(self, records: list[PredictionRecord]) -> None:
        """Queue records for writing; drop (and count) the oldest when the buffer is full."""
        with self._lock:
            self.buffer.extend(records)
            over = len(self.buffer) - self.capacity
            for _ in range(max(0, over)):
                self.buffer.popleft()
        if over > 0:
            self.dropped += over
            self.on_drop(over)

    def pending(self, prediction_id: str) -> bool:
        """Whether a prediction id is still waiting in the buffer."""
        with self._lock:
            return any(r.id == prediction_id for r in self.buffer)

    def _take(self, n: int = FLUSH_MAX) -> list[PredictionRecord]:
        with self._lock:
            return [self.buffer.popleft() for _ in range(min(n, len(self.buffer)))]

    def _requeue(self, batch: list[PredictionRecord]) -> None:
        with self._lock:
            self.buffer.extendleft(reversed(batch))
            over = len(self.buffer) - self.capacity
            for _ in range(max(0, over)):
                self.buffer.pop()  # drop the newest: the requeued ones are older
        if over > 0:
            self.dropped += over
            self.on_drop(over)

    def flush_once(self) -> int:
        """Write what is buffered; return how many were written (0 on a Redis error)."""
        batch = self._take()
        if not batch:
            return 0
        ttl = max(1, round(self.feedback_ttl_s))
        try:
            pipe = self.client.pipeline(transaction=False)
            keys = [PREDICTIONS_STREAM, PREDICTION_ROWS_KEY]
            for payload, n in encode_batches(batch):
                self._log(keys=keys, args=[payload, n, self.maxlen], client=pipe)
            for rec in batch:
                pipe.set(PREDICTION_KEY + rec.id, rec.model_version, ex=ttl)
            pipe.execute()
        except redis.RedisError as exc:
            self._requeue(batch)
            if self.healthy:
                log.warning("prediction log: Redis unavailable (%s); buffering", exc)
            self.healthy = False
            return 0
        if not self.healthy:
            log.info("prediction log: Redis is back; writing resumed")
        self.healthy = True
        self.written += len(batch)
        return len(batch)

    def _run(self) -> None:
        while not self._stop.is_set():
            wrote = self.flush_once()
            if self.healthy and time.monotonic() >= self._next_trim:
                self._next_trim = time.monotonic() + TRIM_INTERVAL_S
                try:
                    trim_feedback(self.client, self.feedback_ttl_s, self.max_feedback_labels)
                except redis.RedisError as exc:
                    log.warning("feedback trim failed: %s", exc)
            if not self.healthy:
                self._stop.wait(0.5)
            elif wrote < FLUSH_MAX:  # wait for more: one entry holds a flush interval's records
                self._stop.wait(self.flush_interval)

    def close(self, timeout: float = 2.0) -> None:
        """Flush what can be flushed within `timeout`, then stop the thread."""
        deadline = time.monotonic() + timeout
        while self.buffer and self.healthy and time.monotonic() < deadline:
            self.flush_once()
        self._stop.set()
        self._thread.join(timeout=1.0)

    # feedback -----------------------------------------------------------------
    def known_prediction(self, prediction_id: str) -> bool:
        """Whether a prediction id was served (logged or still buffered)."""
        return self.pending(prediction_id) or bool(
            self.client.exists(PREDICTION_KEY + prediction_id)
        )

    def record_feedback(self, prediction_id: str, label: str) -> str | None:
        """Set the one label of a prediction (a correction replaces the earlier label); return
        the label it replaced, if any.
        """
        return record_feedback(
            self.client,
            prediction_id,
            label,
            self.maxlen,
            self.feedback_ttl_s,
            self.max_feedback_labels,
        )
