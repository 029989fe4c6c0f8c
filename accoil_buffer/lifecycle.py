"""A buffer's life in its process: the scheduler, ``close()`` within a time budget, the exit
hook that closes it, and the fork hook that gives a forked child a working buffer of its own."""

from __future__ import annotations

import atexit
import logging
import os
import threading
import weakref

from accoil_buffer.errors import StorageError
from accoil_buffer.scheduler import Scheduler
from accoil_buffer.store.forks import if_alive
from accoil_buffer.wiring import Parts

log = logging.getLogger(__name__)
# Buffers with threads of their own (a scheduler, a group writer) until they are closed, so
# that the exit hook commits what they queued even if the app dropped every reference.
_RUNNING: set[Lifecycle] = set()


class Lifecycle:
    """Starts, closes and forks the parts of one buffer."""

    def __init__(self, parts: Parts, *, start: bool) -> None:
        self._parts = parts
        self.closed = False
        self._scheduler: Scheduler | None = None
        if start:
            self._scheduler = parts.scheduler()
            self._scheduler.start()
        if start or parts.config.durability == "group":
            _RUNNING.add(self)
        # Registered after the database's own fork hooks, so that they run first in a child.
        me = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: if_alive(me, Lifecycle._after_fork_in_child))
        atexit.register(if_alive, me, Lifecycle.close)

    def close(self, timeout: float | None = None) -> None:
        """Commit queued messages, stop the scheduler, fold what this buffer wrote, release
        the database; idempotent. Waits at most ``timeout`` seconds (default
        ``close_timeout_seconds``), even when the database is gone."""
        if self.closed:
            return
        self.closed = True
        _RUNNING.discard(self)
        budget = self._parts.config.close_timeout_seconds if timeout is None else timeout
        finisher = threading.Thread(target=self._finish, name="accoil-buffer-close", daemon=True)
        finisher.start()
        finisher.join(budget)
        if finisher.is_alive():
            log.error(
                "close() gave up after %.1f s; %d queued messages were not committed",
                budget,
                self._parts.recorder.queued,
            )

    def _finish(self) -> None:
        parts = self._parts
        if parts.delivery is not None:
            parts.delivery.stop()  # a running pass ends after its in-flight requests
        if not parts.recorder.close():
            return
        try:
            # Before waiting for a running pass: its in-flight requests may take up to
            # request_timeout_seconds, and what was accepted is folded either way.
            if parts.recorder.wrote:
                parts.fold()
        except StorageError:
            log.exception("could not fold the outbox at close; the messages stay in the outbox")
        try:
            if self._scheduler is not None:
                self._scheduler.shutdown()
        finally:
            if parts.delivery is not None:
                parts.delivery.close()
            parts.database.dispose()

    def _after_fork_in_child(self) -> None:
        """A forked child (gunicorn --preload, Celery prefork) gets new connections, an empty
        queue (the parent commits what it had queued), a new delivery identity and, if the
        parent had one, its own scheduler."""
        if self.closed:
            return
        parts = self._parts
        parts.database.engine.dispose(close=False)
        parts.recorder.after_fork_in_child()
        if parts.delivery is not None:
            parts.delivery.after_fork_in_child()
        if self._scheduler is not None:
            self._scheduler = parts.scheduler()
            self._scheduler.start()
