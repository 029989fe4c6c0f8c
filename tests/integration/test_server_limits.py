"""The sidecar at its limits: a body that stops arriving or whose client leaves halfway, on
every path that reads one, more connections than it serves, and a body still arriving when
the daemon stops: answered in JSON, never held forever and never counted as a defect (500)."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from accoil_buffer import Buffer, ServerConfig, bodies, listener
from accoil_buffer.server import STORED_AT_ONCE, Sidecar
from tests.integration.test_server import free_port
from tests.support import tables
from tests.support.paths import ROOT_DIR
from tests.support.processes import wait_listening

PATHS = ["/v1/batch", "/v1/track", "/console/api/dead-letters/replay"]
# `accoil-buffer serve` with a shutdown grace of 1 s rather than 10, to reach its end quickly.
SERVE_WITH_A_SHORT_GRACE = (
    "import sys, accoil_buffer.listener as s; s.SHUTDOWN_GRACE_SECONDS = 1; "
    "from accoil_buffer.cli import main; main(sys.argv[1:])"
)


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
def test_a_body_that_stops_arriving_is_answered_503_which_every_library_retries(
    sidecar: Sidecar, path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bodies, "BODY_TIMEOUT_SECONDS", 0.2)
    status, document = answer(asyncio.run(post_part_of_a_body(sidecar, path, "hang")))
    assert (status, document["code"]) == (503, "timeout")
    assert statuses_counted(sidecar) == {"503"}


@pytest.mark.parametrize("path", PATHS)
def test_a_client_that_leaves_mid_body_is_not_counted_as_a_defect(
    sidecar: Sidecar, path: str
) -> None:
    status, document = answer(asyncio.run(post_part_of_a_body(sidecar, path, "leave")))
    assert (status, document["code"]) == (400, "incomplete_body")
    assert statuses_counted(sidecar) == {"400"}


@contextmanager
def served(sidecar: Sidecar) -> Iterator[tuple[str, int]]:
    """The sidecar served by uvicorn as ``serve`` does, on a free loopback port."""
    server = listener.http_server(sidecar.app, sidecar.metrics, ServerConfig())
    sock = listener.listen(ServerConfig(port=free_port()))
    serving = threading.Thread(target=server.run, kwargs={"sockets": [sock]})
    serving.start()
    try:
        while not server.started:
            serving.join(0.05)
        yield sock.getsockname()
    finally:
        server.should_exit = True
        serving.join(30)


def test_past_the_connection_bound_requests_are_answered_503_in_json(
    sidecar: Sidecar, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(listener, "MAX_CONNECTIONS", 1)
    with served(sidecar) as address:
        url = f"http://127.0.0.1:{address[1]}"
        with socket.create_connection(address):  # open, idle: the one served
            answer = httpx.get(url + "/health")
        alone = httpx.get(url + "/health")
    assert answer.status_code == 503
    assert answer.json()["code"] == "unavailable"
    assert "connections" in answer.json()["message"]
    assert alone.status_code == 200
    assert statuses_counted(sidecar) == {"503", "200"}


@pytest.mark.parametrize(
    "request_",
    [
        b"NOT HTTP AT ALL\r\n\r\n",
        b"POST /v1/batch HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
        b"GET /health HTTP/1.1\r\nHost: x\r\nBad Header: 1\r\n\r\n",
    ],
)
def test_what_is_not_http_is_answered_400_in_json_and_counted(
    sidecar: Sidecar, request_: bytes
) -> None:
    with served(sidecar) as address, socket.create_connection(address, timeout=10) as client:
        client.sendall(request_)
        answer = http.client.HTTPResponse(client)
        answer.begin()
        document = json.loads(answer.read())
    assert (answer.status, answer.getheader("content-type")) == (400, "application/json")
    assert document["code"] == "invalid_http"
    assert statuses_counted(sidecar) == {"400"}


def test_a_body_that_breaks_http_midway_is_counted_once(sidecar: Sidecar) -> None:
    head = b"POST /v1/batch HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    with served(sidecar) as address, socket.create_connection(address, timeout=10) as client:
        client.sendall(head + b'5\r\n{"bat\r\nnot a chunk size\r\n')
        answer = http.client.HTTPResponse(client)
        answer.begin()
        assert answer.status == 400
    lines = sidecar.metrics.render().decode().splitlines()
    counted = [line for line in lines if line.startswith("accoil_buffer_http_responses_total{")]
    assert [line.rsplit(" ", 1)[1] for line in counted] == ["1.0"]


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


def test_a_body_still_arriving_when_the_shutdown_grace_ends_is_answered_503_in_json(
    database_url: str,
) -> None:
    port = free_port()
    environment = {k: v for k, v in os.environ.items() if not k.startswith("ACCOIL_")}
    environment["ACCOIL_BUFFER_DATABASE_URL"] = database_url
    daemon = subprocess.Popen(
        [sys.executable, "-c", SERVE_WITH_A_SHORT_GRACE, "serve", "--port", str(port)],
        cwd=ROOT_DIR,
        env=environment,
        stderr=subprocess.PIPE,
    )
    whole, cut = batch_of("whole"), batch_of("cut")
    try:
        wait_listening(daemon, port)
        with (
            being_read(port, whole[:10], len(whole)) as finishing,
            being_read(port, cut[:-1], len(cut)) as unfinished,
        ):
            daemon.send_signal(signal.SIGTERM)
            finishing.sendall(whole[10:])  # the rest arrives within the grace
            finished = answer_to(finishing)
            cut_short = answer_to(unfinished)
    except BaseException:
        daemon.kill()  # a second SIGTERM would kill it anyway, as it closes the database
        raise
    finally:
        _, stderr = daemon.communicate(timeout=30)
    assert daemon.returncode == 0, stderr.decode()
    status, _, body = finished
    assert (status, json.loads(body)) == (200, {"success": True})
    status, connection, body = cut_short
    assert (status, connection) == (503, "close"), body
    assert json.loads(body)["code"] == "shutting_down"
    with Buffer(database_url, start=False) as buffer:
        buffer.flush()
    assert {user for (_, user, _, _) in tables.counts(database_url)} == {"whole"}


def batch_of(user: str) -> bytes:
    return json.dumps({"batch": [{"type": "track", "userId": user, "event": "E"}]}).encode()


def being_read(port: int, part: bytes, declared: int) -> socket.socket:
    """A POST /v1/batch declaring ``declared`` bytes, sending ``part`` of them once the daemon
    reads the body: its ``100 Continue`` says the request is in progress."""
    connection = socket.create_connection(("127.0.0.1", port), timeout=10)
    connection.sendall(
        b"POST /v1/batch HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % declared
    )
    continued = b""
    while not continued.endswith(b"\r\n\r\n"):
        byte = connection.recv(1)
        assert byte, "closed before its 100 Continue"
        continued += byte
    assert continued.startswith(b"HTTP/1.1 100 ")
    connection.sendall(part)
    return connection


def answer_to(connection: socket.socket) -> tuple[int, str | None, bytes]:
    """The status, ``Connection`` header and body the daemon answers on ``connection``."""
    response = http.client.HTTPResponse(connection)
    response.begin()
    return response.status, response.getheader("connection"), response.read()


def post(sidecar: Sidecar, path: str, document: dict[str, Any]) -> httpx.Response:
    async def send() -> httpx.Response:
        transport = httpx.ASGITransport(app=sidecar.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            return await client.post(path, content=json.dumps(document))

    return asyncio.run(send())


def test_a_batch_a_little_over_500_kb_is_stored(sidecar: Sidecar, buffer: Buffer) -> None:
    # analytics-react-native, -ruby and Analytics.NET close a batch at 500 KB of messages,
    # then add the commas and the envelope, and drop the whole batch on a 400.
    batch = [
        {"type": "track", "userId": f"u{i}", "event": "E", "properties": {"p": "x" * 450}}
        for i in range(1000)
    ]
    body = {"batch": batch, "sentAt": "2026-12-07T12:00:00Z", "writeKey": "k"}
    assert len(json.dumps(body)) > 512_000
    answer = post(sidecar, "/v1/batch", body)
    assert (answer.status_code, answer.json()) == (200, {"success": True})
    buffer.flush()
    assert buffer.status()["pending"]["occurrences"] == 1000


def test_a_message_is_held_to_32_kb_beyond_what_its_batch_shares(
    sidecar: Sidecar, buffer: Buffer
) -> None:
    message = {"type": "track", "userId": "u", "event": "E", "properties": {"p": "x" * 33_000}}
    alone = post(sidecar, "/v1/track", {**message, "writeKey": "k"})
    assert (alone.status_code, alone.json()["code"]) == (400, "invalid_message")
    assert "the limit is 32768 (32 KB)" in alone.json()["message"]
    unshared = post(sidecar, "/v1/batch", {"batch": [message], "writeKey": "k"})
    assert [r["index"] for r in unshared.json()["rejected"]] == [0]
    # analytics-java holds a message to 32 KB, then shares a context that is merged into it.
    fits = {**message, "properties": {"p": "x" * 32_600}}
    context = {"library": {"name": "analytics-java"}, "pad": "y" * 1000}
    shared = post(sidecar, "/v1/batch", {"batch": [fits], "context": context, "writeKey": "k"})
    assert (shared.status_code, shared.json()) == (200, {"success": True})
    buffer.flush()
    assert buffer.status()["pending"]["occurrences"] == 1


def test_an_empty_array_for_integrations_takes_the_batchs(sidecar: Sidecar, buffer: Buffer) -> None:
    # analytics-php writes an empty integrations object as []; the batch's opt-out still holds.
    items = [{"type": "track", "userId": "u", "event": "E", "integrations": []}]
    answer = post(sidecar, "/v1/batch", {"batch": items, "integrations": {"All": False}})
    assert answer.status_code == 200
    buffer.flush()
    assert buffer.status()["pending"]["occurrences"] == 0
    assert buffer.status()["drops"] == {"filtered_integrations": 1}
