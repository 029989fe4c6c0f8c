"""Backpressure: at a configured bound a call is refused and counted, never dropped.

Two bounds: rows waiting to be folded or forwarded (``max_outbox_rows``) and, on SQLite, the
bytes the database file uses (``max_outbox_bytes``). Measuring is a query, so a bound is
re-measured at most every 0.5 s while far from its limit and on every call within 10% of it;
in between, what the calls add is counted in memory.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from accoil_buffer.errors import BufferFull, StorageError

log = logging.getLogger(__name__)

_FRESH_FOR = 0.5  # seconds a measurement is trusted while far from the limit
_CLOSE = 0.9  # within this share of the limit, every call measures


class Bound:
    """A limit (0: none) on what ``measure`` returns."""

    def __init__(self, key: str, limit: int, measure: Callable[[], int], what: str) -> None:
        self.key, self.limit, self.what = key, limit, what
        self._measure = measure
        self._known, self._at = 0, float("-inf")
        self._lock = threading.Lock()  # guards _known and _at
        self._measuring = threading.Lock()  # held while a measurement is taken

    def fits(self, amount: int) -> bool:
        """Whether ``amount`` more fits, measuring again if the last measurement is stale or
        the bound is close. Far from the limit, a caller does not wait for a measurement
        another is taking: the last one, plus what was added since, will do."""
        if self.limit <= 0:
            return True
        with self._lock:
            close = self._known + amount > self.limit * _CLOSE
            fresh = time.monotonic() - self._at <= _FRESH_FOR
            if not close and (fresh or self._measuring.locked()):
                return True
        with self._measuring:
            known = self._known_now()
        with self._lock:
            if known is not None:
                self._known = known
            self._at = time.monotonic()
            return self._known + amount <= self.limit

    def _known_now(self) -> int | None:
        try:
            return self._measure()
        except StorageError:
            # The database is away: the group writer keeps calls in memory (its own bound),
            # so judge by the last measure plus what was added since.
            log.debug("could not measure %s", self.key, exc_info=True)
            return None

    def take(self, amount: int) -> None:
        if self.limit <= 0:
            return
        with self._lock:
            self._known += amount

    def describe(self) -> str:
        return f"{self._known:,} {self.what}; {self.key} is {self.limit:,}"


class Backpressure:
    """Waits up to ``timeout`` seconds for room under every bound, else counts the refusal
    (``refuse(messages)``) and raises ``BufferFull``."""

    def __init__(
        self, rows: Bound, size: Bound, *, timeout: float, refuse: Callable[[int], None]
    ) -> None:
        self._rows, self._size = rows, size
        self._timeout, self._refuse = timeout, refuse

    def make_room(self, messages: int, size: int) -> None:
        deadline = time.monotonic() + self._timeout
        while True:
            full = [
                bound
                for bound, amount in ((self._rows, messages), (self._size, size))
                if not bound.fits(amount)
            ]
            if not full:
                self._rows.take(messages)
                self._size.take(size)
                return
            if time.monotonic() >= deadline:
                self._refuse(messages)
                raise BufferFull(
                    f"the buffer is full ({full[0].describe()}); the call was refused and "
                    "counted. Is the fold running, and can delivery reach Accoil?"
                )
            time.sleep(0.05)
