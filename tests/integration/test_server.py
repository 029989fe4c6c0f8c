"""The sidecar daemon, run as `accoil-buffer serve` in its own process."""

from __future__ import annotations

import base64
import gzip
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme
from cryptography.hazmat.primitives import serialization
from segment.analytics.client import Client as SegmentClient

from accoil_buffer import Buffer, listener
from accoil_buffer.config import ServerConfig
from accoil_buffer.errors import ConfigError
from tests.support import tables
from tests.support.fake_accoil import FakeAccoil
from tests.support.paths import ROOT_DIR
from tests.support.processes import wait_listening


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Daemon:
    def __init__(
        self,
        database_url: str,
        *,
        env: dict[str, str] | None = None,
        args: tuple[str, ...] = (),
        port: int | None = None,
        verify: ssl.SSLContext | None = None,  # served over TLS, to a client trusting this
    ) -> None:
        self.port = port or free_port()
        self.url = f"{'https' if verify else 'http'}://127.0.0.1:{self.port}"
        self.verify: ssl.SSLContext | bool = verify or True
        environment = {k: v for k, v in os.environ.items() if not k.startswith("ACCOIL_")}
        environment.update(
            {
                "ACCOIL_BUFFER_DATABASE_URL": database_url,
                "ACCOIL_BUFFER_FLUSH_INTERVAL_SECONDS": "3600",
                **(env or {}),
            }
        )
        self.process = subprocess.Popen(
            [sys.executable, "-m", "accoil_buffer", "serve", "--port", str(self.port), *args],
            cwd=ROOT_DIR,
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(self.process.communicate()[1].decode())
            try:
                if httpx.get(self.url + "/health", verify=self.verify).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.05)
        raise AssertionError("the daemon did not come up")

    def stop(self) -> tuple[int, str]:
        self.process.send_signal(signal.SIGTERM)
        _, stderr = self.process.communicate(timeout=30)
        return self.process.returncode, stderr.decode()


def deliver(database_url: str, fake: FakeAccoil) -> None:
    with Buffer(database_url, api_key="k", endpoint=fake.url, start=False) as buf:
        assert buf.flush().ok


def test_segment_python_client_through_the_daemon_to_accoil(
    database_url: str, fake: FakeAccoil
) -> None:
    daemon = Daemon(database_url)
    daemon.wait_ready()
    errors: list[Any] = []
    client = SegmentClient(
        "any-write-key",
        host=daemon.url,
        gzip=True,
        upload_size=100,
        on_error=lambda error, batch: errors.append(error),
    )
    expected: Counter[tuple[str, str]] = Counter()
    traits: dict[str, dict[str, Any]] = {}
    for i in range(3000):
        user = f"user-{i % 40}"
        if i % 100 == 0:
            traits[user] = {"email": f"{user}@example.com", "plan": i % 3}
            client.identify(user, traits[user])
            client.group(user, f"acc-{i % 4}", {"name": f"Account {i % 4}", "mrr": "9900"})
        event = f"Event {i % 7}"
        client.track(user, event, {"i": i})
        expected[user, event] += 1
    client.page("user-1", name="Home")
    client.screen("user-2", name="Settings")
    client.alias("anon-x", "user-3")
    client.flush()
    client.shutdown()
    code, stderr = daemon.stop()
    assert code == 0, stderr
    assert errors == []
    deliver(database_url, fake)
    bodies = fake.accepted()
    received = Counter((b["userId"], b["event"]) for b in bodies if b["type"] == "track")
    assert received == expected
    assert {
        (b["type"], b["userId"], b.get("name")) for b in bodies if b["type"] in {"page", "screen"}
    } == {("page", "user-1", "Home"), ("screen", "user-2", "Settings")}
    identified = {b["userId"]: b["traits"] for b in bodies if b["type"] == "identify"}
    assert identified == traits
    assert {b["groupId"]: b["traits"] for b in bodies if b["type"] == "group"}["acc-0"] == {
        "name": "Account 0",
        "mrr": 9900,
    }


