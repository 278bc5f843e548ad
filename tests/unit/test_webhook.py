"""The retrain webhook against a real Redis: auth, payload validation, groupKey dedup, queueing."""

from __future__ import annotations

import json

import pytest
import redis
from starlette.testclient import TestClient

from monitoring.webhook import create_app
from slicewise.core.contracts import RETRAIN_QUEUE

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
