"""Claiming what is pending delivery, and recording what Accoil acknowledged.

A flusher claims rows by writing its name and a lease expiry into them (one statement:
``UPDATE … WHERE key IN (SELECT … LIMIT n [FOR UPDATE SKIP LOCKED]) RETURNING …``), so N
flushers share the work and a crashed one's rows come free when its lease lapses. Progress
is written only for rows the writer still holds, in the transaction that records it.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Column,
    ColumnElement,
    Connection,
    Executable,
    Table,
    bindparam,
    case,
    delete,
    func,
    or_,
    select,
    true,
    tuple_,
    update,
)

from accoil_buffer.store import schema
from accoil_buffer.store.engine import Database

_STATE_ID = 1
_RELEASED = {"claimed_by": None, "claimed_until": None}


@dataclass(frozen=True)
class Claimed:
    """One claimed row: its key columns, and what the message about it needs."""

    key: tuple[Any, ...]
    values: dict[str, Any]


@dataclass(frozen=True)
class Progress:
    """What Accoil acknowledged of one claimed row: ``version`` (users, accounts) is the
    traits version it now has; a count row's ``watermark`` is the occurrence up to which
    it has them all, ``beyond`` those it has above, and ``done`` releases the claim."""

    key: tuple[Any, ...]
    version: int = 0
    watermark: int = 0
    beyond: list[int] | None = None
    done: bool = True

    def parameters(self, holder: str, now: datetime) -> dict[str, Any]:
        """The parameters of every kind's record statement (each takes the ones it needs)."""
        keys = {f"k{i}": value for i, value in enumerate(self.key)}
        return {
            **keys,
            "v": self.version,
            "to": self.watermark,
            "beyond": self.beyond,
            "done": self.done,
            "now": now,
            "holder": holder,
        }


@dataclass(frozen=True)
class Kind:
    """One kind of row that delivery sends, described once: its table, which of its rows
    wait for Accoil and in the order claims take them, since when a waiting row waits, and
    the statement that records Accoil's acknowledgement of one (from ``Progress``)."""

    name: str
    table: Table
    waiting: schema.Waiting
    since: Column[Any]
    record: Executable


def _held(table: Table) -> list[ColumnElement[bool]]:
    """A row by its key (bound as k0, k1, …), as long as this holder still claims it."""
    columns = table.primary_key.columns
    return [c == bindparam(f"k{i}") for i, c in enumerate(columns)] + [
        table.c.claimed_by == bindparam("holder")
    ]


def _versioned(table: Table) -> Kind:
    version: Any = bindparam("v")
    record = (
        update(table)
        .where(*_held(table), table.c.delivered_version < version)
        .values(
            delivered_version=version,
            pending_since=case((table.c.traits_version > version, table.c.updated_at), else_=None),
            **_RELEASED,
        )
    )
    name = table.name.removeprefix("accoil_")
    return Kind(name, table, schema.PENDING[table.name], table.c.pending_since, record)


_m, _dc, _p = schema.memberships, schema.daily_counts, schema.posts
# In the order a pass delivers them: a group's traits before its memberships, and users
# and accounts before the events that speak of them.
KINDS = (
    _versioned(schema.users),
    _versioned(schema.accounts),
    Kind(
        "memberships",
        _m,
        schema.PENDING[_m.name],
        _m.c.created_at,
        update(_m).where(*_held(_m)).values(delivered_at=bindparam("now"), **_RELEASED),
    ),
    Kind(
        "counts",
        _dc,
        schema.PENDING[_dc.name],
        _dc.c.pending_since,
        update(_dc)
        .where(*_held(_dc), _dc.c.delivered_count <= bindparam("to"))
        .values(
            delivered_count=bindparam("to"),
            acked_beyond=bindparam("beyond", type_=_dc.c.acked_beyond.type),
            pending_since=case((_dc.c.count > bindparam("to"), _dc.c.pending_since), else_=None),
            claimed_by=case((bindparam("done"), None), else_=_dc.c.claimed_by),
            claimed_until=case((bindparam("done"), None), else_=_dc.c.claimed_until),
        ),
    ),
    # Posts are deleted once delivered: every row waits.
    Kind(
        "posts", _p, schema.Waiting(true(), _p.c.id), _p.c.received_at, delete(_p).where(*_held(_p))
    ),
)
KIND = {kind.name: kind for kind in KINDS}


