"""`slicewise webhook`: receives Alertmanager webhooks and queues retraining (docs/design.md §9).

- Bearer-token authenticated (`SLICEWISE_WEBHOOK_TOKEN`); a wrong or missing token is a 401.
- The body is validated against Alertmanager's webhook schema (version 4); anything else is a
  400 naming the problem.
- Duplicate notifications collapse on `groupKey` with Redis `SET NX EX`: the first one queues
  a retrain job on `slicewise:retrain:queue`, repeats within the TTL are acknowledged and
  ignored. Only firing alerts with `action="retrain"` queue anything.
- With `run_retrains`, a worker thread pops the queue and runs `slicewise retrain` as a
  subprocess, one at a time (on Kubernetes a Job does this instead).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import subprocess
import sys
import threading
import time
from typing import Any

import redis
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from slicewise.core.contracts import ALERT_DEDUP_PREFIX, RETRAIN_QUEUE
from slicewise.core.errors import SlicewiseError

log = logging.getLogger("slicewise.webhook")


class Alert(BaseModel):
    """One alert of an Alertmanager notification."""

    model_config = ConfigDict(extra="allow")

    status: str
    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)


class Notification(BaseModel):
    """Alertmanager's webhook payload (version 4)."""

    model_config = ConfigDict(extra="allow")

    version: str
    groupKey: str = Field(min_length=1)
    status: str
    receiver: str = ""
    alerts: list[Alert] = Field(min_length=1)


class WebhookError(SlicewiseError, ValueError):
    """The webhook cannot start as configured (e.g. no token)."""


def retrain_job(note: Notification) -> dict[str, Any] | None:
    """The queue entry for a notification, or None when it asks for no retraining."""
    wanted = [
        a for a in note.alerts if a.status == "firing" and a.labels.get("action") == "retrain"
    ]
    if note.status != "firing" or not wanted:
        return None
    return {
        "group_key": note.groupKey,
        "received_at": time.time(),
        "alerts": sorted({a.labels.get("alertname", "?") for a in wanted}),
        "slices": sorted({a.labels["slice"] for a in wanted if "slice" in a.labels}),
    }


def create_app(client: redis.Redis, token: str, dedup_ttl: int = 3600) -> Starlette:
    """The webhook ASGI app: `POST /alerts` (Alertmanager's webhook) and `/healthz`.

    Args:
        client: Redis holding the retrain queue and the dedup keys.
        token: the bearer token Alertmanager sends.
        dedup_ttl: seconds one `groupKey` stays deduplicated.

    Returns:
        A Starlette app.
    """

    async def alerts(request: Request) -> JSONResponse:
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return JSONResponse({"error": "missing or wrong bearer token"}, status_code=401)
        try:
            note = Notification.model_validate_json(await request.body())
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "body"
            return JSONResponse(
                {"error": f"not an Alertmanager notification: {where}: {first['msg']}"},
                status_code=400,
            )
        job = retrain_job(note)
        if job is None:
            return JSONResponse(
                {"queued": False, "reason": "no firing alert with action=retrain"}, status_code=202
            )
        key = ALERT_DEDUP_PREFIX + hashlib.sha256(note.groupKey.encode()).hexdigest()[:32]
        try:
            first_time = client.set(key, "1", nx=True, ex=dedup_ttl)
            if not first_time:
                return JSONResponse(
                    {"queued": False, "reason": "duplicate of a queued alert group"},
                    status_code=202,
                )
            client.lpush(RETRAIN_QUEUE, json.dumps(job))
        except redis.RedisError as exc:
            return JSONResponse({"error": f"Redis unavailable: {exc}"}, status_code=503)
        log.info("queued a retrain for %s (slices %s)", job["alerts"], job["slices"])
        return JSONResponse({"queued": True, "job": job}, status_code=202)

    async def healthz(_: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    return Starlette(
        routes=[Route("/alerts", alerts, methods=["POST"]), Route("/healthz", healthz)]
    )


def retrain_worker(client: redis.Redis, command: list[str], stop: threading.Event) -> None:
    """Pop queued jobs and run `command` (a `slicewise retrain …` line) for each, serially."""
    while not stop.is_set():
        try:
            item = client.brpop([RETRAIN_QUEUE], timeout=1)
        except redis.RedisError as exc:
            log.warning("retrain worker: Redis unavailable (%s)", exc)
            stop.wait(2)
            continue
        if item is None:
            continue
        job = json.loads(item[1])
        log.info("retrain worker: running %s for %s", " ".join(command), job["alerts"])
        rc = subprocess.call([*command, "--reason", json.dumps(job)])
        log.info("retrain worker: exit code %d", rc)


def default_retrain_command(config: str | None) -> list[str]:
    """`slicewise retrain` with this interpreter (and the config, when given)."""
    cmd = [sys.executable, "-m", "slicewise.cli", "retrain"]
    return cmd + (["--config", config] if config else [])


def serve_webhook(
    *,
    redis_url: str,
    token: str | None,
    host: str = "127.0.0.1",
    port: int = 9102,
    dedup_ttl: int = 3600,
    run_retrains: bool = False,
    config: str | None = None,
) -> None:
    """`slicewise webhook`: serve the receiver until stopped, optionally running retrains here.

    Args:
        redis_url: Redis holding the retrain queue and the dedup keys.
        token: the bearer token Alertmanager sends; required.
        host: bind address.
        port: port.
        dedup_ttl: seconds one `groupKey` stays deduplicated.
        run_retrains: run queued retrains in this process (else a Kubernetes Job does).
        config: project config for the retrains this process runs.

    Raises:
        WebhookError: no token.
    """
    import uvicorn

    if not token:
        raise WebhookError(
            "set SLICEWISE_WEBHOOK_TOKEN (or --token): the webhook refuses to run unauthenticated"
        )
    client = redis.Redis.from_url(redis_url)
    if run_retrains:
        stop = threading.Event()
        cmd = [*default_retrain_command(config), "--redis-url", redis_url]
        threading.Thread(target=retrain_worker, args=(client, cmd, stop), daemon=True).start()
    uvicorn.run(create_app(client, token, dedup_ttl), host=host, port=port, log_level="warning")
