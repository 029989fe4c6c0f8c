"""Delivery passes to Accoil: identify, then group and memberships, then counts, then the
messages Post to Accoil forwards whole.

A pass runs on an event loop of its own. Up to ``max_in_flight`` requests are in flight at
once, fed from claims taken as the pass goes; answers are recorded in waves on a database
thread, so neither claiming nor recording stops the sending. The occurrences of one count
row go concurrently too, within a window of ordinals: accounting keeps a contiguous
watermark (``delivered_count``) and the ordinals acknowledged beyond it (``acked_beyond``),
so a failure never leaves a gap that would be sent twice, and a crash repeats only what
was in flight or acknowledged and not yet recorded. Every messageId is derived from what
the message stands for, so a repeated message is the same message.

This module is the engine: settings, claims, records, retries and backoff. The pass on its
loop is ``delivery_pass``; the rows it sends and their bodies are ``delivery_rows``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from tenacity import AsyncRetrying, RetryCallState, retry_if_result, stop_after_attempt
from tenacity.wait import wait_random_exponential

from accoil_buffer.accoil_api import AccoilClient, Answer, Session, Verdict, run_coroutine
from accoil_buffer.config import ATTEMPTS_PER_PASS, MAX_WAIT_IN_PASS_SECONDS
from accoil_buffer.delivery_pass import Pass
from accoil_buffer.delivery_rows import Row, row_to_send
from accoil_buffer.errors import DeliveryFailed
from accoil_buffer.store import deliveries, holders
from accoil_buffer.store.engine import Database

log = logging.getLogger(__name__)
_MIN_CLAIM = 200


@dataclass(frozen=True)
class DeliverySettings:
    max_in_flight: int = 64
    claim_size: int = 0  # rows per claim; 0: four times max_in_flight, at least 200
    lease: timedelta = timedelta(minutes=1)
    base_backoff: timedelta = timedelta(seconds=1)
    max_backoff: timedelta = timedelta(minutes=5)
    attempts_per_pass: int = ATTEMPTS_PER_PASS
    max_wait_in_pass: float = MAX_WAIT_IN_PASS_SECONDS

    @property
    def rows_per_claim(self) -> int:
        return self.claim_size or max(_MIN_CLAIM, 4 * self.max_in_flight)


@dataclass
class DeliveryReport:
    delivered: int = 0
    dead_lettered: int = 0
    retries: int = 0
    failure: str | None = None
    paused: bool = False
    skipped_until: datetime | None = None
    complete: bool = True


class Delivery:
    """Runs delivery passes for one flusher (one ``holder`` name in the claim columns)."""

    def __init__(
        self,
        database: Database,
        client: AccoilClient,
        settings: DeliverySettings,
        clock: Callable[[], datetime],
        *,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._database = database
        self._client = client
        self._settings = settings
        self._clock = clock
        self._rng = rng or random.Random()
        self._sleep = sleep
        self._liveness = holders.liveness(database)
        self._stopping = threading.Event()
        self._become_new_holder()

    def _become_new_holder(self) -> None:
        self.holder = holders.holder_name(uuid.uuid4().hex[:12])

    def after_fork_in_child(self) -> None:
        """A forked child must not share its parent's claims: it gets a name of its own."""
        self._liveness.forget()
        self._stopping = threading.Event()
        self._become_new_holder()

    def stop(self) -> None:
        """Make a running pass start no new request nor retry (shutdown); in-flight ones end
        within ``request_timeout_seconds``."""
        self._stopping.set()

    def close(self) -> None:
        """Give up this flusher's liveness lock (its claims are released after each pass)."""
        self._liveness.release()

    def _halted(self, deadline: float | None) -> bool:
        return self._stopping.is_set() or _past(deadline)

    def run(
        self,
        *,
        force: bool = False,
        deadline: float | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> DeliveryReport:
        """One pass. Scheduled passes (``force=False``) wait out a backoff, and a pause caused
        by this same key; ``deadline`` (``time.monotonic()``) stops sending new messages when
        reached; ``progress`` is told how many more messages were accounted for, wave by
        wave."""
        with self._database.engine.connect() as conn:
            state = deliveries.state(conn)
        now = self._clock()
        other_key = bool(state["paused_reason"]) and state["paused_key"] not in (
            None,
            self._client.fingerprint,
        )
        waiting = state["next_attempt_at"] is not None and now < state["next_attempt_at"]
        if not force and waiting and not other_key:
            return DeliveryReport(skipped_until=state["next_attempt_at"])
        report = DeliveryReport()
        with self._database.write_between_folds() as conn:
            dead = deliveries.reap(conn, self.holder, lambda h: self._liveness.is_dead(conn, h))
        if dead:
            log.warning("freed the claims of %d flushers that are gone: %s", len(dead), dead)
        try:
            stop = run_coroutine(self._pass(report, deadline, progress).run())
        finally:
            self._release()  # what was claimed and not sent, if the pass ended early
        self._record_pass(state, stop, report)
        return report

    def _pass(
        self, report: DeliveryReport, deadline: float | None, progress: Callable[[int], None] | None
    ) -> Pass:
        """A pass of this engine, given what it reads of the engine's settings and state."""
        return Pass(
            engine=self,
            client=self._client,
            max_in_flight=self._settings.max_in_flight,
            lease=self._settings.lease,
            clock=self._clock,
            engine_halted=lambda: self._halted(deadline),
            report=report,
            progress=progress,
        )

    def replay(self, ids: Collection[int] | None = None) -> tuple[int, int]:
        """Send dead letters again as they were (same messageId); returns (accepted, refused).
        An accepted one is marked replayed and counted delivered (once, if a replay at the
        same time sent it too); a refused one stays, for another try. ``DeliveryFailed`` if
        Accoil cannot take messages now: those not yet sent stay too, and were not refused."""
        with self._database.engine.connect() as conn:
            letters = deliveries.dead_letters(conn, ids=ids)
        accepted = refused = 0
        for letter in letters:
            answer = self._client.send(letter["payload"])
            if answer.verdict is Verdict.DELIVERED:
                with self._database.write_between_folds() as conn:
                    now = self._clock()
                    accepted += deliveries.mark_replayed(self._database, conn, letter["id"], now)
            elif answer.verdict is Verdict.DEAD_LETTER:
                log.warning("dead letter %s was refused again: %s", letter["id"], answer.describe())
                refused += 1
            else:
                raise DeliveryFailed(
                    f"Accoil did not take dead letter {letter['id']} ({answer.describe()}); "
                    f"{accepted} replayed and {refused} refused again before it, the rest wait"
                )
        return accepted, refused

    # --- The database side: claims, records, releases (on the pass's database thread) ------

    def claim(self, kind: deliveries.Kind) -> list[Row]:
        # Before each claim, not once: taken again if lost since (see Liveness.hold), and
        # only by a pass, which status never needs.
        self._liveness.hold(self.holder)
        now = self._clock()
        with self._database.write_between_folds() as conn:
            claimed = deliveries.claim(
                self._database,
                conn,
                kind,
                self.holder,
                now,
                self._settings.lease,
                self._settings.rows_per_claim,
            )
            accounts = (
                deliveries.account_traits(conn, [r.key[0] for r in claimed])
                if kind.name == "memberships" and claimed
                else {}
            )
        return [row_to_send(kind, claimed_row, accounts) for claimed_row in claimed]

    def record(self, outcomes: deliveries.Outcomes, renew: bool) -> None:
        with self._database.write_between_folds() as conn:
            deliveries.record(self._database, conn, self.holder, outcomes, self._clock())
            if renew:
                deliveries.renew(conn, self.holder, self._clock() + self._settings.lease)

    def _release(self) -> None:
        with self._database.write_between_folds() as conn:
            deliveries.release(conn, self.holder)

    # --- Sending ---------------------------------------------------------------------------

    async def attempt(
        self, session: Session, body: dict[str, Any], halted: Callable[[], bool]
    ) -> tuple[Answer, int]:
        """Send with a few quick retries of transient failures (full jitter, Retry-After),
        none once ``halted`` (the engine is stopping, or the pass's deadline has passed)."""
        settings = self._settings
        jitter = wait_random_exponential(
            multiplier=settings.base_backoff.total_seconds() / 4, max=settings.max_wait_in_pass
        )

        def pause(state: RetryCallState) -> float:
            answer: Answer = state.outcome.result()  # type: ignore[union-attr]
            return max(jitter(state), answer.retry_after or 0.0)

        def retryable(answer: Answer) -> bool:
            return (
                answer.verdict is Verdict.RETRY
                and (answer.retry_after or 0.0) <= settings.max_wait_in_pass
                and not halted()
            )

        first = await session.send(body)
        if not retryable(first):
            return first, 0  # most answers: no retry machinery built for them
        answers = [first]

        async def again(body: dict[str, Any]) -> Answer:
            return answers.pop() if answers else await session.send(body)

        retrying = AsyncRetrying(
            stop=stop_after_attempt(settings.attempts_per_pass),
            wait=pause,
            retry=retry_if_result(retryable),
            sleep=self._sleep,
            retry_error_callback=lambda state: state.outcome.result(),  # type: ignore[union-attr]
        )
        answer: Answer = await retrying(again, body)
        return answer, retrying.statistics.get("attempt_number", 1) - 1

    # --- The end of a pass -----------------------------------------------------------------

    def _record_pass(
        self, state: dict[str, Any], stop: Answer | None, report: DeliveryReport
    ) -> None:
        now = self._clock()
        with self._database.write_between_folds() as conn:
            if stop is None:
                if report.delivered + report.dead_lettered or state["paused_reason"]:
                    deliveries.record_success(self._database, conn, now)
                return
            delay, paused = self._backoff(state["consecutive_failures"] + 1, stop)
            report.failure, report.paused = stop.describe(), paused is not None
            deliveries.record_failure(
                self._database,
                conn,
                now,
                error=stop.describe(),
                next_attempt_at=now + delay,
                paused_reason=paused,
                paused_key=self._client.fingerprint if paused else None,
            )
        if paused:
            log.error("delivery paused: %s; next attempt at %s", paused, now + delay)
        else:
            log.warning(
                "delivery to Accoil failed (%s); %d delivered this pass; next attempt at %s",
                stop.describe(),
                report.delivered,
                now + delay,
            )

    def _backoff(self, failures: int, answer: Answer) -> tuple[timedelta, str | None]:
        """Exponential backoff with full jitter, capped; Retry-After is honoured."""
        settings = self._settings
        if answer.verdict is Verdict.PAUSE:
            return settings.max_backoff, (
                f"Accoil refused the API key {self._client.fingerprint} ({answer.describe()}); "
                "check api_key"
            )
        ceiling = min(settings.max_backoff, settings.base_backoff * 2 ** min(failures, 30))
        delay = ceiling * self._rng.random()
        if answer.retry_after is not None:  # clamped to an hour by accoil_api
            delay = max(delay, timedelta(seconds=answer.retry_after))
        return delay, None


def _past(deadline: float | None) -> bool:
    return deadline is not None and time.monotonic() >= deadline
