"""The sidecar at its limits: a body that stops arriving or whose client leaves halfway, on
every path that reads one, and more connections than it serves: answered in JSON, never held
forever and never counted as a defect (500)."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any

import httpx
import pytest

from accoil_buffer import Buffer, ServerConfig, bodies, listener
from accoil_buffer.server import STORED_AT_ONCE, Sidecar
from tests.integration.test_server import free_port

PATHS = ["/v1/batch", "/v1/track", "/console/api/dead-letters/replay"]


@pytest.fixture
def buffer(tmp_path: Path) -> Iterator[Buffer]:
    with Buffer(f"sqlite:///{tmp_path / 'limits.db'}", start=False) as buffer:
        yield buffer


@pytest.fixture
def sidecar(buffer: Buffer) -> Sidecar:
    return Sidecar(buffer, ServerConfig())


async def post_part_of_a_body(sidecar: Sidecar, path: str, then: str) -> list[dict[str, Any]]:
    """POST ``path`` declaring 100 bytes, send one, then ``hang`` or ``leave``; the ASGI
    messages the application answers with."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [(b"host", b"127.0.0.1:8740"), (b"content-length", b"100")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8740),
    }
    arriving = [{"type": "http.request", "body": b"{", "more_body": True}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if arriving:
            return arriving.pop()
        if then == "leave":
            return {"type": "http.disconnect"}
        await asyncio.Event().wait()  # the client sends nothing more, ever
        raise AssertionError("unreachable")

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(dict(message))

    await asyncio.wait_for(sidecar.app(scope, receive, send), timeout=10)
    return sent


def answer(sent: list[dict[str, Any]]) -> tuple[int, dict[str, Any]]:
    (start,) = [m for m in sent if m["type"] == "http.response.start"]
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], json.loads(body)


def statuses_counted(sidecar: Sidecar) -> set[str]:
    lines = sidecar.metrics.render().decode().splitlines()
    counted = [line for line in lines if line.startswith("accoil_buffer_http_responses_total{")]
    return {line.split('status="')[1].split('"')[0] for line in counted}


@pytest.mark.parametrize("path", PATHS)
def test_a_body_that_stops_arriving_is_answered_408(
    sidecar: Sidecar, path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bodies, "BODY_TIMEOUT_SECONDS", 0.2)
    status, document = answer(asyncio.run(post_part_of_a_body(sidecar, path, "hang")))
    assert (status, document["code"]) == (408, "timeout")
    assert statuses_counted(sidecar) == {"408"}


@pytest.mark.parametrize("path", PATHS)
def test_a_client_that_leaves_mid_body_is_not_counted_as_a_defect(
    sidecar: Sidecar, path: str
) -> None:
    status, document = answer(asyncio.run(post_part_of_a_body(sidecar, path, "leave")))
    assert (status, document["code"]) == (400, "incomplete_body")
    assert statuses_counted(sidecar) == {"400"}


def test_past_the_connection_bound_requests_are_answered_503_in_json(
    sidecar: Sidecar, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(listener, "MAX_CONNECTIONS", 1)
    server = listener.http_server(sidecar.app)
    sock = listener.listen(ServerConfig(port=free_port()))
    serving = threading.Thread(target=server.run, kwargs={"sockets": [sock]})
    serving.start()
    try:
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        while not server.started:
            serving.join(0.05)
        with socket.create_connection(sock.getsockname()):  # open, idle: the one served
            answer = httpx.get(url + "/health")
        alone = httpx.get(url + "/health")
    finally:
        server.should_exit = True
        serving.join(30)
    assert answer.status_code == 503
    assert answer.json()["code"] == "unavailable"
    assert "connections" in answer.json()["message"]
    assert alone.status_code == 200


def test_more_requests_than_are_stored_at_once_are_all_stored(
    sidecar: Sidecar, buffer: Buffer
) -> None:
    def track(n: int, i: int) -> dict[str, str]:
        return {"type": "track", "userId": f"user-{n}", "event": f"Event {i}"}

    async def post_all() -> list[int]:
        transport = httpx.ASGITransport(app=sidecar.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            posts = [
                client.post("/v1/batch", json={"batch": [track(n, i) for i in range(10)]})
                for n in range(3 * STORED_AT_ONCE)
            ]
            return [answer.status_code for answer in await asyncio.gather(*posts)]

    assert asyncio.run(post_all()) == [200] * 3 * STORED_AT_ONCE
    buffer.flush()
    assert buffer.status()["pending"]["occurrences"] == 3 * STORED_AT_ONCE * 10
