"""Feedback labels in Redis: at most one label per prediction id (docs/design.md §7).

The hash `slicewise:feedback:labels` maps a prediction id to its label: a correction replaces
the earlier label (`HSET`), it is never appended. Every write is also an event on the
`slicewise:feedback` stream (`previous` holds the replaced label, empty for a first label), so
corrections can be counted and audited. Readers (retraining, the monitor) call
`read_feedback_labels`, which gives the one current label per id.
"""

from __future__ import annotations

import time

import redis

from slicewise.core.contracts import FEEDBACK_LABELS_KEY, FEEDBACK_STREAM


def record_feedback(
    client: redis.Redis, prediction_id: str, label: str, maxlen: int = 100_000
) -> str | None:
    """Set the label of a prediction (replacing an earlier one) and log the event.

    Args:
        client: Redis (the service's log connection).
        prediction_id: the id `/predict` returned.
        label: the true label (validated by the caller against the manifest's labels).
        maxlen: approximate length cap of the `slicewise:feedback` stream.

    Returns:
        The label it replaced, or None when the prediction had none.
    """
    pipe = client.pipeline(transaction=True)
    pipe.hget(FEEDBACK_LABELS_KEY, prediction_id)
    pipe.hset(FEEDBACK_LABELS_KEY, prediction_id, label)
    previous, _ = pipe.execute()
    previous = previous.decode() if isinstance(previous, bytes) else previous
    client.xadd(
        FEEDBACK_STREAM,
        {"id": prediction_id, "label": label, "previous": previous or "", "ts": repr(time.time())},
        maxlen=maxlen,
        approximate=True,
    )
    return previous


def read_feedback_labels(client: redis.Redis, count: int = 100_000) -> dict[str, str]:
    """The current label of every prediction that got feedback: the one reader of feedback
    (the monitor and retraining call it).

    Labels written before the hash existed (stream entries only) count too, the latest per id,
    unless the hash has a label for that id.

    Args:
        client: Redis holding `slicewise:feedback:labels` and `slicewise:feedback`.
        count: how many of the newest stream entries to read.

    Returns:
        `{prediction id: label}`.

    Raises:
        redis.RedisError: Redis cannot be read.
    """
    labels: dict[str, str] = {}
    for _, fields in reversed(client.xrevrange(FEEDBACK_STREAM, count=count)):
        f = {_text(k): _text(v) for k, v in fields.items()}
        if "id" in f and "label" in f:
            labels[f["id"]] = f["label"]
    labels.update({_text(k): _text(v) for k, v in client.hgetall(FEEDBACK_LABELS_KEY).items()})
    return labels


def _text(x: str | bytes) -> str:
    return x.decode() if isinstance(x, bytes) else x


class FeedbackLabels:
    """The feedback labels kept between reads (the monitor reads them once a pass).

    After a whole `read_feedback_labels`, only the feedback events logged since are read and
    applied in order. Every label write is such an event (`record_feedback`), so this gives
    what a whole read would; when the event seen last is no longer in the stream (trimmed past
    it, a new stream) it reads everything again. (Unlike a whole read, it also keeps
    stream-only labels older than the newest `count` events: labels written before the hash
    existed.)

    Args:
        count: how many of the newest stream entries a whole read takes.
        batch: events per Redis call when catching up.
    """

    def __init__(self, count: int = 100_000, batch: int = 10_000) -> None:
        self.count, self.batch = count, batch
        self.labels: dict[str, str] | None = None
        self._last: str | None = None
        self.whole_reads = 0

    def read(self, client: redis.Redis) -> dict[str, str]:
        """The current label of every prediction that got feedback.

        Raises:
            redis.RedisError: Redis cannot be read.
        """
        last = self._last
        if (
            self.labels is not None
            and last is not None
            and client.xrange(FEEDBACK_STREAM, min=last, max=last)
        ):
            while True:
                chunk = client.xrange(FEEDBACK_STREAM, min="(" + last, max="+", count=self.batch)
                for entry_id, fields in chunk:
                    f = {_text(k): _text(v) for k, v in fields.items()}
                    if "id" in f and "label" in f:
                        self.labels[f["id"]] = f["label"]
                    last = self._last = _text(entry_id)
                if len(chunk) < self.batch:
                    return self.labels
        newest = client.xrevrange(FEEDBACK_STREAM, count=1)  # before the read: none is missed
        self.labels = read_feedback_labels(client, self.count)
        self._last = _text(newest[0][0]) if newest else None
        self.whole_reads += 1
        return self.labels
