"""The runtime runs a batch as length buckets; outputs do not depend on the bucketing."""

from __future__ import annotations

import numpy as np

from service.runtime import ModelRuntime, length_buckets
from slicewise.core import contracts as c


def test_length_buckets_cover_every_row_once_shortest_first() -> None:
    lengths = np.array([5, 40, 6, 7, 5, 30, 8, 9, 12, 6, 5, 50, 7, 6, 5, 5, 9, 33])
    groups = length_buckets(lengths, min_size=4, ratio=1.5)
    assert sorted(np.concatenate(groups).tolist()) == list(range(len(lengths)))
    assert len(groups) > 1 and all(len(g) >= 4 for g in groups[:-1])
    maxes = [lengths[g].max() for g in groups]
    assert maxes == sorted(maxes)
    assert length_buckets(np.array([3]))[0].tolist() == [0]


def test_a_batch_of_eight_splits_by_default() -> None:
    """Under load the batcher forms batches of about 8: they bucket (groups of >= 4 rows)."""
    lengths = np.array([40, 5, 31, 6, 5, 45, 6, 30])
    groups = length_buckets(lengths)
    assert [sorted(g.tolist()) for g in groups] == [[1, 3, 4, 6], [0, 2, 5, 7]]


def test_bucketed_predictions_equal_each_text_alone(tiny_bundle) -> None:
    rt = ModelRuntime.load(c.Bundle.load(tiny_bundle), prefer_int8=False)
    texts = ["ok", "not good at all", "x " * 30, "is this great?", "table", "a b c d e f g h"] * 4
    got, took = rt.predict(texts)
    assert took.tokenize > 0 and took.infer > 0
    assert all(got[name].shape[0] == len(texts) for name in c.OUTPUT_NAMES)
    for i, t in enumerate(texts[:6]):
        alone, _ = rt.predict([t])
        for name in c.OUTPUT_NAMES:
            np.testing.assert_allclose(got[name][i], alone[name][0], atol=1e-5)


def test_memory_options_change_no_output(tiny_bundle) -> None:
    """The arena switches of the soak diagnostics (docs/reliability.md) give the same outputs."""
    bundle = c.Bundle.load(tiny_bundle)
    texts = ["ok", "not good at all", "x " * 30, "is this great?"] * 3
    ref, _ = ModelRuntime.load(bundle, prefer_int8=False).predict(texts)
    for kw in (
        {"memory": (False, False)},
        {"memory": (True, False)},
        {"arena_same_as_requested": True},
    ):
        got, _ = ModelRuntime.load(bundle, prefer_int8=False, **kw).predict(texts)
        for name in c.OUTPUT_NAMES:
            np.testing.assert_allclose(got[name], ref[name], atol=1e-5, err_msg=str(kw))
