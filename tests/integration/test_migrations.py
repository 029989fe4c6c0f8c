"""Alembic migrations: from empty to head on both databases, equal to the models."""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Column, Integer, MetaData, Table, create_engine, inspect, text
from sqlalchemy.exc import IntegrityError

from accoil_buffer import Buffer, Config, SchemaError
from accoil_buffer.reasons import Reason
from accoil_buffer.store.engine import Database
from accoil_buffer.store.migrate import (
    VERSION_TABLE,
    _alembic_config,
    current_revision,
    head_revision,
    include_name,
    upgrade,
)
from accoil_buffer.store.schema import metadata
from tests.support import tables


def _app_table(url: str) -> None:
    """An application's own table, which the buffer must leave alone."""
    engine = create_engine(url)
    app = MetaData()
    Table("orders", app, Column("id", Integer, primary_key=True))
    app.create_all(engine)
    engine.dispose()


def test_upgrade_from_empty_matches_the_models(empty_database_url: str) -> None:
    _app_table(empty_database_url)
    database = Database.open(Config(database_url=empty_database_url))
    upgrade(database)
    with database.engine.connect() as conn:
        assert current_revision(conn) == head_revision()
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "include_name": include_name}
        )
        assert compare_metadata(context, metadata) == []
        names = set(inspect(conn).get_table_names())
    database.dispose()
    assert {t.name for t in metadata.sorted_tables} | {VERSION_TABLE, "orders"} == names


def test_upgrade_is_idempotent_and_safe_to_run_concurrently(empty_database_url: str) -> None:
    database = Database.open(Config(database_url=empty_database_url))
    errors: list[BaseException] = []

    def migrate() -> None:
        try:
            upgrade(database)
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=migrate) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    upgrade(database)
    with database.engine.connect() as conn:
        assert current_revision(conn) == head_revision()
    database.dispose()
    assert errors == []


def test_a_schema_behind_head_is_refused_when_auto_migrate_is_off(empty_database_url: str) -> None:
    with pytest.raises(SchemaError) as info:
        Buffer(empty_database_url, start=False, auto_migrate=False)
    assert "accoil-buffer migrate" in str(info.value)
    with Buffer(empty_database_url, start=False) as buf:  # auto_migrate defaults to true
        buf.track("u1", "E")


def test_a_schema_from_a_newer_version_is_refused(empty_database_url: str) -> None:
    database = Database.open(Config(database_url=empty_database_url))
    upgrade(database)
    with database.engine.begin() as conn:
        conn.execute(text(f"UPDATE {VERSION_TABLE} SET version_num = 'fffffffff'"))
    database.dispose()
    with pytest.raises(SchemaError, match="newer version"):
        Buffer(empty_database_url, start=False)


def test_the_outbox_copied_by_0009_keeps_its_rows_and_never_reuses_an_id(
    empty_database_url: str,
) -> None:
    database = Database.open(Config(database_url=empty_database_url))
    upgrade(database, "0008")
    insert = text(
        "INSERT INTO accoil_outbox (message_id, type, user_id, name, day, timestamp, "
        "received_at, payload) VALUES (:m, 'track', 'u1', 'E', '2026-12-05', "
        "'2026-12-05 10:00:00', '2026-12-05 10:00:00', 'null')"
    )
    with database.engine.begin() as conn:
        for n in range(3):
            conn.execute(insert, {"m": f"m{n}"})
        # Folded, but for m1: the copy's highest id (2) is not the highest handed out (3).
        conn.execute(text("DELETE FROM accoil_outbox WHERE message_id <> 'm1'"))
    upgrade(database, "0009")
    with database.engine.begin() as conn:
        conn.execute(  # no day (derived from timestamp), and no id the buffer generated
            text(
                "INSERT INTO accoil_outbox (type, user_id, name, timestamp, received_at) "
                "VALUES ('track', 'u1', 'E', '2026-12-05 10:00:00', '2026-12-05 10:00:00')"
            )
        )
        rows = conn.execute(text("SELECT id, message_id FROM accoil_outbox ORDER BY id")).all()
    database.dispose()
    assert [tuple(row) for row in rows] == [(2, "m1"), (4, None)]


def test_rows_waiting_at_0010_are_folded_once_and_their_copies_dropped(
    empty_database_url: str,
) -> None:
    database = Database.open(Config(database_url=empty_database_url))
    upgrade(database, "0009")
    with database.engine.begin() as conn:  # a row and its claim, as ingest wrote them before
        conn.execute(
            text(
                "INSERT INTO accoil_outbox (message_id, type, user_id, name, timestamp, "
                "received_at) VALUES ('m1', 'track', 'u1', 'E', '2026-12-05 10:00:00', "
                "'2026-12-05 10:00:00')"
            )
        )
        conn.execute(
            text(
                "INSERT INTO accoil_message_ids (message_id, received_at) "
                "VALUES ('m1', '2026-12-05 10:00:00')"
            )
        )
    upgrade(database)
    database.dispose()
    with Buffer(empty_database_url, start=False) as buf:
        buf.track("u1", "E", message_id="m1", timestamp=datetime(2026, 12, 5, 10, tzinfo=UTC))
        buf.flush()
    assert tables.counts(empty_database_url) == {(date(2026, 12, 5), "u1", "track", "E"): 1}
    assert tables.drops(empty_database_url) == {Reason.DUPLICATE_MESSAGE_ID: 1}


