"""Read the current window of predictions (and feedback) from the Redis log (docs/design.md §7, §9).

Entries become a DataFrame with the reference-profile columns, so reference and current
data are compared column for column.
"""

from __future__ import annotations

import json
import time

import numpy as np
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


def _columns(manifest: c.Manifest) -> list[str]:
    return (
        [
            "id",
            "ts",
            "model_version",
            c.PREDICTED_LABEL_COLUMN,
            c.CONFIDENCE_COLUMN,
            c.TEXT_LENGTH_COLUMN,
            "text",
            c.LEARNED_SLICES_FIELD,
        ]
        + [c.prob_column(x) for x in manifest.labels]
        + [c.slice_score_column(s) for s in manifest.slice_names]
    )


def records_frame(fields: list[dict], manifest: c.Manifest, chunk: int = 20_000) -> pd.DataFrame:
    """Stream entries → DataFrame (id, ts, model_version + reference-profile columns).

    Parsed column by column, `chunk` entries at a time (1M entries in about a second, where a
    `PredictionRecord` per entry took ~10×); a chunk holding any entry that does not parse is
    parsed entry by entry instead, skipping the bad ones, exactly as `PredictionRecord.from_fields`
    would.
    """
    parts = []
    for start in range(0, len(fields), chunk):
        block = fields[start : start + chunk]
        try:
            parts.append(_fast_frame(block, manifest))
        except (KeyError, ValueError, TypeError, AttributeError):
            parts.append(_slow_frame(block, manifest))
    if not parts:
        return pd.DataFrame([], columns=_columns(manifest))
    return pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]


def _text(x: str | bytes | None) -> str | None:
    return x.decode() if isinstance(x, bytes) else x


def _strings(values: list, raw: bool) -> list[str]:
    """Decode a column of bytes in one call (no separator byte may occur inside a value)."""
    if not raw:
        return values
    joined = b"\x00".join(values)
    out = joined.decode().split("\x00")
    if len(out) != len(values):  # a value held the separator: decode one by one
        return [v.decode() for v in values]
    return out


def _fast_frame(block: list[dict], manifest: c.Manifest) -> pd.DataFrame:
    """Columnar parse of entries that all parse (raises on the first that does not)."""
    raw = bool(block) and isinstance(next(iter(block[0])), bytes)

    def key(name: str) -> str | bytes:
        return name.encode() if raw else name

    def col(name: str) -> list:
        k = key(name)
        return [f[k] for f in block]

    def as_float(values: list) -> np.ndarray:
        return np.array(values).astype(np.float64) if values else np.zeros(0)

    confidence = as_float(col("confidence"))
    lengths = np.array(col("text_length")).astype(np.int64) if block else np.zeros(0, np.int64)
    ts = as_float(col("ts"))
    sep = b"," if raw else ","
    probs = json.loads(
        b"[" + sep.join(col("probabilities")) + b"]"
        if raw
        else "[" + sep.join(col("probabilities")) + "]"
    )
    slices = json.loads(
        b"[" + sep.join(col("slices")) + b"]" if raw else "[" + sep.join(col("slices")) + "]"
    )
    if len(probs) != len(block) or len(slices) != len(block):
        raise ValueError("a probabilities or slices field is not one JSON object")
    if not all(isinstance(d, dict) for d in probs) or not all(isinstance(d, dict) for d in slices):
        raise ValueError("a probabilities or slices field is not a JSON object")
    text_key = key("text")
    texts = [f.get(text_key) for f in block]
    learned_key = key(c.LEARNED_SLICES_FIELD)
    learned = [f.get(learned_key) for f in block]
    data: dict[str, object] = {
        "id": _strings(col("id"), raw),
        "ts": ts,
        "model_version": _strings(col("model_version"), raw),
        c.PREDICTED_LABEL_COLUMN: _strings(col("label"), raw),
        c.CONFIDENCE_COLUMN: confidence,
        c.TEXT_LENGTH_COLUMN: lengths,
        "text": (
            [_text(t) for t in texts]
            if any(t is not None for t in texts)
            else np.empty(len(block), dtype=object)  # all None
        ),
        c.LEARNED_SLICES_FIELD: (
            [_text(x) or "" for x in learned]
            if any(x is not None for x in learned)
            else np.full(len(block), "", dtype=object)
        ),
    }
    nan = float("nan")
    for lab in manifest.labels:
        data[c.prob_column(lab)] = np.array([d.get(lab, nan) for d in probs], dtype=np.float64)
    for name in manifest.slice_names:
        data[c.slice_score_column(name)] = np.array(
            [d.get(name, 0.0) for d in slices], dtype=np.float64
        )
    frame = pd.DataFrame(data, columns=_columns(manifest))
    finite = np.isfinite(confidence)
    return frame if finite.all() else frame[finite].reset_index(drop=True)


def _slow_frame(fields: list[dict], manifest: c.Manifest) -> pd.DataFrame:
    """Entry by entry through `PredictionRecord.from_fields`, skipping those that do not parse."""
    rows = []
    for f in fields:
        try:
            rec = c.PredictionRecord.from_fields(f)
            row = {
                "id": rec.id,
                "ts": rec.ts,
                "model_version": rec.model_version,
                c.PREDICTED_LABEL_COLUMN: rec.label,
                c.CONFIDENCE_COLUMN: rec.confidence,
                c.TEXT_LENGTH_COLUMN: rec.text_length,
                "text": rec.text,
                c.LEARNED_SLICES_FIELD: ",".join(rec.learned_slices),
            }
            for lab in manifest.labels:
                row[c.prob_column(lab)] = float(rec.probabilities.get(lab, float("nan")))
            for s in manifest.slice_names:
                row[c.slice_score_column(s)] = float(rec.slices.get(s, 0.0))
        except (KeyError, ValueError, TypeError, AttributeError):  # e.g. JSON that is no object
            continue
        rows.append(row)
    return pd.DataFrame(rows, columns=_columns(manifest))


def read_feedback(client: redis.Redis, count: int = 100_000) -> pd.DataFrame:
    """The feedback labels: columns `id`, `label` (one row per id: its current label)."""
    try:
        labels = read_feedback_labels(client, count)
    except redis.RedisError as exc:
        raise WindowError(f"cannot read {c.FEEDBACK_STREAM} from Redis: {exc}") from exc
    return pd.DataFrame(list(labels.items()), columns=["id", "label"])
