"""The real service: `bentoml serve` in a subprocess, a real Redis, the tiny exported bundle."""

from __future__ import annotations

import json
import time

import httpx
import numpy as np
import pytest
import redis

from service.prediction_log import PREDICTION_KEY
from slicewise.core import contracts as c
from slicewise.core.log_entries import logged_count, logged_records
from slicewise.processes import BentoServer
from training.backbone import load_tokenizer
from training.export import OnnxRunner
from training.slices import slice_membership

pytestmark = pytest.mark.integration
TEXTS = ["not good at all", "is this great?", "table chair paper"]


@pytest.fixture(scope="module")
def server(tiny_bundle, bentoml_home, module_redis, tmp_path_factory):
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    env = {
        "SLICEWISE_MODEL_DIR": str(tiny_bundle),
        "REDIS_URL": module_redis.url,
        "BENTOML_HOME": str(bentoml_home),
        "SLICEWISE_MAX_TEXTS": "8",
        "SLICEWISE_MAX_TEXT_CHARS": "200",
        "SLICEWISE_LOG_TEXT": "1",
        "SLICEWISE_HOTSWAP_INTERVAL": "0.5",
        "SLICEWISE_PREFER_INT8": "0",
    }
    srv = BentoServer(env, log_file=log).start()
    yield srv
    srv.stop()


def predict(server, texts, **kw):
    return httpx.post(server.url + "/predict", json={"texts": texts}, timeout=30, **kw)


def test_predictions_carry_exact_membership_and_the_onnx_slice_scores(
    server, tiny_bundle, tiny_config
) -> None:
    r = predict(server, TEXTS)
    assert r.status_code == 200
    body = r.json()
    bundle = c.Bundle.load(tiny_bundle)
    assert body["model_version"] == bundle.manifest.version
    assert body["membership"] == dict.fromkeys(bundle.manifest.slice_names, "rule")
    runner = OnnxRunner.open(tiny_bundle / "model.onnx", load_tokenizer(tiny_config.backbone), 16)
    expected = runner.run(TEXTS)
    exact = slice_membership(TEXTS, tiny_config)  # training's slicing functions
    for i, p in enumerate(body["predictions"]):
        assert set(p) == {
            "id",
            "label",
            "confidence",
            "probabilities",
            "slices",
            "slice_scores",
            "active_slices",
        }
        probs = [p["probabilities"][lab] for lab in bundle.manifest.labels]
        np.testing.assert_allclose(probs, expected["probabilities"][i], atol=1e-4)
        scores = [p["slice_scores"][s] for s in bundle.manifest.slice_names]
        np.testing.assert_allclose(scores, expected["slice_membership"][i], atol=1e-4)
        assert [p["slices"][s] for s in bundle.manifest.slice_names] == exact[i].tolist()
        assert p["label"] == bundle.manifest.labels[int(np.argmax(probs))]
        assert p["active_slices"] == [
            s for j, s in enumerate(bundle.manifest.slice_names) if exact[i, j]
        ]


def test_prediction_log_and_feedback_reach_redis(server, module_redis) -> None:
    r = redis.Redis.from_url(module_redis.url, decode_responses=True)
    raw = redis.Redis.from_url(module_redis.url)  # the log's entries hold binary columns
    before = logged_count(raw)
    ids = [p["id"] for p in predict(server, TEXTS).json()["predictions"]]
    deadline = time.time() + 5
    while logged_count(raw) < before + 3 and time.time() < deadline:
        time.sleep(0.05)
    records = list(logged_records(raw, 3))[::-1]
    assert [rec.id for rec in records] == ids
    assert [rec.text for rec in records] == TEXTS  # raw-text logging is on in this server
    assert records[0].text_length == len(TEXTS[0])
    assert r.exists(PREDICTION_KEY + ids[0])
    fb = httpx.post(server.url + "/feedback", json={"id": ids[0], "label": "positive"}, timeout=10)
    assert fb.status_code == 200 and fb.json() == {
        "id": ids[0],
        "label": "positive",
        "stored": True,
        "replaced": None,
    }
    last = r.xrange(c.FEEDBACK_STREAM)[-1][1]
    assert last["id"] == ids[0] and last["label"] == "positive"


def _metric(server, line_start: str) -> float:
    text = httpx.get(server.url + "/metrics", timeout=10).text
    return sum(float(ln.rsplit(" ", 1)[1]) for ln in text.splitlines() if ln.startswith(line_start))


