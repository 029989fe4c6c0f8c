"""Reading the buffer's tables back in tests, as a person would with SQL."""

from __future__ import annotations

import re
from datetime import date
from typing import Any

from sqlalchemy import Engine, create_engine, event, func, select, union

from accoil_buffer.store import schema

Counts = dict[tuple[date, str, str, str], int]


def _rows(url: str, statement: Any) -> list[Any]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(statement))
    finally:
        engine.dispose()


def counts(url: str) -> Counts:
    t = schema.daily_counts
    return {(r.day, r.user_id, r.kind, r.name): r.count for r in _rows(url, select(t))}


def delivery_rows(url: str) -> list[Any]:
    """The daily count rows with their delivery accounting and claim columns."""
    return _rows(url, select(schema.daily_counts))


def anonymous_counts(url: str) -> dict[tuple[date, str, str, str], int]:
    t = schema.anonymous_counts
    return {(r.day, r.anonymous_id, r.kind, r.name): r.count for r in _rows(url, select(t))}


def users(url: str) -> dict[str, dict[str, Any]]:
    return {r.user_id: r.traits for r in _rows(url, select(schema.users))}


def user_versions(url: str) -> dict[str, int]:
    return {r.user_id: r.traits_version for r in _rows(url, select(schema.users))}


def accounts(url: str) -> dict[str, dict[str, Any]]:
    return {r.group_id: r.traits for r in _rows(url, select(schema.accounts))}


def memberships(url: str) -> set[tuple[str, str]]:
    return {(r.group_id, r.user_id) for r in _rows(url, select(schema.memberships))}


def anonymous_traits(url: str) -> dict[str, dict[str, Any]]:
    return {r.anonymous_id: r.traits for r in _rows(url, select(schema.anonymous_traits))}


def drops(url: str) -> dict[str, int]:
    t = schema.drops
    statement = select(t.c.reason, func.sum(t.c.count)).group_by(t.c.reason)
    return {reason: int(n) for reason, n in _rows(url, statement)}


def drops_by_day(url: str) -> dict[tuple[date, str], int]:
    t = schema.drops
    return {(day, reason): int(n) for day, reason, n in _rows(url, select(t))}


def outbox_payloads(url: str) -> list[Any]:
    o = schema.outbox
    return [row.payload for row in _rows(url, select(o.c.payload).order_by(o.c.id))]


def outbox_size(url: str) -> int:
    return int(_rows(url, select(func.count()).select_from(schema.outbox))[0][0])


def outbox_message_ids(url: str) -> list[str]:
    """The client messageIds of the rows waiting to be folded (and checked against the ledger)."""
    o = schema.outbox
    return [
        row.message_id
        for row in _rows(url, select(o.c.message_id).where(o.c.message_id.is_not(None)))
    ]


def message_ids_kept(url: str, wanted: list[str]) -> set[str]:
    """Which of ``wanted`` the buffer holds: in a row waiting to be folded, or in the ledger."""
    o, ledger = schema.outbox, schema.message_ids
    statement = union(
        select(o.c.message_id).where(o.c.message_id.in_(wanted)),
        select(ledger.c.message_id).where(ledger.c.message_id.in_(wanted)),
    )
    return {row.message_id for row in _rows(url, statement)}


def counted_and_waiting(url: str) -> int:
    """Occurrences in daily counts plus events waiting in the outbox, read in one statement (one
    snapshot: a killed client's last commit may still land on the server meanwhile)."""
    counted = select(func.coalesce(func.sum(schema.daily_counts.c.count), 0)).scalar_subquery()
    waiting = select(func.coalesce(func.sum(schema.outbox.c.occurrences), 0)).scalar_subquery()
    return int(_rows(url, select(counted + waiting))[0][0])


def table_count(url: str, table: Any) -> int:
    return int(_rows(url, select(func.count()).select_from(table))[0][0])


def anonymous_memberships(url: str) -> set[tuple[str, str]]:
    rows = _rows(url, select(schema.anonymous_memberships))
    return {(r.anonymous_id, r.group_id) for r in rows}


def wipe(url: str) -> None:
    """Empty every accoil_ table (the schema stays)."""
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            for table in reversed(schema.metadata.sorted_tables):
                conn.execute(table.delete())
    finally:
        engine.dispose()


def record_plans(engine: Engine, statements: re.Pattern[str]) -> list[tuple[str, str]]:
    """From now on, (statement, query plan) of every statement ``engine`` runs that matches
    ``statements``. On PostgreSQL every transaction turns sequential scans off: tables as
    small as a test's would be read whole whatever their indexes."""
    plans: list[tuple[str, str]] = []
    sqlite = engine.dialect.name == "sqlite"

    def explain(conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statements.search(statement):
            # A plain cursor of the same transaction: the statement's own may be a
            # server-side one, which cannot run EXPLAIN.
            cursor = conn.connection.cursor()
            cursor.execute(
                ("EXPLAIN QUERY PLAN " if sqlite else "EXPLAIN ") + statement, parameters
            )
            plans.append((statement, " ".join(str(row) for row in cursor.fetchall())))
            cursor.close()

    event.listen(engine, "before_cursor_execute", explain)
    if not sqlite:
        event.listen(
            engine, "begin", lambda conn: conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
        )
    return plans
