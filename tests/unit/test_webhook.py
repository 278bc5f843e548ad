"""The retrain webhook against a real Redis: auth, payload validation, groupKey dedup, queueing."""

from __future__ import annotations

import json
import sys
import threading
import time

import pytest
import redis
from starlette.testclient import TestClient

from monitoring.webhook import create_app, retrain_worker, subprocess_launcher
from slicewise.core.contracts import RETRAIN_OUTCOMES_KEY, RETRAIN_QUEUE, RETRAIN_RUNS_KEY

AUTH = {"Authorization": "Bearer t0ken"}


def note(group: str = "g1", action: str = "retrain", status: str = "firing") -> dict:
    return {
        "version": "4",
        "groupKey": group,
        "status": status,
        "receiver": "slicewise-retrain",
        "alerts": [
            {
                "status": status,
                "labels": {
                    "alertname": "SliceDriftDetected",
                    "slice": "negation",
                    "action": action,
                },
            }
        ],
    }


@pytest.fixture
def client_and_redis(redis_server):
    r = redis.Redis.from_url(redis_server.url)
    return TestClient(create_app(r, "t0ken")), r


def test_firing_retrain_alert_is_queued_once_per_group(client_and_redis) -> None:
    client, r = client_and_redis
    first = client.post("/alerts", json=note(), headers=AUTH)
    assert first.status_code == 202 and first.json()["queued"] is True
    again = client.post("/alerts", json=note(), headers=AUTH)
    assert again.json() == {"queued": False, "reason": "duplicate of a queued alert group"}
    other = client.post("/alerts", json=note("g2"), headers=AUTH)
    assert other.json()["queued"] is True
    jobs = [json.loads(x) for x in r.lrange(RETRAIN_QUEUE, 0, -1)]
    assert [j["group_key"] for j in jobs] == ["g2", "g1"] and jobs[0]["slices"] == ["negation"]


@pytest.mark.parametrize("payload", [note(action="page"), note(status="resolved")])
def test_alerts_that_ask_for_no_retrain_queue_nothing(client_and_redis, payload) -> None:
    client, r = client_and_redis
    res = client.post("/alerts", json=payload, headers=AUTH)
    assert res.status_code == 202 and res.json()["queued"] is False and r.llen(RETRAIN_QUEUE) == 0


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "t0ken"}]
)
def test_wrong_or_missing_token_is_401(client_and_redis, headers) -> None:
    client, r = client_and_redis
    res = client.post("/alerts", json=note(), headers=headers)
    assert res.status_code == 401 and r.llen(RETRAIN_QUEUE) == 0


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{", "not an Alertmanager notification"),
        (json.dumps({"version": "4"}).encode(), "groupKey: Field required"),
        (json.dumps({**note(), "alerts": []}).encode(), "alerts: List should have at least 1 item"),
    ],
)
def test_malformed_bodies_are_400_naming_the_problem(client_and_redis, body, message) -> None:
    client, _ = client_and_redis
    res = client.post("/alerts", content=body, headers=AUTH)
    assert res.status_code == 400 and message in res.json()["error"]


def test_redis_down_is_503_not_a_crash(redis_server) -> None:
    client = TestClient(create_app(redis.Redis(port=1, socket_connect_timeout=0.2), "t0ken"))
    res = client.post("/alerts", json=note(), headers=AUTH)
    assert res.status_code == 503 and "Redis unavailable" in res.json()["error"]


def test_dedupe_and_enqueue_is_one_script(redis_server) -> None:
    from monitoring.webhook import DEDUPE_AND_ENQUEUE

    r = redis.Redis.from_url(redis_server.url)
    script = r.register_script(DEDUPE_AND_ENQUEUE)
    assert script(["slicewise:alert:k", RETRAIN_QUEUE], [60, "job"]) == 1
    assert script(["slicewise:alert:k", RETRAIN_QUEUE], [60, "job"]) == 0
    assert r.lrange(RETRAIN_QUEUE, 0, -1) == [b"job"] and 0 < r.ttl("slicewise:alert:k") <= 60


def test_retrain_alert_without_a_slice_is_counted_not_queued(client_and_redis) -> None:
    client, r = client_and_redis
    payload = note()
    del payload["alerts"][0]["labels"]["slice"]
    res = client.post("/alerts", json=payload, headers=AUTH)
    assert res.status_code == 202 and res.json()["queued"] is False
    assert "slice label" in res.json()["reason"] and r.llen(RETRAIN_QUEUE) == 0
    assert r.hget(RETRAIN_OUTCOMES_KEY, "invalid_alert") == b"1"


def run_worker_until_drained(r: redis.Redis, launch) -> threading.Thread:
    stop = threading.Event()
    worker = threading.Thread(target=retrain_worker, args=(r, launch, stop), daemon=True)
    worker.start()
    deadline = time.monotonic() + 20
    while r.llen(RETRAIN_QUEUE) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # the last job's launch and bookkeeping
    alive = worker.is_alive()
    stop.set()
    worker.join(5)
    assert alive, "the worker thread died"
    return worker


def test_worker_skips_bad_entries_counts_crashes_and_keeps_going(redis_server, caplog) -> None:
    r = redis.Redis.from_url(redis_server.url)
    jobs = [{"group_key": f"g{i}", "received_at": float(i), "alerts": ["A"]} for i in range(3)]
    launched = []

    def launch(job):
        launched.append(job["group_key"])
        if job["group_key"] == "g0":
            raise OSError("no such file: slicewise")
        if job["group_key"] == "g2":  # a run that reports itself, as `slicewise retrain` does
            r.lpush(
                RETRAIN_RUNS_KEY, json.dumps({"outcome": "rejected", "reason": json.dumps(job)})
            )
        return "exited with code 0"

    for entry in ["{not json", json.dumps(["a", "list"]), *map(json.dumps, jobs)]:
        r.lpush(RETRAIN_QUEUE, entry)
    with caplog.at_level("ERROR", logger="slicewise.webhook"):
        run_worker_until_drained(r, launch)
    assert launched == ["g0", "g1", "g2"]
    counts = {k.decode(): int(v) for k, v in r.hgetall(RETRAIN_OUTCOMES_KEY).items()}
    assert counts == {"invalid_job": 2, "crashed": 2}  # g0 raised, g1 left no run report
    text = caplog.text
    assert "not a job" in text and "OSError: no such file: slicewise" in text
    assert "no run report for ['A']" in text


def test_subprocess_launcher_reports_the_exit_code(redis_server, caplog) -> None:
    r = redis.Redis.from_url(redis_server.url)
    crash = [sys.executable, "-c", "import sys; sys.stderr.write('boom\\n'); sys.exit(3)"]
    r.lpush(RETRAIN_QUEUE, json.dumps({"group_key": "g", "received_at": 1.0, "alerts": ["A"]}))
    with caplog.at_level("ERROR", logger="slicewise.webhook"):
        run_worker_until_drained(r, subprocess_launcher(crash))
    assert r.hget(RETRAIN_OUTCOMES_KEY, "crashed") == b"1"
    assert "exited with code 3: boom" in caplog.text