def test_metrics_move_as_predictions_arrive(server) -> None:
    before = _metric(server, "slicewise_predictions_total{")
    conf_before = _metric(server, 'slicewise_prediction_confidence_count{slice="all"}')
    predict(server, TEXTS)
    assert _metric(server, "slicewise_predictions_total{") == before + 3
    assert _metric(server, 'slicewise_prediction_confidence_count{slice="all"}') == conf_before + 3
    text = httpx.get(server.url + "/metrics", timeout=10).text
    assert (
        'slicewise_model_info{model_version="' in text
        and 'provider="CPUExecutionProvider"} 1.0' in text
    )
    for stage in ("tokenize", "infer", "rules", "postprocess"):
        assert f'slicewise_inference_seconds_count{{stage="{stage}"}}' in text
    assert "slicewise_slice_membership_score_bucket" in text


def test_requests_are_counted_without_an_access_log_line(server) -> None:
    """Access log off by default (SLICEWISE_ACCESS_LOG): BentoML's request counter still moves."""
    counted = 'bentoml_service_request_total{endpoint="/predict"'
    before = _metric(server, counted)
    for _ in range(3):
        assert predict(server, TEXTS[:1]).status_code == 200
    assert _metric(server, counted) == before + 3
    assert "path=/predict" not in server.log_file.read_text()


BAD = [
    ({"texts": []}, "texts: List should have at least 1 item"),
    ({"texts": [""]}, "texts[0] is empty (it has no visible characters)"),
    ({"texts": ["ok", 3]}, "texts[1]: Input should be a valid string"),
    ({"texts": ["x"] * 9}, "texts: List should have at most 8 items"),
    ({"texts": ["x" * 201]}, "texts[0]: String should have at most 200 characters"),
    ({"text": ["x"]}, "texts: Field required"),
    ({"texts": "a string"}, "texts: Input should be a valid array"),
]


@pytest.mark.parametrize(("body", "message"), BAD)
def test_bad_input_gets_a_4xx_naming_the_problem(server, body, message) -> None:
    r = httpx.post(server.url + "/predict", json=body, timeout=10)
    assert r.status_code == 400
    assert set(r.json()) == {"error"} and message in r.json()["error"], r.text


def test_invalid_json_and_wrong_content_type(server) -> None:
    r = httpx.post(
        server.url + "/predict",
        content=b'{"texts": [',
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 400 and "Invalid JSON" in r.json()["error"]
    r = httpx.post(
        server.url + "/predict", content=b"hello", headers={"content-type": "text/plain"}
    )
    assert r.status_code == 415 and "application/json" in r.json()["error"]
    assert predict(server, ["still serving"]).status_code == 200


def test_feedback_errors(server) -> None:
    unknown = "0" * 32
    r = httpx.post(server.url + "/feedback", json={"id": unknown, "label": "positive"}, timeout=10)
    assert r.status_code == 404 and r.json() == {
        "error": f"unknown prediction id '{unknown}': never served, or older than the feedback "
        "window (7 days)"
    }
    r = httpx.post(server.url + "/feedback", json={"id": "nope", "label": "positive"}, timeout=10)
    assert r.status_code == 400 and r.json()["error"].startswith("id: String should have at least")
    r = httpx.post(server.url + "/feedback", json={"id": "Z" * 32, "label": "positive"}, timeout=10)
    assert r.status_code == 400 and "id: String should match pattern" in r.json()["error"]
    pid = predict(server, ["x"]).json()["predictions"][0]["id"]
    r = httpx.post(server.url + "/feedback", json={"id": pid, "label": "meh"}, timeout=10)
    assert r.status_code == 400 and "unknown label 'meh'" in r.json()["error"]


def test_liveness_readiness_and_openapi(server) -> None:
    assert httpx.get(server.url + "/livez").status_code == 200
    assert httpx.get(server.url + "/readyz").status_code == 200
    spec = httpx.get(server.url + "/docs.json").json()
    schema = json.dumps(spec)
    assert "/predict" in spec["paths"] and "active_slices" in schema and "model_version" in schema
    props = spec["components"]["schemas"]["Prediction"]["properties"]
    assert "slice_scores" in props and "exact 0 or 1" in props["slices"]["description"]
    assert (
        "membership" in spec["components"]["schemas"]["PredictResponseIODescriptor"]["properties"]
    )
