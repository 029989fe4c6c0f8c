"""One delivery pass on its event loop (senders, claims, recorded waves), apart from the engine."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, ParamSpec, Protocol, TypeVar

from accoil_buffer.accoil_api import AccoilClient, Answer, Session, Verdict
from accoil_buffer.delivery_rows import Job, Row
from accoil_buffer.store import deliveries

log = logging.getLogger(__name__)
# Answers are recorded at least this often (seconds): a crash can repeat only the requests
# in flight and those acknowledged within the last tick.
_RECORD_TICK = 0.010
P = ParamSpec("P")
R = TypeVar("R")


class Engine(Protocol):
    """What a pass asks of the engine that runs it (``delivery.Delivery``), named here so this
    module does not import that one."""

    def claim(self, kind: deliveries.Kind) -> list[Row]: ...

    def record(self, outcomes: deliveries.Outcomes, renew: bool) -> None: ...

    async def attempt(
        self, session: Session, body: dict[str, Any], halted: Callable[[], bool]
    ) -> tuple[Answer, int]: ...


class Tally(Protocol):
    """The counts a pass keeps in its report (``delivery.DeliveryReport``) as it goes."""

    delivered: int
    dead_lettered: int
    retries: int
    complete: bool


@dataclass
class _Wave:
    """Answers not yet recorded: the rows they touched, and the dead letters among them."""

    rows: dict[int, Row] = field(default_factory=dict)
    dead_letters: list[dict[str, Any]] = field(default_factory=list)
    delivered: int = 0
    accounted: int = 0

    def add(self, job: Job, answer: Answer) -> None:
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


@dataclass(eq=False, kw_only=True)
class Pass:
    """One pass on its event loop: for each kind of row in turn, senders take messages from
    claims made as they go, and a recorder writes their answers every tick."""

    engine: Engine
    client: AccoilClient
    max_in_flight: int
    lease: timedelta
    clock: Callable[[], datetime]
    engine_halted: Callable[[], bool]  # the engine is stopping, or the deadline has passed
    report: Tally
    progress: Callable[[int], None] | None
    _stop: Answer | None = field(default=None, init=False)
    _wave: _Wave = field(default_factory=_Wave, init=False)
    _renewed: float = field(default_factory=time.monotonic, init=False)
    # Requests in flight plus answers acknowledged and not yet recorded: kept within
    # twice max_in_flight, what a crash may repeat, however slow the database is.
    _at_stake: int = field(default=0, init=False)
    _recorded: asyncio.Event = field(default_factory=asyncio.Event, init=False)

    def _halted(self) -> bool:
        return self._stop is not None or self.engine_halted()

    async def run(self) -> Answer | None:
        with ThreadPoolExecutor(1, thread_name_prefix="accoil-record") as database:
            self._database = database
            async with self.client.session() as session:
                for kind in deliveries.KINDS:
                    if self._halted():
                        break
                    try:
                        await self._deliver(session, kind)
                    except BaseExceptionGroup as group:
                        raise group.exceptions[0] from None  # a database error, as raised
        if self._halted():
            self.report.complete = False
        return self._stop

    async def _deliver(self, session: Session, kind: deliveries.Kind) -> None:
        feed = _Feed(self, kind)
        finished = asyncio.Event()
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._recorder(finished))
            senders = [
                tasks.create_task(self._sender(session, feed)) for _ in range(self.max_in_flight)
            ]
            await asyncio.gather(*senders)
            finished.set()

    async def _sender(self, session: Session, feed: _Feed) -> None:
        limit = 2 * self.max_in_flight
        while True:
            while self._at_stake >= limit and not self._halted():
                self._recorded.clear()
                await self._recorded.wait()  # the database is behind: let a wave commit
            job = await feed.next_job()
            if job is None:
                return
            self._at_stake += 1
            answer, retries = await self.engine.attempt(session, job.body, self.engine_halted)
            self.report.retries += retries
            accounted = answer.verdict in {Verdict.DELIVERED, Verdict.DEAD_LETTER}
            if not accounted:
                self._at_stake -= 1  # nothing to record: a later pass sends it again
            job.row.answered(job.ordinal, accounted)
            feed.changed()
            if accounted:
                self._wave.add(job, answer)
                self.report.delivered += answer.verdict is Verdict.DELIVERED
                self.report.dead_lettered += answer.verdict is Verdict.DEAD_LETTER
                if answer.verdict is Verdict.DEAD_LETTER:
                    log.warning(
                        "Accoil refused message %s (%s); kept as a dead letter",
                        job.body["messageId"],
                        answer.describe(),
                    )
            elif self._stop is None and not self.engine_halted():
                self._stop = answer

    async def _recorder(self, finished: asyncio.Event) -> None:
        """Record the answers of each tick in one transaction, on the database thread."""
        while True:
            with_all = finished.is_set()
            if self._wave.rows:
                wave, self._wave = self._wave, _Wave()
                renew = time.monotonic() - self._renewed > self.lease.total_seconds() / 2
                if renew:
                    self._renewed = time.monotonic()
                await self.on_database(self.engine.record, wave.outcomes(), renew)
                self._at_stake -= wave.accounted
                self._recorded.set()
                if self.progress is not None:
                    self.progress(wave.accounted)
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

    def __init__(self, owner: Pass, kind: deliveries.Kind) -> None:
        self._owner = owner
        self._kind = kind
        self._window = owner.max_in_flight
        self._rows: deque[Row] = deque()  # rows with messages left to issue
        self._in_flight: set[Row] = set()
        self._exhausted = False
        self._claiming: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()

    def changed(self) -> None:
        """An answer came back: a row's window may have opened."""
        self._changed.set()

    async def next_job(self) -> Job | None:
        while not self._owner._halted():
            job = self._take()
            if job is not None:
                if len(self._rows) < self._owner.max_in_flight:
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

    def _take(self) -> Job | None:
        now = self._owner.clock()
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
            rows = await self._owner.on_database(self._owner.engine.claim, self._kind)
            self._rows.extend(rows)
            self._exhausted = not rows
        finally:
            self._claiming = None
            self._changed.set()
