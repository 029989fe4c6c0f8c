"""Merging identify/group traits in memory, as Segment merges them, for the fold.

Segment's merge is shallow and keeps a key sent as null (as null); SQLite's ``json_patch``
deletes null keys, so no SQL spells it on both databases.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, Table, select

from accoil_buffer.store import schema
from accoil_buffer.store.dialects import Dialect
from accoil_buffer.store.direct import DirectInsert

KEYS_PER_QUERY = 5000  # keys read, and rows streamed, at a time: memory stays one slice's


@dataclass
class _Patch:
    """Traits of several messages for one key, merged in arrival order."""

    traits: dict[str, Any] = field(default_factory=dict)
    timestamp: datetime | None = None

    def add(self, traits: Mapping[str, Any] | None, timestamp: datetime) -> None:
        self.traits.update(traits or {})
        self.timestamp = timestamp if self.timestamp is None else max(self.timestamp, timestamp)


@dataclass
class _Pool(_Patch):
    """What an anonymous id said before ``link_id``, the outbox row that linked it to a user."""

    user_id: str = ""
    link_id: int = 0


class TraitMerge:
    """What a step of the fold says of each user, account and anonymous id.

    What an anonymous id said before its link is its pool; at the link the pool fills gaps
    under the user's own traits (earlier links first), and after the link the anonymous id
    speaks for the user.
    """

    def __init__(self) -> None:
        self._users: dict[str, _Patch] = {}
        self._anonymous: dict[str, _Patch] = {}
        self._accounts: dict[str, _Patch] = {}
        self._pools: dict[str, _Pool] = {}

    def linked(
        self,
        anonymous_id: str,
        user_id: str,
        link_id: int,
        traits: Mapping[str, Any],
        timestamp: datetime,
    ) -> None:
        """The stored traits of an anonymous id that this step linked to ``user_id``."""
        pool = self._pools[anonymous_id] = _Pool(user_id=user_id, link_id=link_id)
        pool.add(traits, timestamp)

    def add(self, row: Row[*tuple[Any, ...]]) -> None:
        """An identify or group outbox row (in id order), with ``linked_user_id`` and
        ``outbox_id`` from the link of its anonymous id, if any."""
        target: _Patch
        if row.type == "group":
            target = self._accounts.setdefault(row.group_id, _Patch())
        elif row.user_id is not None:
            target = self._users.setdefault(row.user_id, _Patch())
        elif row.linked_user_id is None:
            target = self._anonymous.setdefault(row.anonymous_id, _Patch())
        elif row.id > row.outbox_id:
            target = self._users.setdefault(row.linked_user_id, _Patch())
        else:
            target = self._pools.setdefault(
                row.anonymous_id, _Pool(user_id=row.linked_user_id, link_id=row.outbox_id)
            )
        target.add(row.traits, row.timestamp)

    def write(self, dialect: Dialect, conn: Connection, now: datetime) -> None:
        """Merge what was added into the stored users, accounts and anonymous traits."""
        under: dict[str, list[_Patch]] = {}
        for pool in sorted(self._pools.values(), key=lambda p: p.link_id):
            under.setdefault(pool.user_id, []).append(pool)
        _merge_versioned(dialect, conn, schema.users, self._users, now, under=under)
        _merge_versioned(dialect, conn, schema.accounts, self._accounts, now)
        _merge_anonymous(dialect, conn, self._anonymous, now)


def _merge_in_slices(
    conn: Connection,
    table: Table,
    keys: Iterable[str],
    merge: Callable[[str, dict[str, Any] | None], tuple[object, ...] | None],
    upsert: DirectInsert,
) -> None:
    """Read the traits of ``keys`` a slice at a time, in key order (so concurrent folds lock
    rows alike), and upsert the rows ``merge`` makes of each key and its stored traits (None:
    unchanged)."""
    key = table.primary_key.columns.values()[0]
    ordered = sorted(keys)
    for start in range(0, len(ordered), KEYS_PER_QUERY):
        batch = ordered[start : start + KEYS_PER_QUERY]
        existing = dict(conn.execute(select(key, table.c.traits).where(key.in_(batch))).all())
        rows = [row for name in batch if (row := merge(name, existing.get(name))) is not None]
        upsert.run(conn, rows)


def _merge_versioned(
    dialect: Dialect,
    conn: Connection,
    table: Table,
    patches: Mapping[str, _Patch],
    now: datetime,
    *,
    under: Mapping[str, list[_Patch]] | None = None,
) -> None:
    """Merge ``patches`` over, then each of ``under`` beneath, the traits of users or accounts;
    a row whose traits change gets a new version."""
    under = under or {}

    def merge(name: str, old: dict[str, Any] | None) -> tuple[object, ...] | None:
        merged = {**(old or {})}
        timestamps = []
        if name in patches:
            merged.update(patches[name].traits)
            timestamps.append(patches[name].timestamp)
        for pool in under.get(name, ()):
            merged = {**pool.traits, **merged}
            timestamps.append(pool.timestamp)
        if old is not None and merged == old:
            return None
        last = max(t for t in timestamps if t is not None)
        return (name, merged, 1, last, now, now, now)

    key = table.primary_key.columns.values()[0].name
    upsert = DirectInsert(
        dialect,
        table,
        (
            key,
            "traits",
            "traits_version",
            "last_timestamp",
            "first_seen_at",
            "updated_at",
            "pending_since",
        ),
        on_conflict=dialect.upsert(
            table,
            (key,),
            replace=("traits", "last_timestamp", "updated_at"),
            bump=("traits_version",),
            keep=("pending_since",),
        ),
    )
    _merge_in_slices(conn, table, set(patches) | set(under), merge, upsert)


def _merge_anonymous(
    dialect: Dialect, conn: Connection, patches: Mapping[str, _Patch], now: datetime
) -> None:
    def merge(name: str, old: dict[str, Any] | None) -> tuple[object, ...]:
        return (name, {**(old or {}), **patches[name].traits}, patches[name].timestamp, now)

    at = schema.anonymous_traits
    upsert = DirectInsert(
        dialect,
        at,
        ("anonymous_id", "traits", "last_timestamp", "last_seen_at"),
        on_conflict=dialect.upsert(
            at, ("anonymous_id",), replace=("traits", "last_timestamp", "last_seen_at")
        ),
    )
    _merge_in_slices(conn, at, patches, merge, upsert)
