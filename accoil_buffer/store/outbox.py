"""Appending accepted messages to the outbox, the ledger claims made on arrival, and the drop
counters.

A client messageId is checked against the ledger (``accoil_message_ids``) when its row is
folded (``rollup``), in one sorted insert per chunk: claiming each id on arrival cost an
indexed insert at a random place in the ledger per message, most of a sidecar request's
write. Only what the fold cannot check is claimed here.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable, Sequence
from datetime import date, datetime
from typing import NamedTuple

from sqlalchemy import Connection, delete

from accoil_buffer.messages import EVENT_KINDS, Message
from accoil_buffer.store import schema
from accoil_buffer.store.dialects import Dialect
from accoil_buffer.store.direct import DirectInsert, Executor
from accoil_buffer.store.engine import Database


def first_of_each(messages: Sequence[Message]) -> list[Message]:
    """The first message of each messageId in the batch; the rest are duplicates."""
    if all(m.generated_id for m in messages):
        return list(messages)
    first_by_id: dict[str, Message] = {}
    for message in messages:
        first_by_id.setdefault(message.message_id, message)
    return list(first_by_id.values())


def claim_now(database: Database, conn: Executor, messages: Sequence[Message]) -> set[str]:
    """Claim the messageIds of ``messages`` in the ledger inside the caller's transaction;
    returns the ids seen before.

    Only a message that the fold cannot check is claimed on arrival: one that makes a post
    or several outbox rows. The claim is an INSERT … ON CONFLICT DO NOTHING whose RETURNING
    (or, for a single message, its row count) names the new ids, so two processes that
    receive the same message at once still store it once.
    """
    given = [m for m in messages if not m.generated_id]
    if not given:
        return set()
    ledger = _inserts(database).ledger
    if len(given) == 1:  # a call in sync mode, or inside the app's own transaction
        (message,) = given
        claimed = ledger.run_one(conn, (message.message_id, message.received_at))
        return set() if claimed else {message.message_id}
    new = set(ledger.run(conn, [(m.message_id, m.received_at) for m in given]))
    return {m.message_id for m in given} - new


def checked_on_arrival(rows: Sequence[Message], posts: Sequence[Message]) -> set[str]:
    """The client messageIds the fold cannot check: those of a post (sent without a fold)
    or of more than one row (the fold tells one arrival from another by row)."""
    ids = {p.message_id for p in posts if not p.generated_id}
    seen: set[str] = set()
    for row in rows:
        if not row.generated_id:
            (ids if row.message_id in seen else seen).add(row.message_id)
    return ids


def append(
    database: Database,
    conn: Executor,
    rows: Sequence[Message],
    posts: Sequence[Message] = (),
    *,
    keep_payloads: bool = False,
    checked: Collection[str] = (),
) -> None:
    """Insert actions already routed by the mappings, inside the caller's transaction: ``rows``
    to fold go to the outbox, ``posts`` (Post to Accoil) to ``accoil_outbox_posts``.

    A row keeps its client messageId for the fold to check against the ledger, unless it
    was ``checked`` on arrival. It keeps the whole message (properties, context) only with
    ``keep_payloads`` (audit retention): the fold never reads it, so by default it is never
    written to disk. Events that differ in nothing the fold reads share a row (``_merged``).
    """
    inserts = _inserts(database)
    if rows:
        inserts.outbox.run(
            conn,
            [_outbox_row(g, keep_payloads, checked) for g in _merged(rows, keep_payloads, checked)],
        )
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
    "occurrences",
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


def _merged(
    rows: Sequence[Message], keep_payloads: bool, checked: Collection[str]
) -> Iterable[list[Message]]:
    """The batch's rows in order, each a list of the events it stands for: track, page and
    screen events with the same kind, name, ids and UTC day, and no messageId left for the
    fold to check, are one row (the fold counts, and reads nothing else of an event). A row
    whose payload is kept for audit stands for its own message."""
    if keep_payloads:
        return ([m] for m in rows)
    groups: dict[object, list[Message]] = {}
    for n, m in enumerate(rows):
        key: object = n
        if m.type in EVENT_KINDS and (m.generated_id or m.message_id in checked):
            key = (m.type, m.name, m.user_id, m.anonymous_id, m.group_id, m.day)
        if (group := groups.get(key)) is None:
            groups[key] = [m]
        else:
            group.append(m)
    return groups.values()


def _outbox_row(
    group: list[Message], keep_payload: bool, checked: Collection[str]
) -> tuple[object, ...]:
    """The row of an action, or of several events (``_merged``), with the latest one's
    times. A messageId the buffer generated, or one already checked, is not kept (nothing
    reads it), nor, without ``keep_payload``, the payload: both are NULL, which takes no
    room."""
    message = group[0]
    timestamp, received_at = message.timestamp, message.received_at
    if len(group) > 1:
        timestamp = max(m.timestamp for m in group)
        received_at = max(m.received_at for m in group)
    unchecked = not message.generated_id and message.message_id not in checked
    return (
        message.message_id if unchecked else None,
        message.type,
        message.user_id,
        message.anonymous_id,
        message.group_id,
        message.previous_id,
        message.name,
        timestamp,
        received_at,
        message.traits,
        message.payload if keep_payload else None,
        len(group),
    )


def _post_row(message: Message) -> tuple[object, ...]:
    return (message.message_id, message.payload["type"], message.payload, message.received_at)
