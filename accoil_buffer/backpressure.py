"""Backpressure: at a configured bound a call is refused and counted, never dropped.

Two bounds: rows waiting to be folded or forwarded (``max_outbox_rows``) and, on SQLite, the
bytes the database file uses (``max_outbox_bytes``). Measuring is a query, so a bound is
re-measured at most every 0.5 s while far from its limit, in the background, and on every call
within 10% of it, by that call; in between, what the calls add is counted in memory.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections.abc import Callable

from accoil_buffer.errors import BufferFull, StorageError
from accoil_buffer.store.forks import if_alive

log = logging.getLogger(__name__)

_FRESH_FOR = 0.5  # seconds a measurement is trusted while far from the limit
_CLOSE = 0.9  # within this share of the limit, every call measures


class Bound:
    """A limit (0: none) on what ``measure`` returns."""

    def __init__(self, key: str, limit: int, measure: Callable[[], int], what: str) -> None:
        self.key, self.limit, self.what = key, limit, what
        self._measure = measure
        self._start_fresh()
        me = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: if_alive(me, Bound._start_fresh))

    def _start_fresh(self) -> None:
        """Also in a forked child: a measurement under way at the fork never ends there, where
        its thread does not exist, so it is forgotten with its locks and the parent's count."""
        self._known, self._at = 0, float("-inf")
        self._taken_while_measuring = 0  # let through since the measurement under way began
        self._lock = threading.Lock()  # guards _known, _at, _taken_… and _refreshing
        self._measuring = threading.Lock()  # held while a measurement is taken
        self._refreshing = False  # a background measurement is on its way

    def fits(self, amount: int) -> bool:
        """Whether ``amount`` more fits, measuring again if the bound is close. Far from the
        limit, a caller never waits for a measurement (after the first): the last one, plus
        what was added since, will do, and a stale one is taken again in the background. A
        count under a busy writer can take seconds, and no request should wait for it."""
        if self.limit <= 0:
            return True
        with self._lock:
            close = self._known + amount > self.limit * _CLOSE
            measured = self._at > float("-inf")
            if not close and (measured or self._measuring.locked()):
                stale = measured and time.monotonic() - self._at > _FRESH_FOR
                if stale and not self._refreshing:
                    self._refreshing = True
                    threading.Thread(
                        target=self._refresh, name=f"accoil-buffer-{self.key}", daemon=True
                    ).start()
                return True
        return self._measured_known() + amount <= self.limit

    def _refresh(self) -> None:
        try:
            self._measured_known()
        finally:
            with self._lock:
                self._refreshing = False

    def _measured_known(self) -> int:
        """Measure, and return what is known: the measurement, or if it failed the last one
        plus what was added since."""
        with self._measuring:
            with self._lock:
                self._taken_while_measuring = 0
            known = self._known_now()
            with self._lock:
                if known is not None:
                    # What was let through meanwhile may be missing from the measurement (its
                    # commit came after the count): counted again, a bound errs early, not late.
                    self._known = known + self._taken_while_measuring
                self._at = time.monotonic()
                return self._known

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
            self._taken_while_measuring += amount

    def describe(self) -> str:
        return f"{self._known:,} {self.what}; {self.key} is {self.limit:,}"


class Backpressure:
    """Waits up to ``timeout`` seconds for room under every bound (not at all for a call over
    a bound by itself), else counts the refusal (``refuse(messages)``) and raises
    ``BufferFull``."""

    def __init__(
        self, rows: Bound, size: Bound, *, timeout: float, refuse: Callable[[int], None]
    ) -> None:
        self._rows, self._size = rows, size
        self._timeout, self._refuse = timeout, refuse

    def make_room(self, messages: int, size: int) -> None:
        deadline = None  # set at the first wait: most calls fit at once
        while True:
            rows_fit, size_fits = self._rows.fits(messages), self._size.fits(size)
            if rows_fit and size_fits:
                self._rows.take(messages)
                self._size.take(size)
                return
            full, amount = (self._size, size) if rows_fit else (self._rows, messages)
            alone = amount > full.limit  # over the bound by itself: waiting cannot help
            if deadline is None:
                deadline = time.monotonic() + self._timeout
            if alone or time.monotonic() >= deadline:
                self._refuse(messages)
                raise BufferFull(
                    f"the call adds {amount:,}, more than {full.key} ({full.limit:,}) allows "
                    "at once; it was refused and counted. Send less per call."
                    if alone
                    else f"the buffer is full ({full.describe()}); the call, adding {amount:,}, "
                    "was refused and counted. Is the fold running, and can delivery reach Accoil?"
                )
            time.sleep(0.05)
