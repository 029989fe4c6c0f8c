"""The store's contract, called directly (not through ``Buffer``), on SQLite and PostgreSQL.

Each test takes the ``database_url`` fixture of ``tests/conftest.py`` and opens the store with
``opened``; ``append`` is the one call of the write path (``recording.record``: the outbox
rows, a ledger claim for what the fold cannot check, and the drop counters, with the preset
mappings).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from typing import Any

from accoil_buffer import Config
from accoil_buffer.messages import Message, normalise
from accoil_buffer.recording import Recorded, record
from accoil_buffer.store import rollup
from accoil_buffer.store.engine import Database
from accoil_buffer.store.migrate import upgrade

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
TODAY = NOW.date()


@contextmanager
def opened(database_url: str) -> Iterator[Database]:
    """The store of ``database_url``, migrated to head."""
    database = Database.open(Config(database_url=database_url))
    try:
        upgrade(database)
        yield database
    finally:
        database.dispose()


def message(at: datetime = NOW, **raw: Any) -> Message:
    """A normalised message received ``at``; ``raw`` in Segment's spelling (userId, …)."""
    return normalise(raw, received_at=at)


def append(
    database: Database,
    messages: list[Message],
    *,
    keep_payloads: bool = False,
    rejected: int = 0,
    today: date | None = TODAY,
) -> Recorded:
    """Append ``messages`` in a transaction of their own."""
    with database.direct_write() as conn:
        return record(
            database, conn, messages, keep_payloads=keep_payloads, rejected=rejected, day=today
        )


def fold(
    database: Database, *, now: datetime = NOW, batch_size: int = 0, ttl_days: int = 30
) -> rollup.FoldReport:
    """Fold the whole outbox as a buffer would, in chunks of ``batch_size`` rows if given."""
    settings = rollup.FoldSettings(
        batch_size=batch_size or database.fold_batch_size,
        outbox_retention=timedelta(0),
        dedupe_window=timedelta(hours=24),
        anonymous_ttl=timedelta(days=ttl_days),
    )
    return rollup.fold(database, settings, now)
