"""Unit tests of the service's plain parts: validation, response building, the no-torch rule,
and the Redis prediction log's outage behaviour against a real Redis server."""

from __future__ import annotations

import subprocess
import sys
import time
from types import SimpleNamespace

import numpy as np
import pytest
import redis

from service.prediction_log import PredictionLog
from service.responses import decide, predictions
from service.validation import RequestError, check_feedback_label, validate_texts
from slicewise.core.contracts import PredictionRecord
from slicewise.core.log_entries import logged_count
from slicewise.core.redis_server import LocalRedis


@pytest.mark.parametrize(
    ("texts", "message"),
    [
        ("hi", "must be a list"),
        ([], "is empty"),
        (["a"] * 5, "too many texts"),
        (["ok", 3], "texts[1] is int"),
        (["ok", "  "], "texts[1] is empty"),
        (["x" * 11], "too long"),
    ],
)
def test_validate_texts_names_the_problem(texts, message) -> None:
    with pytest.raises(RequestError, match=message.replace("[", r"\[").replace("]", r"\]")):
        validate_texts(texts, max_texts=4, max_chars=10)


def test_validate_texts_accepts_good_input() -> None:
    assert validate_texts(["a", "b"], max_texts=4, max_chars=10) == ["a", "b"]


def test_feedback_label_must_be_a_model_label() -> None:
    assert check_feedback_label("neg", ["neg", "pos"]) == "neg"
    with pytest.raises(RequestError, match="unknown label 'meh'"):
        check_feedback_label("meh", ["neg", "pos"])


_MANIFEST = SimpleNamespace(
    labels=["negative", "neutral", "positive"],
    slice_names=["negation", "question"],
    thresholds={"negation": 0.5, "question": 0.7},
)


def test_predictions_thresholds_and_labels() -> None:
    outputs = {
        "probabilities": np.array([[0.1, 0.2, 0.7], [0.8, 0.1, 0.1]], dtype=np.float32),
        "slice_membership": np.array([[0.9, 0.6], [0.2, 0.75]], dtype=np.float32),
    }
    preds = predictions(decide(outputs, _MANIFEST))  # type: ignore[arg-type]
    assert [p["label"] for p in preds] == ["positive", "negative"]
    assert preds[0]["confidence"] == pytest.approx(0.7, abs=1e-6)
    assert preds[0]["active_slices"] == ["negation"]  # question 0.6 < 0.7
    assert preds[1]["active_slices"] == ["question"]
    assert set(preds[1]["probabilities"]) == set(_MANIFEST.labels)


def test_service_modules_never_import_torch_or_training() -> None:
    code = (
        "import sys, service.service, service.runtime;"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'training')];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.parametrize(
    ("env", "access_log", "traced"),
    [({}, False, False), ({"SLICEWISE_ACCESS_LOG": "1", "SLICEWISE_TRACING": "1"}, True, True)],
)
def test_access_log_and_tracing_spans_follow_the_settings(env, access_log, traced) -> None:
    """BentoML's own configuration as the worker sees it: access log on/off, and whether its
    OpenTelemetry middleware skips /predict and /feedback."""
    import json
    import os

    code = (
        "import json, service.service as s;"
        "from bentoml._internal.configuration.containers import BentoMLContainer as B;"
        "s.Slicewise.inject_config();"
        "ex = B.tracing_excluded_urls.get();"
        "print(json.dumps([B.api_server_config.logging.access.enabled.get(),"
        " [ex.url_disabled(f'http://h{p}') for p in ('/predict', '/feedback', '/metrics')]]))"
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SLICEWISE_")}
    res = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={**clean, **env},
    )
    assert res.returncode == 0, res.stdout + res.stderr
    enabled, skipped = json.loads(res.stdout.strip().splitlines()[-1])
    assert enabled is access_log
    assert skipped == [not traced, not traced, False]


def _record(i: int) -> PredictionRecord:
    return PredictionRecord(
        model_version="v1",
        label="neg",
        confidence=0.9,
        probabilities={"neg": 0.9},
        slices={"negation": 0.8},
        text_length=i,
    )


@pytest.mark.integration
@pytest.mark.slow
def test_prediction_log_survives_redis_outage_counts_drops_and_resumes() -> None:
    srv = LocalRedis().start()
    drops: list[int] = []
    plog = PredictionLog(srv.url, buffer=50, on_drop=drops.append, flush_interval=0.01)
    try:
        plog.append([_record(i) for i in range(10)])
        client = redis.Redis.from_url(srv.url)
        deadline = time.monotonic() + 5
        while logged_count(client) < 10 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert logged_count(client) == 10
        port = srv.port
        srv.stop()
        t0 = time.monotonic()
        plog.append([_record(i) for i in range(80)])  # never blocks, 30 over capacity
        assert time.monotonic() - t0 < 0.5
        time.sleep(1.0)
        assert not plog.healthy
        assert plog.dropped >= 30 and sum(drops) == plog.dropped
        srv = LocalRedis(port=port).start()
        client = redis.Redis.from_url(srv.url)
        deadline = time.monotonic() + 10
        while logged_count(client) < 50 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert logged_count(client) >= 50  # the 50 buffered records, written after restart
        assert plog.healthy
    finally:
        plog.close()
        srv.stop()


def test_validate_texts_refuses_lone_surrogates() -> None:
    with pytest.raises(RequestError, match=r"texts\[0\] is not valid Unicode"):
        validate_texts(["\ud83d"], max_texts=4, max_chars=10)


def test_service_freezes_its_start_up_objects_unless_told_not_to(
    tiny_bundle, redis_server, monkeypatch
) -> None:
    """gc.freeze after start-up: full collections stop rescanning the libraries and the model."""
    import gc

    from service.service import Slicewise

    monkeypatch.setenv("SLICEWISE_MODEL_DIR", str(tiny_bundle))
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    for flag, frozen in (("1", True), ("0", False)):
        monkeypatch.setenv("SLICEWISE_GC_FREEZE", flag)
        gc.unfreeze()
        svc = Slicewise.inner()
        try:
            assert svc.runtime is not None
            assert (gc.get_freeze_count() > 1000) is frozen, gc.get_freeze_count()
        finally:
            svc.log.close()
            gc.unfreeze()
