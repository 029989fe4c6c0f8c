"""The console at /console: in Chromium against a real daemon (SQLite and PostgreSQL), and its
checks (auth, origins, hosts, bad input) against the application in this process.

``ACCOIL_CONSOLE_SCREENSHOT=docs/images/console.png`` keeps the browser test's screenshot there.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from accoil_buffer import Buffer, ServerConfig
from accoil_buffer.console.app import DEAD_LETTERS_SHOWN
from accoil_buffer.server import Sidecar
from tests.integration.test_js_clients import serve_page
from tests.integration.test_server import Daemon
from tests.support.fake_accoil import FakeAccoil, Reply
from tests.support.node import run_script

EVIL = "https://evil.example.test"
APP = "http://app.example.test:3000"
REFUSED = Reply(400, '{"error": "event names may not be longer than 64 characters"}')


def refuse_one_event(message: dict[str, Any]) -> Reply:
    return REFUSED if message.get("event") == "Refused" else Reply()


def seed(url: str, fake: FakeAccoil, now: datetime) -> list[int]:
    """A week of events on earlier days (delivered, pending, anonymous), duplicates, an invalid
    message, and two dead letters; returns the dead letters' ids."""
    fake.behaviour = refuse_one_event
    with Buffer(url, api_key="k", endpoint=fake.url, start=False) as buffer:
        for days_ago in range(2, 9):
            for i in range(days_ago * 2):
                when = now - timedelta(days=days_ago, minutes=i)
                buffer.track(f"user-{i % 4}", "Report Created", timestamp=when)
        for user in ("user-1", "user-2"):
            buffer.track(user, "Refused", timestamp=now - timedelta(days=1))
        buffer.flush()
    with Buffer(url, start=False) as buffer:  # no API key: folded, not delivered
        yesterday = now - timedelta(days=1)
        for i in range(6):
            buffer.track(f"user-{i % 3}", "Dashboard Viewed", timestamp=yesterday)
        buffer.track(anonymous_id="visitor-9", event="Viewed Pricing", timestamp=yesterday)
        twice = {"type": "track", "userId": "user-1", "event": "Exported", "messageId": "dup-1"}
        twice["timestamp"] = yesterday.isoformat()
        buffer.ingest_many([twice, twice, {"type": "track"}])
        buffer.flush()
        letters = [letter["id"] for letter in buffer.dead_letters()]
    fake.behaviour = lambda _message: Reply()
    return letters


