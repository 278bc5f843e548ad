"""`service/http_guard.py` on a small Starlette app (no BentoML): auth and size before the body,
Content-Type, unknown routes, the one error shape, and the client-error log filter."""

from __future__ import annotations

import json
import logging

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from service.http_guard import (
    UNKNOWN_ROUTE,
    ApiGuard,
    ClientErrorLogFilter,
    RouteGuard,
    error_message,
)

SEEN: list[str] = []


async def echo(request: Request) -> JSONResponse:
    SEEN.append(request.url.path)
    body = await request.body()
    if body == b"list-error":
        return JSONResponse([{"error": "bad thing"}], status_code=400)  # BentoML's 4xx shape
    if body == b"pydantic":
        detail = [
            {"loc": ["texts", 1], "msg": "Input should be a valid string"},
            {"loc": ["texts"], "msg": "List should have at most 8 items"},
        ]
        return JSONResponse({"error": "2 validation errors", "detail": detail}, status_code=400)
    if body == b"boom":
        raise RuntimeError("boom")
    return JSONResponse({"n": len(body)})


async def plain(_: Request) -> PlainTextResponse:
    return PlainTextResponse("down", status_code=503)


def make_client(token: str | None = "tok", limit: int = 100) -> TestClient:
    known = {"/predict", "/plain"}
    app = Starlette(
        routes=[Route("/predict", echo, methods=["POST"]), Route("/plain", plain)],
        middleware=[
            Middleware(RouteGuard, known=known.__contains__),
            Middleware(ApiGuard, paths=("/predict",), token=token, max_body_bytes=limit),
        ],
    )
    return TestClient(app, raise_server_exceptions=False)


AUTH = {"Authorization": "Bearer tok"}


def test_good_request_passes_with_its_body() -> None:
    r = make_client().post("/predict", content=b"12345", headers=AUTH)
    assert r.status_code == 200 and r.json() == {"n": 5}


@pytest.mark.parametrize(
    ("headers", "content", "status", "message"),
    [
        ({}, b"x", 401, "missing or wrong bearer token"),
        ({"Authorization": "Bearer toj"}, b"x", 401, "missing or wrong bearer token"),
        ({**AUTH, "content-type": "multipart/form-data"}, b"x", 415, "multipart/form-data"),
        ({**AUTH, "content-type": "text/plain; charset=utf-8"}, b"x", 415, "text/plain"),
        ({**AUTH, "content-type": "application/json"}, b"x" * 101, 413, "101 bytes"),
    ],
)
def test_refusals_never_reach_the_app(headers, content, status, message) -> None:
    SEEN.clear()
    r = make_client().post("/predict", content=content, headers=headers)
    assert r.status_code == status and set(r.json()) == {"error"} and message in r.json()["error"]
    assert SEEN == []


def test_chunked_body_over_the_limit_is_cut_off() -> None:
    SEEN.clear()
    r = make_client().post("/predict", content=iter([b"x" * 60, b"x" * 60]), headers=AUTH)
    assert r.status_code == 413 and SEEN == []


def test_no_token_configured_means_no_auth() -> None:
    assert make_client(token=None).post("/predict", content=b"x").status_code == 200


def test_errors_are_rewritten_into_one_object() -> None:
    client = make_client()
    r = client.post("/predict", content=b"list-error", headers=AUTH)
    assert r.json() == {"error": "bad thing"}
    r = client.post("/predict", content=b"pydantic", headers=AUTH)
    assert r.json() == {
        "error": "texts[1]: Input should be a valid string; texts: List should have at most 8 items"
    }
    r = client.get("/plain")
    assert r.status_code == 503 and r.json() == {"error": "down"}
    r = client.get("/predict", headers=AUTH)
    assert r.status_code == 405 and r.json() == {"error": "method not allowed on /predict"}
    r = client.post("/predict", content=b"boom", headers=AUTH)
    assert r.status_code == 500 and "internal error" in r.json()["error"]


def test_unknown_paths_become_one_route_and_the_message_is_bounded() -> None:
    r = make_client().post("/" + "a" * 5000)
    assert r.status_code == 404
    msg = r.json()["error"]
    assert msg.startswith("no such route: /aaa") and len(msg) < 120


def test_error_message_falls_back_to_the_status_phrase() -> None:
    assert error_message(418, b"", "/x") == "I'm a Teapot"
    assert error_message(400, json.dumps({"error": "e"}).encode(), "/x") == "e"
    # Starlette's HTTPException (the /readyz 503): its detail is the message
    assert error_message(503, b'{"detail": "not ready: model not loaded"}', "/readyz") == (
        "not ready: model not loaded"
    )
    assert UNKNOWN_ROUTE.startswith("/")


def test_client_error_log_records_become_one_info_line() -> None:
    from bentoml.exceptions import InvalidArgument, ServiceUnavailable

    def record(exc: BaseException) -> logging.LogRecord:
        try:
            raise exc
        except BaseException:
            import sys

            return logging.LogRecord(
                "bentoml",
                logging.ERROR,
                __file__,
                1,
                "Exception on %s [%s]",
                ("/predict", "POST"),
                sys.exc_info(),
            )

    rec = record(InvalidArgument("texts[0] is empty"))
    assert ClientErrorLogFilter().filter(rec)
    assert rec.levelno == logging.INFO and rec.exc_info is None
    assert rec.getMessage() == "client error 400 on /predict: texts[0] is empty"
    server = record(ServiceUnavailable("model not loaded"))
    ClientErrorLogFilter().filter(server)
    assert server.levelno == logging.ERROR and server.exc_info is not None  # 5xx stay errors


def test_the_guards_keep_nothing_per_request() -> None:
    """Python memory held after 450 requests through both layers (tracemalloc), so growth of
    the server's RSS under load is not theirs."""
    import gc
    import tracemalloc

    client = make_client(limit=1 << 20)
    for i in range(50):
        client.post("/predict", content=f"warm {i}".encode(), headers=AUTH)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        for i in range(300):
            client.post("/predict", content=f"text {i}".encode(), headers=AUTH)
            if i % 2:
                client.post(f"/unknown-{i}", content=b"x")
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    grown = sum(s.size_diff for s in after.compare_to(before, "lineno"))
    assert grown < 50_000, f"{grown} bytes held after 450 requests"