@dataclass(frozen=True)
class Outcomes:
    """What one wave of answers means for the tables."""

    progress: Sequence[tuple[Kind, Progress]] = ()
    dead_letters: Sequence[dict[str, Any]] = ()  # message_id, type, payload, status, response
    delivered: int = 0  # messages Accoil took (2xx): added to delivered_total


def claim(
    database: Database,
    conn: Connection,
    kind: Kind,
    holder: str,
    now: datetime,
    lease: timedelta,
    limit: int,
) -> list[Claimed]:
    """Claim up to ``limit`` waiting rows of ``kind`` that nobody holds (this holder's own
    claims included: a pass claims again as it goes, while it still sends what it holds)."""
    table, waiting = kind.table, kind.waiting
    keys = list(table.primary_key.columns)
    free = or_(table.c.claimed_until.is_(None), table.c.claimed_until < now)
    candidates = database.dialect.skip_locked(
        select(*keys).where(waiting.condition, free).order_by(waiting.order).limit(limit)
    )
    chosen = keys[0].in_(candidates) if len(keys) == 1 else tuple_(*keys).in_(candidates)
    wanted = [c for c in table.c if c.name not in {"claimed_by", "claimed_until"}]
    rows = conn.execute(
        update(table)
        .where(chosen)
        .values(claimed_by=holder, claimed_until=now + lease)
        .returning(*wanted)
    ).mappings()
    return [Claimed(tuple(row[k.name] for k in keys), dict(row)) for row in rows]


def account_traits(conn: Connection, group_ids: Sequence[str]) -> dict[str, tuple[Any, datetime]]:
    """Current traits and last timestamp of accounts, for membership messages."""
    a = schema.accounts
    rows = conn.execute(
        select(a.c.group_id, a.c.traits, a.c.last_timestamp).where(
            a.c.group_id.in_(sorted(set(group_ids)))
        )
    )
    return {group_id: (traits, timestamp) for group_id, traits, timestamp in rows}


def record(
    database: Database, conn: Connection, holder: str, outcomes: Outcomes, now: datetime
) -> None:
    """Advance delivery accounting for rows this holder still claims, releasing the rows it
    is done with, and add to ``delivered_total``; store dead letters."""
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for kind, progress in outcomes.progress:
        by_kind.setdefault(kind.name, []).append(progress.parameters(holder, now))
    for kind in KINDS:
        if kind.name in by_kind:
            conn.execute(kind.record, by_kind[kind.name])
    if outcomes.dead_letters:
        conn.execute(
            schema.dead_letters.insert(),
            [{**letter, "created_at": now} for letter in outcomes.dead_letters],
        )
    if outcomes.delivered:
        _add_delivered(database, conn, outcomes.delivered)


def _add_delivered(database: Database, conn: Connection, n: int) -> None:
    s = schema.delivery_state
    conn.execute(
        database.dialect.insert(s)
        .values(id=_STATE_ID, delivered_total=n)
        .on_conflict_do_update(
            index_elements=[s.c.id], set_={"delivered_total": s.c.delivered_total + n}
        )
    )


def reap(conn: Connection, holder: str, is_dead: Callable[[str], bool]) -> list[str]:
    """Free the claims of every other holder that ``is_dead`` knows to be gone; returns them."""
    holders: set[str] = set()
    for table in (kind.table for kind in KINDS):
        holders.update(
            conn.scalars(
                select(table.c.claimed_by)
                .where(table.c.claimed_by.is_not(None), table.c.claimed_by != holder)
                .distinct()
            )
        )
    dead = sorted(h for h in holders if is_dead(h))
    for table in (kind.table for kind in KINDS):
        if dead:
            conn.execute(update(table).where(table.c.claimed_by.in_(dead)).values(**_RELEASED))
    return dead


