"""What happens to a request before BentoML parses it, and the one error shape of the API.

Two ASGI middlewares and a logging filter:

- `RouteGuard`, the outermost layer (in front of BentoML's metrics, timeout and concurrency
  middlewares): a path that is not a route of the app is rewritten to `UNKNOWN_ROUTE` before
  anything sees it, so BentoML's `bentoml_service_request_*` series get one `endpoint` value
  for every unknown path instead of one per path; and every error response, from this service
  or from BentoML or Starlette, leaves as one JSON object `{"error": "<message>"}` (BentoML
  sends `[{"error": …}]` for its 4xx, `{"error": …, "detail": [...]}` for pydantic errors and
  plain text for 404/405). An exception that escapes everything becomes a 500 in that shape.
- `ApiGuard`, inside BentoML's metrics middleware (so its refusals are counted), on `/predict`
  and `/feedback` only: the bearer token (constant-time compare), the Content-Type (415) and
  the body size (413) are checked before a byte of the body is read; the body is then read up
  to the limit and handed on.
- `ClientErrorLogFilter`: BentoML logs every refused request at ERROR with a traceback; the
  filter turns those whose exception is a client error into one INFO line.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from http import HTTPStatus
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

log = logging.getLogger("slicewise.service")
UNKNOWN_ROUTE = "/__unknown__"
ORIGINAL_PATH = "slicewise.original_path"  # scope key: the path before RouteGuard rewrote it
MAX_MESSAGE_CHARS = 300  # an error message never grows past this, whatever the input was
MAX_ERROR_BODY = 64 * 1024  # larger error bodies (none are expected) pass through unchanged
JSON_MEDIA_TYPES = frozenset({"application/json"})
CLIENT_ERROR_LINE = "client error %d on %s: %s"  # the one log line of a refused request


def clip(text: str, limit: int = 80) -> str:
    """`text` cut to `limit` characters (with an ellipsis), for echoing input in a message."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def error_body(message: str) -> bytes:
    """The body of an error response in the API's one error shape."""
    return json.dumps({"error": clip(message, MAX_MESSAGE_CHARS)}).encode()


async def send_json(
    send: Send, status: int, body: bytes, headers: Iterable[tuple[bytes, bytes]] = ()
) -> None:
    """Send a complete `application/json` response."""
    length = str(len(body)).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", length),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


def error_response(status: int, message: str) -> Any:
    """A Starlette response in the API's one error shape (an API function may return it)."""
    from starlette.responses import JSONResponse

    return JSONResponse({"error": clip(message, MAX_MESSAGE_CHARS)}, status_code=status)


async def send_error(send: Send, status: int, message: str, close: bool = False) -> None:
    """Send a complete error response; `close` asks the client to drop the connection."""
    await send_json(send, status, error_body(message), [(b"connection", b"close")] if close else [])


def _loc(parts: Iterable[Any]) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def validation_message(errors: list[dict[str, Any]]) -> str:
    """One message for pydantic's errors (`ValidationError.errors()`): where and what, the
    first three.
    """
    parts = [f"{_loc(d.get('loc', ())) or 'body'}: {d.get('msg', 'invalid')}" for d in errors[:3]]
    more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
    return "; ".join(parts) + more


def log_client_error(status: int, where: str, message: str) -> None:
    """The one INFO line of a refused request (what `ClientErrorLogFilter` makes of BentoML's)."""
    log.info(CLIENT_ERROR_LINE, status, where, clip(message))


def error_message(status: int, body: bytes, path: str) -> str:
    """One message for an error response body in any of the shapes BentoML or Starlette send."""
    try:
        data: Any = json.loads(body)
    except ValueError:
        data = None
    if isinstance(data, list) and len(data) == 1:
        data = data[0]  # BentoML's 4xx: a one-element list
    if isinstance(data, dict):
        detail = data.get("detail")
        if isinstance(detail, list) and detail and all(isinstance(d, dict) for d in detail):
            return validation_message(detail)
        if isinstance(data.get("error"), str) and data["error"]:
            return data["error"]
        if isinstance(detail, str) and detail:  # Starlette's HTTPException
            return detail
    if status == HTTPStatus.NOT_FOUND:
        return f"no such route: {clip(path)}"
    if status == HTTPStatus.METHOD_NOT_ALLOWED:
        return f"method not allowed on {clip(path)}"
    text = body.decode("utf-8", "replace").strip() if data is None else ""
    if text:
        return text  # a plain-text error: its text is the message
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return f"HTTP {status}"


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value
    return None


