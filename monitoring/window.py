"""Read the current window of predictions (and feedback) from the Redis log (docs/design.md §7, §9).

Entries become a DataFrame with the reference-profile columns, so reference and current
data are compared column for column.
"""

from __future__ import annotations

import time

import pandas as pd
import redis

from slicewise.core import contracts as c
from slicewise.core.errors import SlicewiseError
from slicewise.core.feedback import read_feedback_labels


class WindowError(SlicewiseError, RuntimeError):
    """The prediction log cannot be read or holds nothing usable."""


def _ms_id(ts: float) -> str:
    return f"{int(ts * 1000)}-0"


def read_window(
    client: redis.Redis,
    manifest: c.Manifest,
    size: int = 5000,
    minutes: float | None = None,
    batch: int = 10_000,
) -> pd.DataFrame:
    """The last `size` predictions, or those of the last `minutes`, as reference-profile columns.

    Entries from other model versions are kept (drift is about traffic); records that do not
    parse are skipped. An empty log gives an empty frame with the right columns.
    """
    try:
        if minutes is not None:
            entries = []
            start = _ms_id(time.time() - minutes * 60)
            while True:
                chunk = client.xrange(c.PREDICTIONS_STREAM, min=start, max="+", count=batch)
                entries += chunk
                if len(chunk) < batch:
                    break
                start = "(" + chunk[-1][0].decode()
        else:
            entries = []
            end = "+"
            while len(entries) < size:
                chunk = client.xrevrange(
                    c.PREDICTIONS_STREAM, max=end, min="-", count=min(batch, size - len(entries))
                )
                if not chunk:
                    break
                entries += chunk
                end = "(" + chunk[-1][0].decode()
            entries.reverse()
    except redis.RedisError as exc:
        raise WindowError(f"cannot read {c.PREDICTIONS_STREAM} from Redis: {exc}") from exc
    return records_frame([f for _, f in entries], manifest)


def records_frame(fields: list[dict], manifest: c.Manifest) -> pd.DataFrame:
    """Stream entries → DataFrame (id, ts, model_version + reference-profile columns)."""
    rows = []
    for f in fields:
        try:
            rec = c.PredictionRecord.from_fields(f)
        except (KeyError, ValueError):
            continue
        row = {
            "id": rec.id,
            "ts": rec.ts,
            "model_version": rec.model_version,
            c.PREDICTED_LABEL_COLUMN: rec.label,
            c.CONFIDENCE_COLUMN: rec.confidence,
            c.TEXT_LENGTH_COLUMN: rec.text_length,
            "text": rec.text,
        }
        for lab in manifest.labels:
            row[c.prob_column(lab)] = float(rec.probabilities.get(lab, float("nan")))
        for s in manifest.slice_names:
            row[c.slice_score_column(s)] = float(rec.slices.get(s, 0.0))
        rows.append(row)
    columns = (
        [
            "id",
            "ts",
            "model_version",
            c.PREDICTED_LABEL_COLUMN,
            c.CONFIDENCE_COLUMN,
            c.TEXT_LENGTH_COLUMN,
            "text",
        ]
        + [c.prob_column(x) for x in manifest.labels]
        + [c.slice_score_column(s) for s in manifest.slice_names]
    )
    return pd.DataFrame(rows, columns=columns)


def read_feedback(client: redis.Redis, count: int = 100_000) -> pd.DataFrame:
    """The feedback labels: columns `id`, `label` (one row per id: its current label)."""
    try:
        labels = read_feedback_labels(client, count)
    except redis.RedisError as exc:
        raise WindowError(f"cannot read {c.FEEDBACK_STREAM} from Redis: {exc}") from exc
    return pd.DataFrame(list(labels.items()), columns=["id", "label"])
