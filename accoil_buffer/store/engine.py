"""Opening a database, and every difference between SQLite and PostgreSQL, decided once here.

SQLite: WAL, ``BEGIN IMMEDIATE`` for every transaction (so writers queue on the busy timeout
instead of failing with "database is locked" mid-transaction), the file created 0600, and
``fork()`` held until no connection is in use.
PostgreSQL (psycopg 3): folds run in REPEATABLE READ under a session advisory lock, so a fold
sees one snapshot of the outbox and deletes exactly the rows it counted; deliveries hold the
same lock shared while they write, so no chunk is undone by their updates.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar
from urllib.parse import quote, unquote

from sqlalchemy import (
    JSON,
    Column,
    Connection,
    Date,
    Engine,
    Select,
    Table,
    create_engine,
    event,
    func,
    select,
)
from sqlalchemy.dialects import postgresql as dialect_postgresql
from sqlalchemy.dialects import registry
from sqlalchemy.dialects import sqlite as dialect_sqlite
from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.pool import PoolProxiedConnection, StaticPool
from tenacity import (
    Retrying,
    before_sleep_log,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)

from accoil_buffer.config import Config
from accoil_buffer.errors import ConfigError
from accoil_buffer.messages import compact_json
from accoil_buffer.store import schema

T = TypeVar("T")
T_row = TypeVar("T_row", bound=tuple[Any, ...])
Insert = dialect_sqlite.Insert | dialect_postgresql.Insert
# Keys of PostgreSQL advisory locks taken by accoil-buffer ("accoil" in ASCII, then a role).
FOLD_LOCK = 0x6163636F696C_01
MIGRATE_LOCK = 0x6163636F696C_02
_RETRYABLE_SQLSTATES = {"40001", "40P01"}  # serialization failure, deadlock detected
_SLICE = 1000  # rows bound per statement of a DirectInsert
log = logging.getLogger(__name__)


def _json_dumps(value: Any) -> str:
    # Readable Unicode in the tables people inspect with sqlite3/psql. Most outbox rows store
    # JSON null twice (no traits, no kept payload): no need to run the encoder for that.
    if value is None:
        return "null"
    return compact_json(value)


class Database:
    """An engine and its dialect's capabilities."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.is_postgresql = engine.dialect.name == "postgresql"

    @property
    def sqlite_path(self) -> Path | None:
        """The SQLite file, or None (PostgreSQL, or a database in memory)."""
        if self.is_postgresql:
            return None
        database = self.engine.url.database or ""
        if not database.startswith("file:"):
            return None  # in memory: the URL of a file is rewritten to file:... at creation
        return Path(unquote(database.removeprefix("file:")))

    @classmethod
    def open(cls, config: Config) -> Database:
        return cls(create_database_engine(config))

    @property
    def fold_batch_size(self) -> int:
        """Outbox rows folded per transaction unless configured. SQLite stops ingest while a
        chunk is folded, so its chunks stay short (about 0.15 s each). PostgreSQL's fold blocks
        no one, and each chunk upserts the counts of hot keys again: there chunks of 200,000
        folded 200,000 track events about 1.8x as fast as chunks of 50,000. A chunk's trait
        merges go 50,000 rows at a time whatever its size (``rollup._PROFILE_STEP``)."""
        return 200_000 if self.is_postgresql else 50_000

    @property
    def placeholder(self) -> str:
        """The driver's parameter marker, for SQL executed directly."""
        return "%s" if self.is_postgresql else "?"

    def to_driver(self, column: Column[Any]) -> Callable[[Any], Any] | None:
        """How a value of ``column`` goes to the driver when SQL is executed directly: as
        SQLAlchemy's type of the column would send it, without its per-row machinery, which
        took about a third of the group writer's time. On SQLite, where the types' own
        conversions were the slow part, datetimes, dates and JSON are converted here to the
        same text (a test compares them); elsewhere the type's own bind processor is used.
        None: the value goes as it is."""
        kind = column.type
        if not self.is_postgresql:
            if isinstance(kind, schema.UTCDateTime):
                return _sqlite_datetime
            if isinstance(kind, Date):
                return date.isoformat
            if isinstance(kind, JSON):
                return _json_dumps
        dialect = self.engine.dialect
        return kind.dialect_impl(dialect).bind_processor(dialect)

    def insert(self, table: Table) -> Insert:
        """An INSERT with ``on_conflict_do_update``/``do_nothing`` for this dialect."""
        return (dialect_postgresql.insert if self.is_postgresql else dialect_sqlite.insert)(table)

    def skip_locked(self, query: Select[T_row]) -> Select[T_row]:
        """Let concurrent claimers pass over each other's rows: ``FOR UPDATE SKIP LOCKED`` on
        PostgreSQL; SQLite needs nothing, as ``BEGIN IMMEDIATE`` already serialises claims."""
        return query.with_for_update(skip_locked=True) if self.is_postgresql else query

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A write transaction."""
        with self.engine.begin() as conn:
            yield conn

    @contextmanager
    def direct_write(self) -> Iterator[DirectTransaction]:
        """A write transaction for SQL executed directly (the buffer's appends): begun and
        committed as ``write()`` would (``BEGIN IMMEDIATE`` on SQLite), without SQLAlchemy's
        transaction and statement machinery. Around one message in sync mode (begin, two
        inserts, commit) that machinery cost as much as SQLite's own work at
        ``synchronous = NORMAL``."""
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
        """A write transaction that no fold chunk overlaps: on PostgreSQL it waits for the
        chunk being folded, if any, and holds the next one off until it commits. Deliveries
        write through it. A chunk folds in REPEATABLE READ, which fails on a row that another
        transaction updated since its snapshot: with deliveries recording as fast as Accoil
        answered, every chunk failed so, eight times over, and the fold gave up. SQLite's
        writers already take turns (``BEGIN IMMEDIATE``)."""
        with self.engine.begin() as conn:
            if self.is_postgresql:
                conn.execute(select(func.pg_advisory_xact_lock_shared(FOLD_LOCK)))
            yield conn

    def run_fold(self, work: Callable[[Connection], T]) -> T:
        """Run ``work`` in a transaction that no other fold overlaps and that sees one snapshot.

        Retried on PostgreSQL serialization failures: writers other than deliveries (which
        keep between chunks) may still update a row the chunk upserts.
        """
        retrying = Retrying(
            retry=retry_if_exception(_is_retryable),
            stop=stop_after_attempt(8),
            wait=wait_random_exponential(multiplier=0.05, max=2),
            before_sleep=before_sleep_log(log, logging.WARNING),
            reraise=True,
        )
        for attempt in retrying:
            with attempt:
                return self._fold_once(work)
        raise AssertionError("unreachable: tenacity reraises the last error")

    def _fold_once(self, work: Callable[[Connection], T]) -> T:
        if not self.is_postgresql:
            with self.engine.begin() as conn:  # BEGIN IMMEDIATE serialises writers
                return work(conn)
        with self.engine.connect() as conn:
            # Taken before the transaction begins, so its snapshot follows every delivery
            # that committed while this waited (see write_between_folds).
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

    def bytes_in_use(self) -> int:
        """The bytes the SQLite file's pages in use take (free pages, left by deleted rows, do
        not count): what the buffer occupies on disk, WAL aside. SQLite only: a byte bound is
        refused on PostgreSQL when the engine is created."""
        with self.engine.connect() as conn:
            pragma = conn.exec_driver_sql
            pages = pragma("PRAGMA page_count").scalar_one()
            free = pragma("PRAGMA freelist_count").scalar_one()
            return int((pages - free) * pragma("PRAGMA page_size").scalar_one())

    def refresh_statistics(self, table: Table, columns: Iterable[Column[Any]]) -> None:
        """Let PostgreSQL's planner see a table that filled up since autovacuum last looked:
        with stale statistics it sorts a fold chunk on disk instead of hashing it, about 2x
        slower. Only ``columns``, those the queries filter and group on, are sampled, and
        only 3,000 rows of them (a tenth of the default): enough to choose between hashing
        and sorting, in a sixth of the time. SQLite's planner needs none for these queries."""
        if self.is_postgresql:
            with self.engine.begin() as conn:
                names = ", ".join(column.name for column in columns)
                conn.exec_driver_sql("SET LOCAL default_statistics_target = 10")
                conn.exec_driver_sql(f"ANALYZE {table.name} ({names})")

    def lock_for_migration(self, conn: Connection) -> None:
        """Serialise concurrent migrations (several daemons starting at once)."""
        if self.is_postgresql:
            conn.execute(select(func.pg_advisory_xact_lock(MIGRATE_LOCK)))

    def dispose(self) -> None:
        self.engine.dispose()


