"""`slicewise webhook`: receives Alertmanager webhooks and queues retraining (docs/design.md §9).

- Bearer-token authenticated (`SLICEWISE_WEBHOOK_TOKEN`); a wrong or missing token is a 401.
- The body is validated against Alertmanager's webhook schema (version 4); anything else is a
  400 naming the problem.
- Duplicate notifications collapse on `groupKey`: one Lua script sets the dedupe key
  (`SET NX EX`) and pushes the job on `slicewise:retrain:queue` atomically, so a crash between
  the two can neither lose a job nor queue it twice. Only firing alerts with `action="retrain"`
  and a `slice` label queue anything; one without a slice is counted as `invalid_alert`.
- With `run_retrains`, a worker thread pops the queue and hands each job to a launcher, one at a
  time: `slicewise retrain` as a subprocess here, or a Job from the `slicewise-retrain` CronJob
  template on Kubernetes (`monitoring.k8s_jobs`). A queue entry that is not a job is counted as
  `invalid_job`; a run that leaves no run report (it died, or could not start) as `crashed`
  (`slicewise_retrain_runs_total{outcome}`); each is logged with its cause and the worker goes
  on. Production is only ever changed by a run that promoted.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import redis
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from slicewise.core.contracts import (
    ALERT_DEDUP_PREFIX,
    RETRAIN_OUTCOMES_KEY,
    RETRAIN_QUEUE,
    RETRAIN_RUNS_KEY,
)
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


def retrain_job(note: Notification) -> tuple[dict[str, Any] | None, list[str]]:
    """The queue entry for a notification (None when it asks for no retraining), and the names
    of its retrain alerts that carry no `slice` label (bad input: counted, not queued).
    """
    wanted = [
        a for a in note.alerts if a.status == "firing" and a.labels.get("action") == "retrain"
    ]
    if note.status != "firing":
        return None, []
    no_slice = [a.labels.get("alertname", "?") for a in wanted if not a.labels.get("slice")]
    wanted = [a for a in wanted if a.labels.get("slice")]
    if not wanted:
        return None, no_slice
    job = {
        "group_key": note.groupKey,
        "received_at": time.time(),
        "alerts": sorted({a.labels.get("alertname", "?") for a in wanted}),
        "slices": sorted({a.labels["slice"] for a in wanted}),
    }
    return job, no_slice


# KEYS: dedupe key, queue; ARGV: TTL seconds, job JSON. 1 = queued, 0 = duplicate.
DEDUPE_AND_ENQUEUE = """
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then
  redis.call('LPUSH', KEYS[2], ARGV[2])
  return 1
