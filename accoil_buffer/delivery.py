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
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from datetime import time as day_time
from typing import Any, ParamSpec, TypeVar

from tenacity import AsyncRetrying, RetryCallState, retry_if_result, stop_after_attempt
from tenacity.wait import wait_random_exponential

from accoil_buffer import accoil_api
from accoil_buffer.accoil_api import AccoilClient, Answer, Session, Verdict, run_coroutine
from accoil_buffer.store import deliveries, holders
from accoil_buffer.store.engine import Database

log = logging.getLogger(__name__)
# Answers are recorded at least this often (seconds): a crash can repeat only the requests
# in flight and those acknowledged within the last tick.
_RECORD_TICK = 0.010
_MIN_CLAIM = 200
P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True)
class DeliverySettings:
    max_in_flight: int = 64
    claim_size: int = 0  # rows per claim; 0: four times max_in_flight, at least 200
    lease: timedelta = timedelta(minutes=1)
    base_backoff: timedelta = timedelta(seconds=1)
    max_backoff: timedelta = timedelta(minutes=5)
    attempts_per_pass: int = 3
    max_wait_in_pass: float = 2.0  # seconds; a longer Retry-After ends the pass instead

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


@dataclass(eq=False)
class _Row:
    """A claimed row and what is left of it to send. Users, accounts, memberships and posts
    are one message each; a count row is one message per occurrence, ordinals
    ``watermark + 1 .. last``, of which ``acked`` were acknowledged out of order."""

    kind: deliveries.Kind
    key: tuple[Any, ...]
    body: dict[str, Any] | None = None  # the one message of a row that is not a count
    version: int = 0
    watermark: int = 0
    last: int = 0
    acked: set[int] = field(default_factory=set)
    next: int = 1
    in_flight: int = 0

    @property
    def is_count(self) -> bool:
        return self.body is None

    def take(self, window: int, now: datetime) -> _Job | None:
        """The next message of this row, if its window allows one more in flight."""
        if not self.is_count:
            if self.next > 1:
                return None
            self.next, self.in_flight = 2, 1
            return _Job(self, self.body or {})
        while self.next in self.acked:
            self.next += 1
        if self.next > self.last or self.next > self.watermark + window:
            return None
        ordinal, self.next = self.next, self.next + 1
        self.in_flight += 1
        day, user_id, kind, name = self.key
        body = accoil_api.event_body(
            kind,
            user_id,
            name,
            timestamp_in_day(day, now),
            ("count", day.isoformat(), user_id, kind, name, ordinal),
        )
        return _Job(self, body, ordinal)

    @property
    def exhausted(self) -> bool:
        """Nothing more to issue (what is issued may still be in flight)."""
        if not self.is_count:
            return self.next > 1
        ahead = self.next
        while ahead in self.acked:
            ahead += 1
        return ahead > self.last

    def progress(self) -> deliveries.Progress:
        """What Accoil has of this row now, as the store records it."""
        if not self.is_count:
            return deliveries.Progress(self.key, version=self.version)
        done = self.in_flight == 0 and self.exhausted
        beyond = sorted(self.acked) or None
        return deliveries.Progress(self.key, watermark=self.watermark, beyond=beyond, done=done)

    def answered(self, ordinal: int, acknowledged: bool) -> None:
        self.in_flight -= 1
        if acknowledged and self.is_count:
            self.acked.add(ordinal)
            while self.watermark + 1 in self.acked:
                self.watermark += 1
                self.acked.discard(self.watermark)


@dataclass(frozen=True)
class _Job:
    row: _Row
    body: dict[str, Any]
    ordinal: int = 0