def drive(argument: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = run_script("console.mjs", json.dumps(argument))
    return result


@pytest.fixture
def foreign_page(tmp_path: Path) -> Iterator[str]:
    folder = tmp_path / "foreign"
    folder.mkdir()
    (folder / "index.html").write_text("<!doctype html><title>another site</title>")
    yield from serve_page(folder)


def test_the_console_shows_an_event_and_replays_a_dead_letter_by_a_click(
    database_url: str, fake: FakeAccoil, foreign_page: str, tmp_path: Path
) -> None:
    now = datetime.now(UTC)
    first, second = seed(database_url, fake, now)
    daemon = Daemon(database_url, env={"ACCOIL_API_KEY": "k", "ACCOIL_BUFFER_ENDPOINT": fake.url})
    daemon.wait_ready()
    message = {
        "userId": "console-user",
        "event": "Console Test",
        "messageId": "console-test-1",
        "properties": {"plan": "pro"},
    }
    screenshot = tmp_path / "console.png"
    try:
        seen = drive(
            {
                "console": f"{daemon.url}/console",
                "daemon": daemon.url,
                "message": message,
                "before": [
                    {"type": "page", "anonymousId": "visitor-7", "name": "Pricing"},
                    {"type": "identify", "userId": "console-user", "anonymousId": "visitor-7"},
                    {"type": "group", "userId": "console-user", "groupId": "acme"},
                    {"type": "track", "userId": "console-user"},
                ],
                "today": now.date().isoformat(),
                "todayTotal": 2,  # the page and the track
                "foreign": f"{foreign_page}/index.html",
                "replay": first,
                "screenshot": str(screenshot),
            }
        )
        from_elsewhere = httpx.post(
            f"{daemon.url}/console/api/dead-letters/replay", json={}, headers={"Origin": EVIL}
        )
    finally:
        code, stderr = daemon.stop()
    assert code == 0, stderr
    assert seen["problems"] == []
    assert "Console Test" in seen["seen"]
    assert "stored" in seen["seen"]
    assert (
        f"count row {now.date().isoformat()} · track · Console Test · user console-user"
        in (seen["seen"])
    )
    assert sum(int(title.rsplit(" ", 1)[1]) for title in seen["chart"]) == 2
    assert seen["foreign"] == "sent"  # the browser sent it, and the console refused it:
    assert seen["replayed"] == "1 accepted, 0 refused again"
    with Buffer(database_url, start=False) as buffer:
        assert [letter["id"] for letter in buffer.dead_letters()] == [second]
    replayed = [body for body in fake.accepted() if body.get("event") == "Refused"]
    assert len(replayed) == 1
    assert from_elsewhere.status_code == 403
    assert from_elsewhere.json()["code"] == "forbidden_origin"
    keep = os.environ.get("ACCOIL_CONSOLE_SCREENSHOT")
    if keep and "sqlite" in database_url:
        shutil.copyfile(screenshot, keep)


# --- The application in this process ---------------------------------------------------------


def basic(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


def client(buffer: Buffer, **server: Any) -> TestClient:
    sidecar = Sidecar(buffer, ServerConfig(**server))
    return TestClient(sidecar.app, base_url="http://127.0.0.1:8740")


@pytest.fixture
def sqlite_buffer(tmp_path: Path) -> Iterator[Buffer]:
    with Buffer(f"sqlite:///{tmp_path / 'console.db'}", start=False) as buffer:
        yield buffer


def test_the_state_counts_every_dead_letter_and_reads_only_those_it_shows(
    tmp_path: Path, fake: FakeAccoil
) -> None:
    fake.behaviour = lambda _message: REFUSED
    url = f"sqlite:///{tmp_path / 'letters.db'}"
    with Buffer(url, api_key="k", endpoint=fake.url, start=False) as buffer:
        for i in range(DEAD_LETTERS_SHOWN + 5):
            buffer.track(f"user-{i}", "Refused")
        buffer.flush()
        oldest = [letter["id"] for letter in buffer.dead_letters(3)]
        state = client(buffer).get("/console/api/state").json()
    assert state["dead_letters_total"] == DEAD_LETTERS_SHOWN + 5
    shown = [letter["id"] for letter in state["dead_letters"]]
    assert len(shown) == DEAD_LETTERS_SHOWN
    assert shown[:3] == oldest == sorted(shown)[:3]


def test_with_write_keys_the_console_asks_for_one(sqlite_buffer: Buffer) -> None:
    console = client(sqlite_buffer, write_keys=("wk",))
    for path in ("/console", "/console/api/state", "/console/api/events"):
        refused = console.get(path)
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"].startswith("Basic ")
        assert console.get(path, headers=basic("wrong")).status_code == 401
        assert console.get(path, headers=basic("wk")).status_code == 200
    replay = console.post("/console/api/dead-letters/replay", json={})
    assert replay.status_code == 401
    assert console.get("/console/assets/console.js").status_code == 200  # no data in it


def test_the_page_runs_only_its_own_files_and_cannot_be_framed(sqlite_buffer: Buffer) -> None:
    page = client(sqlite_buffer).get("/console")
    assert page.status_code == 200
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["content-type"].startswith("text/html")


def test_other_pages_may_not_use_the_console(sqlite_buffer: Buffer) -> None:
    console = client(sqlite_buffer, cors_origins=(APP,))
    replay = "/console/api/dead-letters/replay"
    for origin in (EVIL, "null", "http://127.0.0.1:9999"):
        for method, path in (("POST", replay), ("GET", "/console/api/state")):
            answer = console.request(method, path, json={}, headers={"Origin": origin})
            assert answer.status_code == 403, (origin, path)
            assert answer.json()["code"] == "forbidden_origin"
    # Its own page, and a listed one, get past the check (to the missing API key here).
    for origin in ("http://127.0.0.1:8740", APP):
        answer = console.post(replay, json={}, headers={"Origin": origin})
        assert answer.status_code == 409, origin
        assert "api_key" in answer.json()["message"]
    anyone = client(sqlite_buffer, cors_origins=("*",))
    assert anyone.post(replay, json={}, headers={"Origin": EVIL}).status_code == 403


@pytest.mark.parametrize("path", ["/console/api/state", "/v1/status", "/metrics"])
def test_a_page_reaching_the_daemon_by_dns_rebinding_reads_nothing(
    sqlite_buffer: Buffer, path: str
) -> None:
    console = client(sqlite_buffer)
    for host in ("evil.example.test:8740", "127.0.0.1.evil.test"):
        answer = console.get(path, headers={"Host": host})
        assert answer.status_code == 403
        assert answer.json()["code"] == "forbidden_host"
    for host in ("localhost:8740", "[::1]:8740", "10.0.0.5"):
        assert console.get(path, headers={"Host": host}).status_code == 200
    behind_proxy = client(sqlite_buffer, public_url="https://buffer.example.test")
    answer = behind_proxy.get(path, headers={"Host": "buffer.example.test"})
    assert answer.status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[1, 2]",
        b'{"ids": "all"}',
        b'{"ids": null}',
        b'{"ids": [1.5]}',
        b'{"ids": [true]}',
        b'{"id": [1]}',
        b"[" * 50_000,
        b" " * 70_000,
    ],
)
def test_a_bad_replay_request_is_a_400(sqlite_buffer: Buffer, body: bytes) -> None:
    answer = client(sqlite_buffer).post("/console/api/dead-letters/replay", content=body)
    assert answer.status_code == 400
    assert answer.json()["code"] in {"invalid_replay", "too_large"}


