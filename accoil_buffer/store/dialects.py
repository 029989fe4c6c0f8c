"""Every difference between SQLite and PostgreSQL, one object per database.

The rest of the store asks its ``Database.dialect`` (or ``dialect_for(bind)``) and never
tests which database it runs on.
"""

from __future__ import annotations

import functools
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from sqlalchemy import JSON, Column, Connection, Date, Engine, Select, Table, func, select
from sqlalchemy import Dialect as SQLAlchemyDialect
from sqlalchemy.dialects import postgresql as dialect_postgresql
from sqlalchemy.dialects import sqlite as dialect_sqlite
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from accoil_buffer.store import holders, schema
from accoil_buffer.store.connect import json_dumps, sqlite_file

log = logging.getLogger(__name__)

T = TypeVar("T")
T_row = TypeVar("T_row", bound=tuple[Any, ...])
Insert = dialect_sqlite.Insert | dialect_postgresql.Insert
# Keys of PostgreSQL advisory locks taken by accoil-buffer ("accoil" in ASCII, then a role).
FOLD_LOCK = 0x6163636F696C_01
MIGRATE_LOCK = 0x6163636F696C_02
_RETRYABLE = {"40001", "40P01"}  # PostgreSQL's serialization failure, deadlock detected


class Dialect(ABC):
    """What the store does differently on one database."""

    name: ClassVar[str]
    placeholder: ClassVar[str]  # the driver's parameter marker, for SQL executed directly
    fold_batch_size: ClassVar[int]  # outbox rows folded per transaction unless configured
    keeps_comments: ClassVar[bool]  # whether tables and columns keep their comments
    alters_in_batch: ClassVar[bool]  # whether ALTER TABLE must copy the table (Alembic batch)
    # Whether a NULL costs the driver more bound than written into the statement.
    binds_null_slowly: ClassVar[bool]

    def __init__(self, sqlalchemy_dialect: SQLAlchemyDialect) -> None:
        self._sqlalchemy = sqlalchemy_dialect

    def to_driver(self, column: Column[Any]) -> Callable[[Any], Any] | None:
        """How a value of ``column`` goes to the driver in SQL executed directly, as the
        column's type would send it; None: as it is."""
        dialect = self._sqlalchemy
        return column.type.dialect_impl(dialect).bind_processor(dialect)

    @abstractmethod
    def insert(self, table: Table) -> Insert:
        """An INSERT with ``on_conflict_do_update``/``do_nothing``."""

    @abstractmethod
    def skip_locked(self, query: Select[T_row]) -> Select[T_row]:
        """``query`` for rows that concurrent claimers pass over each other's."""

    def insert_or_ignore(self, keys: Sequence[str]) -> str:
        """The clause of an INSERT executed directly that skips rows whose ``keys`` exist."""
        return f" ON CONFLICT ({', '.join(keys)}) DO NOTHING"

    def upsert(
        self,
        table: Table,
        keys: Sequence[str],
        *,
        replace: Sequence[str] = (),
        add: Sequence[str] = (),
        bump: Sequence[str] = (),
        keep: Sequence[str] = (),
    ) -> str:
        """The clause of an INSERT executed directly that updates the row ``keys`` already
        name: ``replace`` columns take the new value, ``add`` add it to theirs, ``bump`` go up
        by one, ``keep`` keep theirs unless it is null."""
        t = table.name
        assignments = [
            *(f"{c} = excluded.{c}" for c in replace),
            *(f"{c} = {t}.{c} + excluded.{c}" for c in add),
            *(f"{c} = {t}.{c} + 1" for c in bump),
            *(f"{c} = coalesce({t}.{c}, excluded.{c})" for c in keep),
        ]
        return f" ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {', '.join(assignments)}"

    @abstractmethod
    def fold(self, engine: Engine, work: Callable[[Connection], T]) -> T:
        """Run ``work`` in a transaction that no other fold overlaps and that sees one
        snapshot."""

    @abstractmethod
    def is_retryable(self, exc: BaseException) -> bool:
        """Whether a fold that failed with ``exc`` may simply run again."""

    @abstractmethod
    def hold_off_folds(self, conn: Connection) -> None:
        """In ``conn``'s transaction: wait for the fold chunk under way, and keep the next one
        off until the transaction ends, so a fold never sees a row change under it."""

    @abstractmethod
    def bytes_in_use(self, engine: Engine) -> int:
        """The bytes the buffer's data takes on disk."""

    def give_back_space(self, engine: Engine) -> bool:
        """Return to the file system the space a fold freed, if it is worth it; whether any
        was given back."""
        return False  # PostgreSQL's autovacuum keeps freed space for the next rows

    @abstractmethod
    def refresh_statistics(
        self, engine: Engine, table: Table, columns: Iterable[Column[Any]]
    ) -> None:
        """Let the planner see the current size of ``table``, sampling ``columns``."""

    @abstractmethod
    def lock_for_migration(self, conn: Connection) -> None:
        """Serialise concurrent migrations (several daemons starting at once) in ``conn``'s
        transaction."""

    @contextmanager
    def copying(self, conn: Connection, table: str) -> Iterator[None]:
        """Around a migration that copies ``table`` (a batch alter): the ids its
        autoincrement handed out stay handed out, so none is ever given again."""
        yield

    @abstractmethod
    def database_file(self, engine: Engine) -> Path | None:
        """The file the database lives in, or None (a server, or memory)."""

    @abstractmethod
    def liveness(self, engine: Engine) -> holders.Liveness:
        """How a flusher shows it is alive, and sees that another is gone."""