class Rows(Protocol):
    """What a statement executed directly gives back."""

    @property
    def rowcount(self) -> int: ...

    def fetchall(self) -> Sequence[Any]: ...


class Executor(Protocol):
    """Executes SQL as the driver takes it: a ``Connection``, or a ``DirectTransaction``."""

    def exec_driver_sql(self, statement: str, parameters: Any = None) -> Rows: ...


@dataclass(frozen=True)
class _Fetched:
    rowcount: int
    rows: list[Any]

    def fetchall(self) -> list[Any]:
        return self.rows


class DirectTransaction:
    """A transaction on a pooled driver connection (see ``Database.direct_write``).

    Driver errors are raised as SQLAlchemy raises them, and a lost connection is invalidated
    as SQLAlchemy would do it, so callers handle one kind of error whichever path wrote."""

    def __init__(self, engine: Engine) -> None:
        self._dialect = engine.dialect
        self._hide_parameters = engine.hide_parameters
        try:
            self._driver = engine.raw_connection()
        except self._dialect.loaded_dbapi.Error as exc:
            raise self._translated(exc, "connect", None, lost=False) from exc
        self._cursor = self._driver.cursor()
        self._lost = False

    def begin(self) -> None:
        self._run("BEGIN", None, self._dialect.do_begin)

    def commit(self) -> None:
        self._run("COMMIT", None, self._dialect.do_commit)

    def rollback(self) -> None:
        """Best effort: the error that made the caller roll back is the one to report. A
        lost connection has nothing to roll back (the server did)."""
        if self._lost:
            return
        try:
            self._run("ROLLBACK", None, self._dialect.do_rollback)
        except DBAPIError:
            log.warning("could not roll back a direct write transaction", exc_info=True)

    def close(self) -> None:
        """Return the connection to the pool."""
        self._driver.close()

    def exec_driver_sql(self, statement: str, parameters: Any = None) -> _Fetched:
        """Execute ``statement`` once (``parameters`` a tuple) or for each of a list of tuples,
        as ``Connection.exec_driver_sql`` does; rows it returns are read at once."""

        def execute(_: PoolProxiedConnection) -> _Fetched:
            if isinstance(parameters, list):
                self._cursor.executemany(statement, parameters)
            else:
                self._cursor.execute(statement, parameters or ())
            rows = list(self._cursor.fetchall()) if self._cursor.description else []
            return _Fetched(self._cursor.rowcount, rows)

        return self._run(statement, parameters, execute)

    def _run(
        self, statement: str, parameters: Any, action: Callable[[PoolProxiedConnection], T]
    ) -> T:
        try:
            return action(self._driver)
        except self._dialect.loaded_dbapi.Error as exc:
            self._lost = self._dialect.is_disconnect(exc, self._driver, self._cursor)
            if self._lost:
                self._driver.invalidate(exc)
            raise self._translated(exc, statement, parameters, lost=self._lost) from exc

    def _translated(
        self, exc: Exception, statement: str, parameters: Any, *, lost: bool
    ) -> BaseException:
        return DBAPIError.instance(
            statement,
            parameters,
            exc,
            self._dialect.loaded_dbapi.Error,
            hide_parameters=self._hide_parameters,
            connection_invalidated=lost,
            dialect=self._dialect,
        )


