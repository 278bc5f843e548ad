"""Feedback labels in Redis: at most one label per prediction id (docs/design.md §7), kept for
a bounded time and count (docs/reliability.md, "Feedback").

The hash `slicewise:feedback:labels` maps a prediction id to its label: a correction replaces
the earlier label (`HSET`), it is never appended. The sorted set `slicewise:feedback:times`
holds when each label was written; `trim_feedback` removes the labels older than the TTL and,
past `max_labels`, the oldest ones, from both. Every write is also an event on the capped
`slicewise:feedback` stream (`previous` holds the replaced label, empty for a first label), so
corrections can be counted and audited. Readers (retraining, the monitor) call
`read_feedback_labels`, which gives the one current label per id.
"""

from __future__ import annotations

import time
from typing import Any

import redis

from slicewise.core.contracts import FEEDBACK_LABELS_KEY, FEEDBACK_STREAM, FEEDBACK_TIMES_KEY

FEEDBACK_TTL_S = 7 * 24 * 3600  # how long a prediction takes feedback and its label is kept
MAX_FEEDBACK_LABELS = 100_000  # labels kept at most (the oldest go first)
TRIM_BATCH = 1000  # labels removed per trim call at most (a trim never blocks Redis for long)
HASH_EVENT = "hash"  # `stored` field of stream events whose label is in the hash

# KEYS: labels hash, times zset, stream. ARGV: id, label, now, maxlen, cutoff, max labels, batch.
# One script: the label, its time, the trim and the event are written atomically.
_RECORD = """
local prev = redis.call('HGET', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[4], '*', 'id', ARGV[1], 'label', ARGV[2],
           'previous', prev or '', 'ts', ARGV[3], 'stored', 'hash')
return prev
"""
_TRIM = """
local batch = tonumber(ARGV[3])
local old = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[1], 'LIMIT', 0, batch)
local over = redis.call('ZCARD', KEYS[2]) - #old - tonumber(ARGV[2])
if over > 0 then
  for _, id in ipairs(redis.call('ZRANGE', KEYS[2], #old, #old + math.min(over, batch) - 1)) do
    old[#old + 1] = id
  end
end
for _, id in ipairs(old) do
  redis.call('HDEL', KEYS[1], id)
  redis.call('ZREM', KEYS[2], id)
end
return #old
"""


def record_feedback(
    client: redis.Redis,
    prediction_id: str,
    label: str,
    maxlen: int = 100_000,
    ttl_s: float = FEEDBACK_TTL_S,
    max_labels: int = MAX_FEEDBACK_LABELS,
) -> str | None:
    """Set the label of a prediction (replacing an earlier one), log the event, and trim the
    labels past their TTL or past `max_labels`.

    Args:
        client: Redis (the service's log connection).
        prediction_id: the id `/predict` returned.
        label: the true label (validated by the caller against the manifest's labels).
        maxlen: approximate length cap of the `slicewise:feedback` stream.
        ttl_s: labels written longer ago than this are removed.
        max_labels: labels kept at most; the oldest go first.

    Returns:
        The label it replaced, or None when the prediction had none.
    """
    now = time.time()
    keys = [FEEDBACK_LABELS_KEY, FEEDBACK_TIMES_KEY, FEEDBACK_STREAM]
    previous = client.eval(_RECORD, 3, *keys, prediction_id, label, repr(now), maxlen)
    trim_feedback(client, ttl_s, max_labels, now)
    return previous.decode() if isinstance(previous, bytes) else previous


def trim_feedback(
    client: redis.Redis,
    ttl_s: float = FEEDBACK_TTL_S,
    max_labels: int = MAX_FEEDBACK_LABELS,
    now: float | None = None,
) -> int:
    """Remove labels written more than `ttl_s` seconds ago and, past `max_labels`, the oldest
    (at most `TRIM_BATCH` per call); return how many went.
    """
    cutoff = (time.time() if now is None else now) - ttl_s
    keys = [FEEDBACK_LABELS_KEY, FEEDBACK_TIMES_KEY]
    return int(client.eval(_TRIM, 2, *keys, repr(cutoff), max_labels, TRIM_BATCH))