def release(conn: Connection, holder: str) -> None:
    """Give up every claim of ``holder`` (the end of a pass, or a pass that stops early)."""
    _update_claims(conn, holder, **_RELEASED)


def renew(conn: Connection, holder: str, until: datetime) -> None:
    """Extend the lease on everything ``holder`` claims (a long pass)."""
    _update_claims(conn, holder, claimed_until=until)


def _update_claims(conn: Connection, holder: str, **values: object) -> None:
    for table in (kind.table for kind in KINDS):
        conn.execute(update(table).where(table.c.claimed_by == holder).values(**values))


# --- Dead letters -----------------------------------------------------------------------------

MAX_ROW_ID = 2**63 - 1  # a row id is a signed 64-bit integer in both databases


def dead_letters(
    conn: Connection, limit: int | None = None, ids: Collection[int] | None = None
) -> list[dict[str, Any]]:
    """Dead letters not yet replayed, oldest first: the first ``limit`` of them, those of
    ``ids``, or all."""
    d = schema.dead_letters
    query = select(d).where(d.c.replayed_at.is_(None)).order_by(d.c.id).limit(limit)
    if ids is not None:
        # An id no row can have matches nothing here, rather than failing in the driver.
        query = query.where(d.c.id.in_([i for i in ids if 0 < i <= MAX_ROW_ID]))
    return [dict(row) for row in conn.execute(query).mappings()]


def mark_replayed(database: Database, conn: Connection, letter_id: int, now: datetime) -> bool:
    """A dead letter Accoil took when sent again: delivered, as any message it takes. False
    if a replay running at the same time marked it first (it is counted once)."""
    d = schema.dead_letters
    marked = conn.execute(
        update(d).where(d.c.id == letter_id, d.c.replayed_at.is_(None)).values(replayed_at=now)
    )
    if marked.rowcount != 1:
        return False
    _add_delivered(database, conn, 1)
    return True


# --- Delivery state ---------------------------------------------------------------------------


def state(conn: Connection) -> dict[str, Any]:
    """The delivery state row, or its defaults before the first pass."""
    row = (
        conn.execute(select(schema.delivery_state).where(schema.delivery_state.c.id == _STATE_ID))
        .mappings()
        .first()
    )
    if row is None:
        return {c.name: None for c in schema.delivery_state.c} | {
            "id": _STATE_ID,
            "consecutive_failures": 0,
            "delivered_total": 0,
        }
    return dict(row)


def record_success(database: Database, conn: Connection, now: datetime) -> None:
    s = schema.delivery_state
    values = {
        "consecutive_failures": 0,
        "next_attempt_at": None,
        "offline_since": None,
        "paused_reason": None,
        "paused_key": None,
        "last_success_at": now,
    }
    stmt = database.dialect.insert(s).values(id=_STATE_ID, **values)
    conn.execute(stmt.on_conflict_do_update(index_elements=[s.c.id], set_=values))


def record_failure(
    database: Database,
    conn: Connection,
    now: datetime,
    *,
    error: str,
    next_attempt_at: datetime,
    paused_reason: str | None,
    paused_key: str | None,
) -> None:
    """A failed pass: ``paused_reason`` and ``paused_key`` (the fingerprint of the key Accoil
    refused) are set on 401/403, else cleared."""
    s = schema.delivery_state
    stmt = database.dialect.insert(s).values(
        id=_STATE_ID,
        consecutive_failures=1,
        next_attempt_at=next_attempt_at,
        offline_since=now,
        paused_reason=paused_reason,
        paused_key=paused_key,
        last_failure_at=now,
        last_error=error[:500],
    )
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[s.c.id],
            set_={
                "consecutive_failures": s.c.consecutive_failures + 1,
                "next_attempt_at": next_attempt_at,
                "offline_since": func.coalesce(s.c.offline_since, now),
                "paused_reason": paused_reason,
                "paused_key": paused_key,
                "last_failure_at": now,
                "last_error": error[:500],
            },
        )
    )