def test_an_id_of_thousands_of_digits_is_named_as_too_long(sqlite_buffer: Buffer) -> None:
    body = b'{"ids": [' + b"9" * 5000 + b"]}"
    answer = client(sqlite_buffer).post("/console/api/dead-letters/replay", content=body)
    assert answer.status_code == 400
    assert answer.json()["message"] == "99999999999999999999... is longer than any dead letter id"


def test_bad_paths_and_queries_are_4xx_in_json(sqlite_buffer: Buffer) -> None:
    console = client(sqlite_buffer)
    for method, path, status in (
        ("GET", "/console/api/events?after=x", 400),
        ("GET", "/console/api/events?after=%C2%B2", 400),  # a digit to isdigit(), not to int()
        ("GET", "/console/api/events?after=" + "9" * 5000, 400),
        ("GET", "/console/api/nothing", 404),
        ("GET", "/console/assets/nothing.js", 404),
        ("GET", "/console/api/dead-letters/replay", 405),
        ("POST", "/console/api/state", 405),
    ):
        answer = console.request(method, path)
        assert answer.status_code == status, path
        assert "message" in answer.json()


def test_the_live_view_records_only_while_watched_and_never_shows_a_key(
    sqlite_buffer: Buffer,
) -> None:
    console = client(sqlite_buffer, write_keys=("wk-secret",))
    unseen = {"type": "track", "userId": "u1", "event": "Before", "writeKey": "wk-secret"}
    assert console.post("/v1/track", json=unseen).status_code == 200
    assert console.get("/console/api/events", headers=basic("wk-secret")).json()["entries"] == []
    batch = [
        {"type": "track", "userId": "u1", "event": "After", "properties": {"plan": "pro"}},
        {"type": "bogus", "writeKey": "wk-secret"},
    ]
    answer = console.post("/v1/batch", json={"batch": batch, "writeKey": "wk-secret"})
    assert answer.status_code == 200
    events = console.get("/console/api/events", headers=basic("wk-secret"))
    assert "wk-secret" not in events.text
    after, bogus = events.json()["entries"]
    assert after["outcome"] == "stored"
    assert after["message"]["properties"] == {"plan": "pro"}
    assert bogus["outcome"] == "rejected"
    assert "bogus" in bogus["error"]
    later = console.get(f"/console/api/events?after={bogus['seq']}", headers=basic("wk-secret"))
    assert later.json()["entries"] == []


def test_the_state_shows_a_pause_by_key_fingerprint_never_the_key(
    tmp_path: Path, fake: FakeAccoil
) -> None:
    fake.behaviour = lambda _message: Reply(401)
    url = f"sqlite:///{tmp_path / 'paused.db'}"
    with Buffer(url, api_key="secret-api-key", endpoint=fake.url, start=False) as buffer:
        buffer.track("u1", "Signed Up")
        buffer.flush()
        answer = client(buffer).get("/console/api/state")
    assert answer.status_code == 200
    assert "secret-api-key" not in answer.text
    view = answer.json()["overview"]
    assert view["state"] == "paused"
    facts = dict(view["facts"])
    assert facts["Paused because"]
    assert facts["Key refused (fingerprint)"] not in {"", "unknown"}


def test_history_counts_each_day_by_what_became_of_it(database_url: str, fake: FakeAccoil) -> None:
    now = datetime.now(UTC)
    today = now.date()
    with Buffer(database_url, api_key="k", endpoint=fake.url, start=False) as buffer:
        buffer.track("u1", "Sent", timestamp=now - timedelta(days=2))
        buffer.track("u1", "Sent", timestamp=now - timedelta(days=2))
        buffer.flush()
    with Buffer(database_url, start=False) as buffer:
        buffer.track("u1", "Waiting", timestamp=now - timedelta(days=1))
        buffer.track(anonymous_id="a1", event="Held", timestamp=now - timedelta(days=1))
        buffer.track("u1", "Too old", timestamp=now - timedelta(days=40))
        buffer.ingest_many([{"type": "track"}])
        buffer.flush()
        buffer.ingest_many([{"type": "track", "userId": "u1", "event": "Not folded"}])
        history = client(buffer).get("/console/api/history").json()
    assert len(history["days"]) == 30
    assert history["days"][-1] == today.isoformat()
    assert history["days"][0] == (today - timedelta(days=29)).isoformat()
    assert history["delivered"][-3:] == [2, 0, 0]
    assert history["pending"][-3:] == [0, 1, 0]
    assert history["anonymous"][-3:] == [0, 1, 0]
    assert history["unfolded"][-3:] == [0, 0, 1]
    assert sum(history["delivered"]) + sum(history["pending"]) == 3  # 40 days ago is not shown
    assert history["drops"]["rejected_invalid"][-1] == 1
