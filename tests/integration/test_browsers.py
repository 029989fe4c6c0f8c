"""The sidecar for web pages: CORS for the origins allowed, 403 for every other page, the
settings document analytics.js loads, and JSON answers on every path (raw HTTP)."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.testclient import TestClient

from accoil_buffer import Buffer, ServerConfig
from accoil_buffer.server import Sidecar
from tests.integration.test_server import Daemon
from tests.support import tables

APP = "http://app.example.test:3000"
EVIL = "https://evil.example.test"


@pytest.fixture
def sidecar(tmp_path: Path) -> Iterator[tuple[TestClient, str]]:
    url = f"sqlite:///{tmp_path / 'web.db'}"
    with Buffer(url, start=False) as buffer:
        server = ServerConfig(cors_origins=(APP,), write_keys=("wk",))
        yield TestClient(Sidecar(buffer, server).app, base_url="http://127.0.0.1:8740"), url


def basic(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


def stored(url: str) -> int:
    with Buffer(url, start=False) as buf:
        buf.flush()
    return sum(tables.counts(url).values())


def test_a_preflight_from_an_allowed_page_is_granted(sidecar: tuple[TestClient, str]) -> None:
    client, _ = sidecar
    asked = "authorization, content-type, x-retry-count, content-encoding"
    answer = client.options(
        "/v1/batch",
        headers={
            "Origin": APP,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": asked,
        },
    )
    assert answer.status_code == 204
    assert answer.headers["access-control-allow-origin"] == APP
    assert "POST" in answer.headers["access-control-allow-methods"]
    allowed = {h.strip() for h in answer.headers["access-control-allow-headers"].split(",")}
    assert allowed >= {"authorization", "content-type", "x-retry-count", "content-encoding"}
    assert int(answer.headers["access-control-max-age"]) > 0
    assert "origin" in answer.headers["vary"].lower()


def test_a_preflight_asking_for_a_method_not_allowed_is_refused_in_json(
    sidecar: tuple[TestClient, str],
) -> None:
    client, _ = sidecar
    headers = {"Origin": APP, "Access-Control-Request-Method": "PUT"}
    answer = client.options("/v1/batch", headers=headers)
    assert answer.status_code == 400
    assert answer.json()["code"] == "preflight_refused"
    assert "method" in answer.json()["message"]


def test_an_allowed_page_sends_and_every_answer_carries_the_origin(
    sidecar: tuple[TestClient, str],
) -> None:
    client, url = sidecar
    page = {"Origin": APP, **basic("wk")}
    good = client.post("/v1/track", json={"userId": "u", "event": "E"}, headers=page)
    bad = client.post("/v1/track", json={"event": "E"}, headers=page)
    unknown = client.post("/v1/nope", json={}, headers=page)
    assert (good.status_code, bad.status_code, unknown.status_code) == (200, 400, 404)
    for answer in (good, bad, unknown):
        assert answer.headers["access-control-allow-origin"] == APP
    assert stored(url) == 1


@pytest.mark.parametrize(
    ("content_type", "headers"),
    [
        ("text/plain;charset=UTF-8", {}),  # a sendBeacon
        ("application/json", {}),  # a keepalive fetch without auth
        ("application/json", basic("wk")),  # with a valid write key, still a foreign page
    ],
)
def test_a_foreign_page_is_refused_and_nothing_is_stored(
    sidecar: tuple[TestClient, str], content_type: str, headers: dict[str, str]
) -> None:
    client, url = sidecar
    answer = client.post(
        "/v1/track",
        content=b'{"userId": "u", "event": "E", "writeKey": "wk"}',
        headers={"Origin": EVIL, "Content-Type": content_type, **headers},
    )
    assert answer.status_code == 403
    assert answer.json()["code"] == "forbidden_origin"
    assert "cors_origins" in answer.json()["message"]
    assert "access-control-allow-origin" not in answer.headers
    preflight = client.options(
        "/v1/track", headers={"Origin": EVIL, "Access-Control-Request-Method": "POST"}
    )
    assert preflight.status_code == 403
    assert stored(url) == 0
    metrics = client.get("/metrics", headers=basic("wk")).text
    assert 'accoil_buffer_http_rejected_messages_total{reason="forbidden_origin"}' in metrics


def test_by_default_every_page_is_refused_and_servers_are_not(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'default.db'}"
    with Buffer(url, start=False) as buffer:
        client = TestClient(Sidecar(buffer, ServerConfig()).app)
        page = client.post("/v1/t", json={"userId": "u", "event": "E"}, headers={"Origin": APP})
        server = client.post("/v1/t", json={"userId": "u", "event": "E"})
        null = client.post("/v1/t", json={"userId": "u", "event": "E"}, headers={"Origin": "null"})
    assert (page.status_code, server.status_code, null.status_code) == (403, 200, 403)
    assert stored(url) == 1


def test_any_origin_when_asked_for_and_a_warning_at_start(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'star.db'}"
    with Buffer(url, start=False) as buffer:
        client = TestClient(Sidecar(buffer, ServerConfig(cors_origins=("*",))).app)
        answer = client.post("/v1/t", json={"userId": "u", "event": "E"}, headers={"Origin": EVIL})
    assert answer.status_code == 200
    assert answer.headers["access-control-allow-origin"] == "*"
    daemon = Daemon(
        f"sqlite:///{tmp_path / 'star-daemon.db'}",
        env={"ACCOIL_BUFFER_SERVER_CORS_ORIGINS": "*"},
    )
    daemon.wait_ready()
    code, stderr = daemon.stop()
    assert code == 0
    assert "cors_origins is *" in stderr


def test_the_settings_document_points_analytics_js_here(sidecar: tuple[TestClient, str]) -> None:
    client, _ = sidecar
    answer = client.get("/v1/projects/wk/settings", headers={"Origin": APP})
    assert answer.status_code == 200
    assert answer.headers["access-control-allow-origin"] == APP
    settings = answer.json()
    segment = settings["integrations"]["Segment.io"]
    assert segment == {
        **segment,
        "apiKey": "wk",
        "apiHost": "127.0.0.1:8740/v1",
        "protocol": "http",
    }
    assert settings["metrics"]["sampleRate"] == 0
    assert client.get("/v1/projects/other/settings").status_code == 401


def test_the_settings_document_names_the_public_url_behind_a_proxy(tmp_path: Path) -> None:
    with Buffer(f"sqlite:///{tmp_path / 'proxy.db'}", start=False) as buffer:
        server = ServerConfig(public_url="https://events.example.test/buffer/")
        client = TestClient(Sidecar(buffer, server).app)
        segment = client.get("/v1/projects/k/settings").json()["integrations"]["Segment.io"]
    assert (segment["apiHost"], segment["protocol"]) == ("events.example.test/buffer/v1", "https")


def test_usage_metrics_are_taken_and_dropped_and_import_is_a_batch(
    sidecar: tuple[TestClient, str],
) -> None:
    client, url = sidecar
    usage = client.post("/v1/m", json={"series": [{"type": "Counter", "metric": "x"}]})
    batch = {"batch": [{"type": "track", "userId": "u", "event": "E"}] * 3}
    imported = client.post("/v1/import", json=batch, headers=basic("wk"))
    slashed = client.post("/v1/batch/", json=batch, headers=basic("wk"))
    assert (usage.status_code, imported.status_code, slashed.status_code) == (200, 200, 200)
    assert stored(url) == 6
    metrics = client.get("/metrics", headers=basic("wk")).text
    assert "accoil_buffer_http_discarded_usage_metrics_total 1.0" in metrics


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/nowhere", 404, "not_found"),
        ("GET", "/v1/track", 405, "method_not_allowed"),
        ("DELETE", "/v1/batch", 405, "method_not_allowed"),
        ("POST", "/health", 405, "method_not_allowed"),
        ("PUT", "/v1/status", 405, "method_not_allowed"),
        ("GET", "/v1", 404, "not_found"),
    ],
)
def test_every_path_and_method_answers_json(
    sidecar: tuple[TestClient, str], method: str, path: str, status: int, code: str
) -> None:
    client, _ = sidecar
    answer = client.request(method, path, headers=basic("wk"))
    assert answer.status_code == status
    assert answer.json()["code"] == code
    assert answer.json()["message"].startswith(f"{method} {path}: ")


def test_a_real_daemon_refuses_a_foreign_page(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'real.db'}"
    daemon = Daemon(url, env={"ACCOIL_BUFFER_SERVER_CORS_ORIGINS": f"{APP},http://localhost:5173"})
    daemon.wait_ready()
    try:
        body = b'{"userId": "u", "event": "E"}'
        foreign = httpx.post(daemon.url + "/v1/t", content=body, headers={"Origin": EVIL})
        allowed = httpx.post(daemon.url + "/v1/t", content=body, headers={"Origin": APP})
    finally:
        code, stderr = daemon.stop()
    assert code == 0, stderr
    assert (foreign.status_code, allowed.status_code) == (403, 200)
    assert allowed.headers["access-control-allow-origin"] == APP
    assert stored(url) == 1
