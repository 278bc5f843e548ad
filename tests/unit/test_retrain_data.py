"""Retraining data from the Redis log: feedback labels and weak labels for logged texts."""

from __future__ import annotations

import numpy as np
import redis

from slicewise.core import contracts as c
from tests.conftest import legacy_fields
from training.config import parse_config
from training.retrain import feedback_examples, logged_texts, weak_examples

LFS = [
    {"name": "good", "keywords": ["good", "great"], "label": "pos"},
    {"name": "bad", "keywords": ["bad", "awful"], "label": "neg"},
    {"name": "love", "keywords": ["love"], "label": "pos"},
    {"name": "hate", "keywords": ["hate"], "label": "neg"},
]


def test_feedback_and_weak_examples_from_the_log(redis_server) -> None:
    client = redis.Redis.from_url(redis_server.url)
    texts = ["good great love", "bad awful hate", "love it good", "nothing here", "hate bad"] * 20
    for i, t in enumerate(texts):
        rec = c.PredictionRecord(
            "v", "pos", 0.9, {"neg": 0.1, "pos": 0.9}, {}, len(t), id=f"p{i}", text=t
        )
        # the first half logged by an older service, field by field (an upgrade mid-stream)
        client.xadd(c.PREDICTIONS_STREAM, legacy_fields(rec) if i < 50 else rec.to_fields())
    client.xadd(c.PREDICTIONS_STREAM, {"r": "{not json", "text": "x"})  # skipped
    client.xadd(c.FEEDBACK_STREAM, {"id": "p60", "label": "pos", "ts": "0"})
    client.xadd(c.FEEDBACK_STREAM, {"id": "p1", "label": "neg", "ts": "0"})
    client.xadd(
        c.FEEDBACK_STREAM, {"id": "p2", "label": "nonsense", "ts": "0"}
    )  # unknown label: ignored
    fb_texts, fb_labels = feedback_examples(client, ["neg", "pos"])
    assert (fb_texts, fb_labels) == (["good great love", "bad awful hate"], ["pos", "neg"])
    rest = logged_texts(client, {"p1"})
    assert (
        len(rest) == 99 and "x" not in rest and "bad awful hate" in rest
    )  # other copies of the text stay
    cfg = parse_config({"labels": ["neg", "pos"], "labeling_functions": LFS})
    weak_texts, probs = weak_examples(cfg, rest)
    assert "nothing here" not in weak_texts and len(weak_texts) == 79  # uncovered (and p1) left out
    by_text = dict(zip(weak_texts, probs.argmax(1), strict=True))
    assert by_text["good great love"] == 1 and by_text["hate bad"] == 0
    assert np.allclose(probs.sum(1), 1)


def test_too_few_lfs_give_no_weak_labels() -> None:
    cfg = parse_config({"labels": ["neg", "pos"], "labeling_functions": LFS[:2]})
    texts, probs = weak_examples(cfg, ["good"])
    assert texts == [] and probs.shape == (0, 2)
