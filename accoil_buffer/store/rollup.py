"""Folding the outbox into Accoil's model: users, accounts, memberships and daily counts.

Each chunk of outbox rows is folded in one transaction together with the deletion of those rows,
so a crash mid-fold neither loses nor double-counts. Counts, memberships and identity links are
set-based (``INSERT … SELECT … GROUP BY … ON CONFLICT``); traits are merged in memory
(``traits``), a step of the chunk at a time.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import partial
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Select,
    Table,
    and_,
    delete,
    exists,
    func,
    literal,
    or_,
    select,
    union,
    update,
)

from accoil_buffer.messages import EVENT_KINDS
from accoil_buffer.reasons import Reason
from accoil_buffer.store import schema
from accoil_buffer.store.dialects import utc_day
from accoil_buffer.store.engine import Database
from accoil_buffer.store.outbox import record_drops
from accoil_buffer.store.traits import KEYS_PER_QUERY, TraitMerge

# Ids per step of a chunk's links, traits and memberships: a trait merge holds what its step
# says of each user and account in memory (its counts are still added in one go).
_PROFILE_STEP = 50_000
_ANALYZE_FROM = 10_000  # outbox rows waiting, about: below this a stale plan costs little
# What a chunk's statements filter and group on. folded_at too: without its statistics the
# planner takes "folded_at IS NULL" to match 0.5% of a chunk and sorts it instead of hashing.
_PLANNED_ON = ("id", "folded_at", "type", "user_id", "anonymous_id", "group_id", "name")

o = schema.outbox
links = schema.identity_links
# Outbox rows joined to the link of their anonymousId, if any: the identity of an event.
_linked_outbox = o.outerjoin(links, links.c.anonymous_id == o.c.anonymous_id)
_subject = func.coalesce(o.c.user_id, links.c.user_id)
_day = utc_day(o.c.timestamp)
_unlinked = and_(o.c.user_id.is_(None), links.c.user_id.is_(None))


@dataclass(frozen=True)
class FoldSettings:
    batch_size: int
    outbox_retention: timedelta
    dedupe_window: timedelta
    anonymous_ttl: timedelta


@dataclass(frozen=True)
class FoldReport:
    folded: int
    pruned_anonymous_events: int = 0
    pruned_anonymous_profiles: int = 0
    duplicates: int = 0  # rows deleted as copies of a messageId seen before


def fold(database: Database, settings: FoldSettings, now: datetime) -> FoldReport:
    """Fold every outbox row present when the call starts, then prune what has expired.

    Chunks are ranges of ``batch_size`` ids, read along the primary key: ids are dense, so a
    chunk holds about that many rows, and finding where one ends costs no query.
    """
    low, ceiling = _unfolded_id(database, first=True), _unfolded_id(database, first=False)
    if low is not None and ceiling is not None and ceiling - low >= _ANALYZE_FROM:
        database.refresh_statistics(o, [o.c[name] for name in _PLANNED_ON])
    folded = duplicates = 0
    while low is not None and ceiling is not None and low <= ceiling:
        hi = min(ceiling, low + settings.batch_size - 1)
        n, copies = database.run_fold(
            partial(_fold_chunk, database, settings=settings, now=now, low=low, hi=hi)
        )
        folded, duplicates = folded + n, duplicates + copies
        low = hi + 1
        if not n + copies:  # a gap in the ids (rolled back inserts): skip to the next row
            low = _unfolded_id(database, first=True, at_least=low)
    events, profiles = database.run_fold(lambda conn: _prune(database, conn, settings, now))
    return FoldReport(folded, events, profiles, duplicates)


def _unfolded_id(database: Database, *, first: bool, at_least: int = 0) -> int | None:
    """The lowest (or highest) id of an unfolded row: a walk along the primary key that stops
    at the first one."""
    order = o.c.id if first else o.c.id.desc()
    query = select(o.c.id).where(o.c.folded_at.is_(None), o.c.id >= at_least)
    with database.engine.connect() as conn:
        return conn.scalar(query.order_by(order).limit(1))


def _fold_chunk(
    database: Database, conn: Connection, settings: FoldSettings, now: datetime, low: int, hi: int
) -> tuple[int, int]:
    """Fold the unfolded rows with ids from ``low`` to ``hi``; returns how many, and how many
    were deleted as copies instead.

    On PostgreSQL a transaction may commit a row below ``low`` after the fold began: the next
    fold, which starts from the lowest unfolded id, takes it.
    """
    chunk = _unfolded(low, hi)
    # Which types the chunk holds (and how many carry no userId), so that statements with
    # nothing to do are skipped: a chunk of track events needs only the counts. Also how many
    # messageIds the fold checks, and how many events rows stand for beyond their own.
    kinds = conn.execute(
        select(
            o.c.type,
            func.count().filter(o.c.user_id.is_(None)),
            func.count(o.c.message_id),
            func.sum(o.c.occurrences - 1),
        )
        .where(chunk)
        .group_by(o.c.type)
    ).all()
    if not kinds:
        return 0, 0
    present: dict[str, int] = {kind: anonymous for kind, anonymous, _, _ in kinds}
    copies = _drop_duplicates(database, conn, chunk) if any(g for _, _, g, _ in kinds) else 0
    merged = sum(int(extra) for _, _, _, extra in kinds)  # a row with a messageId stands alone
    if present.keys() & {"identify", "group", "alias"}:
        for step in range(low, hi + 1, _PROFILE_STEP):
            _fold_profiles(database, conn, present, now, step, min(hi, step + _PROFILE_STEP - 1))
    events = [kind for kind in EVENT_KINDS if kind in present]
    if events:
        _fold_counts(database, conn, chunk, now, anonymous=any(present[k] for k in events))
    if settings.outbox_retention > timedelta(0):
        rows = conn.execute(update(o).where(chunk).values(folded_at=now)).rowcount
    else:
        rows = conn.execute(delete(o).where(chunk)).rowcount
    return rows + merged, copies


def _drop_duplicates(database: Database, conn: Connection, chunk: ColumnElement[bool]) -> int:
    """Delete the chunk's rows whose client messageId the ledger already holds, or an earlier
    row of the chunk holds, counting them on the day they arrived; then claim the rest's ids,
    sorted, so that the ledger's index is written page by page rather than at random. Returns
    how many rows were deleted."""
    ids = schema.message_ids
    given = and_(chunk, o.c.message_id.is_not(None))
    ranked = (
        select(
            o.c.id,
            o.c.message_id,
            func.row_number().over(partition_by=o.c.message_id, order_by=o.c.id).label("nth"),
        )
        .where(given)
        .subquery()
    )
    # A join, not EXISTS under OR, which PostgreSQL could only probe row by row.
    copies = (
        select(ranked.c.id)
        .select_from(ranked.outerjoin(ids, ids.c.message_id == ranked.c.message_id))
        .where(or_(ranked.c.nth > 1, ids.c.message_id.is_not(None)))
    )
    dropped = conn.execute(delete(o).where(o.c.id.in_(copies)).returning(o.c.received_at))
    days: Counter[tuple[date, str]] = Counter(
        (received.date(), Reason.DUPLICATE_MESSAGE_ID) for received in dropped.scalars()
    )
    record_drops(database, conn, days)
    claim = database.dialect.insert(ids).from_select(
        ["message_id", "received_at"],
        select(o.c.message_id, o.c.received_at).where(given).order_by(o.c.message_id),
    )
    # A process with other mappings may have claimed an id on arrival meanwhile: on
    # PostgreSQL that is a serialisation failure, and the chunk's fold is run again.
    conn.execute(claim.on_conflict_do_nothing(index_elements=[ids.c.message_id]))
    return days.total()


def _unfolded(low: int, hi: int) -> ColumnElement[bool]:
    return and_(o.c.folded_at.is_(None), o.c.id.between(low, hi))


def _fold_profiles(
    database: Database,
    conn: Connection,
    present: Mapping[str, int],
    now: datetime,
    low: int,
    hi: int,
) -> None:
    """Links, traits and memberships of the rows with ids from ``low`` to ``hi``."""
    step = _unfolded(low, hi)
    linked = 0
    if "identify" in present or "alias" in present:
        linked = _link_identities(database, conn, step, now)
    # No anonymous row has a link at the end of a fold: only links made from this step's
    # rows move data, and they are found by the rows' ids, not by reading every link.
    new_links = links.c.outbox_id.between(low, hi)
    if linked or "identify" in present or "group" in present:
        _fold_traits(database, conn, step, new_links, now)
    if linked:
        _move_linked_anonymous_data(database, conn, new_links, now)
    if "group" in present:
        _fold_memberships(database, conn, step, now)


def _now(now: datetime) -> ColumnElement[datetime]:
    return literal(now, schema.UTCDateTime())


def _link_identities(
    database: Database, conn: Connection, step: ColumnElement[bool], now: datetime
) -> int:
    """identify (userId + anonymousId) and alias (previousId → userId) link ids; first link wins.
    Returns how many new links were made."""
    candidates = union(
        select(o.c.anonymous_id.label("anonymous_id"), o.c.user_id, o.c.id).where(
            step, o.c.type == "identify", o.c.user_id.is_not(None), o.c.anonymous_id.is_not(None)
        ),
        select(o.c.previous_id.label("anonymous_id"), o.c.user_id, o.c.id).where(
            step, o.c.type == "alias"
        ),
    ).subquery()
    ranked = select(
        candidates.c.anonymous_id,
        candidates.c.user_id,
        candidates.c.id,
        func.row_number()
        .over(partition_by=candidates.c.anonymous_id, order_by=candidates.c.id)
        .label("rank"),
    ).subquery()
    stmt = database.dialect.insert(links).from_select(
        ["anonymous_id", "user_id", "linked_at", "outbox_id"],
        select(ranked.c.anonymous_id, ranked.c.user_id, _now(now), ranked.c.id).where(
            ranked.c.rank == 1
        ),
    )
    return conn.execute(stmt.on_conflict_do_nothing(index_elements=[links.c.anonymous_id])).rowcount


def _move_linked_anonymous_data(
    database: Database, conn: Connection, new_links: ColumnElement[bool], now: datetime
) -> None:
    """Move what anonymous ids that now have a link hold to their user."""
    ac = schema.anonymous_counts
    _add_counts(
        database,
        conn,
        select(
            ac.c.day,
            links.c.user_id,
            ac.c.kind,
            ac.c.name,
            func.sum(ac.c.count),
            _now(now),
            _now(now),
        )
        .select_from(ac.join(links, links.c.anonymous_id == ac.c.anonymous_id))
        .where(new_links)
        .group_by(ac.c.day, links.c.user_id, ac.c.kind, ac.c.name),
    )

    am = schema.anonymous_memberships
    _add_memberships(
        database,
        conn,
        select(
            am.c.group_id,
            links.c.user_id,
            func.max(am.c.last_timestamp),
            _now(now),
        )
        .select_from(am.join(links, links.c.anonymous_id == am.c.anonymous_id))
        .where(new_links)
        .group_by(am.c.group_id, links.c.user_id),
    )

    at = schema.anonymous_traits
    linked = select(links.c.anonymous_id).where(new_links)
    for table in (ac, am, at):
        conn.execute(delete(table).where(table.c.anonymous_id.in_(linked)))


def _fold_traits(
    database: Database,
    conn: Connection,
    step: ColumnElement[bool],
    new_links: ColumnElement[bool],
    now: datetime,
) -> None:
    """Merge identify/group traits, chunk and step boundaries notwithstanding."""
    merge = TraitMerge()
    at = schema.anonymous_traits
    newly_linked = conn.execute(
        select(
            at.c.anonymous_id, links.c.user_id, links.c.outbox_id, at.c.traits, at.c.last_timestamp
        )
        .select_from(at.join(links, links.c.anonymous_id == at.c.anonymous_id))
        .where(new_links)
    )
    for anonymous_id, user_id, link_id, traits, timestamp in newly_linked:
        merge.linked(anonymous_id, user_id, link_id, traits, timestamp)
    rows = conn.execute(
        select(
            o.c.id,
            o.c.type,
            o.c.user_id,
            o.c.anonymous_id,
            o.c.group_id,
            o.c.traits,
            o.c.timestamp,
            links.c.user_id.label("linked_user_id"),
            links.c.outbox_id,
        )
        .select_from(_linked_outbox)
        .where(step, o.c.type.in_(("identify", "group")))
        .order_by(o.c.id),
        # Streamed (a server-side cursor on PostgreSQL): only the merged traits are kept.
        execution_options={"yield_per": KEYS_PER_QUERY},
    )
    for row in rows:
        merge.add(row)
    merge.write(database.dialect, conn, now)


def _fold_memberships(
    database: Database, conn: Connection, step: ColumnElement[bool], now: datetime
) -> None:
    _add_memberships(
        database,
        conn,
        select(
            o.c.group_id,
            _subject,
            func.max(o.c.timestamp),
            _now(now),
        )
        .select_from(_linked_outbox)
        .where(step, o.c.type == "group", _subject.is_not(None))
        .group_by(o.c.group_id, _subject),
    )

    am = schema.anonymous_memberships
    stmt = database.dialect.insert(am).from_select(
        ["anonymous_id", "group_id", "last_timestamp", "last_seen_at"],
        select(o.c.anonymous_id, o.c.group_id, func.max(o.c.timestamp), func.max(o.c.received_at))
        .select_from(_linked_outbox)
        # A group action may name neither a user nor an anonymous id: traits only.
        .where(step, o.c.type == "group", _unlinked, o.c.anonymous_id.is_not(None))
        .group_by(o.c.anonymous_id, o.c.group_id),
    )
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[am.c.anonymous_id, am.c.group_id],
            set_={
                "last_timestamp": stmt.excluded.last_timestamp,
                "last_seen_at": stmt.excluded.last_seen_at,
            },
        )
    )


def _fold_counts(
    database: Database,
    conn: Connection,
    chunk: ColumnElement[bool],
    now: datetime,
    *,
    anonymous: bool,
) -> None:
    is_event = o.c.type.in_(EVENT_KINDS)
    # Events that all carry a userId need no identity: no join to the links.
    subject, source = (_subject, _linked_outbox) if anonymous else (o.c.user_id, o)
    _add_counts(
        database,
        conn,
        select(
            _day,
            subject,
            o.c.type,
            o.c.name,
            func.sum(o.c.occurrences),
            _now(now),
            _now(now),
        )
        .select_from(source)
        .where(chunk, is_event, subject.is_not(None))
        .group_by(_day, subject, o.c.type, o.c.name),
    )

    if not anonymous:
        return
    ac = schema.anonymous_counts
    stmt = database.dialect.insert(ac).from_select(
        ["day", "anonymous_id", "kind", "name", "count", "last_seen_at"],
        select(
            _day,
            o.c.anonymous_id,
            o.c.type,
            o.c.name,
            func.sum(o.c.occurrences),
            func.max(o.c.received_at),
        )
        .select_from(_linked_outbox)
        .where(chunk, is_event, _unlinked)
        .group_by(_day, o.c.anonymous_id, o.c.type, o.c.name),
    )
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[ac.c.day, ac.c.anonymous_id, ac.c.kind, ac.c.name],
            set_={
                "count": ac.c.count + stmt.excluded["count"],
                "last_seen_at": stmt.excluded.last_seen_at,
            },
        )
    )


def _add_counts(database: Database, conn: Connection, source: Select[Any]) -> None:
    """Add (day, user_id, kind, name, count, updated_at, pending_since) rows to the daily counts."""
    dc = schema.daily_counts
    stmt = database.dialect.insert(dc).from_select(
        ["day", "user_id", "kind", "name", "count", "updated_at", "pending_since"], source
    )
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[dc.c.day, dc.c.user_id, dc.c.kind, dc.c.name],
            set_={
                "count": dc.c.count + stmt.excluded["count"],
                "updated_at": stmt.excluded.updated_at,
                "pending_since": func.coalesce(dc.c.pending_since, stmt.excluded.pending_since),
            },
        )
    )


def _add_memberships(database: Database, conn: Connection, source: Select[Any]) -> None:
    """Insert (group_id, user_id, last_timestamp, created_at) memberships not yet known."""
    m = schema.memberships
    stmt = database.dialect.insert(m).from_select(
        ["group_id", "user_id", "last_timestamp", "created_at"], source
    )
    conn.execute(stmt.on_conflict_do_nothing(index_elements=[m.c.group_id, m.c.user_id]))


def _prune(
    database: Database, conn: Connection, settings: FoldSettings, now: datetime
) -> tuple[int, int]:
    """Expire anonymous ids idle past the TTL, old messageIds, and outbox rows kept for audit."""
    ac, at, am = schema.anonymous_counts, schema.anonymous_traits, schema.anonymous_memberships
    cutoff = now - settings.anonymous_ttl
    # Ids with a row idle past the TTL (read from the last_seen_at indexes), less those with
    # a row seen since (probed by id): what has aged out is read, not all anonymous data.
    aged = union(
        *(select(t.c.anonymous_id).where(t.c.last_seen_at < cutoff) for t in (ac, at, am))
    ).subquery()
    seen_since = or_(
        *(
            exists().where(t.c.anonymous_id == aged.c.anonymous_id, t.c.last_seen_at >= cutoff)
            for t in (ac, at, am)
        )
    )
    idle = select(aged.c.anonymous_id).where(~seen_since)

    def stale(table: Table) -> ColumnElement[bool]:
        return table.c.anonymous_id.in_(idle)

    events = int(conn.scalar(select(func.coalesce(func.sum(ac.c.count), 0)).where(stale(ac))) or 0)
    conn.execute(delete(ac).where(stale(ac)))
    profiles = sum(conn.execute(delete(t).where(stale(t))).rowcount for t in (at, am))
    today: date = now.date()
    record_drops(
        database,
        conn,
        Counter(
            {
                (today, Reason.ANONYMOUS_TTL_EVENTS): events,
                (today, Reason.ANONYMOUS_TTL_PROFILES): profiles,
            }
        ),
    )
    conn.execute(
        delete(schema.message_ids).where(
            schema.message_ids.c.received_at < now - settings.dedupe_window
        )
    )
    if settings.outbox_retention > timedelta(0):
        conn.execute(delete(o).where(o.c.folded_at < now - settings.outbox_retention))
    return events, profiles