class DirectInsert:
    """An INSERT of many rows, executed directly (``exec_driver_sql``) with values converted
    as the columns' types would convert them: SQLAlchemy's per-row processing was about a
    third of the group writer's time, and 30 us a row of a trait merge on SQLite.
    ``on_conflict`` and ``returning`` are SQL that both databases spell alike."""

    def __init__(
        self,
        database: Database,
        table: Table,
        names: Sequence[str],
        *,
        on_conflict: str = "",
        returning: str = "",
    ):
        converters = [database.to_driver(table.c[name]) for name in names]
        self._converters = [(i, c) for i, c in enumerate(converters) if c is not None]
        self._head = f"INSERT INTO {table.name} ({', '.join(names)}) VALUES "
        self._row = f"({', '.join([database.placeholder] * len(names))})"
        self._on_conflict = on_conflict
        self._returning = returning
        # One row's statement, for executemany and for run_one.
        self._one_row = self._head + self._row + on_conflict

    def _values(self, row: Sequence[object]) -> tuple[object, ...]:
        values = list(row)
        for i, convert in self._converters:
            values[i] = convert(values[i])
        return tuple(values)

    def run(self, conn: Executor, rows: Sequence[Sequence[object]]) -> list[Any]:
        """Insert ``rows`` 1,000 at a time (a 10,000-message batch bound at once held about
        30 MB of parameters) and return what the RETURNING clause gave, if any. With one,
        each slice is one multi-row statement, so that RETURNING reports every row."""
        returned: list[Any] = []
        for start in range(0, len(rows), _SLICE):
            part = [self._values(row) for row in rows[start : start + _SLICE]]
            if not self._returning:
                conn.exec_driver_sql(self._one_row, part)
                continue
            rows_sql = ", ".join([self._row] * len(part))
            sql = self._head + rows_sql + self._on_conflict + self._returning
            flat = tuple(value for row in part for value in row)
            returned.extend(row[0] for row in conn.exec_driver_sql(sql, flat).fetchall())
        return returned

    def run_one(self, conn: Executor, row: Sequence[object]) -> bool:
        """Insert one row, without its RETURNING clause; whether it was inserted (and not
        skipped by the ON CONFLICT clause). Reading a RETURNING result back cost three times
        the insert itself (60 against 17 us), which a call in sync mode paid every time."""
        return conn.exec_driver_sql(self._one_row, self._values(row)).rowcount > 0


