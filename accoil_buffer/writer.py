"""Group commit, two ways: calls that return at once and one writer thread commits what they
queued (``GroupWriter``); and calls that return only once committed, which share the commit
of others made at the same moment (``SharedCommits``).

The writer commits at least every ``interval`` seconds (5 ms by default), at most
``max_batch`` messages per transaction, and at most ``max_queued`` messages wait in memory.
A failed commit keeps its messages and tries again (the database may come back); nothing is
dropped. ``flush()`` waits until everything submitted before it is committed; ``close()``
does the same within a timeout, so process exit is never held up for longer than that.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any, Generic, TypeVar, cast

from accoil_buffer.errors import BufferClosed, BufferFull
from accoil_buffer.messages import Message

log = logging.getLogger(__name__)
C = TypeVar("C")  # a transaction's connection
T = TypeVar("T")


class GroupWriter:
    def __init__(
        self,
        commit: Callable[[Sequence[Message]], object],
        *,
        interval: float = 0.005,
        max_batch: int = 2000,
        max_queued: int = 10_000,
        retry_after: float = 0.5,
    ) -> None:
        self._commit = commit
        self._interval = interval
        self._max_batch = max_batch
        self._max_queued = max_queued
        self._retry_after = retry_after
        self._start_fresh()

    def _start_fresh(self) -> None:
        self._queue: deque[Message] = deque()
        self._condition = threading.Condition()
        self._submitted = 0  # messages ever submitted
        self._committed = 0  # messages ever committed
        self._closing = False
        self.last_error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="accoil-buffer-writer", daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        """Messages accepted but not yet committed."""
        with self._condition:
            return self._submitted - self._committed

    @property
    def pending_size(self) -> int:
        """The size of the messages accepted but not yet committed, as their JSON: summed
        when a byte bound is measured, rather than kept up by every call."""
        with self._condition:
            return sum(m.size for m in self._queue)

    def submit(self, messages: Sequence[Message]) -> None:
        """Queue messages. With ``max_queued`` already waiting, wait for the writer while it
        is committing (memory stays bounded); if it is failing, raise ``BufferFull``."""
        with self._condition:
            while len(self._queue) >= self._max_queued and not self._closing:
                self._condition.notify_all()
                if not self._condition.wait(1.0) and self.last_error is not None:
                    raise BufferFull(
                        f"{len(self._queue)} messages are waiting for the database, which is "
                        f"failing ({self.last_error}); the call was refused"
                    )
            if self._closing:
                raise BufferClosed("the Buffer is closed: its writer takes no more messages")
            before = len(self._queue)
            self._queue.extend(messages)
            self._submitted += len(messages)
            # Only on reaching a full batch: a writer busy committing checks the queue again
            # before it waits, so a call made while the queue is full need not wake it.
            if before < self._max_batch <= len(self._queue):
                self._condition.notify_all()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything submitted so far is committed; False if the timeout passed."""
        with self._condition:
            target = self._submitted
            self._condition.notify_all()
            return self._condition.wait_for(lambda: self._committed >= target, timeout)

    def close(self, timeout: float | None = None) -> bool:
        """Commit what is pending, then stop the thread; False if that did not finish in time."""
        with self._condition:
            self._closing = True
            self._condition.notify_all()
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def after_fork_in_child(self) -> None:
        """The parent still owns (and will commit) what it queued: start empty."""
        self._start_fresh()

    def _run(self) -> None:
        while True:
            with self._condition:
                self._condition.wait_for(
                    lambda: self._closing or len(self._queue) >= self._max_batch, self._interval
                )
                batch = [self._queue[i] for i in range(min(len(self._queue), self._max_batch))]
                if not batch and self._closing:
                    return
            if not batch:
                continue
            try:
                self._commit(batch)
            except Exception as exc:
                # Keep the messages: the database may come back. Closing gives up only
                # when close()'s timeout lets the interpreter exit.
                self.last_error = exc
                log.error("could not commit %d messages (%s); retrying", len(batch), exc)
                time.sleep(self._retry_after)
                continue
            with self._condition:
                for _ in batch:
                    self._queue.popleft()
                self._committed += len(batch)
                self.last_error = None
                self._condition.notify_all()


class _Turn(Generic[C, T]):
    """One caller's work in a shared transaction, and its outcome."""

    def __init__(self, work: Callable[[C], T]) -> None:
        self.work = work
        self.done = False
        self.result: T | None = None
        self.error: BaseException | None = None

    def outcome(self) -> T:
        if self.error is not None:
            raise self.error
        return cast(T, self.result)


class SharedCommits(Generic[C]):
    """Runs each caller's work in a transaction and returns once it is committed; callers who
    arrive while a transaction is committing go together in the next one, so concurrent
    requests queue for one commit instead of each for the database's write lock.

    If a shared transaction fails, each of its works is tried again alone, so that a batch
    the database refuses fails only its own caller.
    """

    def __init__(self, transaction: Callable[[], AbstractContextManager[C]]) -> None:
        self._transaction = transaction
        self._condition = threading.Condition()
        self._waiting: list[_Turn[C, Any]] = []
        self._leading = False

    def run(self, work: Callable[[C], T]) -> T:
        turn: _Turn[C, T] = _Turn(work)
        with self._condition:
            self._waiting.append(turn)
            while self._leading and not turn.done:
                self._condition.wait()
            if turn.done:
                return turn.outcome()
            self._leading = True
            group, self._waiting = self._waiting, []
        try:
            self._commit(group)
        except BaseException as exc:  # interrupted: nobody else would give the group an outcome
            for member in group:
                if member.result is None and member.error is None:
                    member.error = exc
            raise
        finally:
            with self._condition:
                for member in group:
                    member.done = True
                self._leading = False
                self._condition.notify_all()
        return turn.outcome()

    def _commit(self, group: list[_Turn[C, Any]]) -> None:
        try:
            with self._transaction() as conn:
                results = [member.work(conn) for member in group]
        except Exception as exc:
            if len(group) == 1:
                group[0].error = exc
                return
            for member in group:
                self._commit([member])
            return
        for member, result in zip(group, results, strict=True):
            member.result = result
