"""Creating the engine for a database URL: checks, drivers and SQLite's connection settings.

SQLite runs in WAL mode, begins every transaction with ``BEGIN IMMEDIATE`` (writers queue on
the busy timeout instead of failing mid-transaction), and its file is created 0600.
PostgreSQL is reached through psycopg 3.
"""

from __future__ import annotations

import os
import weakref
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from sqlalchemy import URL, Engine, create_engine, event
from sqlalchemy.dialects import registry
from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.pool import PoolProxiedConnection, StaticPool

from accoil_buffer.config import Config
from accoil_buffer.errors import ConfigError
from accoil_buffer.json_values import compact_json
from accoil_buffer.store.forks import ForkGate, if_alive


def json_dumps(value: Any) -> str:
    """JSON as the tables store it: readable Unicode, and JSON null without running the
    encoder."""
    if value is None:
        return "null"
    return compact_json(value)


_ENGINE_OPTIONS: dict[str, Any] = {
    "json_serializer": json_dumps,
    # A failed statement's error (logged, and shown by health and status) names the
    # statement, not its values: they are people's ids and traits.
    "hide_parameters": True,
}


def create_database_engine(config: Config) -> Engine:
    """Create the engine for ``config.database_url``; ``postgresql://`` means psycopg 3."""
    try:
        url = make_url(config.database_url)
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        # Neither the URL nor the parser's words: either could quote the password.
        raise ConfigError(
            "database_url is not a database URL (in a password, @ : / must be written %40 %3A %2F)"
        ) from None
    backend = url.get_backend_name()
    if backend in {"postgresql", "postgres"}:
        return _postgresql_engine(config, url)
    if backend != "sqlite":
        raise ConfigError(
            f"database_url must be sqlite:/// or postgresql://, got a {backend!r} URL"
        )
    if url.get_driver_name() != "pysqlite":
        raise ConfigError(
            f"database_url: SQLite is used through Python's sqlite3 module (sqlite:///path), "
            f"not {url.get_driver_name()!r}"
        )
    return _sqlite_engine(config, url)


def sqlite_file(url: URL) -> Path | None:
    """The file of a SQLite engine's URL, or None for a database in memory."""
    database = url.database or ""
    if not database.startswith("file:"):
        return None  # _sqlite_engine rewrites the URL of every file to file:...
    return Path(unquote(database.removeprefix("file:")))


def _postgresql_engine(config: Config, url: URL) -> Engine:
    if config.max_outbox_bytes:
        # PostgreSQL keeps deleted rows' space in its files: no cheap measure of live bytes.
        raise ConfigError(
            "max_outbox_bytes bounds the size of a SQLite file; on PostgreSQL, whose "
            "server manages its own disk, bound the outbox with max_outbox_rows"
        )
    if url.drivername in {"postgresql", "postgres"}:
        url = url.set(drivername="postgresql+psycopg")
    try:
        return create_engine(url, pool_pre_ping=True, **_ENGINE_OPTIONS)
    except ImportError as exc:  # psycopg comes with the "postgres" extra only
        raise ConfigError(
            "database_url is a PostgreSQL URL, which needs psycopg 3: "
            "pip install 'accoil-buffer[postgres]'"
        ) from exc


def _sqlite_engine(config: Config, url: URL) -> Engine:
    url = url.set(drivername=_SQLITE_DRIVER)
    in_memory = url.database in (None, "", ":memory:")
    if not in_memory:
        path = Path(str(url.database))
        _create_private_file(path)
        # Read-write only: a file deleted later fails loudly instead of starting a new, empty one.
        url = url.set(
            database=f"file:{quote(str(path))}", query={**url.query, "mode": "rw", "uri": "true"}
        )
    engine = create_engine(
        url,
        **_ENGINE_OPTIONS,
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
            # Only in a new, empty file (elsewhere it would wait for the write lock, to no
            # effect): a fold's freed pages can then be cut off its end (give_back_space).
            if cursor.execute("PRAGMA page_count").fetchone()[0] == 0:
                cursor.execute("PRAGMA auto_vacuum=INCREMENTAL")
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={config.sqlite_synchronous}")
        cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
        cursor.close()

    gate = ForkGate()
    event.listen(engine, "checkout", lambda *_: gate.enter())
    event.listen(engine, "checkin", lambda *_: gate.leave())
    ref = weakref.ref(gate)
    os.register_at_fork(
        before=lambda: if_alive(ref, ForkGate.before_fork),
        after_in_parent=lambda: if_alive(ref, ForkGate.after_fork_in_parent),
        after_in_child=lambda: if_alive(ref, ForkGate.after_fork_in_child),
    )
    return engine


class ImmediateSQLiteDialect(SQLiteDialect_pysqlite):
    """pysqlite that begins every transaction with ``BEGIN IMMEDIATE``, here rather than in a
    "begin" event, which costs a trip through the execution machinery per transaction."""

    supports_statement_cache = True  # a subclass must say so again, or nothing is cached

    def do_begin(self, dbapi_connection: PoolProxiedConnection) -> None:
        dbapi_connection.execute("BEGIN IMMEDIATE")


_SQLITE_DRIVER = "sqlite+accoil_buffer"
registry.register(_SQLITE_DRIVER.replace("+", "."), __name__, ImmediateSQLiteDialect.__name__)


def _create_private_file(path: Path) -> None:
    """Create the SQLite file readable by its owner only (it holds user data)."""
    if path.exists():
        return
    if not path.parent.exists():
        raise ConfigError(f"database_url points into {path.parent}, which does not exist")
    try:
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    except OSError as exc:  # a read-only folder, say
        raise ConfigError(f"database_url: cannot create {path}: {exc.strerror}") from None