def _downgrade(database: Database, revision: str) -> None:
    with database.engine.begin() as conn:
        command.downgrade(_alembic_config(conn), revision)


def _run(database: Database, *statements: str) -> None:
    """Rows written as an older version would have, in one transaction."""
    with database.engine.begin() as conn:
        for statement in statements:
            conn.execute(text(statement))


def test_0011_counts_rows_written_before_once_and_refuses_to_lose_shared_ones(
    empty_database_url: str,
) -> None:
    database = Database.open(Config(database_url=empty_database_url))
    upgrade(database, "0010")
    _run(
        database,
        "INSERT INTO accoil_outbox (type, user_id, name, timestamp, received_at) "
        "VALUES ('track', 'u1', 'E', '2026-12-05 10:00:00', '2026-12-05 10:00:00')",
    )
    upgrade(database)
    track = {"type": "track", "userId": "u1", "event": "E", "timestamp": "2026-12-05T11:00:00Z"}
    with Buffer(empty_database_url, start=False) as buf:
        buf.ingest_many([track, track])  # one batch: one row that stands for both
        with pytest.raises(RuntimeError, match="1 outbox rows wait to be folded"):
            _downgrade(database, "0010")
        buf.flush()
        _downgrade(database, "0010")
    database.dispose()
    assert tables.counts(empty_database_url) == {(date(2026, 12, 5), "u1", "track", "E"): 3}


def test_downgrades_refuse_to_drop_posts_waiting_or_dead_letters_kept(
    empty_database_url: str,
) -> None:
    database = Database.open(Config(database_url=empty_database_url))
    upgrade(database, "0003")
    _run(
        database,
        "INSERT INTO accoil_outbox_posts (message_id, type, payload, received_at) "
        "VALUES ('p1', 'track', '{}', '2026-12-05 10:00:00')",
        "INSERT INTO accoil_dead_letters (message_id, type, payload, status, created_at) "
        "VALUES ('d1', 'track', '{}', 400, '2026-12-05 10:00:00')",
    )
    with pytest.raises(RuntimeError, match="1 posts wait to be sent"):
        _downgrade(database, "0002")
    _run(database, "DELETE FROM accoil_outbox_posts")
    _downgrade(database, "0002")
    with pytest.raises(RuntimeError, match="1 dead letters are kept"):
        _downgrade(database, "0001")
    _run(database, "UPDATE accoil_dead_letters SET replayed_at = created_at")
    _downgrade(database, "0001")
    with database.engine.connect() as conn:
        assert current_revision(conn) == "0001"
    database.dispose()


def test_0012_keeps_the_counts_and_its_downgrade_puts_the_kind_check_back(
    empty_database_url: str,
) -> None:
    database = Database.open(Config(database_url=empty_database_url))
    upgrade(database, "0011")
    count = (
        "INSERT INTO accoil_daily_counts (day, user_id, kind, name, count, updated_at) "
        "VALUES ('2026-12-05', 'u1', '{kind}', 'E', 3, '2026-12-05 10:00:00')"
    )
    anonymous = (
        "INSERT INTO accoil_anonymous_counts (day, anonymous_id, kind, name, count, "
        "last_seen_at) VALUES ('2026-12-05', 'a1', '{kind}', 'E', 2, '2026-12-05 10:00:00')"
    )
    with database.engine.begin() as conn:
        conn.execute(text(count.format(kind="track")))
        conn.execute(text(anonymous.format(kind="page")))
    upgrade(database)
    with database.engine.connect() as conn:  # no check left: written and rolled back
        for statement in (count, anonymous):
            conn.execute(text(statement.format(kind="identify")))
        conn.rollback()
    expected = (
        {(date(2026, 12, 5), "u1", "track", "E"): 3},
        {(date(2026, 12, 5), "a1", "page", "E"): 2},
    )
    assert (
        tables.counts(empty_database_url),
        tables.anonymous_counts(empty_database_url),
    ) == expected
    _downgrade(database, "0011")
    assert (
        tables.counts(empty_database_url),
        tables.anonymous_counts(empty_database_url),
    ) == expected
    for statement in (count, anonymous):
        with pytest.raises(IntegrityError), database.engine.begin() as conn:
            conn.execute(text(statement.format(kind="identify")))
    database.dispose()
