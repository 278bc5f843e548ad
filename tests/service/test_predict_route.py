"""`PredictRoute` in-process, on plain ASGI messages: what it answers itself and what it passes
on (the served comparison with BentoML's router is in
tests/integration/test_service_hardening.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from _bentoml_sdk.service import set_current_service

from service.predict_route import PredictRoute


class Service:
    """Stands in for the service instance: records the bodies it was given."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    async def predict_body(self, body: bytes) -> tuple[int, bytes]:
        self.bodies.append(body)
        return 418, b'{"seen": %d}' % len(body)


async def _call(route: PredictRoute, scope: dict, chunks: list[bytes]) -> list[dict]:
    messages = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
        for i, c in enumerate(chunks)
    ]
    sent: list[dict] = []

    async def receive() -> dict:
        return messages.pop(0)

    async def send(message: dict) -> None:
        sent.append(message)

    await route(scope, receive, send)
    return sent


def _scope(path: str = "/predict", method: str = "POST") -> dict[str, Any]:
    return {"type": "http", "path": path, "method": method, "headers": []}


@pytest.fixture
def app_calls() -> list[str]:
    return []


@pytest.fixture
def route(app_calls):
    async def app(scope, receive, send) -> None:
        app_calls.append(f"{scope['method']} {scope['path']}")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"router", "more_body": False})

    yield PredictRoute(app)
    set_current_service(None)


def test_post_predict_goes_to_the_service_with_the_whole_body(route, app_calls) -> None:
    service = Service()
    set_current_service(service)
    sent = asyncio.run(_call(route, _scope(), [b'{"texts": ', b'["a"]}']))
    assert service.bodies == [b'{"texts": ["a"]}'] and app_calls == []
    assert sent[0]["status"] == 418
    assert dict(sent[0]["headers"]) == {
        b"content-type": b"application/json",
        b"content-length": b"12",
    }
    assert sent[1]["body"] == b'{"seen": 16}'


@pytest.mark.parametrize(("path", "method"), [("/predict", "GET"), ("/feedback", "POST")])
def test_other_routes_and_methods_go_to_the_router(route, app_calls, path, method) -> None:
    set_current_service(Service())
    sent = asyncio.run(_call(route, _scope(path, method), [b"{}"]))
    assert app_calls == [f"{method} {path}"] and sent[1]["body"] == b"router"


def test_before_bentoml_creates_the_service_the_router_answers(route, app_calls) -> None:
    set_current_service(None)
    asyncio.run(_call(route, _scope(), [b"{}"]))
    assert app_calls == ["POST /predict"]
    service = Service()  # once it exists, the route takes over
    set_current_service(service)
    asyncio.run(_call(route, _scope(), [b"{}"]))
    assert app_calls == ["POST /predict"] and service.bodies == [b"{}"]


def test_switched_off_it_passes_everything_on(app_calls) -> None:
    async def app(scope, receive, send) -> None:
        app_calls.append(scope["path"])

    set_current_service(Service())
    try:
        asyncio.run(_call(PredictRoute(app, enabled=False), _scope(), [b"{}"]))
    finally:
        set_current_service(None)
    assert app_calls == ["/predict"]