@functools.lru_cache(maxsize=4096)
def _sqlite_datetime(moment: datetime) -> str:
    """The text SQLAlchemy's SQLite DATETIME stores for a UTC moment (naive means UTC).

    Cached: a message's ``received_at`` goes to the ledger and to the outbox, and is often its
    timestamp too (or the whole batch's), and formatting was a fifth of the group writer's
    time. Equal moments give equal text, whatever their offset. 4,096 moments cover the
    ledger and outbox rows of the writer's largest batch (2,000 messages)."""
    if moment.tzinfo is UTC:  # every moment a message carries: its "+00:00" is cut off
        return moment.isoformat(" ", "microseconds")[:-6]
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment.isoformat(" ", "microseconds")


def _is_retryable(exc: BaseException) -> bool:
    if not isinstance(exc, DBAPIError):
        return False
    return getattr(exc.orig, "sqlstate", None) in _RETRYABLE_SQLSTATES


def create_database_engine(config: Config) -> Engine:
    """Create the engine for ``config.database_url``; ``postgresql://`` means psycopg 3."""
    try:
        url = make_url(config.database_url)
    except ArgumentError as exc:
        raise ConfigError(f"database_url is not a database URL: {exc}") from exc
    backend = url.get_backend_name()
    if backend in {"postgresql", "postgres"}:
        if config.max_outbox_bytes:
            # The space of deleted rows stays in PostgreSQL's files to be reused, so there is
            # no cheap measure of the live bytes of a table.
            raise ConfigError(
                "max_outbox_bytes bounds the size of a SQLite file; on PostgreSQL, whose "
                "server manages its own disk, bound the outbox with max_outbox_rows"
            )
        if url.drivername in {"postgresql", "postgres"}:
            url = url.set(drivername="postgresql+psycopg")
        try:
            return create_engine(url, pool_pre_ping=True, json_serializer=_json_dumps)
        except ImportError as exc:  # psycopg comes with the "postgres" extra only
            raise ConfigError(
                "database_url is a PostgreSQL URL, which needs psycopg 3: "
                "pip install 'accoil-buffer[postgres]'"
            ) from exc
    if backend != "sqlite":
        raise ConfigError(
            f"database_url must be sqlite:/// or postgresql://, got a {backend!r} URL"
        )
    if url.get_driver_name() != "pysqlite":
        raise ConfigError(
            f"database_url: SQLite is used through Python's sqlite3 module (sqlite:///path), "
            f"not {url.get_driver_name()!r}"
        )
    url = url.set(drivername=_SQLITE_DRIVER)
    in_memory = url.database in (None, "", ":memory:")
    if not in_memory:
        path = Path(str(url.database))
        _create_private_file(path)
        # Open read-write only: if the file disappears later, fail loudly rather than
        # start writing into a new, empty database in its place.
        url = url.set(
            database=f"file:{quote(str(path))}", query={**url.query, "mode": "rw", "uri": "true"}
        )
    engine = create_engine(
        url,
        json_serializer=_json_dumps,
        connect_args={"timeout": config.sqlite_busy_timeout_seconds, "check_same_thread": False},
        **({"poolclass": StaticPool} if in_memory else {}),
    )
    busy_ms = int(config.sqlite_busy_timeout_seconds * 1000)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control from the driver: the dialect's do_begin is what runs.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        if not in_memory:
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={config.sqlite_synchronous}")
        cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
        cursor.close()

    gate = _ForkGate()
    event.listen(engine, "checkout", lambda *_: gate.enter())
    event.listen(engine, "checkin", lambda *_: gate.leave())
    ref = weakref.ref(gate)
    os.register_at_fork(
        before=lambda: if_alive(ref, _ForkGate.before_fork),
        after_in_parent=lambda: if_alive(ref, _ForkGate.after_fork_in_parent),
        after_in_child=lambda: if_alive(ref, _ForkGate.after_fork_in_child),
    )
    return engine


