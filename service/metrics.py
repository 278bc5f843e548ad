"""Service metrics (docs/design.md §8), declared once at module level with prometheus_client.

BentoML runs prometheus_client in multiprocess mode and serves these on `/metrics` next to
its own `bentoml_service_*` metrics.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

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


def observe_predictions(predictions: list[dict], model_version: str) -> None:
    """Count and observe one response's predictions."""
    for p in predictions:
        PREDICTIONS.labels(model_version, p["label"]).inc()
        CONFIDENCE.labels("all").observe(p["confidence"])
        for name, score in p["slices"].items():
            SLICE_MEMBERSHIP.labels(name).observe(score)
        for name in p["active_slices"]:
            SLICE_PREDICTIONS.labels(model_version, name).inc()
            CONFIDENCE.labels(name).observe(p["confidence"])
