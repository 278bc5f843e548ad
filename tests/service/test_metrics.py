"""The service's batch metrics: `observe_many` against prometheus_client's own `observe`, and
`observe_batch` against counts done by hand."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
from prometheus_client import REGISTRY, CollectorRegistry, Histogram

from service import metrics
from service.responses import decide, predictions
from slicewise.core.contracts import MetricNames as M


def _samples(registry: CollectorRegistry) -> dict:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in registry.collect()
        for s in family.samples
        if not s.name.endswith("_created")
    }


def test_observe_many_equals_observing_one_by_one() -> None:
    # bounds themselves, just above and below them, zero, negatives and past the last bound
    values = [0.0, 0.1, 0.1000001, 0.0999999, 0.5, 1.0, 1.0000001, 7.5, -0.2, 0.3, 0.3, 0.95]
    one, many = CollectorRegistry(), CollectorRegistry()
    h1 = Histogram("h", "h", ["slice"], buckets=metrics.SCORE_BUCKETS, registry=one)
    h2 = Histogram("h", "h", ["slice"], buckets=metrics.SCORE_BUCKETS, registry=many)
    for v in values:
        h1.labels("a").observe(v)
    metrics.observe_many(h2.labels("a"), np.array(values))
    metrics.observe_many(h2.labels("a"), np.array([]))  # nothing observed, nothing created
    assert _samples(one) == _samples(many)
    assert _samples(many)[("h_count", (("slice", "a"),))] == len(values)


def test_observe_batch_counts_labels_slices_and_confidence_per_active_slice() -> None:
    manifest = SimpleNamespace(
        labels=["neg", "pos"], slice_names=["s1", "s2"], thresholds={"s1": 0.5, "s2": 0.5}
    )
    outputs = {
        "probabilities": np.array([[0.9, 0.1], [0.2, 0.8], [0.35, 0.65]], dtype=np.float32),
        "slice_membership": np.array([[0.7, 0.1], [0.2, 0.9], [0.6, 0.6]], dtype=np.float32),
        "slices": np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]], dtype=np.float32),
    }
    version = "metrics-test"
    batch = decide(outputs, manifest)  # type: ignore[arg-type]

    def value(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    before = {
        "neg": value(M.PREDICTIONS + "_total", model_version=version, label="neg"),
        "pos": value(M.PREDICTIONS + "_total", model_version=version, label="pos"),
        "s1": value(M.SLICE_PREDICTIONS + "_total", model_version=version, slice="s1"),
        "s2": value(M.SLICE_PREDICTIONS + "_total", model_version=version, slice="s2"),
        "conf_s1": value(M.PREDICTION_CONFIDENCE + "_sum", slice="s1"),
        "conf_s1_n": value(M.PREDICTION_CONFIDENCE + "_count", slice="s1"),
        "member_s1_le_0.1": value(M.SLICE_MEMBERSHIP_SCORE + "_bucket", slice="s1", le="0.1"),
    }
    metrics.observe_batch(batch, version)
    assert value(M.PREDICTIONS + "_total", model_version=version, label="neg") - before["neg"] == 1
    assert value(M.PREDICTIONS + "_total", model_version=version, label="pos") - before["pos"] == 2
    # exact membership: s1 holds rows 0 and 2, s2 holds row 1
    assert (
        value(M.SLICE_PREDICTIONS + "_total", model_version=version, slice="s1") - before["s1"] == 2
    )
    assert (
        value(M.SLICE_PREDICTIONS + "_total", model_version=version, slice="s2") - before["s2"] == 1
    )
    conf = [p["confidence"] for p in predictions(batch)]
    assert conf == [0.9, 0.8, 0.65]
    assert (
        abs(value(M.PREDICTION_CONFIDENCE + "_sum", slice="s1") - before["conf_s1"] - (0.9 + 0.65))
        < 1e-6
    )
    assert value(M.PREDICTION_CONFIDENCE + "_count", slice="s1") - before["conf_s1_n"] == 2
    # one membership of 0.0 for s1 (row 1) lands in the lowest bucket
    assert (
        value(M.SLICE_MEMBERSHIP_SCORE + "_bucket", slice="s1", le="0.1")
        - before["member_s1_le_0.1"]
        == 1
    )
