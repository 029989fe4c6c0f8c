"""Appending accepted messages to the outbox, idempotently by messageId, and the drop counters."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import date, datetime
from typing import NamedTuple

from sqlalchemy import Connection, delete

from accoil_buffer.messages import Message
from accoil_buffer.store import schema
from accoil_buffer.store.dialects import Dialect
from accoil_buffer.store.direct import DirectInsert, Executor
from accoil_buffer.store.engine import Database


def claim(database: Database, conn: Executor, messages: Sequence[Message]) -> list[Message]:
    """The messages seen for the first time: the first of each messageId in the batch, claimed
    in the ledger inside the caller's transaction.

    The claim is an INSERT … ON CONFLICT DO NOTHING whose RETURNING (or, for a single message,
    its row count) names the new ids, so two processes that receive the same message at once
    still store it once. A messageId the buffer generated cannot have been seen: it is not
    claimed, which spares most calls the ledger's indexed insert.
    """
    if all(m.generated_id for m in messages):
        return list(messages)
    first_by_id: dict[str, Message] = {}
    for message in messages:
        first_by_id.setdefault(message.message_id, message)
    unique = list(first_by_id.values())
    given = [m for m in unique if not m.generated_id]
    claimed = _claim_message_ids(database, conn, given)
    return [m for m in unique if m.generated_id or m.message_id in claimed]


def append(
    database: Database,
    conn: Executor,
    rows: Sequence[Message],
    posts: Sequence[Message] = (),
    *,
    keep_payloads: bool = False,
) -> None:
    """Insert actions already routed by the mappings, inside the caller's transaction: ``rows``
    to fold go to the outbox, ``posts`` (Post to Accoil) to ``accoil_outbox_posts``.

    An outbox row keeps the whole message (properties, context) only with ``keep_payloads``
    (audit retention): the fold never reads it, so by default it is never written to disk.
    """
    inserts = _inserts(database)
    if rows:
        inserts.outbox.run(conn, [_outbox_row(m, keep_payload=keep_payloads) for m in rows])
    if posts:
        inserts.posts.run(conn, [_post_row(m) for m in posts])


_PROBE_BYTES = 16_384


def probe_write(conn: Connection, now: datetime) -> None:
    """Insert a row of a few pages and delete it in the caller's transaction: a write that
    needs room as a batch of messages would (more than a page or two that a file keeps free),
    and leaves nothing behind (health checks)."""
    o = schema.outbox
    probe_id = conn.execute(
        o.insert()
        .values(
            message_id="health-probe",
            type="track",
            name="",
            timestamp=now,
            received_at=now,
            payload={"probe": "." * _PROBE_BYTES},
        )
        .returning(o.c.id)
    ).scalar_one()
    conn.execute(delete(o).where(o.c.id == probe_id))


def record_drops(database: Database, conn: Executor, counts: Counter[tuple[date, str]]) -> None:
    """Add to the per-day, per-reason counters in ``accoil_drops``."""
    rows = sorted((day, reason, n) for (day, reason), n in counts.items() if n)  # lock order
    if rows:
        _inserts(database).drops.run(conn, rows)


_OUTBOX_COLUMNS = (
    "message_id",
    "type",
    "user_id",
    "anonymous_id",
    "group_id",
    "previous_id",
    "name",
    "timestamp",
    "received_at",
    "traits",
    "payload",
)


class _Inserts(NamedTuple):
    ledger: DirectInsert
    outbox: DirectInsert
    posts: DirectInsert
    drops: DirectInsert


_INSERTS: dict[type[Dialect], _Inserts] = {}


def _inserts(database: Database) -> _Inserts:
    """The ledger's claim, the outbox's, the posts' and the drop counters' inserts, built once
    per kind of database."""
    dialect = database.dialect
    kind = type(dialect)
    if kind not in _INSERTS:
        _INSERTS[kind] = _Inserts(
            ledger=DirectInsert(
                dialect,
                schema.message_ids,
                ("message_id", "received_at"),
                on_conflict=dialect.insert_or_ignore(("message_id",)),
                returning=" RETURNING message_id",
            ),
            outbox=DirectInsert(dialect, schema.outbox, _OUTBOX_COLUMNS),
            posts=DirectInsert(
                dialect, schema.posts, ("message_id", "type", "payload", "received_at")
            ),
            drops=DirectInsert(
                dialect,
                schema.drops,
                ("day", "reason", "count"),
                on_conflict=dialect.upsert(schema.drops, ("day", "reason"), add=("count",)),
            ),
        )
    return _INSERTS[kind]


def _claim_message_ids(database: Database, conn: Executor, messages: Sequence[Message]) -> set[str]:
    ledger = _inserts(database).ledger
    if len(messages) == 1:  # a call in sync mode, or inside the app's own transaction
        (message,) = messages
        claimed = ledger.run_one(conn, (message.message_id, message.received_at))
        return {message.message_id} if claimed else set()
    return set(ledger.run(conn, [(m.message_id, m.received_at) for m in messages]))


def _outbox_row(message: Message, *, keep_payload: bool) -> tuple[object, ...]:
    """The row of an action. A messageId the buffer generated is not kept (nothing reads
    it), nor, without ``keep_payload``, the payload: both are NULL, which takes no room."""
    return (
        None if message.generated_id else message.message_id,
        message.type,
        message.user_id,
        message.anonymous_id,
        message.group_id,
        message.previous_id,
        message.name,
        message.timestamp,
        message.received_at,
        message.traits,
        message.payload if keep_payload else None,
    )


def _post_row(message: Message) -> tuple[object, ...]:
    return (message.message_id, message.payload["type"], message.payload, message.received_at)