class RouteGuard:
    """Outermost ASGI layer: unknown paths become one route; every error gets one shape."""

    def __init__(self, app: ASGIApp, known: Callable[[str], bool]) -> None:
        self.app = app
        self.known = known

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI connection."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if not self.known(path):
            scope = {**scope, "path": UNKNOWN_ROUTE, "raw_path": UNKNOWN_ROUTE.encode()}
            scope[ORIGINAL_PATH] = path
        held: Message | None = None  # the start message of an error response, until its body
        chunks: list[bytes] = []
        started = False

        async def wrapped_send(message: Message) -> None:
            nonlocal held, started
            if message["type"] == "http.response.start":
                started = True
                if message["status"] >= 400:
                    held = message
                    return
            elif message["type"] == "http.response.body" and held is not None:
                chunks.append(message.get("body", b""))
                if message.get("more_body", False) and sum(map(len, chunks)) <= MAX_ERROR_BODY:
                    return
                start, body = held, b"".join(chunks)
                held = None
                if not message.get("more_body", False):
                    msg = error_message(start["status"], body, scope.get(ORIGINAL_PATH, path))
                    keep = [
                        (k, v)
                        for k, v in start.get("headers", [])
                        if k.lower() not in {b"content-type", b"content-length"}
                    ]
                    await send_json(send, start["status"], error_body(msg), keep)
                    return
                await send(start)  # too large to rewrite: pass it on as it is
                await send({**message, "body": body})
                return
            await send(message)

        try:
            await self.app(scope, receive, wrapped_send)
        except Exception:
            if started:
                raise
            log.exception("unhandled error on %s %s", scope.get("method"), clip(path))
            await send_error(send, 500, "internal error; the server log has the details")


class ApiGuard:
    """Auth, Content-Type and body size of `/predict` and `/feedback`, before the body is read.

    Args:
        app: the next ASGI app.
        paths: the protected API routes.
        token: the bearer token (None: no auth).
        max_body_bytes: the largest request body accepted (413 above it).
    """

    def __init__(
        self,
        app: ASGIApp,
        paths: Iterable[str] = ("/predict", "/feedback"),
        token: str | None = None,
        max_body_bytes: int = 1 << 20,
    ) -> None:
        self.app = app
        self.paths = frozenset(paths)
        self.expected = f"Bearer {token}".encode() if token else None
        self.max_body = max_body_bytes

    def authorized(self, scope: Scope) -> bool:
        """Whether the request carries the bearer token (constant-time compare)."""
        if self.expected is None:
            return True
        return hmac.compare_digest(_header(scope, b"authorization") or b"", self.expected)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI connection."""
        if scope["type"] != "http" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        if not self.authorized(scope):
            await send_error(send, 401, "missing or wrong bearer token", close=True)
            return
        if scope.get("method") != "POST":
            await self.app(scope, receive, send)  # the router answers 405
            return
        ctype = (_header(scope, b"content-type") or b"application/json").decode("latin-1")
        media = ctype.split(";")[0].strip().lower()
        if media not in JSON_MEDIA_TYPES:
            await send_error(
                send, 415, f"Content-Type must be application/json, not {clip(media, 60)!r}", True
            )
            return
        raw_length = _header(scope, b"content-length")
        if raw_length is not None:
            try:
                length = int(raw_length)
            except ValueError:
                await send_error(send, 400, "Content-Length is not a number", close=True)
                return
            if length > self.max_body:
                await self._too_large(send, length)
                return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > self.max_body:
                await self._too_large(send, None)
                return
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, send: Send, length: int | None) -> None:
        size = f"{length} bytes" if length is not None else "more than that"
        await send_error(
            send, 413, f"request body too large: {size}; the limit is {self.max_body} bytes", True
        )


def client_error_status(exc: BaseException | None) -> int | None:
    """The 4xx status BentoML answers for `exc`, or None when it is not a client error."""
    from bentoml.exceptions import BentoMLException
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        return 400
    if isinstance(exc, BentoMLException) and int(exc.error_code) < 500:
        return int(exc.error_code)
    return None


class ClientErrorLogFilter(logging.Filter):
    """Turns BentoML's ERROR-with-traceback for a refused request into one INFO line."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite a client-error record in place; keep every record."""
        exc = record.exc_info[1] if record.exc_info else None
        status = client_error_status(exc)
        if status is None:
            return True
        where = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        record.levelno, record.levelname = logging.INFO, "INFO"
        record.msg, record.args = CLIENT_ERROR_LINE, (status, where, clip(first_line))
        record.exc_info, record.exc_text = None, None
        return True


def install_log_filter() -> None:
    """Attach `ClientErrorLogFilter` to the logger BentoML reports request errors on (once)."""
    logger = logging.getLogger("bentoml._internal.server.http_app")
    if not any(isinstance(f, ClientErrorLogFilter) for f in logger.filters):
        logger.addFilter(ClientErrorLogFilter())


def static_files(directory: str) -> set[str]:
    """Relative paths of the files under `directory` (the Swagger UI assets)."""
    out = set()
    for root, _, files in os.walk(directory):
        for name in files:
            out.add(os.path.relpath(os.path.join(root, name), directory).replace(os.sep, "/"))
    return out
