"""Claiming what is pending delivery, and recording what Accoil acknowledged (SPEC 4.4, 4.5).

A flusher claims rows by writing its name and a lease expiry into them (one statement:
``UPDATE … WHERE key IN (SELECT … LIMIT n [FOR UPDATE SKIP LOCKED]) RETURNING …``), so N
flushers share the work and a crashed one's rows come free when its lease lapses. Progress
is written only for rows the writer still holds, in the transaction that records it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import (
    Connection,
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

# In the order a pass delivers them (SPEC 4.3).
CLAIMED_TABLES = (
    schema.users,
    schema.accounts,
    schema.memberships,
    schema.daily_counts,
    schema.posts,
)
_STATE_ID = 1


@dataclass(frozen=True)
class Claimed:
    """One claimed row: its key columns, and what the message about it needs."""

    key: tuple[Any, ...]
    values: dict[str, Any]


@dataclass(frozen=True)
class Outcomes:
    """What one wave of answers means for the tables; all lists may be empty."""

    users: Sequence[tuple[str, int]] = ()  # (user_id, version now at Accoil)
    accounts: Sequence[tuple[str, int]] = ()  # (group_id, version)
    memberships: Sequence[tuple[str, str]] = ()  # (group_id, user_id)
    # (key…, delivered_count, acked_beyond or None, done): done releases the row's claim
    counts: Sequence[tuple[date, str, str, str, int, list[int] | None, bool]] = ()
    posts: Sequence[int] = ()  # ids of accoil_outbox_posts rows, done with
    dead_letters: Sequence[dict[str, Any]] = ()  # message_id, type, payload, status, response
    delivered: int = 0  # messages Accoil took (2xx): added to delivered_total


def claim(
    database: Database,
    conn: Connection,
    table: Table,
    holder: str,
    now: datetime,
    lease: timedelta,
    limit: int,
) -> list[Claimed]:
    """Claim up to ``limit`` pending rows of ``table`` that nobody holds (this holder's own
    claims included: a pass claims again as it goes, while it still sends what it holds)."""
    keys = list(table.primary_key.columns)
    free = or_(table.c.claimed_until.is_(None), table.c.claimed_until < now)
    waiting = schema.PENDING.get(table.name) or schema.Waiting(true(), keys[0])  # posts: all
    candidates = database.skip_locked(
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


_RELEASED = {"claimed_by": None, "claimed_until": None}


def _record_version(table: Table) -> Any:
    key = table.primary_key.columns.values()[0]
    version: Any = bindparam("v")
    return (
        update(table)
        .where(
            key == bindparam("k"),
            table.c.claimed_by == bindparam("holder"),
            table.c.delivered_version < version,
        )
        .values(
            delivered_version=version,
            pending_since=case((table.c.traits_version > version, table.c.updated_at), else_=None),
            **_RELEASED,
        )
    )


# Built once: recording runs for every wave of answers, on the delivery hot path.
_RECORD_USERS = _record_version(schema.users)
_RECORD_ACCOUNTS = _record_version(schema.accounts)
_m, _dc = schema.memberships, schema.daily_counts
_RECORD_MEMBERSHIPS = (
    update(_m)
    .where(
        _m.c.group_id == bindparam("g"),
        _m.c.user_id == bindparam("u"),
        _m.c.claimed_by == bindparam("holder"),
    )
    .values(delivered_at=bindparam("now"), **_RELEASED)
)
_RECORD_COUNTS = (
    update(_dc)
    .where(
        _dc.c.day == bindparam("d"),
        _dc.c.user_id == bindparam("u"),
        _dc.c.kind == bindparam("kd"),
        _dc.c.name == bindparam("n"),
        _dc.c.claimed_by == bindparam("holder"),
        _dc.c.delivered_count <= bindparam("to"),
    )
    .values(
        delivered_count=bindparam("to"),
        acked_beyond=bindparam("beyond", type_=_dc.c.acked_beyond.type),
        pending_since=case((_dc.c.count > bindparam("to"), _dc.c.pending_since), else_=None),
        claimed_by=case((bindparam("done"), None), else_=_dc.c.claimed_by),
        claimed_until=case((bindparam("done"), None), else_=_dc.c.claimed_until),
    )
)


_p = schema.posts
_RECORD_POSTS = delete(_p).where(_p.c.id == bindparam("i"), _p.c.claimed_by == bindparam("holder"))


def record(
    database: Database, conn: Connection, holder: str, outcomes: Outcomes, now: datetime
) -> None:
    """Advance delivery accounting for rows this holder still claims, releasing the rows it
    is done with, and add to ``delivered_total``; store dead letters."""
    mine = {"holder": holder}
    if outcomes.users:
        conn.execute(_RECORD_USERS, [{"k": k, "v": v, **mine} for k, v in outcomes.users])
    if outcomes.accounts:
        conn.execute(_RECORD_ACCOUNTS, [{"k": k, "v": v, **mine} for k, v in outcomes.accounts])
    if outcomes.memberships:
        conn.execute(
            _RECORD_MEMBERSHIPS,
            [{"g": g, "u": user, "now": now, **mine} for g, user in outcomes.memberships],
        )
    if outcomes.counts:
        conn.execute(
            _RECORD_COUNTS,
            [
                {
                    "d": d,
                    "u": user,
                    "kd": kind,
                    "n": name,
                    "to": to,
                    "beyond": beyond,
                    "done": done,
                    **mine,
                }
                for d, user, kind, name, to, beyond, done in outcomes.counts
            ],
        )
    if outcomes.posts:
        conn.execute(_RECORD_POSTS, [{"i": i, **mine} for i in outcomes.posts])
    if outcomes.dead_letters:
        conn.execute(
            schema.dead_letters.insert(),
            [{**letter, "created_at": now} for letter in outcomes.dead_letters],
        )
    if outcomes.delivered:
        s = schema.delivery_state
        conn.execute(
            database.insert(s)
            .values(id=_STATE_ID, delivered_total=outcomes.delivered)
            .on_conflict_do_update(
                index_elements=[s.c.id],
                set_={"delivered_total": s.c.delivered_total + outcomes.delivered},
            )
        )


def reap(conn: Connection, holder: str, is_dead: Callable[[str], bool]) -> list[str]:
    """Free the claims of every other holder that ``is_dead`` knows to be gone; returns them."""
    holders: set[str] = set()
    for table in CLAIMED_TABLES:
        holders.update(
            conn.scalars(
                select(table.c.claimed_by)
                .where(table.c.claimed_by.is_not(None), table.c.claimed_by != holder)
                .distinct()
            )
        )
    dead = sorted(h for h in holders if is_dead(h))
    for table in CLAIMED_TABLES:
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
    for table in CLAIMED_TABLES:
        conn.execute(update(table).where(table.c.claimed_by == holder).values(**values))


# --- Dead letters -----------------------------------------------------------------------------


def dead_letters(conn: Connection) -> list[dict[str, Any]]:
    """Dead letters not yet replayed, oldest first."""
    d = schema.dead_letters
    query = select(d).where(d.c.replayed_at.is_(None)).order_by(d.c.id)
    return [dict(row) for row in conn.execute(query).mappings()]


def mark_replayed(conn: Connection, letter_id: int, now: datetime) -> None:
    d = schema.dead_letters
    conn.execute(update(d).where(d.c.id == letter_id).values(replayed_at=now))


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
    stmt = database.insert(s).values(id=_STATE_ID, **values)
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
    stmt = database.insert(s).values(
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
