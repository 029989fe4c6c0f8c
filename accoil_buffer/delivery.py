"""One delivery pass to Accoil (SPEC 4.3-4.5): identify, then group and memberships, then counts,
then the messages Post to Accoil forwards whole.

Every message's messageId is derived from what it stands for, and accounting advances only for
messages Accoil acknowledged, in the transaction that records them; answers are recorded as
they arrive, so a crash can duplicate only the requests in flight. The occurrences of one
count row are sent one after another (rows go in parallel), so a failure never leaves a gap
that would be sent twice.
"""

from __future__ import annotations

import logging
import random
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Collection
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from datetime import time as day_time
from typing import Any

from sqlalchemy import Table
from tenacity import RetryCallState, Retrying, retry_if_result, stop_after_attempt
from tenacity.wait import wait_random_exponential

from accoil_buffer import accoil_api
from accoil_buffer.accoil_api import AccoilClient, Answer, Verdict
from accoil_buffer.store import deliveries, schema
from accoil_buffer.store.engine import Database

log = logging.getLogger(__name__)
_MAX_RETRY_AFTER = timedelta(hours=1)
# Acknowledged answers are recorded at least every 10 ms or every max_in_flight answers: a
# crash can repeat only the requests in flight and at most as many acknowledged ones.
_RECORD_WINDOW = 0.010


@dataclass(frozen=True)
class DeliverySettings:
    max_in_flight: int = 8
    claim_size: int = 200
    lease: timedelta = timedelta(minutes=1)
    base_backoff: timedelta = timedelta(seconds=1)
    max_backoff: timedelta = timedelta(minutes=5)
    attempts_per_pass: int = 3
    max_wait_in_pass: float = 2.0  # seconds; a longer Retry-After ends the pass instead


@dataclass
class DeliveryReport:
    delivered: int = 0
    dead_lettered: int = 0
    retries: int = 0
    failure: str | None = None
    paused: bool = False
    skipped_until: datetime | None = None
    complete: bool = True


@dataclass(frozen=True)
class _Job:
    """One message to send, and what it accounts for when Accoil takes it."""

    table: Table
    key: tuple[Any, ...]
    body: dict[str, Any]
    version: int = 0  # users, accounts
    ordinal: int = 0  # counts: which occurrence of the row this is
    last: int = 0  # counts: the row's count when claimed


