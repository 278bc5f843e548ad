"""Service metrics (docs/design.md §8), declared once at module level with prometheus_client.

BentoML runs prometheus_client in multiprocess mode and serves these on `/metrics` next to
its own `bentoml_service_*` metrics.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from prometheus_client import Counter, Gauge, Histogram

from service.responses import Batch
from slicewise.core.contracts import MetricNames as M

SCORE_BUCKETS = tuple(round(0.1 * i, 1) for i in range(1, 11))
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

PREDICTIONS = Counter(M.PREDICTIONS, "Predictions served", ["model_version", "label"])
SLICE_PREDICTIONS = Counter(
    M.SLICE_PREDICTIONS,
    "Predictions whose slice membership is at or above the slice threshold",
    ["model_version", "slice"],
)
SLICE_MEMBERSHIP = Histogram(
    M.SLICE_MEMBERSHIP_SCORE, "Slice membership scores", ["slice"], buckets=SCORE_BUCKETS
)
CONFIDENCE = Histogram(
    M.PREDICTION_CONFIDENCE,
    'Prediction confidence, per active slice and for all (slice="all")',
    ["slice"],
    buckets=SCORE_BUCKETS,
)
INFERENCE_SECONDS = Histogram(
    M.INFERENCE_SECONDS, "Seconds per inference stage", ["stage"], buckets=LATENCY_BUCKETS
)
LOG_DROPPED = Counter(
    M.PREDICTION_LOG_DROPPED, "Prediction-log entries dropped (Redis unavailable, buffer full)"
)
MODEL_INFO = Gauge(
    M.MODEL_INFO,
    "The served model version and execution provider (value 1)",
    ["model_version", "provider"],
    multiprocess_mode="livemax",
)
FEEDBACK = Counter(
    M.FEEDBACK,
    "Feedback labels stored: new, or corrected (replacing an earlier label)",
    ["outcome"],
)
BATCH_SIZE = Histogram(
    "slicewise_batch_size",
    "Texts per model call after adaptive batching",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)


def observe_many(histogram: Any, values: np.ndarray) -> None:
    """`histogram.observe(v)` for every `v` of `values`, as one increment per bucket that gets
    any: in multiprocess mode each increment is a locked write to a memory-mapped file, ~20 per
    prediction when observed one by one. Uses the child's `_sum`, `_buckets` and `_upper_bounds`
    (prometheus_client 0.2x; `tests/service/test_metrics.py` compares it with `observe`).
    """
    if len(values) == 0:
        return
    values = np.asarray(values, dtype=np.float64)
    # observe() puts v in the first bucket whose bound is >= v
    counts = np.bincount(
        np.searchsorted(histogram._upper_bounds, values, side="left"),
        minlength=len(histogram._upper_bounds),
    )
    histogram._sum.inc(float(values.sum()))
    for i in np.flatnonzero(counts):
        histogram._buckets[i].inc(int(counts[i]))


def observe_batch(batch: Batch, model_version: str) -> None:
    """Count and observe one model call's predictions (in the model thread, once per batch)."""
    labels = np.bincount(batch.best, minlength=len(batch.labels))
    for k in np.flatnonzero(labels):
        PREDICTIONS.labels(model_version, batch.labels[k]).inc(int(labels[k]))
    confidence = batch.confidence
    observe_many(CONFIDENCE.labels("all"), confidence)
    for j, name in enumerate(batch.slice_names):
        observe_many(SLICE_MEMBERSHIP.labels(name), batch.rounded(batch.membership[:, j]))
        inside = batch.active[:, j]
        if n := int(inside.sum()):
            SLICE_PREDICTIONS.labels(model_version, name).inc(n)
            observe_many(CONFIDENCE.labels(name), confidence[inside])