def read_feedback_labels(client: redis.Redis, count: int = 100_000) -> dict[str, str]:
    """The current label of every prediction that got feedback: the one reader of feedback
    (the monitor and retraining call it).

    Labels written before the hash existed (stream events without `stored=hash`) count too,
    the latest per id, unless the hash has a label for that id; the events of labels the hash
    holds (or held, before a trim removed them) are never read back.

    Args:
        client: Redis holding `slicewise:feedback:labels` and `slicewise:feedback`.
        count: how many of the newest stream entries to read.

    Returns:
        `{prediction id: label}`.

    Raises:
        redis.RedisError: Redis cannot be read.
    """
    return _read_all(client, count)[0]


def _read_all(client: redis.Redis, count: int) -> tuple[dict[str, str], set[str]]:
    """`read_feedback_labels`, and the ids whose label came from the hash."""
    labels: dict[str, str] = {}
    for _, fields in reversed(client.xrevrange(FEEDBACK_STREAM, count=count)):
        f = _fields(fields)
        if "id" in f and "label" in f and f.get("stored") != HASH_EVENT:
            labels[f["id"]] = f["label"]
    in_hash = _fields(client.hgetall(FEEDBACK_LABELS_KEY))
    labels.update(in_hash)
    return labels, set(in_hash)


def _text(x: str | bytes) -> str:
    return x.decode() if isinstance(x, bytes) else x


def _fields(fields: dict[Any, Any]) -> dict[str, str]:
    return {_text(k): _text(v) for k, v in fields.items()}


class FeedbackLabels:
    """The feedback labels kept between reads (the monitor reads them once a pass).

    After a whole `read_feedback_labels`, only the feedback events logged since are read and
    applied in order. Every label write is such an event (`record_feedback`), so this gives
    what a whole read would; when the event seen last is no longer in the stream (trimmed past
    it, a new stream) or when the hash holds fewer labels than were written to it (a trim
    removed some: `trim_feedback`), it reads everything again. (Unlike a whole read, it also keeps
    stream-only labels older than the newest `count` events: labels written before the hash
    existed.)

    Args:
        count: how many of the newest stream entries a whole read takes.
        batch: events per Redis call when catching up.
    """

    def __init__(self, count: int = 100_000, batch: int = 10_000) -> None:
        self.count, self.batch = count, batch
        self.labels: dict[str, str] | None = None
        self._in_hash: set[str] = set()  # ids whose label is (or was) in the hash
        self._last: tuple[str, dict[str, str]] | None = None  # the event seen last: id, fields
        self.whole_reads = 0

    def read(self, client: redis.Redis) -> dict[str, str]:
        """The current label of every prediction that got feedback.

        Raises:
            redis.RedisError: Redis cannot be read.
        """
        if (
            self.labels is not None
            and self._last is not None
            and self._still_there(client, *self._last)
            and client.hlen(FEEDBACK_LABELS_KEY) >= len(self._in_hash)  # nothing trimmed
        ):
            last = self._last[0]
            while True:
                chunk = client.xrange(FEEDBACK_STREAM, min="(" + last, max="+", count=self.batch)
                for entry_id, fields in chunk:
                    f = _fields(fields)
                    if "id" in f and "label" in f:
                        self.labels[f["id"]] = f["label"]
                        if f.get("stored") == HASH_EVENT:
                            self._in_hash.add(f["id"])
                    last = _text(entry_id)
                    self._last = (last, f)
                if len(chunk) < self.batch:
                    if client.hlen(FEEDBACK_LABELS_KEY) >= len(self._in_hash):
                        return self.labels
                    break  # a trim since the last read: read everything again
        newest = client.xrevrange(FEEDBACK_STREAM, count=1)  # before the read: none is missed
        self.labels, self._in_hash = _read_all(client, self.count)
        self._last = (_text(newest[0][0]), _fields(newest[0][1])) if newest else None
        self.whole_reads += 1
        return self.labels

    @staticmethod
    def _still_there(client: redis.Redis, entry_id: str, fields: dict[str, str]) -> bool:
        """Whether the stream still holds the event seen last: its id with its fields (a stream
        deleted and written again within the same millisecond can reuse the id).
        """
        got = client.xrange(FEEDBACK_STREAM, min=entry_id, max=entry_id)
        return bool(got) and _fields(got[0][1]) == fields