@dataclass
class _Wave:
    """Answers that arrived together, recorded in one transaction."""

    outcomes: dict[str, list[Any]] = field(
        default_factory=lambda: {
            "users": [],
            "accounts": [],
            "memberships": [],
            "counts": [],
            "posts": [],
            "dead_letters": [],
        }
    )

    @property
    def size(self) -> int:
        return sum(len(items) for name, items in self.outcomes.items() if name != "dead_letters")

    def add(self, job: _Job, answer: Answer) -> None:
        if answer.verdict is Verdict.DEAD_LETTER:
            self.outcomes["dead_letters"].append(
                {
                    "message_id": job.body["messageId"],
                    "type": job.body["type"],
                    "payload": job.body,
                    "status": answer.status,
                    "response": answer.body,
                }
            )
        if job.table is schema.users:
            self.outcomes["users"].append((job.key[0], job.version))
        elif job.table is schema.accounts:
            self.outcomes["accounts"].append((job.key[0], job.version))
        elif job.table is schema.memberships:
            self.outcomes["memberships"].append(job.key)
        elif job.table is schema.posts:
            self.outcomes["posts"].append(job.key[0])
        else:
            self.outcomes["counts"].append((*job.key, job.ordinal))

    def result(self) -> deliveries.Outcomes:
        return deliveries.Outcomes(**self.outcomes)


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
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._database = database
        self._client = client
        self._settings = settings
        self._clock = clock
        self._rng = rng or random.Random()
        self._sleep = sleep
        self.holder = f"{socket.gethostname()[:30]}:{uuid.uuid4().hex[:12]}"
        self._stopping = threading.Event()

    def after_fork_in_child(self) -> None:
        """A forked child must not share its parent's claims: it gets a name of its own."""
        self.holder = f"{socket.gethostname()[:30]}:{uuid.uuid4().hex[:12]}"
        self._stopping = threading.Event()

    def stop(self) -> None:
        """Make a running pass start no new request (shutdown); in-flight ones finish."""
        self._stopping.set()

    def _halted(self, deadline: float | None) -> bool:
        return self._stopping.is_set() or _past(deadline)

    def run(
        self,
        *,
        force: bool = False,
        deadline: float | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> DeliveryReport:
        """One pass. Scheduled passes (``force=False``) wait out a backoff or a pause;
        ``deadline`` (``time.monotonic()``) stops sending new messages when reached;
        ``progress`` is told how many more messages were accounted for, wave by wave."""
        with self._database.engine.connect() as conn:
            state = deliveries.state(conn)
        now = self._clock()
        if not force and state["next_attempt_at"] and now < state["next_attempt_at"]:
            return DeliveryReport(skipped_until=state["next_attempt_at"])
        report = DeliveryReport()
        stop: Answer | None = None
        try:
            with ThreadPoolExecutor(
                self._settings.max_in_flight, thread_name_prefix="accoil-send"
            ) as pool:
                for table in deliveries.CLAIMED_TABLES:
                    while stop is None and not self._halted(deadline):
                        jobs = self._claim(table)
                        if not jobs:
                            break
                        stop = self._send(pool, jobs, report, deadline, progress)
                    if stop is not None or self._halted(deadline):
                        report.complete = False
                        break
        finally:
            self._release()  # once: a flusher may claim again rows it still holds
        self._record_pass(state, stop, report)
        return report

    def replay(self, ids: Collection[int] | None = None) -> tuple[int, int]:
        """Send dead letters again as they were (same messageId); returns (accepted, refused).
        An accepted one is marked replayed; a refused one stays, for another try."""
        with self._database.engine.connect() as conn:
            letters = [d for d in deliveries.dead_letters(conn) if ids is None or d["id"] in ids]
        accepted = 0
        for letter in letters:
            answer = self._client.send(letter["payload"])
            if answer.verdict is Verdict.DELIVERED:
                with self._database.write_between_folds() as conn:
                    deliveries.mark_replayed(conn, letter["id"], self._clock())
                accepted += 1
            else:
                log.warning("dead letter %s was refused again: %s", letter["id"], answer.describe())
        return accepted, len(letters) - accepted

    def _claim(self, table: Table) -> list[_Job]:
        now = self._clock()
        with self._database.write_between_folds() as conn:
            rows = deliveries.claim(
                self._database,
                conn,
                table,
                self.holder,
                now,
                self._settings.lease,
                self._settings.claim_size,
            )
            accounts = (
                deliveries.account_traits(conn, [r.key[0] for r in rows])
                if table is schema.memberships and rows
                else {}
            )
        return [self._first_job(table, row, accounts, now) for row in rows]

    def _first_job(
        self,
        table: Table,
        row: deliveries.Claimed,
        accounts: dict[str, tuple[Any, datetime]],
        now: datetime,
    ) -> _Job:
        v = row.values
        if table is schema.users:
            return _Job(
                table,
                row.key,
                accoil_api.identify_body(
                    v["user_id"], v["traits"], v["last_timestamp"], v["traits_version"]
                ),
                version=v["traits_version"],
            )
        if table is schema.accounts:
            return _Job(
                table,
                row.key,
                accoil_api.group_body(
                    v["group_id"], v["traits"], v["last_timestamp"], version=v["traits_version"]
                ),
                version=v["traits_version"],
            )
        if table is schema.memberships:
            traits, _ = accounts.get(v["group_id"], ({}, v["last_timestamp"]))
            return _Job(
                table,
                row.key,
                accoil_api.group_body(
                    v["group_id"], traits, v["last_timestamp"], user_id=v["user_id"]
                ),
            )
        if table is schema.posts:
            return _Job(table, row.key, v["payload"])
        return _count_job(row.key, v["delivered_count"] + 1, v["count"], now)

    def _send(
        self,
        pool: ThreadPoolExecutor,
        jobs: list[_Job],
        report: DeliveryReport,
        deadline: float | None,
        progress: Callable[[int], None] | None,
    ) -> Answer | None:
        queue = deque(jobs)
        in_flight: dict[Future[tuple[Answer, int]], _Job] = {}
        stop: Answer | None = None
        renewed = time.monotonic()
        wave, oldest = _Wave(), 0.0
        # Until nothing is in flight and nothing more may start: after a stop or past the
        # deadline, what is still queued stays claimed until run() releases it.
        while in_flight or (queue and stop is None and not self._halted(deadline)):
            while (
                queue
                and stop is None
                and not self._halted(deadline)
                and len(in_flight) < self._settings.max_in_flight
            ):
                job = queue.popleft()
                in_flight[pool.submit(self._attempt, job.body)] = job
            if in_flight:
                window = (
                    None if not wave.size else max(0.0, oldest + _RECORD_WINDOW - time.monotonic())
                )
                done, _ = wait(in_flight, timeout=window, return_when=FIRST_COMPLETED)
            else:
                done = set()
            for future in done:
                job = in_flight.pop(future)
                answer, retries = future.result()
                report.retries += retries
                if answer.verdict in {Verdict.DELIVERED, Verdict.DEAD_LETTER}:
                    if not wave.size:
                        oldest = time.monotonic()
                    wave.add(job, answer)
                    report.delivered += answer.verdict is Verdict.DELIVERED
                    report.dead_lettered += answer.verdict is Verdict.DEAD_LETTER
                    if answer.verdict is Verdict.DEAD_LETTER:
                        log.warning(
                            "Accoil refused message %s (%s); kept as a dead letter",
                            job.body["messageId"],
                            answer.describe(),
                        )
                    if job.ordinal and job.ordinal < job.last:
                        queue.append(_count_job(job.key, job.ordinal + 1, job.last, self._clock()))
                elif stop is None:
                    stop = answer
            due = (
                wave.size >= self._settings.max_in_flight
                or not in_flight
                or time.monotonic() - oldest >= _RECORD_WINDOW
            )
            if wave.size and due:
                outcomes = wave.result()
                with self._database.write_between_folds() as conn:
                    deliveries.record(conn, self.holder, outcomes, self._clock())
                    if time.monotonic() - renewed > self._settings.lease.total_seconds() / 2:
                        deliveries.renew(conn, self.holder, self._clock() + self._settings.lease)
                        renewed = time.monotonic()
                if progress is not None:
                    progress(outcomes.delivered)
                wave = _Wave()
        return stop

    def _attempt(self, body: dict[str, Any]) -> tuple[Answer, int]:
        """Send with a few quick retries of transient failures (full jitter, Retry-After)."""
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
            )

        retrying = Retrying(
            stop=stop_after_attempt(settings.attempts_per_pass),
            wait=pause,
            retry=retry_if_result(retryable),
            sleep=self._sleep,
            retry_error_callback=lambda state: state.outcome.result(),  # type: ignore[union-attr]
        )
        answer: Answer = retrying(self._client.send, body)
        return answer, retrying.statistics.get("attempt_number", 1) - 1

    def _release(self) -> None:
        with self._database.write_between_folds() as conn:
            deliveries.release(conn, self.holder)

    def _record_pass(
        self, state: dict[str, Any], stop: Answer | None, report: DeliveryReport
    ) -> None:
        now = self._clock()
        accounted = report.delivered + report.dead_lettered
        with self._database.write_between_folds() as conn:
            if stop is None:
                if accounted:
                    deliveries.record_success(self._database, conn, now, report.delivered)
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
                delivered=report.delivered,
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
                f"Accoil refused the API key ({answer.describe()}); check api_key"
            )
        ceiling = min(settings.max_backoff, settings.base_backoff * 2 ** min(failures, 30))
        delay = ceiling * self._rng.random()
        if answer.retry_after is not None:
            delay = max(delay, min(timedelta(seconds=answer.retry_after), _MAX_RETRY_AFTER))
        return delay, None


def _count_job(key: tuple[Any, ...], ordinal: int, last: int, now: datetime) -> _Job:
    day, user_id, kind, name = key
    return _Job(
        schema.daily_counts,
        key,
        accoil_api.event_body(
            kind,
            user_id,
            name,
            timestamp_in_day(day, now),
            ("count", day.isoformat(), user_id, kind, name, ordinal),
        ),
        ordinal=ordinal,
        last=last,
    )


def timestamp_in_day(day: date, now: datetime) -> datetime:
    """A timestamp inside ``day`` (UTC): now for today, the day's last millisecond before."""
    end = datetime.combine(day, day_time(23, 59, 59, 999000), tzinfo=UTC)
    return min(now, end)


def _past(deadline: float | None) -> bool:
    return deadline is not None and time.monotonic() >= deadline