def test_the_daemon_applies_the_mappings_of_its_configuration(
    database_url: str, fake: FakeAccoil
) -> None:
    daemon = Daemon(database_url, args=("--config", str(ROOT_DIR / "examples" / "mappings.toml")))
    daemon.wait_ready()
    client = SegmentClient("any-write-key", host=daemon.url, upload_size=10)
    client.group("u1", "acc1", {"name": "Acme", "tier": "enterprise"})
    for report in ("Sales", "Sales", "Churn"):
        client.track("u1", "Report Created", {"report_name": report})
    for _ in range(4):
        client.track("u1", "Heartbeat")
    client.track("u1", "Signed Up", {"source": "newsletter"})
    client.flush()
    client.shutdown()
    code, stderr = daemon.stop()
    assert code == 0, stderr
    deliver(database_url, fake)
    bodies = fake.accepted()
    rolled_up = Counter(
        b["event"] for b in bodies if b["type"] == "track" and "properties" not in b
    )
    assert rolled_up == {"Report Created": 3, "Sales": 2, "Churn": 1, "Signed Up": 1}
    (forwarded,) = [b for b in bodies if "properties" in b]
    assert (forwarded["event"], forwarded["properties"]) == ("Signed Up", {"source": "newsletter"})
    (account,) = [b for b in bodies if b["type"] == "group" and "userId" not in b]
    assert account["traits"] == {"name": "Acme", "tier": "enterprise", "plan": "enterprise"}
    assert tables.drops(database_url) == {"unmapped": 4}


@pytest.fixture(scope="module")
def shared_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Daemon, str]]:
    url = f"sqlite:///{tmp_path_factory.mktemp('daemon') / 'daemon.db'}"
    daemon = Daemon(url, env={"ACCOIL_BUFFER_SERVER_WRITE_KEYS": "wk-one,wk-two"})
    daemon.wait_ready()
    yield daemon, url
    code, stderr = daemon.stop()
    assert code == 0, stderr