class SQLiteDialect(Dialect):
    name = "sqlite"
    placeholder = "?"
    # SQLite stops ingest while a chunk is folded: chunks stay short.
    fold_batch_size = 50_000
    keeps_comments = False
    alters_in_batch = True
    # CPython's sqlite3 module adapts a bound None through two failed attribute lookups,
    # each formatting an AttributeError: more than the rest of an outbox row costs.
    binds_null_slowly = True

    def to_driver(self, column: Column[Any]) -> Callable[[Any], Any] | None:
        # The types' own conversions are slow on SQLite: the same text, made faster here.
        kind = column.type
        if isinstance(kind, schema.UTCDateTime):
            return _sqlite_datetime
        if isinstance(kind, Date):
            return date.isoformat
        if isinstance(kind, JSON):
            return _json_or_null if kind.none_as_null else json_dumps
        return super().to_driver(column)

    def insert(self, table: Table) -> Insert:
        return dialect_sqlite.insert(table)

    def skip_locked(self, query: Select[T_row]) -> Select[T_row]:
        return query  # BEGIN IMMEDIATE already serialises claims

    def fold(self, engine: Engine, work: Callable[[Connection], T]) -> T:
        with engine.begin() as conn:  # BEGIN IMMEDIATE: writers, folds included, take turns
            return work(conn)

    def is_retryable(self, exc: BaseException) -> bool:
        return False  # writers take turns: no transaction fails for another's

    def hold_off_folds(self, conn: Connection) -> None:
        pass  # a fold is a writer like any other: BEGIN IMMEDIATE keeps them apart

    def bytes_in_use(self, engine: Engine) -> int:
        """The bytes of the file's pages in use (free pages left by deleted rows do not
        count), WAL aside."""
        with engine.connect() as conn:
            pragma = conn.exec_driver_sql
            pages = pragma("PRAGMA page_count").scalar_one()
            free = pragma("PRAGMA freelist_count").scalar_one()
            return int((pages - free) * pragma("PRAGMA page_size").scalar_one())

    def give_back_space(self, engine: Engine) -> bool:
        # Files are created with auto_vacuum = INCREMENTAL, so free pages can be cut off the
        # end; only when they are many, since new rows would reuse them anyway. Best effort:
        # a file busy past the timeout keeps its pages until the next pass.
        if self.database_file(engine) is None:
            return False  # in memory
        try:
            return self._give_back_space(engine)
        except (DBAPIError, self._sqlalchemy.loaded_dbapi.Error):
            log.warning(
                "could not give the folded rows' space back to the file system", exc_info=True
            )
            return False

    def _give_back_space(self, engine: Engine) -> bool:
        with engine.connect() as conn:
            pragma = conn.exec_driver_sql
            if pragma("PRAGMA auto_vacuum").scalar_one() != _INCREMENTAL:
                return False  # a file created before; VACUUM once converts it (docs)
            free = pragma("PRAGMA freelist_count").scalar_one()
            if free < max(_FREE_PAGES_WORTH_GIVING, pragma("PRAGMA page_count").scalar_one() // 4):
                return False
        # On the driver, outside a transaction: executed, the pragma would free one page per
        # step of the statement, and the log is emptied only outside a transaction (with
        # readers still in it, the next pass tries again).
        driver = engine.raw_connection()
        try:
            driver.executescript("PRAGMA incremental_vacuum; PRAGMA wal_checkpoint(TRUNCATE);")
        finally:
            driver.close()
        return True

    def refresh_statistics(
        self, engine: Engine, table: Table, columns: Iterable[Column[Any]]
    ) -> None:
        pass  # the planner needs none for the fold's queries

    def lock_for_migration(self, conn: Connection) -> None:
        pass  # BEGIN IMMEDIATE: one migration's transaction at a time

    @contextmanager
    def copying(self, conn: Connection, table: str) -> Iterator[None]:
        # The copy starts a new sqlite_sequence row at its highest id, or none if it is empty.
        sequence = "SELECT seq FROM sqlite_sequence WHERE name = ?"
        handed_out = conn.exec_driver_sql(sequence, (table,)).scalar()
        yield
        if handed_out is None:
            return
        if conn.exec_driver_sql(sequence, (table,)).scalar() is None:
            conn.exec_driver_sql(
                "INSERT INTO sqlite_sequence (name, seq) VALUES (?, ?)", (table, handed_out)
            )
        else:
            conn.exec_driver_sql(
                "UPDATE sqlite_sequence SET seq = max(seq, ?) WHERE name = ?", (handed_out, table)
            )

    def database_file(self, engine: Engine) -> Path | None:
        return sqlite_file(engine.url)

    def liveness(self, engine: Engine) -> holders.Liveness:
        # A lock file per holder; in memory there is no file, and only leases tell.
        path = self.database_file(engine)
        return holders.LeaseOnly() if path is None else holders.LockFiles(Path(f"{path}-holders"))


class PostgresDialect(Dialect):
    name = "postgresql"
    placeholder = "%s"
    # The fold blocks no one, and each chunk upserts hot keys again: large chunks fold faster.
    fold_batch_size = 200_000
    keeps_comments = True
    alters_in_batch = False
    binds_null_slowly = False

    def insert(self, table: Table) -> Insert:
        return dialect_postgresql.insert(table)

    def skip_locked(self, query: Select[T_row]) -> Select[T_row]:
        return query.with_for_update(skip_locked=True)

    def fold(self, engine: Engine, work: Callable[[Connection], T]) -> T:
        # REPEATABLE READ, so a chunk deletes exactly the rows it counted, under a lock that
        # deliveries take shared (hold_off_folds), so no update of theirs fails the chunk.
        with engine.connect() as conn:
            # Taken before the transaction begins, so its snapshot follows every delivery
            # that committed while this waited.
            conn.execute(select(func.pg_advisory_lock(FOLD_LOCK)))
            conn.commit()
            try:
                conn.execution_options(isolation_level="REPEATABLE READ")
                with conn.begin():
                    return work(conn)
            finally:
                conn.execution_options(isolation_level="READ COMMITTED")
                conn.execute(select(func.pg_advisory_unlock(FOLD_LOCK)))
                conn.commit()

    def is_retryable(self, exc: BaseException) -> bool:
        # Serialization failure, deadlock: writers other than deliveries may still update a
        # row the chunk upserts.
        return isinstance(exc, DBAPIError) and getattr(exc.orig, "sqlstate", None) in _RETRYABLE

    def hold_off_folds(self, conn: Connection) -> None:
        conn.execute(select(func.pg_advisory_xact_lock_shared(FOLD_LOCK)))

    def bytes_in_use(self, engine: Engine) -> int:
        # Deleted rows' space stays in the server's files: there is no cheap measure.
        raise NotImplementedError("PostgreSQL has no measure of the bytes in use")

    def refresh_statistics(
        self, engine: Engine, table: Table, columns: Iterable[Column[Any]]
    ) -> None:
        # Stale statistics make the planner sort a fold chunk on disk instead of hashing
        # it; a small sample of the filtered columns is enough to choose.
        with engine.begin() as conn:
            names = ", ".join(column.name for column in columns)
            conn.exec_driver_sql("SET LOCAL default_statistics_target = 10")
            conn.exec_driver_sql(f"ANALYZE {table.name} ({names})")

    def lock_for_migration(self, conn: Connection) -> None:
        conn.execute(select(func.pg_advisory_xact_lock(MIGRATE_LOCK)))

    def database_file(self, engine: Engine) -> Path | None:
        return None  # the server's

    def liveness(self, engine: Engine) -> holders.Liveness:
        return holders.AdvisoryLocks(engine)


class utc_day(FunctionElement[date]):
    """The UTC day of a timestamp column, in SQL: the outbox derives it rather than store it."""

    type = Date()
    inherit_cache = True


@compiles(utc_day, "sqlite")
def _utc_day_sqlite(element: utc_day, compiler: SQLCompiler, **kw: Any) -> str:
    # Timestamps are stored as UTC text that starts with the day ('YYYY-MM-DD HH:MM:SS…').
    return f"substr({compiler.process(element.clauses, **kw)}, 1, 10)"


@compiles(utc_day, "postgresql")
def _utc_day_postgresql(element: utc_day, compiler: SQLCompiler, **kw: Any) -> str:
    return f"CAST(timezone('UTC', {compiler.process(element.clauses, **kw)}) AS DATE)"


_DIALECTS: dict[str, type[Dialect]] = {d.name: d for d in (SQLiteDialect, PostgresDialect)}


def dialect_for(bind: Engine | Connection) -> Dialect:
    """The dialect of the database ``bind`` is connected to."""
    return _DIALECTS[bind.dialect.name](bind.dialect)


_INCREMENTAL = 2  # PRAGMA auto_vacuum's value for INCREMENTAL
_FREE_PAGES_WORTH_GIVING = 2048  # 8 MiB of 4 KiB pages


def _json_or_null(value: Any) -> str | None:
    """A JSON column whose None is SQL NULL, as its type sends it."""
    return None if value is None else json_dumps(value)


@functools.lru_cache(maxsize=4096)
def _sqlite_datetime(moment: datetime) -> str:
    """The text SQLAlchemy's SQLite DATETIME stores for a UTC moment (naive means UTC).
    Cached: a message's moments repeat across its ledger and outbox rows, and its batch."""
    if moment.tzinfo is UTC:  # every moment a message carries: its "+00:00" is cut off
        return moment.isoformat(" ", "microseconds")[:-6]
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment.isoformat(" ", "microseconds")
