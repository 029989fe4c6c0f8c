"""What each database's dialect spells and decides: clauses, locks, measures."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import pytest
from sqlalchemy import inspect, select

from accoil_buffer import Config
from accoil_buffer.store import schema
from accoil_buffer.store.dialects import PostgresDialect, SQLiteDialect, dialect_for
from accoil_buffer.store.direct import DirectInsert
from accoil_buffer.store.engine import Database
from tests.contract import NOW, TODAY, append, fold, message, opened

WAIT = 0.3  # seconds a blocked transaction is given to show it is blocked


def test_the_dialect_is_chosen_from_the_engine(database_url: str, tmp_path: Path) -> None:
    with opened(database_url) as database:
        expected = SQLiteDialect if database_url.startswith("sqlite") else PostgresDialect
        assert type(database.dialect) is expected
        with database.engine.connect() as conn:
            assert type(dialect_for(conn)) is expected
            marker = database.dialect.placeholder
            assert conn.exec_driver_sql(f"SELECT {marker}", (7,)).scalar_one() == 7
        assert database.fold_batch_size == expected.fold_batch_size > 0
        file = tmp_path / "buffer.db" if expected is SQLiteDialect else None
        assert database.sqlite_path == file


def test_insert_or_ignore_skips_rows_whose_keys_exist(database_url: str) -> None:
    with opened(database_url) as database:
        dialect = database.dialect
        ledger = DirectInsert(
            dialect,
            schema.message_ids,
            ("message_id", "received_at"),
            on_conflict=dialect.insert_or_ignore(("message_id",)),
        )
        with database.write() as conn:
            assert ledger.run_one(conn, ("m1", NOW))
            assert not ledger.run_one(conn, ("m1", NOW))
            ledger.run(conn, [("m1", NOW), ("m2", NOW)])
        with database.engine.connect() as conn:
            t = schema.message_ids
            assert conn.execute(select(t.c.message_id).order_by(t.c.message_id)).all() == [
                ("m1",),
                ("m2",),
            ]


def test_an_upsert_replaces_bumps_and_keeps(database_url: str) -> None:
    u = schema.users
    names = (
        "user_id",
        "traits",
        "traits_version",
        "last_timestamp",
        "first_seen_at",
        "updated_at",
        "pending_since",
    )
    later = NOW.replace(hour=13)
    with opened(database_url) as database:
        dialect = database.dialect
        upsert = DirectInsert(
            dialect,
            u,
            names,
            on_conflict=dialect.upsert(
                u,
                ("user_id",),
                replace=("traits", "updated_at"),
                bump=("traits_version",),
                keep=("pending_since",),
            ),
        )
        with database.write() as conn:
            upsert.run(conn, [("u1", {"a": 1}, 1, NOW, NOW, NOW, NOW)])
            upsert.run(conn, [("u1", {"b": 2}, 1, later, later, later, later)])
        with database.engine.connect() as conn:
            row = conn.execute(select(u)).one()
    assert row.traits == {"b": 2}
    assert row.traits_version == 2
    assert row.updated_at == later
    assert row.pending_since == NOW
    assert (row.first_seen_at, row.last_timestamp) == (NOW, NOW)  # not named: left alone


def test_nulls_are_stored_as_null_and_in_order_however_they_are_sent(database_url: str) -> None:
    """Where the driver binds NULL slowly (SQLite), a column NULL in every row of a statement
    is written into it; what is stored, and in which order, must not change."""
    o = schema.outbox
    names = ("message_id", "type", "user_id", "anonymous_id", "group_id", "name", "timestamp")
    first = (None, "track", "u1", None, None, "E", NOW)
    rows = [
        first,
        ("m2", "identify", "u2", None, None, "", NOW),
        (None, "track", None, "a3", None, "E", NOW),
    ]
    with opened(database_url) as database:
        insert = DirectInsert(database.dialect, o, (*names, "received_at"))
        with database.write() as conn:
            insert.run(conn, [(*row, NOW) for row in rows])  # group_id NULL in every row
            insert.run(conn, [(*first, NOW)] * 2)  # and message_id and anonymous_id
            assert insert.run_one(conn, (*rows[2], NOW))
        with database.engine.connect() as conn:
            stored = conn.execute(select(*(o.c[n] for n in names)).order_by(o.c.id)).all()
    assert [tuple(row) for row in stored] == [*rows, first, first, rows[2]]


def test_drop_counters_add_through_the_dialects_upsert(database_url: str) -> None:
    d = schema.drops
    with opened(database_url) as database:
        dialect = database.dialect
        counters = DirectInsert(
            dialect,
            d,
            ("day", "reason", "count"),
            on_conflict=dialect.upsert(d, ("day", "reason"), add=("count",)),
        )
        with database.write() as conn:
            counters.run(conn, [(TODAY, "r", 2)])
            counters.run_one(conn, (TODAY, "r", 3))
        with database.engine.connect() as conn:
            assert conn.execute(select(d.c.count)).scalar_one() == 5


def test_claims_skip_locked_rows_only_where_rows_are_locked(database_url: str) -> None:
    with opened(database_url) as database:
        query = database.dialect.skip_locked(select(schema.users.c.user_id))
        sql = str(query.compile(database.engine))
    if database_url.startswith("sqlite"):
        assert "FOR UPDATE" not in sql  # BEGIN IMMEDIATE: one claimer at a time
    else:
        assert sql.endswith("FOR UPDATE SKIP LOCKED")


def test_bytes_in_use_follow_the_data_on_sqlite_and_are_refused_on_postgresql(
    database_url: str,
) -> None:
    with opened(database_url) as database:
        if database.sqlite_path is None:
            with pytest.raises(NotImplementedError):
                database.bytes_in_use()
            return
        empty = database.bytes_in_use()
        traits = {"blob": "x" * 2000}
        append(
            database, [message(type="identify", userId=f"u{i}", traits=traits) for i in range(200)]
        )
        full = database.bytes_in_use()
        with database.write() as conn:
            conn.execute(schema.outbox.delete())
        emptied = database.bytes_in_use()
    assert full >= empty + 200 * 2000
    assert emptied < full  # freed pages are not in use


def _blocks(hold: AbstractContextManager[object], wait: Callable[[], object]) -> None:
    """Assert that ``wait`` (in a thread) blocks while ``hold`` is entered, and proceeds once
    it is left."""
    done = threading.Event()

    def waiter() -> None:
        wait()
        done.set()

    with hold:
        thread = threading.Thread(target=waiter)
        thread.start()
        assert not done.wait(WAIT)
    assert done.wait(30)
    thread.join()


@contextmanager
def _migrating(database: Database) -> Iterator[None]:
    """A transaction holding the migration lock, as ``migrate.upgrade`` takes it."""
    with database.engine.begin() as conn:
        database.dialect.lock_for_migration(conn)
        yield


def test_a_migration_waits_for_the_one_under_way(database_url: str) -> None:
    with opened(database_url) as database:

        def migrate() -> None:
            with _migrating(database):
                pass

        _blocks(_migrating(database), migrate)


def test_a_fold_waits_for_the_delivery_writes_under_way(database_url: str) -> None:
    with opened(database_url) as database:
        _blocks(database.write_between_folds(), lambda: database.run_fold(lambda _: None))


def test_comments_are_migrated_where_the_database_keeps_them(database_url: str) -> None:
    with opened(database_url) as database:
        keeps = database.dialect.keeps_comments
        columns = inspect(database.engine).get_columns(schema.outbox.name)
    payload = next(c for c in columns if c["name"] == "payload")
    assert payload.get("comment") == (schema.outbox.c.payload.comment if keeps else None)


def test_a_sqlite_file_gives_back_the_space_a_fold_freed(tmp_path: Path) -> None:
    path = tmp_path / "backlog.db"
    with opened(f"sqlite:///{path}") as database:
        _append_a_backlog(database)
        assert not database.give_back_space()  # nothing freed yet
        waiting = path.stat().st_size
        assert fold(database).folded == 150_000
        assert database.give_back_space()
        assert not database.give_back_space()  # once is enough
        with database.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA freelist_count").scalar_one() == 0
    assert path.stat().st_size < waiting / 10


def test_a_file_busy_past_the_timeout_keeps_its_pages_without_an_error(tmp_path: Path) -> None:
    path = tmp_path / "busy.db"
    with opened(f"sqlite:///{path}") as database:
        _append_a_backlog(database)
        fold(database)
    busy = Database.open(Config(database_url=f"sqlite:///{path}", sqlite_busy_timeout_seconds=0.1))
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # another writer holds the file
        assert not busy.give_back_space()
        other.execute("ROLLBACK")
        assert busy.give_back_space()  # the next pass
    finally:
        other.close()
        busy.dispose()


def test_a_little_freed_space_is_kept_for_new_rows(database_url: str) -> None:
    with opened(database_url) as database:
        append(database, [message(type="track", userId="u1", event="E")])
        fold(database)
        # SQLite gives back only a lot of free pages; PostgreSQL's autovacuum reuses them.
        assert not database.give_back_space()


def _append_a_backlog(database: Database) -> None:
    """150,000 tracks, a row each (kept whole, as for audit, none shares a row): folded,
    they free more pages than a file keeps for reuse."""
    for start in range(0, 150_000, 10_000):
        batch = [
            message(type="track", userId=f"u{i % 100}", event="E")
            for i in range(start, start + 10_000)
        ]
        append(database, batch, keep_payloads=True)
