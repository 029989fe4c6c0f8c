"""Whether the flusher that claimed a row is still alive, so a crash frees its claims at once.

Each flusher holds, for as long as it lives, a lock that goes away with its process: on
PostgreSQL a session advisory lock keyed by its name, on a connection of its own; on SQLite
an ``flock`` on a file of its own in the ``<database>-holders`` folder. A flusher that can
take another's lock knows that one is gone, and frees its claims without waiting for the
lease. The lease stays the rule where liveness cannot be seen (a SQLite holder on another
host, an in-memory database).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from sqlalchemy import Connection, Engine, func, select
from sqlalchemy.exc import DBAPIError

if TYPE_CHECKING:
    from accoil_buffer.store.engine import Database

HOST = socket.gethostname()[:30]
_INHERITED: list[Connection] = []  # a parent's connections, never to be used or closed here


class Liveness(Protocol):
    def hold(self, holder: str) -> None:
        """Take ``holder``'s lock for the life of this process (or until ``release``), or
        take it again if it was lost (its session ended, its file was deleted): another
        flusher that finds it free frees this one's claims. Cheap when it is still held."""

    def release(self) -> None:
        """Give the lock up (a clean close: the holder's claims are released already)."""

    def forget(self) -> None:
        """In a forked child: drop the parent's lock without touching it (it stays the
        parent's)."""

    def is_dead(self, conn: Connection, holder: str) -> bool:
        """True only when ``holder`` is known to be gone."""


def holder_name(tag: str) -> str:
    """A flusher's name in the claim columns: its host, then a random tag."""
    return f"{HOST}:{tag}"


def liveness(database: Database) -> Liveness:
    """The lock the database's dialect chooses for holders."""
    return database.dialect.liveness(database.engine)


class LeaseOnly:
    def hold(self, holder: str) -> None:
        pass

    def release(self) -> None:
        pass

    def forget(self) -> None:
        pass

    def is_dead(self, conn: Connection, holder: str) -> bool:
        return False


class LockFiles:
    def __init__(self, folder: Path) -> None:
        self._folder = folder
        self._held: tuple[int, Path] | None = None

    def _file(self, holder: str) -> Path:
        return self._folder / (holder.replace(":", "_").replace("/", "_") + ".lock")

    def hold(self, holder: str) -> None:
        held = self._held
        # Still held unless its file was deleted from under it (no links left).
        if held is not None and held[1] == self._file(holder) and os.fstat(held[0]).st_nlink:
            return
        self.release()
        self._folder.mkdir(mode=0o700, exist_ok=True)
        path = self._file(holder)
        descriptor = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._held = (descriptor, path)

    def release(self) -> None:
        if self._held is not None:
            descriptor, path = self._held
            path.unlink(missing_ok=True)
            os.close(descriptor)
            self._held = None

    def forget(self) -> None:
        if self._held is not None:
            os.close(self._held[0])  # the parent's descriptor still holds the lock
            self._held = None

    def is_dead(self, conn: Connection, holder: str) -> bool:
        if not holder.startswith(f"{HOST}:"):
            return False  # another host's process: only its lease can tell
        path = self._file(holder)
        try:
            descriptor = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            return True  # closed cleanly, or already found dead
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        finally:
            os.close(descriptor)  # also drops the lock, if it was taken
        path.unlink(missing_ok=True)
        return True


class AdvisoryLocks:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._held: tuple[str, Connection] | None = None

    def hold(self, holder: str) -> None:
        if self._held is not None and self._held[0] == holder and _alive(self._held[1]):
            return
        self.release()
        connection = self._engine.connect()
        # Out of the pool: closing it must end the session, and the lock with it.
        connection.detach()
        connection.execute(select(func.pg_advisory_lock(_key(holder))))
        connection.commit()
        self._held = (holder, connection)

    def release(self) -> None:
        if self._held is not None:
            self._held[1].close()  # the session's advisory lock goes with it
            self._held = None

    def forget(self) -> None:
        # Closing would end the parent's session on the socket both share: keep the object
        # alive, unused, for the life of this process.
        if self._held is not None:
            _INHERITED.append(self._held[1])
            self._held = None

    def is_dead(self, conn: Connection, holder: str) -> bool:
        # A transaction-level lock: released again when the caller's transaction ends.
        return bool(conn.scalar(select(func.pg_try_advisory_xact_lock(_key(holder)))))


def _alive(connection: Connection) -> bool:
    """Whether the session still answers (the server ends it on a restart, a terminated
    backend or an ``idle_session_timeout``, and its advisory locks with it)."""
    try:
        connection.exec_driver_sql("SELECT 1")
        connection.commit()
    except DBAPIError:
        return False
    return True


def _key(holder: str) -> int:
    """A 64-bit advisory lock key for a holder's name."""
    return int.from_bytes(hashlib.sha256(holder.encode()).digest()[:8], "big", signed=True)