def basic(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


BIG = "x" * 50_000


@pytest.mark.parametrize(
    ("path", "content", "headers", "status", "code"),
    [
        ("/v1/track", b"{not json", basic("wk-one"), 400, "invalid_json"),
        ("/v1/track", b"[1, 2]", basic("wk-one"), 400, "invalid_json"),
        ("/v1/track", b"[" * 5000 + b"]" * 5000, basic("wk-one"), 400, "invalid_json"),
        (
            "/v1/track",
            json.dumps({"userId": "u", "event": "E", "properties": {"b": BIG}}).encode(),
            basic("wk-one"),
            400,
            "invalid_message",
        ),
        (
            "/v1/batch",
            json.dumps({"batch": [{"type": "track", "userId": "u", "event": BIG}] * 22}).encode(),
            basic("wk-one"),
            400,
            "too_large",
        ),
        ("/v1/track", json.dumps({"event": "E"}).encode(), basic("wk-one"), 400, "invalid_message"),
        (
            "/v1/track",
            json.dumps({"userId": "u", "event": "E"}).encode(),
            basic("wrong"),
            401,
            "unauthorized",
        ),
        ("/v1/track", json.dumps({"userId": "u", "event": "E"}).encode(), {}, 401, "unauthorized"),
        (
            "/v1/track",
            b'{"userId": "u", "event": "E", "writeKey": "\\ud800"}',
            {},
            401,
            "unauthorized",
        ),
        (
            "/v1/track",
            json.dumps({"userId": "u", "event": "E", "writeKey": "nope"}).encode(),
            {},
            401,
            "unauthorized",
        ),
        (
            "/v1/batch",
            json.dumps({"batch": {"not": "a list"}}).encode(),
            basic("wk-one"),
            400,
            "invalid_batch",
        ),
        (
            "/v1/track",
            b"\x1f\x8b not gzip",
            {**basic("wk-one"), "Content-Encoding": "gzip"},
            400,
            "invalid_gzip",
        ),
        (
            "/v1/track",
            gzip.compress(b" " * 1_100_000),
            {**basic("wk-one"), "Content-Encoding": "gzip"},
            400,
            "too_large",
        ),
        (
            "/v1/track",
            b"{}",
            {**basic("wk-one"), "Content-Encoding": "br"},
            400,
            "unsupported_encoding",
        ),
        ("/v1/purchase", b"{}", basic("wk-one"), 404, "not_found"),
    ],
)
def test_bad_requests_get_their_documented_answer(
    shared_daemon: tuple[Daemon, str],
    path: str,
    content: bytes,
    headers: dict[str, str],
    status: int,
    code: str,
) -> None:
    daemon, _ = shared_daemon
    response = httpx.post(daemon.url + path, content=content, headers=headers)
    assert response.status_code == status
    assert response.json()["code"] == code
    assert response.json()["message"]


def test_good_messages_in_every_form_are_stored(shared_daemon: tuple[Daemon, str]) -> None:
    daemon, url = shared_daemon
    run = uuid.uuid4().hex[:8]
    sql = f"'; DROP TABLE accoil_outbox; -- {run}"
    unicode = f"用户 🎉 {run}"
    posts = [
        ("/v1/t", json.dumps({"userId": sql, "event": "E", "writeKey": "wk-two"}).encode(), {}),
        (
            "/v1/track",
            gzip.compress(json.dumps({"userId": unicode, "event": "É"}).encode()),
            {**basic("wk-one"), "Content-Encoding": "gzip"},
        ),
        ("/v1/p", json.dumps({"userId": unicode, "name": "Home"}).encode(), basic("wk-one")),
        (
            "/v1/batch",
            json.dumps(
                {
                    "writeKey": "wk-one",
                    "batch": [
                        {"type": "track", "userId": sql, "event": "E"},
                        {"type": "track", "event": "no user"},
                        {"type": "screen", "userId": sql, "name": "S"},
                    ],
                }
            ).encode(),
            {},
        ),
    ]
    answers = [httpx.post(daemon.url + p, content=c, headers=h) for p, c, h in posts]
    assert [a.status_code for a in answers] == [200, 200, 200, 200]
    assert answers[0].json() == {"success": True}
    assert answers[3].json()["rejected"] == [
        {
            "index": 1,
            "code": "invalid_message",
            "message": "userId: is required when there is no anonymousId",
        }
    ]
    with Buffer(url, start=False) as buf:
        buf.flush()
    counts = {
        (user, kind, name): n
        for (_, user, kind, name), n in tables.counts(url).items()
        if run in user
    }
    assert counts == {
        (sql, "track", "E"): 2,
        (sql, "screen", "S"): 1,
        (unicode, "track", "É"): 1,
        (unicode, "page", "Home"): 1,
    }


def test_health_status_and_metrics(shared_daemon: tuple[Daemon, str]) -> None:
    daemon, _ = shared_daemon
    assert httpx.get(daemon.url + "/health").json() == {
        "status": "ok",
        "storing": True,
        "delivery": "off",
    }
    status = httpx.get(daemon.url + "/v1/status", headers=basic("wk-two")).json()
    assert set(status) >= {"outbox", "pending", "anonymous", "drops", "delivery"}
    httpx.post(daemon.url + "/v1/track", headers=basic("wk-one"), content=b"{oops")
    metrics = httpx.get(daemon.url + "/metrics", headers=basic("wk-one"))
    assert metrics.headers["content-type"].startswith("text/plain")
    assert 'accoil_buffer_http_rejected_messages_total{reason="invalid_json"}' in metrics.text
    assert 'accoil_buffer_pending{what="occurrences"}' in metrics.text
    assert "accoil_buffer_delivery_paused 0.0" in metrics.text
    assert 'accoil_buffer_http_responses_total{status="400"}' in metrics.text


@pytest.mark.parametrize("path", ["/v1/status", "/metrics"])
def test_status_and_metrics_need_a_write_key_when_keys_are_set(
    shared_daemon: tuple[Daemon, str], path: str
) -> None:
    daemon, _ = shared_daemon
    for headers in ({}, basic("wrong")):
        answer = httpx.get(daemon.url + path, headers=headers)
        assert answer.status_code == 401
        assert answer.json()["code"] == "unauthorized"
        assert "outbox" not in answer.text
    assert httpx.get(daemon.url + path, headers=basic("wk-two")).status_code == 200


def test_a_connection_that_never_finishes_its_headers_is_closed(tmp_path: Path) -> None:
    port = free_port()
    serve = (
        "import sys, accoil_buffer.listener as s; s.HEADER_TIMEOUT_SECONDS = 0.5; "
        "from accoil_buffer.cli import main; main(sys.argv[1:])"
    )
    environment = {k: v for k, v in os.environ.items() if not k.startswith("ACCOIL_")}
    environment["ACCOIL_BUFFER_DATABASE_URL"] = f"sqlite:///{tmp_path / 'slow.db'}"
    process = subprocess.Popen(
        [sys.executable, "-c", serve, "serve", "--port", str(port)],
        cwd=ROOT_DIR,
        env=environment,
        stderr=subprocess.PIPE,
    )
    try:
        wait_listening(process, port)
        slow = [socket.create_connection(("127.0.0.1", port)) for _ in range(50)]
        for connection in slow:
            connection.sendall(b"POST /v1/track HTTP/1.1\r\nHost: x\r\nContent-Le")
            connection.settimeout(10)
        closed = [connection.recv(1) == b"" for connection in slow]  # EOF once closed
        assert all(closed)
        good = httpx.post(f"http://127.0.0.1:{port}/v1/track", json={"userId": "u", "event": "E"})
        assert good.status_code == 200
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)
        for connection in slow:
            connection.close()


