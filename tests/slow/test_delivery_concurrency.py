"""Several flushers on one database, and a flusher killed at random points."""

from __future__ import annotations

import logging
import random
import re
import signal
import threading
import time
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest

from accoil_buffer import Buffer, Config
from accoil_buffer.accoil_api import AccoilClient
from accoil_buffer.delivery import Delivery, DeliverySettings
from accoil_buffer.store import deliveries, schema
from accoil_buffer.store.engine import Database
from tests.slow.test_processes import start
from tests.support import tables
from tests.support.clock import Clock
from tests.support.fake_accoil import Reply, running


def record_events(url: str, clock: Clock, users: int, per_user: int) -> int:
    with Buffer(url, start=False, clock=clock) as buf:
        buf.ingest_many(
            {"type": "track", "userId": f"u{i % users}", "event": f"E{i % 3}"}
            for i in range(users * per_user)
        )
        for i in range(5):
            buf.identify(f"u{i}", {"n": i})
            buf.group(f"u{i}", "acc", {"plan": "pro"})
    return users * per_user


def test_several_flushers_never_send_an_occurrence_twice(database_url: str, clock: Clock) -> None:
    flushers = 4 if database_url.startswith("postgresql") else 2
    total = record_events(database_url, clock, users=60, per_user=10)
    with running() as fake:
        fake.behaviour = lambda _m: Reply(delay=0.001)
        errors: list[BaseException] = []

        def flush() -> None:
            database = Database.open(Config(database_url=database_url))
            try:
                delivery = Delivery(
                    database,
                    AccoilClient("k", fake.url),
                    DeliverySettings(max_in_flight=4, claim_size=10),
                    clock,
                )
                delivery.run(force=True)
            except BaseException as exc:  # collected and asserted below
                errors.append(exc)
            finally:
                database.dispose()

        threads = [threading.Thread(target=flush) for _ in range(flushers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        ids = Counter(body["messageId"] for body in fake.accepted())
    assert [i for i, n in ids.items() if n > 1] == []
    assert sum(1 for body in fake.accepted() if body["type"] == "track") == total
    assert len(ids) == total + 5 + 1 + 5  # occurrences, identifies, account, memberships


def test_a_flusher_killed_at_random_points_loses_nothing(database_url: str, clock: Clock) -> None:
    total = record_events(database_url, Clock(start=clock.now.replace(hour=0)), 40, 15)
    rng = random.Random(11)
    lock = threading.Lock()

    def slow_and_flaky(_message: dict[str, Any]) -> Reply:
        with lock:
            roll = rng.random()
        if roll < 0.05:
            return Reply(503, delay=0.002)
        return Reply(delay=0.002)

    kills = 0
    with running() as fake:
        fake.behaviour = slow_and_flaky
        for _ in range(40):
            worker = start("deliver", database_url, fake.url)
            assert worker.stdout is not None
            worker.stdout.readline()
            time.sleep(rng.uniform(0.05, 0.6))
            if worker.poll() is None:
                worker.send_signal(signal.SIGKILL)
                kills += 1
            worker.wait(timeout=60)
            if worker.returncode == 0:
                break
            time.sleep(0.1)  # the next flusher frees a dead one's claims at once
        bodies = fake.accepted()
    ids = Counter(body["messageId"] for body in bodies)
    tracks = {body["messageId"] for body in bodies if body["type"] == "track"}
    duplicates = sum(n - 1 for n in ids.values())
    print(f"crash drill: {kills} kills, {len(bodies)} accepted, {duplicates} duplicates")
    assert kills >= 2
    assert len(tracks) == total  # every occurrence arrived
    # At most, per kill, the requests in flight (4) and as many acknowledged, not yet recorded.
    assert duplicates <= kills * 2 * 4
    assert tables.counts(database_url)  # the rollup is intact


def test_claims_read_only_the_rows_waiting_for_delivery(database_url: str, clock: Clock) -> None:
    # Delivered rows stay in their tables; a claim that read past them would slow down as
    # history grows. Each claim's plan must go through its table's index of pending rows.
    record_events(database_url, clock, users=5, per_user=2)
    database = Database.open(Config(database_url=database_url))
    recorded = tables.record_plans(database.engine, re.compile(r"^UPDATE \w+ SET claimed_by"))
    with database.write() as conn:
        for kind in deliveries.KINDS:
            deliveries.claim(database, conn, kind, "h", clock(), timedelta(minutes=1), 100)
    database.dispose()
    plans = {statement.split()[1]: plan for statement, plan in recorded}
    assert set(plans) == {kind.table.name for kind in deliveries.KINDS}
    for name in schema.PENDING:
        assert f"ix_{name}_pending" in plans[name], plans[name]


def test_a_postgresql_fold_is_not_undone_by_deliveries(
    postgres_database: str, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    # A chunk folds in REPEATABLE READ, which fails on a row updated since its snapshot. With
    # a flusher recording deliveries as fast as Accoil answered, every chunk that upserted a
    # count being delivered failed, each retry too, until the fold gave up. Deliveries now
    # write between chunks, so no chunk is retried at all.
    url = postgres_database
    recorded = record_events(url, clock, users=200, per_user=5)
    with Buffer(url, start=False, clock=clock) as buf:
        buf.flush()  # no api_key: folds only, leaving 600 counts for the flusher below
    stop = threading.Event()
    errors: list[BaseException] = []

    def deliver(endpoint: str) -> None:
        database = Database.open(Config(database_url=url))
        settings = DeliverySettings(max_in_flight=8, claim_size=50)
        try:
            delivery = Delivery(database, AccoilClient("k", endpoint), settings, clock)
            while not stop.is_set():
                delivery.run(force=True, deadline=time.monotonic() + 0.2)
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)
        finally:
            database.dispose()

    with running() as fake, caplog.at_level(logging.WARNING, "accoil_buffer.store.engine"):
        flusher = threading.Thread(target=deliver, args=(fake.url,))
        flusher.start()
        try:
            for _ in range(5):
                recorded += record_events(url, clock, users=200, per_user=5)
                with Buffer(url, start=False, clock=clock) as buf:
                    buf.flush()
        finally:
            stop.set()
            flusher.join()
        delivered = len(fake.accepted())
    assert errors == []
    assert delivered > 0
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert sum(tables.counts(url).values()) == recorded
