"""Delivery to a real HTTP fake of Accoil, on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from accoil_buffer import Buffer, Config, FlushReport
from accoil_buffer.accoil_api import (
    DEFAULT_ENDPOINT,
    STAGING_ENDPOINT,
    AccoilClient,
    endpoint_and_key,
    message_id,
)
from accoil_buffer.delivery import Delivery, DeliverySettings
from accoil_buffer.errors import DeliveryFailed
from accoil_buffer.store import holders, schema
from accoil_buffer.store.engine import Database
from tests.support import tables
from tests.support.clock import Clock
from tests.support.fake_accoil import FakeAccoil, Reply, running

TODAY = date(2026, 11, 28)


async def no_wait(_seconds: float) -> None:
    """Retries within a pass without waiting, for tests of what comes after them."""


def open_buffer(database_url: str, fake: FakeAccoil, clock: Clock, **settings: Any) -> Buffer:
    return Buffer(
        database_url, api_key="test-key", endpoint=fake.url, start=False, clock=clock, **settings
    )


def occurrences(bodies: list[dict[str, Any]]) -> Counter[tuple[str, str, str, str]]:
    """(day, userId, type, event or name) of every track/page/screen body."""
    return Counter(
        (b["timestamp"][:10], b["userId"], b["type"], b.get("event", b.get("name", "")))
        for b in bodies
        if b["type"] in {"track", "page", "screen"}
    )


def test_end_to_end_bodies_auth_and_counts(
    database_url: str, fake: FakeAccoil, clock: Clock
) -> None:
    with open_buffer(database_url, fake, clock) as buf:
        buf.identify("u1", {"email": "a@b.c", "createdAt": 1700000000})
        buf.group("u1", "acc1", {"name": "Acme", "mrr": "9900"})
        for _ in range(3):
            buf.track("u1", "Report Created", {"secret": "never sent"})
        buf.track("u1", "Report Created", timestamp="2026-11-20T10:00:00Z")  # type: ignore[arg-type]
        buf.page("u1", name="Home")
        buf.screen("u1")
        report = buf.flush()
    assert report.ok
    assert report.delivery is not None
    assert report.delivery.delivered == 9
    bodies = fake.accepted()
    identify = [b for b in bodies if b["type"] == "identify"]
    assert identify == [
        {
            "type": "identify",
            "userId": "u1",
            "traits": {"email": "a@b.c", "createdAt": "2023-11-14T22:13:20.000Z"},
            "timestamp": "2026-11-28T12:00:00.000Z",
            "messageId": identify[0]["messageId"],
        }
    ]
    groups = [b for b in bodies if b["type"] == "group"]
    assert {tuple(sorted(b)) for b in groups} == {
        ("groupId", "messageId", "timestamp", "traits", "type"),
        ("groupId", "messageId", "timestamp", "traits", "type", "userId"),
    }
    assert all(b["traits"] == {"name": "Acme", "mrr": 9900} for b in groups)
    assert occurrences(bodies) == {
        ("2026-11-28", "u1", "track", "Report Created"): 3,
        ("2026-11-20", "u1", "track", "Report Created"): 1,
        ("2026-11-28", "u1", "page", "Home"): 1,
        ("2026-11-28", "u1", "screen", ""): 1,
    }
    tracks = [b for b in bodies if b["type"] == "track"]
    assert all(set(b) == {"type", "event", "userId", "timestamp", "messageId"} for b in tracks)
    assert {b["timestamp"] for b in tracks if b["timestamp"].startswith("2026-11-20")} == {
        "2026-11-20T23:59:59.999Z"
    }
    # Identify before group before counts.
    kinds = [b["type"] for b in bodies]
    assert kinds.index("identify") < kinds.index("group") < kinds.index("track")
    assert len({b["messageId"] for b in bodies}) == len(bodies)
    expected_auth = "Basic " + base64.b64encode(b"test-key:").decode()
    assert {r.headers["authorization"] for r in fake.requests} == {expected_auth}
    assert {r.headers["content-type"] for r in fake.requests} == {"application/json"}
    assert tables.drops(database_url) == {}
    pending = Buffer(database_url, start=False).status()["pending"]
    assert pending == {
        "users": 0,
        "accounts": 0,
        "memberships": 0,
        "count_rows": 0,
        "occurrences": 0,
        "posts": 0,
    }


def test_todays_counts_go_as_deltas_and_nothing_twice(
    database_url: str, fake: FakeAccoil, clock: Clock
) -> None:
    with open_buffer(database_url, fake, clock) as buf:
        buf.track("u1", "E")
        buf.track("u1", "E")
        buf.flush()
        buf.flush()  # nothing new: nothing sent
        assert len(fake.accepted()) == 2
        clock.advance(hours=1)
        buf.track("u1", "E")
        buf.identify("u1", {"plan": "pro"})
        buf.flush()
        buf.identify("u1", {"plan": "pro"})  # unchanged traits are not sent again
        buf.flush()
    bodies = fake.accepted()
    assert occurrences(bodies) == {("2026-11-28", "u1", "track", "E"): 3}
    assert [b["type"] for b in bodies].count("identify") == 1
    assert len({b["messageId"] for b in bodies}) == 4
    assert tables.counts(database_url) == {(TODAY, "u1", "track", "E"): 3}


def test_an_event_just_past_midnight_is_sent_inside_its_own_day(
    database_url: str, fake: FakeAccoil, clock: Clock
) -> None:
    clock.now = datetime(2026, 11, 28, 23, 58, tzinfo=UTC)
    ahead = datetime(2026, 11, 29, 0, 1, tzinfo=UTC)  # a client clock 3 minutes fast
    with open_buffer(database_url, fake, clock) as buf:
        buf.track("u1", "E", timestamp=ahead)
        buf.flush()
    assert occurrences(fake.accepted()) == {("2026-11-29", "u1", "track", "E"): 1}


def test_a_flusher_takes_its_liveness_lock_again_once_it_was_lost(
    database_url: str, fake: FakeAccoil, clock: Clock
) -> None:
    with open_buffer(database_url, fake, clock) as buf:
        buf.track("u1", "E")
        buf.flush()
        database = buf._parts.database
        holder = buf._parts.delivery.holder  # type: ignore[union-attr]
        looking = holders.liveness(database)
        lose_liveness_locks(database)
        with database.write_between_folds() as conn:
            assert looking.is_dead(conn, holder)  # others would free its claims, live or not
        buf.track("u1", "E")
        buf.flush()
        with database.write_between_folds() as conn:
            assert not looking.is_dead(conn, holder)
    assert occurrences(fake.accepted()) == {(TODAY.isoformat(), "u1", "track", "E"): 2}


def lose_liveness_locks(database: Database) -> None:
    """What takes a lock from a live flusher: on PostgreSQL its session ending (a restart, a
    terminated backend), on SQLite its file deleted."""
    file = database.sqlite_path
    if file is not None:
        for path in Path(f"{file}-holders").glob("*.lock"):
            path.unlink()
        return
    with database.engine.begin() as conn:
        conn.exec_driver_sql(
            "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND "
            "database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        )


def test_message_ids_are_deterministic(tmp_path: Any, fake: FakeAccoil, clock: Clock) -> None:
    ids = []
    for name in ("a", "b"):
        with open_buffer(f"sqlite:///{tmp_path / name}.db", fake, clock) as buf:
            buf.identify("u1", {"x": 1})
            buf.track("u1", "E")
            buf.track("u1", "E")
            buf.flush()
        # Sorted: the occurrences of one row go concurrently, so they arrive in any order.
        ids.append(sorted(b["messageId"] for b in fake.accepted()))
        fake.requests.clear()
    assert ids[0] == ids[1]


def test_without_an_api_key_everything_waits(database_url: str, clock: Clock) -> None:
    with Buffer(database_url, start=False, clock=clock) as buf:
        buf.track("u1", "E")
        report = buf.flush()
        status = buf.status()
    assert report.delivery is None
    assert status["delivery"]["enabled"] is False
    assert status["pending"]["occurrences"] == 1


def test_401_pauses_delivery_and_keeps_everything(
    database_url: str, fake: FakeAccoil, clock: Clock
) -> None:
    fake.behaviour = lambda _m: Reply(401, "bad key")
    with open_buffer(database_url, fake, clock) as buf:
        buf.track("u1", "E")
        buf.identify("u1", {"a": 1})
        report = buf.flush()
        assert report.delivery is not None
        assert report.delivery.paused
        assert not report.ok
        status = buf.status()
        assert "check api_key" in status["delivery"]["paused_reason"]
        assert status["pending"]["occurrences"] == 1
        assert status["pending"]["users"] == 1
        assert status["delivery"]["offline_since"] == "2026-11-28T12:00:00.000Z"
        scheduled = buf._parts.delivery.run()  # type: ignore[union-attr]
        assert scheduled.skipped_until is not None
        fake.behaviour = lambda _m: Reply()
        assert buf.flush().ok
        status = buf.status()
    assert status["delivery"]["paused_reason"] is None
    assert status["delivery"]["offline_since"] is None
    assert status["pending"]["occurrences"] == 0
    assert occurrences(fake.accepted()) == {("2026-11-28", "u1", "track", "E"): 1}


@pytest.mark.parametrize("status", [401, 400])
def test_an_answer_that_echoes_the_key_is_kept_without_it(
    database_url: str, fake: FakeAccoil, clock: Clock, status: int, caplog: pytest.LogCaptureFixture
) -> None:
    token = base64.b64encode(b"test-key:").decode()
    echo = f"refused Authorization: Basic {token} (user test-key)"
    fake.behaviour = lambda _m: Reply(status, echo)
    with open_buffer(database_url, fake, clock) as buf:
        buf.track("u1", "E")
        buf.flush()
        kept = json.dumps([buf.status(), buf.dead_letters()], default=str)
    assert "refused Authorization: [api key] (user [api key])" in kept
    for secret in ("test-key", token):
        assert secret not in kept
        assert secret not in caplog.text


def test_an_answer_that_echoes_the_key_escaped_in_json_is_kept_without_it(
    database_url: str, fake: FakeAccoil, clock: Clock
) -> None:
    key = 'a>?b"'  # its Basic token has a "/", and the key itself a quote
    token = base64.b64encode(f"{key}:".encode()).decode()
    assert "/" in token
    escaped = token.replace("/", "\\/")  # as PHP's json_encode writes it
    echo = f'{{"error": "refused Basic {escaped} for a>?b\\""}}'
    fake.behaviour = lambda _m: Reply(400, echo)
    with Buffer(database_url, api_key=key, endpoint=fake.url, start=False, clock=clock) as buf:
        buf.track("u1", "E")
        buf.flush()
        (letter,) = buf.dead_letters()
    assert letter["response"] == '{"error": "refused [api key] for [api key]"}'


@pytest.mark.parametrize("status", [400, 413, 422])
def test_a_refused_message_is_dead_lettered_and_can_be_replayed(
    database_url: str, fake: FakeAccoil, clock: Clock, status: int
) -> None:
    fake.behaviour = lambda m: Reply(status, "no thanks") if m.get("event") == "Bad" else Reply()
    with open_buffer(database_url, fake, clock) as buf:
        buf.track("u1", "Good")
        buf.track("u1", "Bad")
        buf.track("u2", "Good")
        report = buf.flush()
        assert report.delivery is not None
        assert (report.delivery.delivered, report.delivery.dead_lettered) == (2, 1)
        assert buf.status()["delivery"]["dead_letters"] == 1
        assert buf.status()["pending"]["occurrences"] == 0
        letters = buf.dead_letters()
        assert [
            (d["type"], d["status"], d["response"], d["payload"]["event"]) for d in letters
        ] == [("track", status, "no thanks", "Bad")]
        fake.behaviour = lambda _m: Reply()
        assert buf.replay_dead_letters() == (1, 0)
        assert buf.dead_letters() == []
        assert buf.status()["delivery"]["dead_letters"] == 0
        assert buf.status()["delivery"]["delivered_total"] == 3  # the replayed one too
    sent = fake.accepted()
    assert [b["event"] for b in sent].count("Bad") == 1
    assert sent[-1]["messageId"] == letters[0]["message_id"]


def test_two_replays_at_once_count_a_letter_once(
    database_url: str, fake: FakeAccoil, clock: Clock
) -> None:
    fake.behaviour = lambda _m: Reply(400, "no thanks")
    with open_buffer(database_url, fake, clock) as buf:
        buf.track("u1", "Bad")
        buf.flush()
        fake.behaviour = lambda _m: Reply(delay=0.3)  # both replays read the letter first
        with ThreadPoolExecutor(2) as pool:
            results = list(pool.map(lambda _: buf.replay_dead_letters(), range(2)))
        assert sorted(results) == [(0, 0), (1, 0)]
        assert buf.status()["delivery"]["delivered_total"] == 1
        assert buf.dead_letters() == []


@pytest.mark.parametrize("trouble", [Reply(503), Reply(drop=True), Reply(401)])
def test_a_replay_that_accoil_cannot_take_now_refuses_nothing(
    database_url: str, fake: FakeAccoil, clock: Clock, trouble: Reply
) -> None:
    fake.behaviour = lambda _m: Reply(400, "no thanks")
    with open_buffer(database_url, fake, clock) as buf:
        for name in ("A", "B", "C"):
            buf.track("u1", name)
        buf.flush()
        first, *rest = [letter["id"] for letter in buf.dead_letters()]
        replies = iter([Reply(), Reply(400, "still no"), trouble])
        fake.behaviour = lambda _m: next(replies)
        with pytest.raises(DeliveryFailed, match="1 replayed and 1 refused again before it"):
            buf.replay_dead_letters()
        assert [letter["id"] for letter in buf.dead_letters()] == rest  # none lost
        assert buf.status()["delivery"]["delivered_total"] == 1
        fake.behaviour = lambda _m: Reply()
        assert buf.replay_dead_letters([rest[1]]) == (1, 0)  # only the one asked for
        assert buf.replay_dead_letters([0, -1, 2**63, 2**70]) == (0, 0)  # ids no row can have
        for wrong in (["1"], [True], [1.0]):
            with pytest.raises(TypeError, match="ids must be dead letter ids"):
                buf.replay_dead_letters(wrong)  # type: ignore[arg-type]
        assert [letter["id"] for letter in buf.dead_letters()] == rest[:1]
    assert first not in rest


def test_transient_failures_are_retried_within_the_pass(
    database_url: str, fake: FakeAccoil, clock: Clock
) -> None:
    # The first message fails twice and gets through on its third attempt; the second once.
    answers = iter([Reply(503), Reply(drop=True), Reply(), Reply(429, retry_after="0")])
    lock = threading.Lock()

    def flaky(_message: dict[str, Any]) -> Reply:
        with lock:
            return next(answers, Reply())

    fake.behaviour = flaky
    with open_buffer(database_url, fake, clock, max_in_flight=1) as buf:
        buf.track("u1", "E")
        buf.track("u1", "F")
        report = buf.flush()
    assert report.ok
    assert report.delivery is not None
    assert report.delivery.retries == 3
    assert occurrences(fake.accepted()) == {
        ("2026-11-28", "u1", "track", "E"): 1,
        ("2026-11-28", "u1", "track", "F"): 1,
    }


def test_occurrences_acknowledged_beyond_a_gap_are_not_sent_again_when_it_closes(
    database_url: str, fake: FakeAccoil, clock: Clock
) -> None:
    first = message_id("count", TODAY.isoformat(), "u1", "track", "E", 1)
    fake.behaviour = lambda m: Reply(503) if m["messageId"] == first else Reply()
    with open_buffer(database_url, fake, clock, max_in_flight=2) as buf:
        for _ in range(3):
            buf.track("u1", "E")
        buf.flush()  # the first occurrence keeps failing: the second is acknowledged
        # Slow answers for another user keep the pass's window full, so that the first
        # occurrence's answer closes the gap before its row is asked for more.
        fake.behaviour = lambda m: Reply(delay=0.5) if m["userId"] == "u2" else Reply()
        for user in ("u1", "u1", "u2", "u2", "u2", "u2"):
            buf.track(user, "E")
        buf.flush()
    accepted = fake.accepted()
    assert occurrences(accepted) == {
        (TODAY.isoformat(), "u1", "track", "E"): 5,
        (TODAY.isoformat(), "u2", "track", "E"): 4,
    }
    assert Counter(b["messageId"] for b in accepted).most_common(1)[0][1] == 1


@pytest.mark.parametrize("cause", ["refused key", "flush timeout"])
def test_a_pass_ends_on_a_stop_with_messages_still_queued(
    database_url: str, fake: FakeAccoil, clock: Clock, cause: str
) -> None:
    # A claim holds more messages than are sent at once. When Accoil refused the key, or the
    # flush's time ran out, while some were still queued, the pass spun at full CPU forever.
    fake.behaviour = lambda _m: Reply(401) if cause == "refused key" else Reply(delay=0.05)
    timeout = 0.01 if cause == "flush timeout" else None
    reports: list[FlushReport] = []
    with open_buffer(database_url, fake, clock, max_in_flight=2) as buf:
        # Committed before the timed flush: its 10 ms are not spent waiting for the writer.
        buf.ingest_many({"type": "track", "userId": f"u{i}", "event": "E"} for i in range(10))
        thread = threading.Thread(target=lambda: reports.append(buf.flush(timeout)), daemon=True)
        thread.start()
        thread.join(timeout=20)
        assert not thread.is_alive()
        assert not reports[0].ok
        # Past the deadline nothing new starts: at most the two in flight got through.
        assert buf.status()["pending"]["occurrences"] >= (10 if cause == "refused key" else 8)
        fake.behaviour = lambda _m: Reply()
        assert buf.flush().ok  # what the pass left queued was released, not lost
    assert len(occurrences(fake.accepted())) == 10


def test_a_long_retry_after_ends_the_pass_and_is_honoured(
    database_url: str, fake: FakeAccoil, clock: Clock
) -> None:
    fake.behaviour = lambda _m: Reply(429, retry_after="120")
    with open_buffer(database_url, fake, clock) as buf:
        buf.track("u1", "E")
        report = buf.flush()
        assert report.delivery is not None
        assert report.delivery.failure == "HTTP 429"
        next_attempt = buf.status()["delivery"]["next_attempt_at"]
    assert next_attempt >= "2026-11-28T12:02:00.000Z"
    assert len(fake.requests) == 1


def test_timeouts_are_transient(database_url: str, fake: FakeAccoil, clock: Clock) -> None:
    fake.behaviour = lambda _m: Reply(delay=1.0)
    with open_buffer(database_url, fake, clock, request_timeout_seconds=0.2) as buf:
        buf.track("u1", "E")
        report = buf.flush()
        assert report.delivery is not None
        assert report.delivery.failure is not None
        assert "timed out" in report.delivery.failure
        assert buf.status()["pending"]["occurrences"] == 1


def test_an_answer_trickling_in_is_timed_out_as_a_whole(
    database_url: str, fake: FakeAccoil, clock: Clock
) -> None:
    fake.behaviour = lambda _m: Reply(trickle=0.1)  # each wait short, the whole endless
    reports: list[FlushReport] = []
    with open_buffer(database_url, fake, clock, request_timeout_seconds=0.5) as buf:
        buf.track("u1", "E")
        flushing = threading.Thread(target=lambda: reports.append(buf.flush()))
        flushing.start()
        flushing.join(60)
        assert not flushing.is_alive()
        assert buf.status()["pending"]["occurrences"] == 1
    (report,) = reports
    assert report.delivery is not None
    assert report.delivery.failure is not None
    assert "timed out" in report.delivery.failure


def test_a_flush_timeout_ends_the_retries_too(
    database_url: str, fake: FakeAccoil, clock: Clock
) -> None:
    arrived: list[dict[str, Any]] = []

    def hang(message: dict[str, Any]) -> Reply:
        arrived.append(message)
        return Reply(delay=5.0)

    fake.behaviour = hang
    with open_buffer(database_url, fake, clock, request_timeout_seconds=2.0) as buf:
        buf.track("u1", "E")
        # Long enough to fold and send on a loaded machine, past by the first answer's
        # timeout: no retry.
        report = buf.flush(timeout=1.8)
        assert len(arrived) == 1
        assert buf.status()["pending"]["occurrences"] == 1
    assert report.delivery is not None
    assert report.delivery.retries == 0


def test_an_answer_that_is_not_http_is_retried_as_a_network_error(
    database_url: str, fake: FakeAccoil, clock: Clock
) -> None:
    answers = iter([Reply(garbage=True)])
    lock = threading.Lock()

    def once_garbage(_message: dict[str, Any]) -> Reply:
        with lock:
            return next(answers, Reply())

    fake.behaviour = once_garbage
    with open_buffer(database_url, fake, clock) as buf:
        for i in range(20):
            buf.track(f"u{i}", "E")
        report = buf.flush()
    assert report.delivery is not None
    assert report.delivery.retries == 1
    accepted = fake.accepted()
    assert sum(occurrences(accepted).values()) == 20
    assert len({b["messageId"] for b in accepted}) == 20


@pytest.mark.parametrize("status", [302, 308])
def test_a_redirect_is_retried_not_dead_lettered(
    database_url: str, fake: FakeAccoil, clock: Clock, status: int
) -> None:
    fake.behaviour = lambda _m: Reply(status)
    with open_buffer(database_url, fake, clock) as buf:
        buf.track("u1", "E")
        report = buf.flush()
        assert report.delivery is not None
        assert report.delivery.failure == f"HTTP {status}"
        assert buf.dead_letters() == []
        assert buf.status()["pending"]["occurrences"] == 1


def test_an_outage_backs_off_within_the_cap_then_delivers_everything(
    database_url: str, clock: Clock
) -> None:
    cap = timedelta(seconds=60)
    with running() as probe:
        port = probe.port  # a loopback port that is closed once the block ends
    with Buffer(database_url, start=False, clock=clock) as buf:
        for i in range(20):
            buf.track(f"u{i % 3}", "E")
    database = Database.open(Config(database_url=database_url))
    settings = DeliverySettings(
        base_backoff=timedelta(seconds=1), max_backoff=cap, max_wait_in_pass=0.01
    )
    down = AccoilClient("k", f"http://127.0.0.1:{port}/segment", timeout=1)
    delivery = Delivery(database, down, settings, clock, sleep=no_wait)
    attempts = 0
    end_of_outage = clock.now + timedelta(hours=2)
    while clock.now < end_of_outage:
        if delivery.run().skipped_until is None:
            attempts += 1
            with database.engine.connect() as conn:
                state = conn.execute(schema.delivery_state.select()).one()
            assert state.offline_since == clock.start
            assert timedelta(0) <= state.next_attempt_at - clock.now <= cap
        clock.advance(seconds=20)
    with running(port=port) as fake:
        clock.advance(seconds=cap.total_seconds())
        back = Delivery(database, AccoilClient("k", fake.url), settings, clock)
        final = back.run()
    database.dispose()
    assert attempts > 2 * 60 * 60 / cap.total_seconds() / 2  # it kept trying
    assert final.delivered == 20
    assert sum(occurrences(fake.accepted()).values()) == 20


def test_the_backoff_never_exceeds_its_cap(database_url: str, clock: Clock) -> None:
    with Buffer(database_url, start=False, clock=clock) as buf:
        buf.track("u1", "E")
    database = Database.open(Config(database_url=database_url))
    cap = timedelta(seconds=30)
    delivery = Delivery(
        database,
        AccoilClient("k", "http://127.0.0.1:9/segment", timeout=1),
        DeliverySettings(max_backoff=cap, max_wait_in_pass=0.01),
        clock,
        sleep=no_wait,
    )
    gaps = []
    for _ in range(12):
        delivery.run(force=True)
        with database.engine.connect() as conn:
            next_attempt = conn.execute(schema.delivery_state.select()).one().next_attempt_at
        gaps.append(next_attempt - clock.now)
    database.dispose()
    assert all(timedelta(0) <= gap <= cap for gap in gaps)
    assert max(gaps) > cap / 4  # the ceiling grew


def test_staging_keys_and_endpoint_override() -> None:
    assert endpoint_and_key("stg_abc", None) == (STAGING_ENDPOINT, "abc")
    assert endpoint_and_key("STG_abc", None) == (STAGING_ENDPOINT, "abc")
    assert endpoint_and_key("abc_stg_x", None) == (DEFAULT_ENDPOINT, "abc_stg_x")
    assert endpoint_and_key("stg_abc", "http://proxy/x") == ("http://proxy/x", "abc")
    seen: list[httpx.Request] = []

    def capture(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(202)

    client = AccoilClient("stg_Secret", transport=httpx.MockTransport(capture))
    client.send({"type": "track"})
    assert str(seen[0].url) == STAGING_ENDPOINT
    assert seen[0].headers["authorization"] == "Basic " + base64.b64encode(b"Secret:").decode()


def test_the_background_scheduler_folds_and_delivers(database_url: str, fake: FakeAccoil) -> None:
    with Buffer(database_url, api_key="k", endpoint=fake.url, flush_interval_seconds=0.2) as buf:
        buf.identify("u1", {"a": 1})
        buf.track("u1", "E")
        # Accoil answers before the pass records what it delivered: wait for the record.
        deadline = time.monotonic() + 20
        status = buf.status()
        while time.monotonic() < deadline and (
            status["pending"]["occurrences"] or status["delivery"]["last_success_at"] is None
        ):
            time.sleep(0.1)
            status = buf.status()
    assert sorted(b["type"] for b in fake.accepted()) == ["identify", "track"]
    assert status["pending"]["occurrences"] == 0
    assert status["delivery"]["last_success_at"] is not None
