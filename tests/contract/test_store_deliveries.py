"""Claims, leases, recorded progress, the delivery state, and reaping holders that are gone."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from typing import Any

from accoil_buffer.store import deliveries, holders
from accoil_buffer.store.engine import Database
from tests import tables
from tests.contract import NOW, TODAY, append, fold, message, opened

COUNTS = deliveries.KIND["counts"]
LEASE = timedelta(minutes=1)


def _pending_counts(database: Database, users: int) -> None:
    append(database, [message(type="track", userId=f"u{i:03}", event="E") for i in range(users)])
    fold(database)


def _claim(database: Database, holder: str, limit: int, at: datetime = NOW) -> set[Any]:
    with database.write_between_folds() as conn:
        return {c.key for c in deliveries.claim(database, conn, COUNTS, holder, at, LEASE, limit)}


def test_claims_take_waiting_rows_that_nobody_holds(database_url: str) -> None:
    with opened(database_url) as database:
        _pending_counts(database, 10)
        first = _claim(database, "a", 4)
        second = _claim(database, "b", 100)
        assert (len(first), len(second)) == (4, 6)
        assert not first & second
        assert _claim(database, "a", 100) == set()  # its own claims too
    assert sorted(r.claimed_by for r in tables.delivery_rows(database_url)) == ["a"] * 4 + ["b"] * 6


def test_concurrent_claimers_never_get_the_same_row(database_url: str) -> None:
    claimed: list[tuple[str, Any]] = []
    start = threading.Barrier(6)
    errors: list[BaseException] = []

    def claimer(database: Database, name: str) -> None:
        try:
            start.wait()
            while keys := _claim(database, name, 3):
                claimed.extend((name, key) for key in keys)
        except BaseException as exc:
            errors.append(exc)

    with opened(database_url) as database:
        _pending_counts(database, 60)
        threads = [threading.Thread(target=claimer, args=(database, f"h{i}")) for i in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    assert errors == []
    keys = [key for _, key in claimed]
    assert len(keys) == 60
    assert len(set(keys)) == 60  # no row went to two claimers
    holders_of = {key: name for name, key in claimed}
    assert {r.user_id: r.claimed_by for r in tables.delivery_rows(database_url)} == {
        key[1]: name for key, name in holders_of.items()
    }


def test_a_lapsed_lease_frees_the_row(database_url: str) -> None:
    with opened(database_url) as database:
        _pending_counts(database, 1)
        assert len(_claim(database, "a", 10)) == 1
        assert _claim(database, "b", 10, at=NOW + LEASE / 2) == set()
        assert len(_claim(database, "b", 10, at=NOW + LEASE * 2)) == 1
    assert [r.claimed_by for r in tables.delivery_rows(database_url)] == ["b"]


def test_progress_is_recorded_only_by_the_holder_of_the_row(database_url: str) -> None:
    with opened(database_url) as database:
        _pending_counts(database, 1)
        (key,) = _claim(database, "a", 10)
        (same,) = _claim(database, "b", 10, at=NOW + LEASE * 2)  # a's lease lapsed
        assert same == key
        for holder in ("a", "b"):
            outcomes = deliveries.Outcomes(
                progress=[(COUNTS, deliveries.Progress(key, watermark=1))], delivered=1
            )
            with database.write_between_folds() as conn:
                deliveries.record(database, conn, holder, outcomes, NOW)
        with database.engine.connect() as conn:
            assert deliveries.state(conn)["delivered_total"] == 2
    (row,) = tables.delivery_rows(database_url)
    assert (row.day, row.user_id, row.delivered_count) == (TODAY, "u000", 1)
    assert (row.claimed_by, row.claimed_until, row.pending_since) == (None, None, None)


def test_release_and_renew_touch_only_the_holders_claims(database_url: str) -> None:
    with opened(database_url) as database:
        _pending_counts(database, 4)
        _claim(database, "a", 2)
        _claim(database, "b", 2)
        with database.write_between_folds() as conn:
            deliveries.renew(conn, "b", NOW + timedelta(hours=1))
            deliveries.release(conn, "a")
    rows = {r.user_id: (r.claimed_by, r.claimed_until) for r in tables.delivery_rows(database_url)}
    assert sorted(rows.values(), key=str) == [
        ("b", NOW + timedelta(hours=1)),
        ("b", NOW + timedelta(hours=1)),
        (None, None),
        (None, None),
    ]


def test_the_delivery_state_counts_failures_until_a_success(database_url: str) -> None:
    later = NOW + timedelta(minutes=5)
    with opened(database_url) as database:
        with database.engine.connect() as conn:
            assert deliveries.state(conn)["consecutive_failures"] == 0
        for at in (NOW, later):
            with database.write_between_folds() as conn:
                deliveries.record_failure(
                    database,
                    conn,
                    at,
                    error="x" * 600,
                    next_attempt_at=at + timedelta(minutes=1),
                    paused_reason="401",
                    paused_key="fingerprint",
                )
        with database.engine.connect() as conn:
            failed = deliveries.state(conn)
        with database.write_between_folds() as conn:
            deliveries.record_success(database, conn, later)
        with database.engine.connect() as conn:
            succeeded = deliveries.state(conn)
    assert failed["consecutive_failures"] == 2
    assert failed["offline_since"] == NOW  # the outage began with the first failure
    assert failed["next_attempt_at"] == later + timedelta(minutes=1)
    assert (failed["paused_reason"], failed["paused_key"]) == ("401", "fingerprint")
    assert failed["last_error"] == "x" * 500
    assert succeeded["consecutive_failures"] == 0
    assert succeeded["last_success_at"] == later
    assert (succeeded["offline_since"], succeeded["next_attempt_at"]) == (None, None)
    assert (succeeded["paused_reason"], succeeded["paused_key"]) == (None, None)
    assert succeeded["last_failure_at"] == later


def test_reaping_frees_the_claims_of_holders_that_are_gone_only(database_url: str) -> None:
    alive, gone, reaper = (holders.holder_name(tag) for tag in ("alive", "gone", "reaper"))
    with opened(database_url) as database:
        locks = {name: holders.liveness(database) for name in (alive, gone, reaper)}
        for name, lock in locks.items():
            lock.hold(name)
        _pending_counts(database, 4)
        _claim(database, alive, 2)
        _claim(database, gone, 2)
        locks[gone].release()
        try:
            with database.write_between_folds() as conn:
                is_dead = locks[reaper].is_dead
                assert not is_dead(conn, alive)
                dead = deliveries.reap(conn, reaper, lambda holder: is_dead(conn, holder))
        finally:
            for lock in locks.values():
                lock.release()
    assert dead == [gone]
    claims = sorted(str(r.claimed_by) for r in tables.delivery_rows(database_url))
    assert claims == sorted([alive, alive, "None", "None"])
