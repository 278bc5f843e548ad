"""The serving floor for `bench_service_tuning.py`: uvicorn (httptools, uvloop, as `bentoml
serve` runs it) and a bare ASGI app around slicewise's own `AdaptiveBatcher` and
`ModelRuntime`, with the service's model workers and ONNX Runtime threads. No BentoML, no
request validation, prediction log, ids or prediction metrics: what is left of the gap to raw
ONNX Runtime when those cost nothing.

Run: .venv/bin/python bench/bare_asgi.py BUNDLE_DIR PORT  (`/readyz`, `/metrics`, `/predict`)
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import uvicorn
from common import ROOT  # noqa: F401  (puts the repository on sys.path)

from service.batching import AdaptiveBatcher
from service.responses import decide, predictions
from service.runtime import ModelRuntime
from service.settings import Settings
from slicewise.core import contracts as c

settings = Settings.from_env()
runtime = ModelRuntime.load(
    c.Bundle.load(Path(sys.argv[1])),
    settings.prefer_int8,
    max(1, len(os.sched_getaffinity(0)) // settings.model_workers),
    evaluate_rules=settings.slice_rules,
)
calls = {"sum": 0, "count": 0}  # texts per model call, as the service's histogram reports it


def infer(texts: list[str]) -> list[dict]:
    calls["sum"] += len(texts)
    calls["count"] += 1
    outputs, _ = runtime.predict(texts)
    return predictions(decide(outputs, runtime.bundle.manifest, runtime.membership.cuts))


batcher: AdaptiveBatcher[dict] = AdaptiveBatcher(infer, 64, workers=settings.model_workers)


async def respond(send, status: int, body: bytes, ctype: bytes = b"application/json") -> None:
    headers = [(b"content-type", ctype), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def app(scope, receive, send) -> None:
    if scope["type"] == "lifespan":
        while (message := await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    if scope["path"] == "/predict":
        preds = await batcher.submit(json.loads(body)["texts"])
        version = runtime.version
        out = {"model_version": version, "membership": runtime.membership.modes}
        await respond(send, 200, json.dumps({**out, "predictions": preds}).encode())
    elif scope["path"] == "/metrics":
        text = f"slicewise_batch_size_sum {calls['sum']}\nslicewise_batch_size_count {calls['count']}\n"
        await respond(send, 200, text.encode(), b"text/plain")
    else:
        await respond(send, 200, b"{}")


if __name__ == "__main__":
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(sys.argv[2]),
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
    )
