"""The delivery engine across a slow network: hot rows in parallel, answers out of order, no
stall after a crash, bounded shutdown, any Retry-After, exact totals, a new key."""

from __future__ import annotations

import math
import signal
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from accoil_buffer import Buffer
from accoil_buffer.accoil_api import MAX_RETRY_AFTER, key_fingerprint, retry_after
from tests.integration.test_delivery import occurrences, open_buffer
from tests.integration.test_server import Daemon
from tests.slow.test_processes import start
from tests.support import tables
from tests.support.clock import Clock
from tests.support.fake_accoil import FakeAccoil, Reply, running


class Concurrency:
    """Answers after ``delay`` seconds, noting how many requests were in flight at once."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.now = self.most = 0
        self.lock = threading.Lock()

    def __call__(self, _message: dict[str, Any]) -> Reply:
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)
        time.sleep(self.delay)
        with self.lock:
            self.now -= 1
        return Reply()


def test_a_hot_row_has_many_occurrences_in_flight_at_once(
    database_url: str, fake: FakeAccoil, clock: Clock
) -> None:
    gauge = Concurrency(delay=0.02)
    fake.behaviour = gauge
    with open_buffer(database_url, fake, clock, max_in_flight=16) as buf:
        buf.ingest_many({"type": "track", "userId": "heavy", "event": "Beat"} for _ in range(300))
        report = buf.flush()
    assert report.ok
    assert gauge.most >= 8  # one row, several of its ordinals at once
    assert occurrences(fake.accepted()) == {("2026-11-28", "heavy", "track", "Beat"): 300}
    ids = Counter(body["messageId"] for body in fake.accepted())
    assert len(ids) == 300
    assert max(ids.values()) == 1


def test_a_failure_mid_row_leaves_no_gap_that_is_sent_twice(
    database_url: str, fake: FakeAccoil, clock: Clock
) -> None:
    refused: set[str] = set()
    lock = threading.Lock()

    def one_fails(message: dict[str, Any]) -> Reply:
        with lock:
            if not refused:
                refused.add(message["messageId"])
        return Reply(503) if message["messageId"] in refused else Reply(delay=0.005)

    fake.behaviour = one_fails
    with open_buffer(database_url, fake, clock, max_in_flight=8) as buf:
        buf.ingest_many({"type": "track", "userId": "u", "event": "E"} for _ in range(40))
        first = buf.flush()
        assert first.delivery is not None
        assert first.delivery.failure is not None
        fake.behaviour = lambda _m: Reply()
        assert buf.flush().ok
    accepted = Counter(b["messageId"] for b in fake.accepted())
    assert sum(accepted.values()) == 40  # every occurrence once: the gap alone was sent again
    assert set(accepted.values()) == {1}
    assert refused <= set(accepted)
    assert tables.counts(database_url) == {(clock.now.date(), "u", "track", "E"): 40}


def test_answers_out_of_order_are_recorded_beyond_the_watermark(
    database_url: str, fake: FakeAccoil, clock: Clock
) -> None:
    first: list[str] = []

    def first_one_hangs_then_fails(message: dict[str, Any]) -> Reply:
        if not first:
            first.append(message["messageId"])
        if message["messageId"] == first[0]:
            return Reply(503, delay=0.3)
        return Reply()

    fake.behaviour = first_one_hangs_then_fails
    with open_buffer(database_url, fake, clock, max_in_flight=4) as buf:
        buf.ingest_many({"type": "track", "userId": "u", "event": "E"} for _ in range(10))
        buf.flush()
        row = tables.delivery_rows(database_url)[0]
    assert row.delivered_count < 10
    assert row.acked_beyond  # acknowledged above a gap, kept for the next pass
    assert row.claimed_by is None  # released: the next pass, anyone's, takes it up


def test_a_dead_flushers_rows_are_taken_without_waiting_for_its_lease(
    database_url: str, clock: Clock
) -> None:
    with Buffer(database_url, start=False) as buf:
        buf.ingest_many(
            {"type": "track", "userId": f"u{i % 30}", "event": "E"} for i in range(3000)
        )
    with running() as fake:
        fake.behaviour = lambda _m: Reply(delay=0.01)
        worker = start("deliver", database_url, fake.url, "3600")  # an hour's lease
        assert worker.stdout is not None
        worker.stdout.readline()
        deadline = time.monotonic() + 60
        while len(fake.accepted()) < 100:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=30)
        with Buffer(database_url, api_key="k", endpoint=fake.url, start=False) as buf:
            report = buf.flush()  # one pass: the dead worker's claims are freed first
            status = buf.status()
        accepted = fake.accepted()
    assert report.ok
    assert status["pending"]["occurrences"] == 0
    tracks = {b["messageId"] for b in accepted}
    assert len(tracks) == 3000
    assert status["delivery"]["delivered_total"] == len(tracks)  # exact despite the kill


def track(daemon: Daemon, user: str) -> None:
    answer = httpx.post(daemon.url + "/v1/track", json={"userId": user, "event": "E"})
    assert answer.status_code == 200


def test_sigterm_while_accoil_hangs_exits_in_bounded_time_and_folds(database_url: str) -> None:
    arrived = threading.Event()

    def hang(_message: dict[str, Any]) -> Reply:
        arrived.set()
        return Reply(delay=30)

    with running() as fake:
        fake.behaviour = hang
        daemon = Daemon(
            database_url,
            env={
                "ACCOIL_API_KEY": "k",
                "ACCOIL_BUFFER_ENDPOINT": fake.url,
                "ACCOIL_BUFFER_REQUEST_TIMEOUT_SECONDS": "2",
                "ACCOIL_BUFFER_FLUSH_INTERVAL_SECONDS": "0.5",
            },
        )
        daemon.wait_ready()
        track(daemon, "u")
        assert arrived.wait(30)  # delivery is under way, and hanging
        track(daemon, "late")
        began = time.monotonic()
        code, stderr = daemon.stop()
        took = time.monotonic() - began
    assert code == 0, stderr
    assert took < 2 + 2 + 3, stderr  # request_timeout + 2 s, and a margin for a busy machine
    assert tables.outbox_size(database_url) == 0  # what it accepted was folded
    assert {user for (_, user, _, _) in tables.counts(database_url)} == {"u", "late"}


@given(
    st.one_of(
        st.sampled_from(
            ["inf", "-inf", "nan", "NaN", "-5", "1e30", "1e14", "0", "2.5", "", "soon", "-0"]
        ),
        st.sampled_from(
            [
                "Wed, 21 Oct 2015 07:28:00 GMT",
                "Fri, 31 Dec 9999 23:59:59 GMT",
                "Mon, 01 Jan 0001 00:00:00 GMT",
                "Thu, 01 Jan 1970 00:00:00 -0000",
            ]
        ),
        st.text(max_size=40),
        st.floats().map(repr),
        st.integers().map(str),
    )
)
def test_any_retry_after_is_clamped(value: str) -> None:
    seconds = retry_after(value)
    assert seconds is None or (math.isfinite(seconds) and 0 <= seconds <= MAX_RETRY_AFTER)


@pytest.mark.parametrize("header", ["inf", "1e30", "nan", "-3", "garbage"])
def test_a_wild_retry_after_ends_the_pass_cleanly(
    database_url: str, fake: FakeAccoil, clock: Clock, header: str
) -> None:
    fake.behaviour = lambda _m: Reply(429, retry_after=header)
    with open_buffer(database_url, fake, clock) as buf:
        buf.track("u", "E")
        report = buf.flush()
        status = buf.status()
    assert report.delivery is not None
    assert report.delivery.failure is not None
    assert status["delivery"]["next_attempt_at"] is not None
    assert status["delivery"]["consecutive_failures"] == 1


def test_a_new_key_resumes_at_once_after_a_401(
    database_url: str, fake: FakeAccoil, clock: Clock
) -> None:
    fake.behaviour = lambda m: Reply(401) if m.get("userId") == "first" else Reply()
    with Buffer(
        database_url, api_key="old-key", endpoint=fake.url, start=False, clock=clock
    ) as buf:
        buf.track("first", "E")
        assert buf.flush().delivery.paused  # type: ignore[union-attr]
        state = buf.status()["delivery"]
    paused = state["paused_reason"]
    assert key_fingerprint("old-key") in paused
    assert state["paused_key"] == key_fingerprint("old-key")
    assert "old-key" not in paused
    fake.behaviour = lambda _m: Reply()
    with Buffer(
        database_url, api_key="new-key", endpoint=fake.url, start=False, clock=clock
    ) as buf:
        scheduled = buf._parts.delivery.run()  # type: ignore[union-attr]  # not forced: no wait
        status = buf.status()
    assert scheduled.skipped_until is None
    assert scheduled.delivered == 1
    assert status["delivery"]["paused_reason"] is None
    assert status["pending"]["occurrences"] == 0


def test_reading_the_status_takes_no_liveness_lock(tmp_path: Path, fake: FakeAccoil) -> None:
    url = f"sqlite:///{tmp_path / 'quiet.db'}"
    with Buffer(url, api_key="k", endpoint=fake.url, start=False) as buf:
        buf.status()
        assert not (tmp_path / "quiet.db-holders").exists()
        buf.flush()
        assert list((tmp_path / "quiet.db-holders").iterdir())  # a pass holds one
    assert not list((tmp_path / "quiet.db-holders").iterdir())  # and gives it up at close
