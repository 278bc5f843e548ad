"""`retrain` on logged traffic with text logging on and labeling functions like the demo's:
labelled (hard) + feedback (hard) + weak (soft) labels train one candidate, and the run ends
promoted or rejected, never failed (it crashed concatenating `[N]` with `[N, C]` labels)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import redis

from slicewise.core import contracts as c
from tests.conftest import TINY_LFS, make_tiny_dataset, tiny_config_dict
from training.config import parse_config
from training.data import load_dataset, split_dataset
from training.retrain import retrain, soft_targets


def log_traffic(client: redis.Redis, texts: list[str], labels: list[str], feedback_every: int):
    for i, text in enumerate(texts):
        rec = c.PredictionRecord("prod", "neutral", 0.5, {}, {}, len(text), id=f"p{i}", text=text)
        client.xadd(c.PREDICTIONS_STREAM, rec.to_fields())
        if i % feedback_every == 0:
            client.xadd(c.FEEDBACK_STREAM, {"id": f"p{i}", "label": labels[i], "ts": "0"})


def test_soft_targets() -> None:
    assert soft_targets(np.array([2, 0]), 3).tolist() == [[0, 0, 1], [1, 0, 0]]
    soft = np.array([[0.2, 0.8]], np.float32)
    assert soft_targets(soft, 2) is soft


@pytest.mark.slow
def test_retrain_with_feedback_and_weak_labels_does_not_fail(
    tiny_backbone_dir, tiny_config, tiny_bundle, bentoml_home, redis_server, tmp_path: Path
) -> None:
    raw = tiny_config_dict(tiny_backbone_dir, Path(tiny_config.dataset.path), tmp_path)
    raw["labeling_functions"] = TINY_LFS
    cfg = parse_config(raw, "tiny-lfs")
    traffic = make_tiny_dataset(200, seed=3)
    client = redis.Redis.from_url(redis_server.url)
    log_traffic(client, traffic["text"].tolist(), traffic["label"].tolist(), feedback_every=4)

    report = retrain(
        cfg, redis_server.url, production_dir=tiny_bundle, report_dir=tmp_path, progress=False
    )

    assert report.outcome in {"promoted", "rejected"}, report.error
    # logged texts also in the validation / test split are not trained on (the gate's data)
    splits = split_dataset(load_dataset(cfg), cfg.dataset.split)
    held_out = set(splits.validation["text"]) | set(splits.test["text"])
    texts = traffic["text"].tolist()
    with_feedback = [t for i, t in enumerate(texts) if i % 4 == 0]
    without = [t for i, t in enumerate(texts) if i % 4]
    assert 0 < sum(t in held_out for t in texts) < len(texts)  # the check below can fail
    assert report.data["feedback"] == sum(t not in held_out for t in with_feedback)
    assert report.data["held_out_excluded"] == sum(t in held_out for t in texts)
    unseen = sum(t not in held_out for t in without)
    assert 0 < report.data["weak"] <= unseen  # texts without feedback that some LF covers
    assert set(report.decision["deltas"]) == {"overall", "negation", "question"}
