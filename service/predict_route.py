"""`PredictRoute`: `POST /predict` answered below BentoML's router, with the same validation,
code and responses as the API route.

Every request to `/predict` still passes `RouteGuard`, BentoML's metrics, timeout and
max-concurrency middlewares and `ApiGuard` (auth, Content-Type, body size). For each request
BentoML would then set up its request context, run Starlette's router and exception middleware,
parse the body through the API's IO descriptor, bind the arguments to the function's signature
and serialise the return value: on 2 cores at 32 concurrent one-text requests, that Python work on
the event loop held the GIL the model threads wait for (70% of the loop's GIL time). Through
that path the service served 64.9–82.4% of the raw ONNX Runtime ceiling in six runs, with this
layer 74.4–97.6% (median 86.3%); a bare ASGI app around the same batcher 90.9% and 100.2%
(bench/README.md, "Serving, tuned side by side"). This layer hands the body straight to
`Slicewise.predict_body`, which validates it with the pydantic input model BentoML built from the
API's signature (the same 400 messages) and runs the same function as the API route. The OpenAPI
document and BentoML's `bentoml_service_request_*` metrics are unchanged.
`SLICEWISE_FAST_PREDICT=0` sends `/predict` through BentoML's router again, and so does BentoML's
CORS configuration (`http.cors.enabled`), whose middleware sits below this layer.
"""

from __future__ import annotations

import logging
from typing import Any

from service.http_guard import ASGIApp, Receive, Scope, Send, send_json

log = logging.getLogger("slicewise.service")


def cors_enabled() -> bool:
    """Whether BentoML's configuration turns its CORS middleware on (`http.cors.enabled`)."""
    from bentoml._internal.configuration.containers import BentoMLContainer

    return bool(BentoMLContainer.http.cors.enabled.get())


class PredictRoute:
    """ASGI middleware: `POST <path>` goes to the service instance's `predict_body(bytes)`,
    which returns `(status, JSON body)`; everything else, and every request before BentoML has
    created the instance, goes on to `app`.
    """

    def __init__(self, app: ASGIApp, path: str = "/predict", enabled: bool = True) -> None:
        self.app = app
        self.path = path
        self.enabled = enabled
        self._service: Any = None

    def service(self) -> Any:
        """The service instance of this worker process, once BentoML has created it."""
        if self._service is None:
            import bentoml
            from bentoml.exceptions import BentoMLException

            try:
                service = bentoml.get_current_service()
            except BentoMLException:  # not created yet: BentoML's route answers meanwhile
                return None
            if cors_enabled():  # BentoML's CORS middleware sits below this layer
                log.info("BentoML's CORS is on: /predict goes through BentoML's router")
                self.enabled = False
                return None
            self._service = service
        return self._service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI connection."""
        if (
            not self.enabled
            or scope["type"] != "http"
            or scope["path"] != self.path
            or scope.get("method") != "POST"
            or (service := self.service()) is None
        ):
            await self.app(scope, receive, send)
            return
        body = b""
        while True:  # ApiGuard has read it already, under the size limit: one message
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        await send_json(send, *await service.predict_body(body))