def test_a_busy_port_is_the_only_thing_said(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        environment = {k: v for k, v in os.environ.items() if not k.startswith("ACCOIL_")}
        environment["ACCOIL_BUFFER_DATABASE_URL"] = f"sqlite:///{tmp_path / 'busy.db'}"
        done = subprocess.run(
            [sys.executable, "-m", "accoil_buffer", "serve", "--port", str(port)],
            cwd=ROOT_DIR,
            env=environment,
            capture_output=True,
            timeout=60,
            check=False,
        )
    assert done.returncode == 3
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr.decode()
    assert "listening on" not in done.stderr.decode()
    assert not (tmp_path / "busy.db").exists()  # nothing was started before the bind


def test_refuses_a_public_address_without_write_keys(tmp_path: Path) -> None:
    daemon = Daemon(f"sqlite:///{tmp_path / 'x.db'}", args=("--host", "0.0.0.0"))
    _, stderr = daemon.process.communicate(timeout=30)
    assert daemon.process.returncode == 2  # a configuration error
    assert "refusing to listen on 0.0.0.0 without write keys" in stderr.decode()


def test_refuses_an_old_schema_when_auto_migrate_is_off(tmp_path: Path) -> None:
    daemon = Daemon(f"sqlite:///{tmp_path / 'y.db'}", env={"ACCOIL_BUFFER_AUTO_MIGRATE": "0"})
    _, stderr = daemon.process.communicate(timeout=30)
    assert daemon.process.returncode == 1
    assert "run `accoil-buffer migrate`" in stderr.decode()


def test_sigterm_while_a_client_sends_keeps_every_acknowledged_message(database_url: str) -> None:
    daemon = Daemon(database_url)
    daemon.wait_ready()
    acknowledged: list[int] = []
    stop = threading.Event()

    def send() -> None:
        with httpx.Client(base_url=daemon.url, timeout=10) as client:
            batch = 0
            while not stop.is_set():
                events = [
                    {
                        "type": "track",
                        "userId": f"u{batch}",
                        "event": "E",
                        "messageId": f"m-{batch}-{i}",
                    }
                    for i in range(50)
                ]
                try:
                    answer = client.post("/v1/batch", json={"batch": events})
                except httpx.TransportError:
                    return
                if answer.status_code == 200:
                    acknowledged.append(len(events))
                batch += 1

    sender = threading.Thread(target=send)
    sender.start()
    time.sleep(1.5)
    started = time.monotonic()
    code, stderr = daemon.stop()
    stopped_in = time.monotonic() - started
    stop.set()
    sender.join()
    assert code == 0, stderr
    assert stopped_in < 15
    assert sum(acknowledged) > 0
    with Buffer(database_url, start=False) as buf:
        buf.flush()
    assert sum(tables.counts(database_url).values()) == sum(acknowledged)


def test_over_tls_as_segments_mobile_libraries_need(tmp_path: Path) -> None:
    # analytics-swift, -kotlin, -android, -ios and Analytics-CSharp always send to https://.
    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1")
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    issued.cert_chain_pems[0].write_to_path(str(certfile))
    issued.private_key_pem.write_to_path(str(keyfile))
    trusting = ssl.create_default_context()
    ca.configure_trust(trusting)
    url = f"sqlite:///{tmp_path / 'tls.db'}"
    env = {"ACCOIL_BUFFER_SERVER_TLS_CERTFILE": str(certfile)}
    half = Daemon(url, env=env)
    assert half.process.wait(timeout=30) == 2
    assert (
        "tls_certfile and server.tls_keyfile go together" in half.process.communicate()[1].decode()
    )
    daemon = Daemon(
        url, env={**env, "ACCOIL_BUFFER_SERVER_TLS_KEYFILE": str(keyfile)}, verify=trusting
    )
    try:
        daemon.wait_ready()
        batch = {
            "batch": [{"type": "track", "userId": "u1", "event": "Signed In"}],
            "writeKey": "k",
        }
        answer = httpx.post(daemon.url + "/v1/batch", json=batch, verify=trusting)
        with pytest.raises(httpx.TransportError):
            httpx.post(f"http://127.0.0.1:{daemon.port}/v1/batch", json=batch)  # not in clear
    finally:
        status, stderr = daemon.stop()
    assert status == 0, stderr
    assert f"listening on https://127.0.0.1:{daemon.port}" in stderr
    assert (answer.status_code, answer.json()) == (200, {"success": True})
    with Buffer(url, start=False) as buffer:
        buffer.flush()
    assert [(user, name) for (_, user, _, name) in tables.counts(url)] == [("u1", "Signed In")]


def test_a_key_that_is_not_the_certificates_stops_serve_in_one_line(tmp_path: Path) -> None:
    ca = trustme.CA()
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "other-key.pem"
    ca.issue_cert("127.0.0.1").cert_chain_pems[0].write_to_path(str(certfile))
    ca.issue_cert("127.0.0.1").private_key_pem.write_to_path(str(keyfile))
    env = {
        "ACCOIL_BUFFER_SERVER_TLS_CERTFILE": str(certfile),
        "ACCOIL_BUFFER_SERVER_TLS_KEYFILE": str(keyfile),
    }
    daemon = Daemon(f"sqlite:///{tmp_path / 'tls.db'}", env=env)
    assert daemon.process.wait(timeout=30) == 2
    stderr = daemon.process.communicate()[1].decode()
    assert stderr.startswith("Error: server.tls_certfile and server.tls_keyfile are not a")
    assert "Traceback" not in stderr
    assert keyfile.read_text().splitlines()[1] not in stderr
    assert not (tmp_path / "tls.db").exists()  # refused before the database was opened


def test_an_encrypted_key_stops_serve_in_one_line_without_a_prompt(tmp_path: Path) -> None:
    issued = trustme.CA().issue_cert("127.0.0.1")
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "encrypted-key.pem"
    issued.cert_chain_pems[0].write_to_path(str(certfile))
    key = serialization.load_pem_private_key(issued.private_key_pem.bytes(), None)
    keyfile.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"passphrase"),
        )
    )
    env = {
        "ACCOIL_BUFFER_SERVER_TLS_CERTFILE": str(certfile),
        "ACCOIL_BUFFER_SERVER_TLS_KEYFILE": str(keyfile),
    }
    daemon = Daemon(f"sqlite:///{tmp_path / 'tls.db'}", env=env)
    assert daemon.process.wait(timeout=30) == 2
    stdout, stderr = (part.decode() for part in daemon.process.communicate())
    assert stderr.startswith("Error: server.tls_keyfile is encrypted; the daemon needs a key")
    assert "pass phrase" not in stdout + stderr


def test_a_tls_file_that_cannot_be_read_is_named(tmp_path: Path) -> None:
    certfile = tmp_path / "cert.pem"
    trustme.CA().issue_cert("127.0.0.1").cert_chain_pems[0].write_to_path(str(certfile))
    missing = tmp_path / "missing-key.pem"
    server = ServerConfig(tls_certfile=str(certfile), tls_keyfile=str(missing))
    with pytest.raises(ConfigError) as info:
        listener.check_tls(server)
    assert (
        str(info.value) == f"server.tls_keyfile {missing} cannot be read: No such file or directory"
    )