@dataclass
class _Wave:
    """Answers not yet recorded: the rows they touched, and the dead letters among them."""

    rows: dict[int, _Row] = field(default_factory=dict)
    dead_letters: list[dict[str, Any]] = field(default_factory=list)
    delivered: int = 0
    accounted: int = 0

    def add(self, job: _Job, answer: Answer) -> None:
        self.rows[id(job.row)] = job.row
        self.accounted += 1
        self.delivered += answer.verdict is Verdict.DELIVERED
        if answer.verdict is Verdict.DEAD_LETTER:
            self.dead_letters.append(
                {
                    "message_id": job.body["messageId"],
                    "type": job.body["type"],
                    "payload": job.body,
                    "status": answer.status,
                    "response": answer.body,
                }
            )

    def outcomes(self) -> deliveries.Outcomes:
        """What the wave means for the tables, as the rows stand now (taken on the loop)."""
        return deliveries.Outcomes(
            [(row.kind, row.progress()) for row in self.rows.values()],
            dead_letters=self.dead_letters,
            delivered=self.delivered,
        )


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
        self._holding = False  # the lock is taken by the first pass: status never needs it

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
        if not self._holding:
            self._liveness.hold(self.holder)
            self._holding = True
        with self._database.write_between_folds() as conn:
            dead = deliveries.reap(conn, self.holder, lambda h: self._liveness.is_dead(conn, h))
        if dead:
            log.warning("freed the claims of %d flushers that are gone: %s", len(dead), dead)
        try:
            stop = run_coroutine(_Pass(self, report, deadline, progress).run())
        finally:
            self._release()  # what was claimed and not sent, if the pass ended early
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

    # --- The database side: claims, records, releases (on the pass's database thread) ------

    def claim(self, kind: deliveries.Kind) -> list[_Row]:
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
        return [_row(kind, claimed_row, accounts) for claimed_row in claimed]

    def record(self, outcomes: deliveries.Outcomes, renew: bool) -> None:
        with self._database.write_between_folds() as conn:
            deliveries.record(self._database, conn, self.holder, outcomes, self._clock())
            if renew:
                deliveries.renew(conn, self.holder, self._clock() + self._settings.lease)

    def _release(self) -> None:
        with self._database.write_between_folds() as conn:
            deliveries.release(conn, self.holder)

    # --- Sending ---------------------------------------------------------------------------

    async def attempt(self, session: Session, body: dict[str, Any]) -> tuple[Answer, int]:
        """Send with a few quick retries of transient failures (full jitter, Retry-After),
        none once the pass is stopping."""
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
                and not self._stopping.is_set()
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


