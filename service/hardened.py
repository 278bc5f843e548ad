"""`HardenedService`: the BentoML service class of slicewise (`service_class=` of the decorator).

It changes two things BentoML builds from the service: the ASGI app gets `RouteGuard` as its
outermost layer (`service/http_guard.py`), and the OpenAPI document lists every response the
API can give, each error with the one `{"error": …}` schema.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import bentoml
from bentoml._internal.service.openapi.specification import (
    MediaType,
    OpenAPISpecification,
    Reference,
    Response,
    Schema,
)

from service.http_guard import MAX_MESSAGE_CHARS, RouteGuard, static_files

ERROR_SCHEMA = "Error"
# Which errors each API route can answer, and why (the OpenAPI descriptions).
COMMON_ERRORS = {
    400: "Invalid request: the message names the field and the problem",
    401: "Missing or wrong bearer token (only when the service has a token)",
    413: "Request body larger than SLICEWISE_MAX_BODY_BYTES",
    415: "Content-Type is not application/json",
    429: "Too many requests in flight (traffic.max_concurrency)",
    503: "Model not loaded, the feedback store (Redis) unavailable, or shutting down; the "
    "message names the cause",
    504: "Not answered within the request timeout",
}
ROUTE_ERRORS = {
    "/predict": COMMON_ERRORS,
    "/feedback": {**COMMON_ERRORS, 404: "Unknown prediction id (never served, or expired)"},
}


def document_errors(spec: OpenAPISpecification) -> OpenAPISpecification:
    """Replace BentoML's generic error responses of the API routes with the real ones."""
    spec.components["schemas"][ERROR_SCHEMA] = Schema(
        type="object",
        required=["error"],
        properties={"error": Schema(type="string", maxLength=MAX_MESSAGE_CHARS)},
        additionalProperties=False,
        description="Every error response: one object with a message naming the problem",
    )
    ref = Reference(f"#/components/schemas/{ERROR_SCHEMA}")
    for route, errors in ROUTE_ERRORS.items():
        item = spec.paths.get(route)
        if item is None or item.post is None:
            continue
        responses = {k: v for k, v in item.post["responses"].items() if int(k) < 400}
        for status, why in sorted(errors.items()):
            responses[status] = Response(
                description=f"{HTTPStatus(status).phrase}: {why}",
                content={"application/json": MediaType(schema=ref)},
            )
        item.post["responses"] = responses
    return spec


def _known_paths(app: Any) -> tuple[frozenset[str], frozenset[str]]:
    """Exact route paths of a Starlette app, and the files its static mounts can serve."""
    from starlette.routing import Mount, Route

    exact, files = set(), set()
    for route in app.routes:
        if isinstance(route, Route):
            exact.add(route.path)
        elif isinstance(route, Mount) and hasattr(route.app, "directory"):
            files |= {f"{route.path}/{f}" for f in static_files(str(route.app.directory))}
    return frozenset(exact), frozenset(files)


class HardenedService(bentoml.Service):  # type: ignore[misc]
    """A BentoML service whose ASGI app is wrapped by `RouteGuard` and whose OpenAPI document
    lists every response.
    """

    __slots__ = ()

    def to_asgi(self, is_main: bool = True) -> Any:
        """BentoML's Starlette app with `RouteGuard` as the outermost user middleware."""
        from starlette.middleware import Middleware

        app = super().to_asgi(is_main)
        exact, files = _known_paths(app)
        app.user_middleware.insert(
            0, Middleware(RouteGuard, known=lambda p: p in exact or p in files)
        )
        return app

    @property
    def openapi_spec(self) -> OpenAPISpecification:
        """BentoML's document with the API routes' error responses replaced."""
        return document_errors(super().openapi_spec)
