"""The hardened public surface of the real service (`bentoml serve`, a real Redis, the tiny
bundle): one error shape with the documented status for every bad input and none a 5xx, auth
and body size checked before the body is read, invisible texts refused, one feedback label per
prediction id, one metrics label for unknown routes, client errors logged as one INFO line, a
hot-swap that only follows promoted versions, a schema-driven fuzz run (schemathesis against
the served OpenAPI document), and a service that refuses to start open when a token is
required."""

from __future__ import annotations

import json
import re
import socket
import time
from typing import Any

import httpx
import pytest
import redis
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from slicewise.core import contracts as c
from slicewise.core.feedback import read_feedback_labels
from slicewise.processes import BentoServer, ServerError

pytestmark = [pytest.mark.integration, pytest.mark.slow]
TOKEN = "hardening-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MAX_BODY, MAX_TEXTS, MAX_CHARS = 65536, 8, 200
FEEDBACK_TTL_S = 4  # short, so a test can outlive the feedback window
EMPTY = "texts[0] is empty (it has no visible characters)"


@pytest.fixture(scope="module")
def server(tiny_bundle, bentoml_home, module_redis, tmp_path_factory):
    log = tmp_path_factory.mktemp("serve-hardening") / "serve.log"
    env = {
        "SLICEWISE_MODEL_DIR": str(tiny_bundle),
        "REDIS_URL": module_redis.url,
        "BENTOML_HOME": str(bentoml_home),
        "SLICEWISE_API_TOKEN": TOKEN,
        "SLICEWISE_REQUIRE_TOKEN": "1",
        "SLICEWISE_MAX_BODY_BYTES": str(MAX_BODY),
        "SLICEWISE_MAX_TEXTS": str(MAX_TEXTS),
        "SLICEWISE_MAX_TEXT_CHARS": str(MAX_CHARS),
        "SLICEWISE_HOTSWAP_INTERVAL": "0.2",
        "SLICEWISE_PREFER_INT8": "0",
        "SLICEWISE_FEEDBACK_TTL_S": str(FEEDBACK_TTL_S),
    }
    srv = BentoServer(env, log_file=log).start()
    yield srv
    srv.stop()


def post(server, path: str, auth: bool = True, **kw: Any) -> httpx.Response:
    headers = {**(AUTH if auth else {}), **kw.pop("headers", {})}
    return httpx.post(server.url + path, timeout=30, headers=headers, **kw)