end
return 0
"""


def count_outcome(client: redis.Redis, outcome: str, cause: str) -> None:
    """Log `cause` and count `outcome` in `slicewise_retrain_runs_total` (best effort)."""
    log.error("retrain %s: %s", outcome, cause)
    try:
        client.hincrby(RETRAIN_OUTCOMES_KEY, outcome, 1)
    except redis.RedisError as exc:
        log.error("could not count the %s outcome in Redis: %s", outcome, exc)


def create_app(client: redis.Redis, token: str, dedup_ttl: int = 3600) -> Starlette:
    """The webhook ASGI app: `POST /alerts` (Alertmanager's webhook) and `/healthz`.

    Args:
        client: Redis holding the retrain queue and the dedup keys.
        token: the bearer token Alertmanager sends.
        dedup_ttl: seconds one `groupKey` stays deduplicated.

    Returns:
        A Starlette app.
    """
    enqueue = client.register_script(DEDUPE_AND_ENQUEUE)

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
        job, no_slice = retrain_job(note)
        if no_slice:
            count_outcome(
                client, "invalid_alert", f"retrain alert(s) {no_slice} carry no slice label"
            )
        if job is None:
            reason = "no firing alert with action=retrain" + (" and a slice label" * bool(no_slice))
            return JSONResponse({"queued": False, "reason": reason}, status_code=202)
        key = ALERT_DEDUP_PREFIX + hashlib.sha256(note.groupKey.encode()).hexdigest()[:32]
        try:
            queued = enqueue([key, RETRAIN_QUEUE], [dedup_ttl, json.dumps(job)])
        except redis.RedisError as exc:
            return JSONResponse({"error": f"Redis unavailable: {exc}"}, status_code=503)
        if not queued:
            return JSONResponse(
                {"queued": False, "reason": "duplicate of a queued alert group"}, status_code=202
            )
        log.info("queued a retrain for %s (slices %s)", job["alerts"], job["slices"])
        return JSONResponse({"queued": True, "job": job}, status_code=202)

    async def healthz(_: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    return Starlette(
        routes=[Route("/alerts", alerts, methods=["POST"]), Route("/healthz", healthz)]
    )


Launcher = Callable[[dict[str, Any]], str]
"""Runs one job to its end and says how it ended (for the log). May raise."""


def subprocess_launcher(command: list[str], env: dict[str, str] | None = None) -> Launcher:
    """Run `command` (a `slicewise retrain …` line) with `--reason <job JSON>` here, with this
    process's environment plus `env`.
    """

    def launch(job: dict[str, Any]) -> str:
        proc = subprocess.run(
            [*command, "--reason", json.dumps(job)],
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
        )
        tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
        return f"`slicewise retrain` exited with code {proc.returncode}" + (
            f": {tail}" if proc.returncode else ""
        )

    return launch


def run_was_reported(client: redis.Redis, job: dict[str, Any]) -> bool:
    """Whether `slicewise retrain` recorded a run report for `job` (its `--reason`)."""
    for raw in client.lrange(RETRAIN_RUNS_KEY, 0, -1):
        try:
            reason = json.loads(json.loads(raw).get("reason") or "null")
        except (ValueError, AttributeError):
            continue
        if isinstance(reason, dict) and all(
            reason.get(k) == job.get(k) for k in ("group_key", "received_at")
        ):
            return True
    return False


def parse_job(raw: bytes | str) -> dict[str, Any]:
    """A queue entry as a job dict.

    Raises:
        ValueError: not JSON, or not an object with `group_key` and `alerts`.
    """
    job = json.loads(raw)
    if not isinstance(job, dict) or not {"group_key", "alerts"} <= job.keys():
        raise ValueError(f"expected an object with group_key and alerts, got {str(raw)[:80]!r}")
    return job


def retrain_worker(client: redis.Redis, launch: Launcher, stop: threading.Event) -> None:
    """Pop queued jobs and `launch` each, serially, until `stop` is set.

    A bad queue entry, a launcher error or a Redis outage is logged (and counted where it is a
    retrain outcome); the loop goes on.
    """
    while not stop.is_set():
        try:
            item = client.brpop([RETRAIN_QUEUE], timeout=1)
        except redis.RedisError as exc:
            log.warning("retrain worker: Redis unavailable (%s)", exc)
            stop.wait(2)
            continue
        if item is None:
            continue
        try:
            job = parse_job(item[1])
        except ValueError as exc:
            count_outcome(client, "invalid_job", f"skipped a queue entry that is not a job: {exc}")
            continue
        log.info("retrain worker: starting a retrain for %s %s", job["alerts"], job.get("slices"))
        try:
            ended = launch(job)
            log.info("retrain worker: %s", ended)
            if not run_was_reported(client, job):  # it died before recording an outcome
                count_outcome(client, "crashed", f"no run report for {job['alerts']}: {ended}")
        except Exception as exc:  # the worker outlives any run
            count_outcome(client, "crashed", f"{type(exc).__name__}: {exc}")


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
    kubernetes: bool = False,
    config: str | None = None,
    production: str | None = None,
    report_dir: str | None = None,
) -> None:
    """`slicewise webhook`: serve the receiver until stopped, optionally launching retrains.

    Args:
        redis_url: Redis holding the retrain queue and the dedup keys.
        token: the bearer token Alertmanager sends; required.
        host: bind address.
        port: port.
        dedup_ttl: seconds one `groupKey` stays deduplicated.
        run_retrains: pop the queue and launch each retrain.
        kubernetes: launch a Job from the `slicewise-retrain` CronJob through the Kubernetes API
            (in-cluster service account) instead of `slicewise retrain` as a subprocess here.
        config: project config for the retrains run here.
        production: production bundle folder for those retrains when Redis names none.
        report_dir: where those retrains write their run reports.

    Raises:
        WebhookError: no token.
        KubernetesJobError: `kubernetes` outside a pod with a service-account token.
    """
    import uvicorn

    if not token:
        raise WebhookError(
            "set SLICEWISE_WEBHOOK_TOKEN (or --token): the webhook refuses to run unauthenticated"
        )
    client = redis.Redis.from_url(redis_url)
    if run_retrains:
        launch: Launcher
        if kubernetes:
            from monitoring.k8s_jobs import KubernetesJobLauncher

            launch = KubernetesJobLauncher.in_cluster()
        else:
            cmd = default_retrain_command(config)  # REDIS_URL in its environment, not in `ps`
            if production is not None:
                cmd += ["--production", production]
            if report_dir is not None:
                cmd += ["--report-dir", report_dir]
            launch = subprocess_launcher(cmd, {"REDIS_URL": redis_url})
        stop = threading.Event()
        threading.Thread(target=retrain_worker, args=(client, launch, stop), daemon=True).start()
    uvicorn.run(create_app(client, token, dedup_ttl), host=host, port=port, log_level="warning")
