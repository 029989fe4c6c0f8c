"""A database: its engine, its dialect, and the transactions the buffer writes in."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Column, Connection, Engine, Table
from tenacity import (
    Retrying,
    before_sleep_log,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)

from accoil_buffer.config import Config
from accoil_buffer.store.connect import create_database_engine
from accoil_buffer.store.dialects import dialect_for
from accoil_buffer.store.direct import DirectTransaction

T = TypeVar("T")
log = logging.getLogger(__name__)


class Database:
    """An engine and the dialect of its database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect = dialect_for(engine)

    @classmethod
    def open(cls, config: Config) -> Database:
        return cls(create_database_engine(config))

    @property
    def sqlite_path(self) -> Path | None:
        """The SQLite file, or None (PostgreSQL, or a database in memory)."""
        return self.dialect.database_file(self.engine)

    @property
    def fold_batch_size(self) -> int:
        """Outbox rows folded per transaction unless configured."""
        return self.dialect.fold_batch_size

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A write transaction."""
        with self.engine.begin() as conn:
            yield conn

    @contextmanager
    def direct_write(self) -> Iterator[DirectTransaction]:
        """A write transaction begun and committed as ``write()`` would, for SQL executed
        directly: SQLAlchemy's transaction machinery costs as much as a one-message append."""
        transaction = DirectTransaction(self.engine)
        try:
            transaction.begin()
            try:
                yield transaction
                transaction.commit()
            except BaseException:
                transaction.rollback()
                raise
        finally:
            transaction.close()

    @contextmanager
    def write_between_folds(self) -> Iterator[Connection]:
        """A write transaction that no fold chunk overlaps (deliveries write through it): a
        chunk's snapshot would otherwise fail on every row that a delivery updates."""
        with self.engine.begin() as conn:
            self.dialect.hold_off_folds(conn)
            yield conn

    def run_fold(self, work: Callable[[Connection], T]) -> T:
        """Run ``work`` in a transaction that no other fold overlaps and that sees one
        snapshot, again if the database fails it for a conflict with another writer."""
        retrying = Retrying(
            retry=retry_if_exception(self.dialect.is_retryable),
            stop=stop_after_attempt(8),
            wait=wait_random_exponential(multiplier=0.05, max=2),
            before_sleep=before_sleep_log(log, logging.WARNING),
            reraise=True,
        )
        for attempt in retrying:
            with attempt:
                return self.dialect.fold(self.engine, work)
        raise AssertionError("unreachable: tenacity reraises the last error")

    def bytes_in_use(self) -> int:
        """What the buffer occupies on disk (SQLite only: a byte bound is refused on
        PostgreSQL when the engine is created)."""
        return self.dialect.bytes_in_use(self.engine)

    def give_back_space(self) -> bool:
        """Return the space a fold freed to the file system, where that is worth it."""
        return self.dialect.give_back_space(self.engine)

    def refresh_statistics(self, table: Table, columns: Iterable[Column[Any]]) -> None:
        """Let the planner see the current size of ``table``, sampling ``columns``."""
        self.dialect.refresh_statistics(self.engine, table, columns)

    def dispose(self) -> None:
        self.engine.dispose()