class ImmediateSQLiteDialect(SQLiteDialect_pysqlite):
    """pysqlite that begins every transaction with ``BEGIN IMMEDIATE``.

    Begun here rather than by a "begin" event running ``exec_driver_sql``, as SQLAlchemy's
    recipe does: that statement's trip through the execution machinery took a third of a
    one-insert transaction, and here an error (the busy timeout passing) is still wrapped
    like any other.
    """

    supports_statement_cache = True  # a subclass must say so again, or nothing is cached

    def do_begin(self, dbapi_connection: PoolProxiedConnection) -> None:
        dbapi_connection.execute("BEGIN IMMEDIATE")


_SQLITE_DRIVER = "sqlite+accoil_buffer"
registry.register(_SQLITE_DRIVER.replace("+", "."), __name__, ImmediateSQLiteDialect.__name__)


class _ForkGate:
    """Holds fork() until no connection to this SQLite database is in use.

    SQLite keeps its record of which locks the process holds on a database file in process
    memory. A fork while a thread holds one (a writer mid-commit) copies that record into the
    child, whose own new connections then wait on a lock no one there will release. So a fork
    waits, up to ``_FORK_WAIT`` seconds, for connections in use to be returned, and none is
    handed out until the fork is done.
    """

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._condition = threading.Condition()
        self._in_use = 0
        self._forking = False

    def enter(self) -> None:
        with self._condition:
            self._condition.wait_for(lambda: not self._forking)
            self._in_use += 1

    def leave(self) -> None:
        with self._condition:
            self._in_use -= 1
            self._condition.notify_all()

    def before_fork(self) -> None:
        with self._condition:
            self._forking = True
            if not self._condition.wait_for(lambda: self._in_use <= 0, _FORK_WAIT):
                log.warning(
                    "fork() went ahead with %d SQLite connections in use after %.0f s; the "
                    "child may wait on a lock held in the parent",
                    self._in_use,
                    _FORK_WAIT,
                )

    def after_fork_in_parent(self) -> None:
        with self._condition:
            self._forking = False
            self._condition.notify_all()

    def after_fork_in_child(self) -> None:
        self._reset()  # the parent's threads, and their connections, are not here


_FORK_WAIT = 5.0


def if_alive(ref: weakref.ref[T], action: Callable[[T], object]) -> None:
    """Run ``action`` on what ``ref`` refers to, unless it is gone: for fork and exit hooks,
    which cannot be unregistered and must not keep their object alive."""
    target = ref()
    if target is not None:
        action(target)


def _create_private_file(path: Path) -> None:
    """Create the SQLite file readable by its owner only (it holds user data)."""
    if path.exists():
        return
    if not path.parent.exists():
        raise ConfigError(f"database_url points into {path.parent}, which does not exist")
    os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