class _Pass:
    """One pass on its event loop: for each kind of row in turn, senders take messages from
    claims made as they go, and a recorder writes their answers every tick."""

    def __init__(
        self,
        delivery: Delivery,
        report: DeliveryReport,
        deadline: float | None,
        progress: Callable[[int], None] | None,
    ) -> None:
        self._delivery = delivery
        self._settings = delivery._settings
        self._report = report
        self._deadline = deadline
        self._progress = progress
        self._stop: Answer | None = None
        self._wave = _Wave()
        self._renewed = time.monotonic()
        # Requests in flight plus answers acknowledged and not yet recorded: kept within
        # twice max_in_flight, what a crash may repeat, however slow the database is.
        self._at_stake = 0
        self._recorded = asyncio.Event()

    def _halted(self) -> bool:
        return self._stop is not None or self._delivery._halted(self._deadline)

    async def run(self) -> Answer | None:
        with ThreadPoolExecutor(1, thread_name_prefix="accoil-record") as database:
            self._database = database
            async with self._delivery._client.session() as session:
                for kind in deliveries.KINDS:
                    if self._halted():
                        break
                    try:
                        await self._deliver(session, kind)
                    except BaseExceptionGroup as group:
                        raise group.exceptions[0] from None  # a database error, as raised
        if self._halted():
            self._report.complete = False
        return self._stop

    async def _deliver(self, session: Session, kind: deliveries.Kind) -> None:
        feed = _Feed(self, kind)
        finished = asyncio.Event()
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._recorder(finished))
            senders = [
                tasks.create_task(self._sender(session, feed))
                for _ in range(self._settings.max_in_flight)
            ]
            await asyncio.gather(*senders)
            finished.set()

    async def _sender(self, session: Session, feed: _Feed) -> None:
        limit = 2 * self._settings.max_in_flight
        while True:
            while self._at_stake >= limit and not self._halted():
                self._recorded.clear()
                await self._recorded.wait()  # the database is behind: let a wave commit
            job = await feed.next_job()
            if job is None:
                return
            self._at_stake += 1
            answer, retries = await self._delivery.attempt(session, job.body)
            self._report.retries += retries
            accounted = answer.verdict in {Verdict.DELIVERED, Verdict.DEAD_LETTER}
            if not accounted:
                self._at_stake -= 1  # nothing to record: a later pass sends it again
            job.row.answered(job.ordinal, accounted)
            feed.changed()
            if accounted:
                self._wave.add(job, answer)
                self._report.delivered += answer.verdict is Verdict.DELIVERED
                self._report.dead_lettered += answer.verdict is Verdict.DEAD_LETTER
                if answer.verdict is Verdict.DEAD_LETTER:
                    log.warning(
                        "Accoil refused message %s (%s); kept as a dead letter",
                        job.body["messageId"],
                        answer.describe(),
                    )
            elif self._stop is None and not self._delivery._halted(self._deadline):
                self._stop = answer

    async def _recorder(self, finished: asyncio.Event) -> None:
        """Record the answers of each tick in one transaction, on the database thread."""
        while True:
            with_all = finished.is_set()
            if self._wave.rows:
                wave, self._wave = self._wave, _Wave()
                renew = time.monotonic() - self._renewed > self._settings.lease.total_seconds() / 2
                if renew:
                    self._renewed = time.monotonic()
                await self.on_database(self._delivery.record, wave.outcomes(), renew)
                self._at_stake -= wave.accounted
                self._recorded.set()
                if self._progress is not None:
                    self._progress(wave.accounted)
            if with_all and not self._wave.rows:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(finished.wait(), _RECORD_TICK)

    async def on_database(self, work: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """Run ``work`` on the pass's database thread: the loop goes on sending meanwhile."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._database, lambda: work(*args, **kwargs))


class _Feed:
    """The messages of one kind of row, claimed as the senders need them."""

    def __init__(self, owner: _Pass, kind: deliveries.Kind) -> None:
        self._owner = owner
        self._kind = kind
        self._window = owner._settings.max_in_flight
        self._rows: deque[_Row] = deque()  # rows with messages left to issue
        self._in_flight: set[_Row] = set()
        self._exhausted = False
        self._claiming: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()

    def changed(self) -> None:
        """An answer came back: a row's window may have opened."""
        self._changed.set()

    async def next_job(self) -> _Job | None:
        while not self._owner._halted():
            job = self._take()
            if job is not None:
                if len(self._rows) < self._owner._settings.max_in_flight:
                    self._claim_soon()  # before the senders run dry
                return job
            if not self._exhausted:
                self._claim_soon()
                assert self._claiming is not None
                await asyncio.shield(self._claiming)
                continue
            if not any(row.in_flight for row in self._in_flight):
                return None
            self._changed.clear()
            await self._changed.wait()
        return None

    def _take(self) -> _Job | None:
        now = self._owner._delivery._clock()
        for _ in range(len(self._rows)):
            row = self._rows[0]
            job = row.take(self._window, now)
            if row.exhausted:
                self._rows.popleft()
            else:
                self._rows.rotate(-1)
            if job is not None:
                self._in_flight.add(row)
                return job
        self._in_flight = {row for row in self._in_flight if row.in_flight}
        return None

    def _claim_soon(self) -> None:
        if self._claiming is None and not self._exhausted:
            self._claiming = asyncio.create_task(self._claim())

    async def _claim(self) -> None:
        try:
            rows = await self._owner.on_database(self._owner._delivery.claim, self._kind)
            self._rows.extend(rows)
            self._exhausted = not rows
        finally:
            self._claiming = None
            self._changed.set()


def _row(
    kind: deliveries.Kind, claimed: deliveries.Claimed, accounts: dict[str, tuple[Any, datetime]]
) -> _Row:
    """The row to send, with the body of its message (counts build theirs per ordinal)."""
    v = claimed.values
    if kind.name == "counts":
        watermark = v["delivered_count"]
        acked = {n for n in v["acked_beyond"] or () if n > watermark}
        return _Row(
            kind, claimed.key, watermark=watermark, last=v["count"], acked=acked, next=watermark + 1
        )
    return _Row(kind, claimed.key, _BODIES[kind.name](v, accounts), v.get("traits_version", 0))


# The one message each row of the other kinds stands for, from its claimed columns.
_BODIES: dict[str, Callable[[dict[str, Any], dict[str, tuple[Any, datetime]]], dict[str, Any]]] = {
    "users": lambda v, _: accoil_api.identify_body(
        v["user_id"], v["traits"], v["last_timestamp"], v["traits_version"]
    ),
    "accounts": lambda v, _: accoil_api.group_body(
        v["group_id"], v["traits"], v["last_timestamp"], version=v["traits_version"]
    ),
    "memberships": lambda v, accounts: accoil_api.group_body(
        v["group_id"],
        accounts.get(v["group_id"], ({}, None))[0],
        v["last_timestamp"],
        user_id=v["user_id"],
    ),
    "posts": lambda v, _: dict(v["payload"]),
}


def timestamp_in_day(day: date, now: datetime) -> datetime:
    """A timestamp inside ``day`` (UTC): now for today, the day's last millisecond before."""
    end = datetime.combine(day, day_time(23, 59, 59, 999000), tzinfo=UTC)
    return min(now, end)


def _past(deadline: float | None) -> bool:
    return deadline is not None and time.monotonic() >= deadline
