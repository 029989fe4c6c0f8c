"""Fork safety: ``fork()`` waits until no connection to a SQLite database is in use.

SQLite records the file locks a process holds in process memory, so a child forked while a
writer is mid-commit inherits a lock that no one there will ever release.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
_FORK_WAIT = 5.0  # seconds a fork waits for connections in use to be returned
log = logging.getLogger(__name__)


class ForkGate:
    """Holds fork() until the connections in use are returned, and hands none out meanwhile."""

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


def if_alive(ref: weakref.ref[T], action: Callable[[T], object]) -> None:
    """Run ``action`` on what ``ref`` refers to, unless it is gone: for fork and exit hooks,
    which cannot be unregistered and must not keep their object alive."""
    target = ref()
    if target is not None:
        action(target)
