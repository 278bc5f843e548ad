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
    """The current label of every prediction that got feedback: {prediction id: label}.

    Labels written before the hash existed (stream entries only) count too, the latest per id,
    unless the hash has a label for that id.
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
