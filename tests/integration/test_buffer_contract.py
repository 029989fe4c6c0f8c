"""The buffer's contract, run on SQLite and PostgreSQL alike (the ``database_url`` fixture)."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any
from unittest.mock import patch

import pytest
from sqlalchemy import Column, Date, create_engine, text

from accoil_buffer import Buffer, BufferClosed, Config, InvalidMessage, StorageError
from accoil_buffer.messages import normalise
from accoil_buffer.reasons import Reason
from accoil_buffer.store import rollup, schema
from accoil_buffer.store.engine import Database
from tests.support import tables
from tests.support.clock import Clock

TODAY = date(2026, 11, 28)


def test_readme_example(database_url: str, clock: Clock) -> None:
    with Buffer(database_url, api_key="key", start=False, clock=clock) as buf:
        buf.identify("u1", {"email": "a@b.c", "createdAt": 1700000000})
        buf.group("u1", "acc1", {"name": "Acme", "mrr": "9900"})
        buf.track("u1", "Report Created", {"ignored": "properties"})
        buf.page("u1", name="Home")
        buf.track(anonymous_id="anon-7", event="Viewed Pricing")
        buf.alias(previous_id="anon-7", user_id="u1")
    assert tables.counts(database_url) == {
        (TODAY, "u1", "track", "Report Created"): 1,
        (TODAY, "u1", "page", "Home"): 1,
        (TODAY, "u1", "track", "Viewed Pricing"): 1,
    }
    assert tables.users(database_url) == {
        "u1": {"email": "a@b.c", "createdAt": "2023-11-14T22:13:20.000Z"}
    }
    assert tables.accounts(database_url) == {"acc1": {"name": "Acme", "mrr": 9900}}
    assert tables.memberships(database_url) == {("acc1", "u1")}
    assert tables.outbox_size(database_url) == 0
    assert tables.anonymous_counts(database_url) == {}


def test_status_reports_what_is_pending(database_url: str, clock: Clock) -> None:
    with Buffer(database_url, start=False, clock=clock, durability="sync") as buffer:
        buffer.identify("u1", {"a": 1})
        buffer.track("u1", "E")
        buffer.track("u1", "E")
        buffer.track(anonymous_id="anon", event="E")
        buffer.track(anonymous_id="anon", event="F")  # a second row of the same id
        buffer.page(anonymous_id="anon-2")
        before = buffer.status()
        assert before["outbox"]["unfolded_messages"] == 6
        assert before["outbox"]["oldest_received_at"] == "2026-11-28T12:00:00.000Z"
        buffer.flush()
        after = buffer.status()
        assert after["outbox"]["unfolded_messages"] == 0
        assert after["pending"] == {
            "users": 1,
            "accounts": 0,
            "memberships": 0,
            "count_rows": 1,
            "occurrences": 2,
            "posts": 0,
        }
        assert after["anonymous"] == {"ids": 2, "occurrences": 3}
        assert after["oldest_undelivered_at"] == "2026-11-28T12:00:00.000Z"


def test_counts_accumulate_across_folds_and_days(buffer: Buffer, database_url: str) -> None:
    for _ in range(3):
        buffer.track("u1", "E")
    buffer.flush()
    buffer.track("u1", "E")
    buffer.track("u1", "E", timestamp="2026-11-01T08:00:00Z")  # type: ignore[arg-type]
    buffer.screen("u2", name="Settings")
    buffer.page("u2")
    buffer.flush()
    assert tables.counts(database_url) == {
        (TODAY, "u1", "track", "E"): 4,
        (date(2026, 11, 1), "u1", "track", "E"): 1,
        (TODAY, "u2", "screen", "Settings"): 1,
        (TODAY, "u2", "page", ""): 1,
    }


def test_buffers_sharing_a_database_store_a_message_sent_to_each_once(
    database_url: str, clock: Clock
) -> None:
    """Two processes of a shared outbox receive the same messages while passes fold: every
    copy reaches the outbox, and the folds count each messageId once."""
    sent = [
        {"type": "track", "userId": f"u{i % 7}", "event": "E", "messageId": f"m{i}"}
        for i in range(300)
    ]
    errors: list[BaseException] = []

    def receive(buf: Buffer) -> None:
        try:
            for start in range(0, len(sent), 20):
                buf.ingest_many(sent[start : start + 20])
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    with (
        Buffer(database_url, start=False, clock=clock, fold_batch_size=50) as one,
        Buffer(database_url, start=False, clock=clock, fold_batch_size=50) as other,
    ):
        receivers = [threading.Thread(target=receive, args=(buf,)) for buf in (one, other)]
        for receiver in receivers:
            receiver.start()
        while any(receiver.is_alive() for receiver in receivers):
            one.flush()
        other.flush()
    assert errors == []
    assert sum(tables.counts(database_url).values()) == len(sent)
    assert tables.drops(database_url) == {Reason.DUPLICATE_MESSAGE_ID: len(sent)}
    assert tables.table_count(database_url, schema.message_ids) == len(sent)


def test_same_message_id_is_stored_once(buffer: Buffer, database_url: str) -> None:
    buffer.track("u1", "E", message_id="m1")
    buffer.track("u1", "E", message_id="m1")
    report = buffer.ingest_many(
        [
            {"type": "track", "userId": "u1", "event": "E", "messageId": "m2"},
            {"type": "track", "userId": "u1", "event": "E", "messageId": "m2"},
        ]
    )
    assert (report.stored, report.duplicates) == (1, 1)
    buffer.flush()
    buffer.track("u1", "E", message_id="m1")  # already folded: the ledger still knows it
    assert buffer.flush().duplicates == 1
    assert tables.counts(database_url) == {(TODAY, "u1", "track", "E"): 2}
    assert tables.drops(database_url)["duplicate_message_id"] == 3


def test_message_ids_are_forgotten_after_the_dedupe_window(database_url: str, clock: Clock) -> None:
    with Buffer(database_url, start=False, clock=clock, dedupe_window_hours=1) as buf:
        buf.track("u1", "E", message_id="m1")
        buf.flush()
        clock.advance(hours=2)
        buf.flush()
        buf.track("u1", "E", message_id="m1")
    assert tables.counts(database_url)[TODAY, "u1", "track", "E"] == 2


def test_integrations_filter_accepts_but_does_not_store(buffer: Buffer, database_url: str) -> None:
    buffer.track("u1", "E", integrations={"Accoil Analytics": False})
    buffer.identify("u1", {"a": 1}, integrations={"All": False})
    buffer.track("u1", "E", integrations={"All": False, "Accoil Analytics": True})
    buffer.flush()
    assert tables.counts(database_url) == {(TODAY, "u1", "track", "E"): 1}
    assert tables.users(database_url) == {}
    assert tables.drops(database_url) == {"filtered_integrations": 2}


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda b: b.track("u1"), "event"),
        (lambda b: b.track(event="E"), "userId"),
        (lambda b: b.group("u1", traits={"a": 1}), "groupId"),
        (lambda b: b.alias(user_id="u1"), "previousId"),
        (lambda b: b.identify("u1", traits=["not", "an", "object"]), "traits"),
        (lambda b: b.track("u1", "E", timestamp="not a time"), "timestamp"),
        (lambda b: b.track("u1", "E", {"big": "x" * 50_000}), "message"),
        (lambda b: b.ingest({"type": "track", "userId": "u\x00", "event": "E"}), "message.userId"),
    ],
)
def test_rejected_calls_store_nothing(
    buffer: Buffer, database_url: str, call: object, field: str
) -> None:
    with pytest.raises(InvalidMessage) as info:
        call(buffer)  # type: ignore[operator]
    assert info.value.field == field
    assert tables.outbox_size(database_url) == 0
    assert tables.table_count(database_url, schema.message_ids) == 0


def test_ingest_many_stores_the_valid_and_reports_the_rest(
    buffer: Buffer, database_url: str
) -> None:
    report = buffer.ingest_many(
        [
            {"type": "track", "userId": "u1", "event": "E"},
            {"type": "track", "event": "E"},
            "nonsense",
            {"type": "page", "userId": "u1", "name": "Home"},
        ]
    )
    assert report.stored == 2
    assert [(r.index, r.error.field) for r in report.rejected] == [(1, "userId"), (2, "message")]
    assert tables.outbox_size(database_url) == 2


def test_traits_merge_like_segment(buffer: Buffer, database_url: str) -> None:
    buffer.identify("u1", {"email": "a@b.c", "plan": "free", "seats": 3})
    buffer.flush()
    buffer.identify("u1", {"plan": "pro", "seats": None})
    buffer.identify("u1", {"name": "Ada"})
    buffer.flush()
    assert tables.users(database_url) == {
        "u1": {"email": "a@b.c", "plan": "pro", "seats": None, "name": "Ada"}
    }
    assert tables.user_versions(database_url) == {"u1": 2}
    buffer.identify("u1", {"plan": "pro"})  # no change: no new version to deliver
    buffer.flush()
    assert tables.user_versions(database_url) == {"u1": 2}


def test_group_traits_merge_and_memberships(buffer: Buffer, database_url: str) -> None:
    buffer.group("u1", "acc", {"name": "Acme", "createdAt": "2021-03-15T09:00:00Z"})
    buffer.group("u2", "acc", {"mrr": "3000", "status": "Paid"})
    buffer.group("u1", "acc", {"name": "Acme Inc"})
    buffer.flush()
    assert tables.accounts(database_url) == {
        "acc": {
            "name": "Acme Inc",
            "createdAt": "2021-03-15T09:00:00.000Z",
            "mrr": 3000,
            "status": "Paid",
        }
    }
    assert tables.memberships(database_url) == {("acc", "u1"), ("acc", "u2")}


def test_anonymous_activity_moves_to_the_user_on_identify(
    buffer: Buffer, database_url: str
) -> None:
    buffer.track(anonymous_id="anon", event="Viewed Pricing")
    buffer.page(anonymous_id="anon", name="Pricing")
    buffer.identify(anonymous_id="anon", traits={"utm": "ads", "plan": "free"})
    buffer.group(anonymous_id="anon", group_id="acc")
    buffer.flush()
    assert tables.counts(database_url) == {}
    assert tables.anonymous_counts(database_url) == {
        (TODAY, "anon", "track", "Viewed Pricing"): 1,
        (TODAY, "anon", "page", "Pricing"): 1,
    }
    buffer.identify("u1", {"plan": "pro"})
    buffer.flush()
    buffer.identify("u1", {"email": "a@b.c"}, anonymous_id="anon")
    buffer.track(anonymous_id="anon", event="Viewed Pricing")  # after the link: straight to u1
    buffer.flush()
    assert tables.counts(database_url) == {
        (TODAY, "u1", "track", "Viewed Pricing"): 2,
        (TODAY, "u1", "page", "Pricing"): 1,
    }
    # The user's own traits win over what the visitor had.
    assert tables.users(database_url) == {"u1": {"utm": "ads", "plan": "pro", "email": "a@b.c"}}
    assert tables.memberships(database_url) == {("acc", "u1")}
    assert tables.anonymous_counts(database_url) == {}
    assert tables.anonymous_traits(database_url) == {}


def test_alias_links_in_the_same_fold_and_the_first_link_wins(
    buffer: Buffer, database_url: str
) -> None:
    buffer.track(anonymous_id="anon", event="E")
    buffer.alias(previous_id="anon", user_id="u1")
    buffer.alias(previous_id="anon", user_id="u2")
    buffer.flush()
    buffer.alias(previous_id="anon", user_id="u3")
    buffer.track(anonymous_id="anon", event="E")
    buffer.flush()
    assert tables.counts(database_url) == {(TODAY, "u1", "track", "E"): 2}


def test_unlinked_anonymous_data_is_pruned_after_the_ttl(database_url: str, clock: Clock) -> None:
    with Buffer(database_url, start=False, clock=clock, anonymous_ttl_days=30) as buf:
        buf.track(anonymous_id="idle", event="E")
        buf.track(anonymous_id="idle", event="E")
        buf.identify(anonymous_id="idle", traits={"a": 1})
        buf.group(anonymous_id="idle", group_id="acc")
        buf.track(anonymous_id="active", event="E")
        buf.flush()
        clock.advance(days=29)
        buf.track(anonymous_id="active", event="F")
        buf.flush()
        clock.advance(days=2)
        buf.flush()
    assert set(tables.anonymous_counts(database_url)) == {
        (TODAY, "active", "track", "E"),
        (TODAY + timedelta(days=29), "active", "track", "F"),
    }
    assert tables.anonymous_traits(database_url) == {}
    assert tables.drops(database_url) == {"anonymous_ttl_events": 2, "anonymous_ttl_profiles": 2}


def test_future_timestamps_are_clamped_and_counted(buffer: Buffer, database_url: str) -> None:
    buffer.track("u1", "E", timestamp="2027-01-01T00:00:00Z")  # type: ignore[arg-type]
    buffer.flush()
    assert tables.counts(database_url) == {(TODAY, "u1", "track", "E"): 1}
    assert tables.drops(database_url) == {"future_timestamp_clamped": 1}


def test_properties_are_never_written_unless_kept_for_audit(
    database_url: str, clock: Clock
) -> None:
    with Buffer(database_url, start=False, clock=clock, durability="sync") as buf:
        buf.track("u1", "E", {"secret": "never on disk"})
        buf.identify("u1", {"email": "a@b.c"})
        assert tables.outbox_payloads(database_url) == [None, None]  # JSON null: columns only
        buf.flush()
    assert tables.users(database_url) == {"u1": {"email": "a@b.c"}}


def test_outbox_rows_can_be_kept_for_audit(database_url: str, clock: Clock) -> None:
    with Buffer(
        database_url, start=False, clock=clock, outbox_retention_hours=24, durability="sync"
    ) as buf:
        buf.track("u1", "E", {"kept": True})
        (payload,) = tables.outbox_payloads(database_url)
        assert (payload["event"], payload["properties"]) == ("E", {"kept": True})
        buf.flush()
        assert tables.outbox_size(database_url) == 1
        assert buf.status()["outbox"]["unfolded_messages"] == 0
        buf.flush()  # a folded row is never folded twice
        assert tables.counts(database_url) == {(TODAY, "u1", "track", "E"): 1}
        clock.advance(hours=25)
        buf.flush()
    assert tables.outbox_size(database_url) == 0


def test_the_app_can_write_inside_its_own_transaction(database_url: str, clock: Clock) -> None:
    engine = create_engine(database_url)

    def place_order(buf: Buffer, event: str, *, fail: bool) -> None:
        with engine.begin() as conn:
            buf.track("u1", event, connection=conn, message_id=event)
            if fail:
                raise RuntimeError("the app's transaction rolls back")

    with Buffer(database_url, start=False, clock=clock) as buf:
        place_order(buf, "Order Placed", fail=False)
        with pytest.raises(RuntimeError):
            place_order(buf, "Order Failed", fail=True)
        buf.flush()
    engine.dispose()
    assert tables.counts(database_url) == {(TODAY, "u1", "track", "Order Placed"): 1}
    assert tables.table_count(database_url, schema.message_ids) == 1  # the rollback's is gone


@pytest.mark.parametrize(
    "user_id", ["'; DROP TABLE accoil_outbox; --", "用户 🎉", "a\u200bb", "Robert'); --"]
)
def test_hostile_and_unicode_ids_are_stored_literally(
    buffer: Buffer, database_url: str, user_id: str
) -> None:
    buffer.identify(user_id, {"name": user_id})
    buffer.track(user_id, user_id)
    buffer.flush()
    assert tables.counts(database_url) == {(TODAY, user_id, "track", user_id): 1}
    assert tables.users(database_url) == {user_id: {"name": user_id}}


def test_folding_in_small_chunks_gives_the_same_result(database_url: str, clock: Clock) -> None:
    with Buffer(database_url, start=False, clock=clock, fold_batch_size=3) as buf:
        for i in range(20):
            buf.track(f"u{i % 4}", "E")
        buf.track(anonymous_id="anon", event="E")
        buf.alias(previous_id="anon", user_id="u0")
        assert buf.flush().folded == 22
    assert tables.counts(database_url) == {
        (TODAY, "u0", "track", "E"): 6,
        (TODAY, "u1", "track", "E"): 5,
        (TODAY, "u2", "track", "E"): 5,
        (TODAY, "u3", "track", "E"): 5,
    }


def test_a_chunk_merges_traits_step_by_step_in_order(database_url: str, clock: Clock) -> None:
    # A chunk larger than a trait-merge step (here 2 rows) takes its steps in id order,
    # and a link made in a later step still moves what the anonymous id did before it.
    with (
        patch.object(rollup, "_PROFILE_STEP", 2),
        Buffer(database_url, start=False, clock=clock, fold_batch_size=100) as buf,
    ):
        buf.identify(anonymous_id="anon", traits={"plan": "free", "utm": "ads"})
        buf.identify("u1", {"plan": "a"})
        buf.identify("u1", {"plan": "b"})
        buf.group(anonymous_id="anon", group_id="g1", traits={"tier": 1})
        buf.track(anonymous_id="anon", event="E")
        buf.alias(previous_id="anon", user_id="u1")
        buf.group("u1", "g1", {"tier": 2})
        buf.track(anonymous_id="anon", event="E")
        assert buf.flush().folded == 8
    assert tables.users(database_url) == {"u1": {"plan": "b", "utm": "ads"}}
    assert tables.accounts(database_url) == {"g1": {"tier": 2}}
    assert tables.memberships(database_url) == {("g1", "u1")}
    assert tables.counts(database_url) == {(TODAY, "u1", "track", "E"): 2}
    assert tables.anonymous_traits(database_url) == {}
    assert tables.anonymous_memberships(database_url) == set()
    assert tables.anonymous_counts(database_url) == {}


@pytest.mark.parametrize("retention_hours", [0, 24])
def test_chunks_pass_over_gaps_in_ids_and_rows_kept_for_audit(
    database_url: str, clock: Clock, retention_hours: int
) -> None:
    # Chunks are id ranges. Rolled-back inserts leave gaps in PostgreSQL's ids wider than a
    # chunk, and rows kept for audit stay below the unfolded ones.
    engine = create_engine(database_url)

    def rolled_back(buf: Buffer) -> None:
        with engine.begin() as conn:
            for _ in range(4):
                buf.track("u1", "Rolled Back", connection=conn)
            raise RuntimeError("the app's transaction rolls back")

    with Buffer(
        database_url,
        start=False,
        clock=clock,
        durability="sync",
        fold_batch_size=3,
        outbox_retention_hours=retention_hours,
    ) as buf:
        for _ in range(4):
            buf.track("u1", "Before")
        assert buf.flush().folded == 4
        buf.track("u1", "Middle")
        for _ in range(3):
            with pytest.raises(RuntimeError):
                rolled_back(buf)
        buf.track("u1", "After")
        assert buf.flush().folded == 2
        assert buf.flush().folded == 0
    engine.dispose()
    assert tables.counts(database_url) == {
        (TODAY, "u1", "track", "Before"): 4,
        (TODAY, "u1", "track", "Middle"): 1,
        (TODAY, "u1", "track", "After"): 1,
    }
    assert tables.outbox_size(database_url) == (6 if retention_hours else 0)


def test_a_large_fold_on_postgresql_first_samples_what_its_chunks_filter_on(
    postgres_database: str, clock: Clock
) -> None:
    # Without statistics on folded_at the planner takes "folded_at IS NULL" to match 0.5% of
    # a chunk and sorts it on disk instead of hashing it.
    with Buffer(postgres_database, start=False, clock=clock) as buf:
        buf.ingest_many({"type": "track", "userId": f"u{i}", "event": "E"} for i in range(12_000))
        assert buf.flush().folded == 12_000
    engine = create_engine(postgres_database)
    with engine.connect() as conn:
        sampled: dict[str, float] = dict(
            conn.execute(
                text("SELECT attname, null_frac FROM pg_stats WHERE tablename = 'accoil_outbox'")
            ).all()
        )
    engine.dispose()
    assert {"id", "type", "user_id", "name"} <= set(sampled)
    assert sampled["folded_at"] == 1.0


@pytest.mark.parametrize(
    "value",
    [
        datetime(2026, 11, 28, 15, 2, 3, 4005, tzinfo=UTC),
        datetime(2026, 11, 28, 15, 2, 3, tzinfo=UTC),  # no microseconds
        datetime(2026, 11, 28, 23, 30, tzinfo=timezone(timedelta(hours=-5))),
        datetime(999, 1, 2, 3, 4, 5),  # naive is UTC; a short year
        date(2026, 2, 3),
        {"name": "Zoë 🎉", "n": [1, 2.5, None, True], "nested": {"a": "b"}},
        None,
    ],
)
def test_the_direct_write_path_stores_what_sqlalchemy_would(
    tmp_path: object, value: object
) -> None:
    # The outbox and ledger inserts convert SQLite values themselves (SQLAlchemy's per-row
    # processing was a third of the writer's time); the stored text must not differ.
    database = Database.open(Config(database_url="sqlite://"))
    dialect = database.engine.dialect
    tables_ = (schema.outbox, schema.message_ids, schema.posts, schema.drops)
    columns = [c for t in tables_ for c in t.columns if database.dialect.to_driver(c) is not None]
    assert {c.name for c in columns} >= {"timestamp", "received_at", "day", "traits", "payload"}
    for column in columns:
        if not _suits(column, value):
            continue
        ours = database.dialect.to_driver(column)
        theirs = column.type.dialect_impl(dialect).bind_processor(dialect)
        assert ours is not None
        assert theirs is not None
        assert ours(value) == theirs(value), column.name
    database.dispose()


def _suits(column: Column[Any], value: object) -> bool:
    kind = column.type
    if isinstance(kind, schema.UTCDateTime):
        return isinstance(value, datetime)
    if isinstance(kind, Date):
        return type(value) is date
    return not isinstance(value, date)  # JSON


def test_a_database_that_cannot_be_reached_is_a_storage_error(tmp_path: object) -> None:
    with pytest.raises(StorageError) as info:
        Buffer("postgresql://postgres@127.0.0.1:1/nowhere", start=False)
    assert "database" in str(info.value)


def test_a_closed_buffer_refuses_calls_and_reads(buffer: Buffer) -> None:
    buffer.close()
    for call in (
        lambda: buffer.track("u1", "E"),
        buffer.flush,
        buffer.status,
        buffer.dead_letters,
        buffer.history,
        buffer.replay_dead_letters,
    ):
        with pytest.raises(BufferClosed):
            call()
    health = buffer.health()
    assert not health.storing
    assert health.problem is not None
    assert "closed" in health.problem


# A trigger that refuses inserts stands for any error the driver raises mid-transaction
# (a full disk, a constraint someone added).
_REFUSE = {
    "sqlite": [
        "CREATE TRIGGER refuse BEFORE INSERT ON {table} "
        "BEGIN SELECT RAISE(ABORT, 'refused by a trigger'); END"
    ],
    "postgresql": [
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql "
        "AS $$ BEGIN RAISE EXCEPTION 'refused by a trigger'; END $$",
        "CREATE TRIGGER refuse BEFORE INSERT ON {table} FOR EACH ROW EXECUTE FUNCTION refuse()",
    ],
}
_ALLOW = {
    "sqlite": ["DROP TRIGGER refuse"],
    "postgresql": ["DROP TRIGGER refuse ON {table}", "DROP FUNCTION refuse()"],
}


@contextmanager
def _inserts_into(database_url: str, table: str) -> Iterator[Callable[[bool], None]]:
    """A switch for a trigger that makes every INSERT into ``table`` fail: ``refuse(True)``."""
    kind = "postgresql" if database_url.startswith("postgresql") else "sqlite"
    admin = create_engine(database_url)

    def refuse(on: bool) -> None:
        with admin.begin() as conn:
            for statement in (_REFUSE if on else _ALLOW)[kind]:
                conn.exec_driver_sql(statement.format(table=table))

    try:
        yield refuse
    finally:
        admin.dispose()


@pytest.mark.parametrize("table", ["accoil_message_ids", "accoil_outbox"])
def test_a_driver_error_while_storing_is_a_storage_error_and_stores_nothing(
    database_url: str, clock: Clock, table: str
) -> None:
    batch = [{"type": "track", "userId": "u1", "event": "E", "messageId": f"m{i}"} for i in (2, 3)]
    # A message that makes a post claims its messageId on arrival: the ledger is written
    # in the call's own transaction.
    forward = [
        {"name": "Track Calls", "action": "track"},
        {"name": "Forward", "action": "post", "trigger": 'type = "track"'},
    ]
    with (
        _inserts_into(database_url, table) as refuse,
        Buffer(database_url, start=False, clock=clock, durability="sync", mappings=forward) as buf,
    ):
        refuse(True)
        with pytest.raises(StorageError, match="refused by a trigger"):
            buf.track("u1", "E", message_id="m1")  # one message: its own statements
        with pytest.raises(StorageError, match="refused by a trigger"):
            buf.ingest_many(batch)  # several: the ledger's RETURNING and executemany
        refuse(False)
        # Nothing of the failed transactions stayed, not even the messageIds they claimed.
        buf.track("u1", "E", message_id="m1")
        report = buf.ingest_many(batch)
        buf.flush()
    assert (report.stored, report.duplicates) == (2, 0)
    assert tables.counts(database_url) == {(TODAY, "u1", "track", "E"): 3}


def test_a_failed_write_logs_and_reports_no_ids_or_traits(
    database_url: str, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        _inserts_into(database_url, "accoil_outbox") as refuse,
        Buffer(database_url, start=False, clock=clock) as buf,
    ):
        refuse(True)
        buf.identify("user-4242", {"email": "ada@example.test"})
        with pytest.raises(StorageError, match="refused by a trigger") as raised:
            buf.flush(timeout=2)
        problem = str(buf.health().problem)
        refuse(False)
    shown = caplog.text + str(raised.value) + problem
    assert "refused by a trigger" in caplog.text + problem
    assert "user-4242" not in shown
    assert "ada@example.test" not in shown


def test_a_fold_that_cannot_claim_its_message_ids_folds_nothing_until_it_can(
    database_url: str, clock: Clock
) -> None:
    sent = {"type": "track", "userId": "u1", "event": "E", "messageId": "m1"}
    with (
        _inserts_into(database_url, "accoil_message_ids") as refuse,
        Buffer(database_url, start=False, clock=clock) as buf,
    ):
        buf.ingest_many([sent, {**sent, "messageId": "m2"}])
        buf.ingest_many([sent])
        refuse(True)
        with pytest.raises(StorageError, match="refused by a trigger"):
            buf.flush()
        assert tables.outbox_size(database_url) == 3
        assert tables.counts(database_url) == {}
        refuse(False)
        buf.flush()
    assert tables.counts(database_url) == {(TODAY, "u1", "track", "E"): 2}
    assert tables.drops(database_url) == {Reason.DUPLICATE_MESSAGE_ID: 1}


def test_postgres_connections_dropped_by_the_server_are_replaced(
    postgres_database: str, clock: Clock
) -> None:
    with Buffer(postgres_database, start=False, clock=clock) as buf:
        buf.track("u1", "E")
        admin = create_engine(postgres_database)
        with admin.begin() as conn:
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            )
        admin.dispose()
        buf.track("u1", "E")
    assert tables.counts(postgres_database) == {(TODAY, "u1", "track", "E"): 2}


@pytest.mark.parametrize("durability", ["sync", "group"])
def test_a_postgres_connection_lost_mid_write_loses_nothing(
    postgres_database: str, clock: Clock, durability: str
) -> None:
    # The server ends the session inside the outbox insert: the call (sync) or the writer's
    # commit (group) fails, and the next write gets a new connection.
    admin = create_engine(postgres_database)
    with admin.begin() as conn:
        conn.exec_driver_sql(
            "CREATE FUNCTION hang_up() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN PERFORM pg_terminate_backend(pg_backend_pid()); RETURN NEW; END $$"
        )
        conn.exec_driver_sql(
            "CREATE TRIGGER hang_up BEFORE INSERT ON accoil_outbox "
            "FOR EACH ROW EXECUTE FUNCTION hang_up()"
        )
    with Buffer(postgres_database, start=False, clock=clock, durability=durability) as buf:
        if durability == "sync":
            lost = r"server closed the connection|terminating connection"  # by libpq version
            with pytest.raises(StorageError, match=lost):
                buf.track("u1", "E", message_id="m1")
        else:
            buf.track("u1", "E", message_id="m1")
            with pytest.raises(StorageError, match="not committed"):
                buf.flush(timeout=1)
        with admin.begin() as conn:
            conn.exec_driver_sql("DROP TRIGGER hang_up ON accoil_outbox")
        if durability == "sync":
            buf.track("u1", "E", message_id="m1")  # its claim in the ledger was rolled back
        buf.flush()
    admin.dispose()
    assert tables.counts(postgres_database) == {(TODAY, "u1", "track", "E"): 1}


def test_traits_after_a_link_speak_for_the_user_across_folds(
    buffer: Buffer, database_url: str
) -> None:
    # Found by the property test: the outbox is empty after the first fold, and SQLite would
    # reuse row id 1 for the next message unless ids are AUTOINCREMENT.
    buffer.identify("u1", {"k3": None}, anonymous_id="a2")
    buffer.flush()
    buffer.identify(anonymous_id="a2", traits={"k1": None, "k3": {"nested": [1, "two"]}})
    buffer.flush()
    assert tables.users(database_url) == {"u1": {"k3": {"nested": [1, "two"]}, "k1": None}}


def test_a_fold_reads_only_the_anonymous_data_and_links_it_changes(
    database_url: str, clock: Clock
) -> None:
    # Anonymous data is kept for the TTL and links forever; a fold that read all of either
    # (to prune, or to move a newly linked id's data) slowed down as they grew: about 4 s for
    # a million anonymous counts. Every statement that reads them must go through an index.
    grown = "anonymous_counts|anonymous_traits|anonymous_memberships|identity_links"
    full_scan = re.compile(rf"(SCAN|Seq Scan on) accoil_({grown})\b")
    with Buffer(database_url, start=False, clock=clock, anonymous_ttl_days=30) as buf:
        buf.track(anonymous_id="idle", event="E")
        buf.identify(anonymous_id="idle", traits={"a": 1})
        buf.group(anonymous_id="idle", group_id="acc")
        buf.track(anonymous_id="a1", event="E")
        buf.identify(anonymous_id="a1", traits={"b": 2})
        buf.flush()
        clock.advance(days=31)
        buf.identify("u1", anonymous_id="a1")
        plans = tables.record_plans(buf._parts.database.engine, re.compile(rf"accoil_({grown})\b"))
        buf.flush()
    assert tables.users(database_url) == {"u1": {"b": 2}}
    assert tables.anonymous_traits(database_url) == {}
    assert tables.drops(database_url)["anonymous_ttl_profiles"] == 2
    assert len(plans) >= 6
    for statement, plan in plans:
        assert not full_scan.search(plan), (statement, plan)


def test_a_commit_across_midnight_counts_each_calls_drops_on_its_own_day(
    database_url: str,
) -> None:
    # The group writer may commit calls from both sides of midnight at once.
    before, after = (
        datetime(2026, 3, 1, 23, 59, 59, 900_000, UTC),
        datetime(2026, 3, 2, 0, 0, 0, 100_000, UTC),
    )
    off = {"type": "track", "userId": "u1", "event": "E", "integrations": {"All": False}}
    ahead = {"type": "track", "userId": "u1", "event": "E", "timestamp": "2026-03-09T00:00:00Z"}
    calls = [
        normalise(off, received_at=before),
        normalise(off, received_at=after),
        normalise(ahead, received_at=after),
    ]
    with Buffer(database_url, start=False) as buf:
        buf._parts.recorder._commit(calls)
    assert tables.drops_by_day(database_url) == {
        (date(2026, 3, 1), "filtered_integrations"): 1,
        (date(2026, 3, 2), "filtered_integrations"): 1,
        (date(2026, 3, 2), "future_timestamp_clamped"): 1,
    }