def raw_exchange(server, head: str, body: bytes = b"", timeout: float = 5.0) -> tuple[int, bytes]:
    """Send a hand-made request (headers may promise more body than is sent); return the
    status and body of the response."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as sock:
        sock.sendall(head.replace("\n", "\r\n").encode() + b"\r\n" + body)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        head_part, _, rest = data.partition(b"\r\n\r\n")
        length = int(re.search(rb"(?i)content-length: *(\d+)", head_part).group(1))
        while len(rest) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            rest += chunk
    return int(head_part.split()[1]), rest[:length]


def chunked(parts: list[bytes]):
    yield from parts


def good_text_body() -> dict:
    return {"texts": ["fine"]}


BIG_JSON = json.dumps({"texts": ["x" * 100] * 1000}).encode()  # ~100 KiB > MAX_BODY
# (name, request kwargs for `post`, path, expected status)
BAD_REQUESTS = [
    (
        "multipart without boundary",
        {"content": b"--x", "headers": {"content-type": "multipart/form-data"}},
        "/predict",
        415,
    ),
    (
        "multipart on feedback",
        {"content": b"--x", "headers": {"content-type": "multipart/form-data"}},
        "/feedback",
        415,
    ),
    (
        "text/plain",
        {"content": b"hello", "headers": {"content-type": "text/plain"}},
        "/predict",
        415,
    ),
    (
        "form-encoded",
        {"content": b"texts=a", "headers": {"content-type": "application/x-www-form-urlencoded"}},
        "/predict",
        415,
    ),
    (
        "pickle",
        {"content": b"\x80\x04", "headers": {"content-type": "application/vnd.bentoml+pickle"}},
        "/predict",
        415,
    ),
    (
        "invalid JSON",
        {"content": b'{"texts": [', "headers": {"content-type": "application/json"}},
        "/predict",
        400,
    ),
    (
        "JSON nested 5000 deep",
        {"content": b"[" * 5000 + b"]" * 5000, "headers": {"content-type": "application/json"}},
        "/predict",
        400,
    ),
    ("JSON array body", {"json": ["a"]}, "/predict", 400),
    ("null texts", {"json": {"texts": None}}, "/predict", 400),
    ("NUL text", {"json": {"texts": ["\x00"]}}, "/predict", 400),
    (
        "body over the limit",
        {"content": BIG_JSON, "headers": {"content-type": "application/json"}},
        "/predict",
        413,
    ),
    (
        "chunked body over the limit",
        {
            "content": chunked([BIG_JSON[:40000], BIG_JSON[40000:]]),
            "headers": {"content-type": "application/json"},
        },
        "/predict",
        413,
    ),
    ("no token", {"json": good_text_body(), "auth": False}, "/predict", 401),
    (
        "wrong token",
        {"json": good_text_body(), "auth": False, "headers": {"Authorization": "Bearer nope"}},
        "/feedback",
        401,
    ),
    (
        "feedback id of 20 000 chars",
        {"json": {"id": "a" * 20000, "label": "positive"}},
        "/feedback",
        400,
    ),
    ("feedback id not hex", {"json": {"id": "Z" * 32, "label": "positive"}}, "/feedback", 400),
    ("feedback unknown id", {"json": {"id": "0" * 32, "label": "positive"}}, "/feedback", 404),
    (
        "feedback label of 5 000 chars",
        {"json": {"id": "0" * 32, "label": "p" * 5000}},
        "/feedback",
        400,
    ),
    ("unknown route", {"json": good_text_body()}, "/predictx", 404),
]


@pytest.mark.parametrize(
    ("name", "kw", "path", "status"), BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS]
)
def test_bad_input_gets_the_documented_status_and_one_error_object(server, name, kw, path, status):
    kw = dict(kw)
    r = post(server, path, auth=kw.pop("auth", True), **kw)
    assert r.status_code == status, (name, r.status_code, r.text[:300])
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert isinstance(body, dict) and set(body) == {"error"}, body
    assert 0 < len(body["error"]) <= 300  # bounded: never echoes a large input


def test_method_not_allowed_has_the_same_shape(server) -> None:
    r = httpx.get(server.url + "/predict", headers=AUTH, timeout=10)
    assert r.status_code == 405 and set(r.json()) == {"error"}


def test_auth_and_size_are_refused_before_the_body_is_read(server) -> None:
    """The headers promise 10 MB that never come: an answer proves nobody waited for them."""
    head = "POST /predict HTTP/1.1\nHost: x\nContent-Type: application/json\nContent-Length: 10000000\n"
    t0 = time.perf_counter()
    status, body = raw_exchange(server, head)
    assert status == 401 and json.loads(body) == {"error": "missing or wrong bearer token"}
    status, body = raw_exchange(server, head + f"Authorization: Bearer {TOKEN}\n")
    assert status == 413 and "10000000 bytes" in json.loads(body)["error"]
    assert time.perf_counter() - t0 < 4.0


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   \t\n",
        "\u200b",
        "\u200b\u200c\u200d\ufeff",
        "\x00",
        "\x00\x01\x7f",
        "\u2028",
        "\u3164",
    ],
)
def test_texts_without_visible_characters_get_the_empty_message(server, text) -> None:
    r = post(server, "/predict", json={"texts": [text]})
    assert r.status_code == 400 and r.json() == {"error": EMPTY}


def test_one_feedback_label_per_prediction_a_correction_replaces_it(server, module_redis) -> None:
    client = redis.Redis.from_url(module_redis.url)
    pid = post(server, "/predict", json={"texts": ["not good"]}).json()["predictions"][0]["id"]
    first = post(server, "/feedback", json={"id": pid, "label": "positive"})
    assert first.status_code == 200 and first.json()["replaced"] is None
    second = post(server, "/feedback", json={"id": pid, "label": "negative"})
    assert second.status_code == 200 and second.json()["replaced"] == "positive"
    assert client.hget(c.FEEDBACK_LABELS_KEY, pid) == b"negative"
    assert read_feedback_labels(client)[pid] == "negative"
    events = [f for _, f in client.xrange(c.FEEDBACK_STREAM) if f[b"id"] == pid.encode()]
    assert [(e[b"label"], e[b"previous"]) for e in events] == [
        (b"positive", b""),
        (b"negative", b"positive"),
    ]
    metrics = httpx.get(server.url + "/metrics", timeout=10).text
    assert re.search(r'slicewise_feedback_total\{outcome="corrected"\} [1-9]', metrics)


def test_feedback_after_its_window_is_a_clear_404_and_old_labels_go(server, module_redis) -> None:
    client = redis.Redis.from_url(module_redis.url)
    old = post(server, "/predict", json={"texts": ["late"]}).json()["predictions"][0]["id"]
    assert post(server, "/feedback", json={"id": old, "label": "positive"}).status_code == 200
    assert client.hget(c.FEEDBACK_LABELS_KEY, old) == b"positive"
    time.sleep(FEEDBACK_TTL_S + 0.5)
    r = post(server, "/feedback", json={"id": old, "label": "negative"})
    assert r.status_code == 404
    assert r.json() == {
        "error": f"unknown prediction id '{old}': never served, or older than the feedback "
        f"window ({FEEDBACK_TTL_S} s)"
    }
    new = post(server, "/predict", json={"texts": ["on time"]}).json()["predictions"][0]["id"]
    assert post(server, "/feedback", json={"id": new, "label": "negative"}).status_code == 200
    assert client.hget(c.FEEDBACK_LABELS_KEY, old) is None  # trimmed by the newer write
    assert client.hget(c.FEEDBACK_LABELS_KEY, new) == b"negative"
    assert old not in read_feedback_labels(client)


def test_feedback_store_down_is_a_503_naming_the_cause(server, module_redis) -> None:
    pid = post(server, "/predict", json={"texts": ["fine"]}).json()["predictions"][0]["id"]
    time.sleep(0.3)  # written to Redis, no longer in the buffer
    module_redis.stop()
    try:
        r = post(server, "/feedback", json={"id": pid, "label": "negative"})
    finally:
        module_redis.start()
    assert r.status_code == 503 and set(r.json()) == {"error"}
    assert r.json()["error"].startswith("feedback store unavailable: "), r.text
    assert "unexpected error" not in r.text


def test_unknown_routes_share_one_metrics_label(server) -> None:
    for i in range(12):
        httpx.post(server.url + f"/probe-{i}", json={}, timeout=10)
        httpx.get(server.url + f"/probe-{i}/x?y=1", timeout=10)
    metrics = httpx.get(server.url + "/metrics", timeout=10).text
    assert "probe-" not in metrics
    assert 'endpoint="/__unknown__"' in metrics


def test_client_errors_are_logged_as_one_info_line(server) -> None:
    post(server, "/predict", json={"texts": [3]})
    post(server, "/predict", json={"texts": ["\u200b"]})
    time.sleep(0.5)
    log = server.log_file.read_text()
    assert "client error 400 on /predict" in log
    assert "Traceback" not in log and "Exception on /predict" not in log


def test_hot_swap_follows_only_promoted_versions_and_logs_a_refusal_once(
    server, module_redis, tiny_bundle
) -> None:
    client = redis.Redis.from_url(module_redis.url)
    before = post(server, "/predict", json={"texts": ["a"]}).json()["model_version"]
    unpromoted, missing = c.new_version(), c.new_version()
    client.set(c.promotion_record_key(missing), "{}")  # promoted, but not in the model store
    try:
        for value in ("latest", unpromoted, missing):
            client.set(c.PRODUCTION_VERSION_KEY, value)
            time.sleep(1.5)  # ~7 polls
            assert post(server, "/predict", json={"texts": ["a"]}).json()["model_version"] == before
        log = server.log_file.read_text()
        assert log.count("ignoring production version 'latest': not a model version") == 1
        assert log.count(f"ignoring production version '{unpromoted}': no promotion record") == 1
        assert log.count(f"ignoring production version '{missing}': cannot load it") == 1
    finally:
        client.delete(c.PRODUCTION_VERSION_KEY, c.promotion_record_key(missing))


def test_require_token_refuses_to_start_without_one(tiny_bundle, bentoml_home, tmp_path) -> None:
    env = {
        "SLICEWISE_MODEL_DIR": str(tiny_bundle),
        "BENTOML_HOME": str(bentoml_home),
        "REDIS_URL": "redis://127.0.0.1:1/0",
        "SLICEWISE_REQUIRE_TOKEN": "1",
        "SLICEWISE_API_TOKEN": "",
    }
    log = tmp_path / "serve.log"
    with pytest.raises(ServerError):
        BentoServer(env, log_file=log).start(timeout=90)
    assert "SLICEWISE_REQUIRE_TOKEN is set but SLICEWISE_API_TOKEN is empty" in log.read_text()


# --- schema-driven fuzzing: schemathesis reads the served OpenAPI document -----------------
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def api_schema(server):
    return schemathesis.openapi.from_url(server.url + "/docs.json")


@pytest.mark.parametrize("path", ["/predict", "/feedback"])
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_fuzz_from_the_openapi_document(server, api_schema, path, mode) -> None:
    """No 5xx; every status, content type and body is the one the document states; data that
    breaks the schema is refused."""
    checks = CHECKS + ([negative_data_rejection] if mode is GenerationMode.NEGATIVE else [])
    statuses: list[int] = []

    @settings(
        max_examples=30, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck)
    )
    @given(case=api_schema[path]["POST"].as_strategy(generation_mode=mode))
    def run(case) -> None:
        r = case.call_and_validate(base_url=server.url, headers=AUTH, checks=checks, timeout=30)
        statuses.append(r.status_code)

    run()
    assert len(statuses) >= 10
    if mode is GenerationMode.NEGATIVE:
        assert all(400 <= s < 500 for s in statuses), statuses
    elif path == "/predict":  # schema-valid bodies: served, or 400 for invisible-only texts
        assert statuses.count(200) >= 5 and set(statuses) <= {200, 400}, statuses
    else:  # random well-formed ids were never served
        assert set(statuses) <= {400, 404}, statuses


PARITY_BODIES = [
    b'{"texts": ["I would not fly with them again.", "Is my flight delayed?", "ok"]}',
    b'{"texts": ["fine"], "extra": 1}',
    b"",
    b"{}",
    b'{"texts": [',
    b"[" * 5000 + b"]" * 5000,
    b'["a"]',
    b'{"texts": null}',
    b'{"texts": "one string"}',
    b'{"texts": []}',
    b'{"texts": [3]}',
    b'{"texts": ["\\u0000"]}',
    b'{"texts": ["\\u200b", "fine"]}',
    b'{"texts": ["\\ud800"]}',
    json.dumps({"texts": ["x"] * (MAX_TEXTS + 1)}).encode(),
    json.dumps({"texts": ["x" * (MAX_CHARS + 1)]}).encode(),
]


def test_fast_predict_route_answers_exactly_as_bentomls_route(
    server, tiny_bundle, bentoml_home, module_redis, tmp_path
) -> None:
    """`PredictRoute` (service/predict_route.py) against `SLICEWISE_FAST_PREDICT=0`, the same
    service through BentoML's router: the same status and body for every body, good or bad
    (prediction ids aside: they are random)."""
    env = {
        "SLICEWISE_MODEL_DIR": str(tiny_bundle),
        "REDIS_URL": module_redis.url,
        "BENTOML_HOME": str(bentoml_home),
        "SLICEWISE_API_TOKEN": TOKEN,
        "SLICEWISE_MAX_BODY_BYTES": str(MAX_BODY),
        "SLICEWISE_MAX_TEXTS": str(MAX_TEXTS),
        "SLICEWISE_MAX_TEXT_CHARS": str(MAX_CHARS),
        "SLICEWISE_PREFER_INT8": "0",
        "SLICEWISE_FAST_PREDICT": "0",
    }
    headers = {**AUTH, "content-type": "application/json"}
    with BentoServer(env, log_file=tmp_path / "serve.log").start() as routed:
        for body in PARITY_BODIES:
            fast = httpx.post(server.url + "/predict", content=body, headers=headers, timeout=30)
            slow = httpx.post(routed.url + "/predict", content=body, headers=headers, timeout=30)
            assert fast.status_code == slow.status_code, (body[:60], fast.text, slow.text)
            a, b = fast.json(), slow.json()
            for p in [*a.get("predictions", []), *b.get("predictions", [])]:
                assert re.fullmatch(c.PREDICTION_ID_PATTERN, p.pop("id"))
            assert a == b, body[:60]
            # how the two paths tell themselves apart: BentoML's route adds its Server header
            assert "server" not in fast.headers
            assert slow.headers["server"] == "BentoML Service/slicewise"
    assert fast.json() == {"error": f"texts[0]: String should have at most {MAX_CHARS} characters"}
