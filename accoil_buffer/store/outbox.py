"""Appending accepted messages to the outbox, idempotently by messageId, and the drop counters."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from functools import cache
from typing import Any

from sqlalchemy import Connection

from accoil_buffer.mappings import PRESETS, Mappings
from accoil_buffer.messages import Message
from accoil_buffer.store import schema
from accoil_buffer.store.engine import Database, dialect_insert

DUPLICATE_MESSAGE_ID = "duplicate_message_id"
FILTERED_INTEGRATIONS = "filtered_integrations"
REJECTED_INVALID = "rejected_invalid"


@dataclass(frozen=True)
class AppendResult:
    """What happened to a batch: stored in the outbox, already seen, or filtered out."""

    stored: int
    duplicates: int
    filtered: int


def append(
    database: Database,
    conn: Connection,
    messages: Sequence[Message],
    *,
    mappings: Mappings = PRESETS,
    keep_payloads: bool = False,
    rejected: int = 0,
    today: date | None = None,
) -> AppendResult:
    """Store ``messages`` once each, as the actions ``mappings`` make of them, and count
    ``rejected`` invalid ones of the same batch (received ``today``); runs inside the caller's
    transaction.

    A messageId is claimed in the ledger first (INSERT … ON CONFLICT DO NOTHING RETURNING), so two
    processes that receive the same message at once still store it once. Actions to fold go to
    the outbox; Post to Accoil messages to ``accoil_outbox_posts``. An outbox row keeps the whole
    message (properties, context) only with ``keep_payloads`` (audit retention): the fold never
    reads it, so by default it is never written to disk.
    """
    if rejected:
        if today is None:
            raise ValueError("counting rejected messages needs the day they were received")
        record_drops(database, conn, Counter({(today, REJECTED_INVALID): rejected}))
    if not messages:
        return AppendResult(0, 0, 0)
    first_by_id: dict[str, Message] = {}
    for message in messages:
        first_by_id.setdefault(message.message_id, message)
    unique = list(first_by_id.values())
    claimed = _claim_message_ids(database, conn, unique)
    fresh = [m for m in unique if m.message_id in claimed]
    deliverable = [m for m in fresh if m.deliverable]
    routed = mappings.route(deliverable)
    if routed.rows:
        to_row = _outbox_row_with_payload if keep_payloads else _outbox_row
        _execute_in_slices(conn, _OUTBOX_INSERT, routed.rows, to_row)
    if routed.posts:
        _execute_in_slices(conn, _POSTS_INSERT, routed.posts, _post_row)
    today = messages[0].received_at.date()
    counts = Counter({(today, reason): n for reason, n in routed.counts.items()})
    duplicates = len(messages) - len(fresh)
    filtered = len(fresh) - len(deliverable)
    counts[today, DUPLICATE_MESSAGE_ID] += duplicates
    counts[today, FILTERED_INTEGRATIONS] += filtered
    for message in deliverable:
        for note in message.notes:
            counts[today, note] += 1
    record_drops(database, conn, counts)
    return AppendResult(stored=len(deliverable), duplicates=duplicates, filtered=filtered)


def record_drops(database: Database, conn: Connection, counts: Counter[tuple[date, str]]) -> None:
    """Add to the per-day, per-reason counters in ``accoil_drops``."""
    rows = [{"day": day, "reason": reason, "count": n} for (day, reason), n in counts.items() if n]
    if not rows:
        return
    table = schema.drops
    stmt = database.insert(table)
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[table.c.day, table.c.reason],
            set_={"count": table.c.count + stmt.excluded["count"]},
        ),
        sorted(rows, key=lambda r: (r["day"], r["reason"])),  # a fixed lock order
    )


@cache
def _ledger_insert(postgresql: bool) -> Any:
    """``INSERT … ON CONFLICT DO NOTHING RETURNING message_id``, built once per dialect: it runs
    for every call recorded."""
    table = schema.message_ids
    stmt = dialect_insert(table, postgresql=postgresql)
    return stmt.on_conflict_do_nothing(index_elements=[table.c.message_id]).returning(
        table.c.message_id
    )


_OUTBOX_INSERT = schema.outbox.insert()
_POSTS_INSERT = schema.posts.insert()
_SLICE = 1000  # rows bound per statement


def _execute_in_slices(
    conn: Connection,
    stmt: Any,
    messages: Sequence[Message],
    to_row: Callable[[Message], dict[str, object]],
) -> list[Any]:
    """Execute ``stmt`` for the messages 1,000 rows at a time, within the caller's transaction
    (a 10,000-message batch bound at once held about 30 MB of parameters), and return what its
    RETURNING clause gave. One row goes as a plain statement rather than through executemany."""
    returned: list[Any] = []
    for start in range(0, len(messages), _SLICE):
        rows = [to_row(m) for m in messages[start : start + _SLICE]]
        result = conn.execute(stmt, rows[0] if len(rows) == 1 else rows)
        if result.returns_rows:
            returned.extend(result.scalars())
    return returned


def _claim_message_ids(
    database: Database, conn: Connection, messages: Sequence[Message]
) -> set[str]:
    stmt = _ledger_insert(database.is_postgresql)
    return set(_execute_in_slices(conn, stmt, messages, _ledger_row))


def _ledger_row(message: Message) -> dict[str, object]:
    return {"message_id": message.message_id, "received_at": message.received_at}


def _outbox_row(message: Message) -> dict[str, object]:
    """The row of an action; its payload is JSON null (the column's SQL NULL is not allowed)."""
    return {
        "message_id": message.message_id,
        "type": message.type,
        "user_id": message.user_id,
        "anonymous_id": message.anonymous_id,
        "group_id": message.group_id,
        "previous_id": message.previous_id,
        "name": message.name,
        "day": message.day,
        "timestamp": message.timestamp,
        "received_at": message.received_at,
        "traits": message.traits,
        "payload": None,
    }


def _outbox_row_with_payload(message: Message) -> dict[str, object]:
    return {**_outbox_row(message), "payload": message.payload}


def _post_row(message: Message) -> dict[str, object]:
    return {
        "message_id": message.message_id,
        "type": message.payload["type"],
        "payload": message.payload,
        "received_at": message.received_at,
    }
