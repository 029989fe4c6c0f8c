"""The write path: accepted messages, routed by the mappings, into the outbox.

A call's message waits for room under the backpressure bounds, then goes to the group writer
(``durability = "group"``) or is written in a transaction it shares with the calls made at the
same moment, or in the app's (``connection=``). Batches are always committed before they
return. The last write's failure is remembered, so that health can tell when the database
takes writes again.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from itertools import groupby

from sqlalchemy import Connection

from accoil_buffer.backpressure import Backpressure, Bound
from accoil_buffer.config import Config
from accoil_buffer.errors import StorageError, storage_errors
from accoil_buffer.mappings import PRESETS, Mappings
from accoil_buffer.messages import Message
from accoil_buffer.reasons import Reason
from accoil_buffer.store import outbox, report
from accoil_buffer.store.direct import Executor
from accoil_buffer.store.engine import Database
from accoil_buffer.writer import GroupWriter, SharedCommits


@dataclass(frozen=True)
class Recorded:
    """What happened to a batch: stored in the outbox, already seen, or filtered out."""

    stored: int
    duplicates: int
    filtered: int


def record(
    database: Database,
    conn: Executor,
    messages: Sequence[Message],
    *,
    mappings: Mappings = PRESETS,
    keep_payloads: bool = False,
    rejected: int = 0,
    day: date | None = None,
) -> Recorded:
    """Store ``messages`` once each per batch, as the actions ``mappings`` make of them,
    inside the caller's transaction (a messageId seen in an earlier batch is dropped by the
    fold, unless it is checked on arrival: see ``outbox.claim_now``), and count under ``day``
    (by default the day the first message was received) what was not stored or was
    corrected, ``rejected`` invalid messages of the same batch included."""
    if not messages and not rejected:
        return Recorded(0, 0, 0)
    # A message that integrations turn off is not stored, so it does not take its id.
    kept = [m for m in messages if m.deliverable]
    filtered = len(messages) - len(kept)
    deliverable = outbox.first_of_each(kept)
    routed = mappings.route(deliverable)
    checked = outbox.checked_on_arrival(routed.rows, routed.posts)
    seen = outbox.claim_now(
        database, conn, [m for m in deliverable if m.message_id in checked] if checked else ()
    )
    if seen:  # rare: a message that makes a post, sent again
        deliverable = [m for m in deliverable if m.message_id not in seen]
        routed = mappings.route(deliverable)
    outbox.append(
        database, conn, routed.rows, routed.posts, keep_payloads=keep_payloads, checked=checked
    )
    result = Recorded(
        stored=len(deliverable),
        duplicates=len(messages) - filtered - len(deliverable),
        filtered=filtered,
    )
    counts = routed.counts
    counts[Reason.DUPLICATE_MESSAGE_ID] += result.duplicates
    counts[Reason.FILTERED_INTEGRATIONS] += result.filtered
    counts[Reason.REJECTED_INVALID] += rejected
    for message in deliverable:
        if message.notes:  # rarely: Counter.update costs as much as a row when given nothing
            counts.update(message.notes)
    if day is None:
        if not messages:
            raise ValueError("counting rejected messages needs the day they were received")
        day = messages[0].received_at.date()
    outbox.record_drops(database, conn, Counter({(day, r): n for r, n in counts.items()}))
    return result


class Recorder:
    """The write path of one Buffer: its bounds, its group writer (if any) and how it records.

    The writer commits through ``_commit`` and the bounds measure through ``_waiting`` and
    count refusals through ``_count_refusal``, all here.
    """

    def __init__(self, database: Database, config: Config, clock: Callable[[], datetime]) -> None:
        self._database = database
        self._clock = clock
        self._mappings = config.mappings
        self._keep_payloads = config.outbox_retention_hours > 0  # whole messages for audit
        self._flush_timeout = config.close_timeout_seconds
        self.write_failure: str | None = None  # the last write's error, until one succeeds
        self.wrote = False  # whether anything was recorded (close() folds only then)
        self._backpressure = Backpressure(
            Bound("max_outbox_rows", config.max_outbox_rows, self._waiting, "rows waiting"),
            Bound(
                "max_outbox_bytes",
                config.max_outbox_bytes,
                self._bytes_in_use,
                "bytes in use in the database file",
            ),
            timeout=config.backpressure_timeout_seconds,
            refuse=self._count_refusal,
        )
        self._writer: GroupWriter | None = None
        if config.durability == "group":
            self._writer = GroupWriter(self._commit)
        self._shared = SharedCommits(self._database.direct_write)

    @property
    def queued(self) -> int:
        """Messages accepted but not yet committed by the group writer."""
        return 0 if self._writer is None else self._writer.pending

    @property
    def queue_error(self) -> BaseException | None:
        """Why the group writer's last commit failed, until one succeeds."""
        return None if self._writer is None else self._writer.last_error

    def accept(self, message: Message, connection: Connection | None) -> None:
        """Record one call's message: queued for the group writer, or written now (sync mode,
        or in the app's transaction)."""
        if self._writer is None or connection is not None:
            self.write([message], connection)
            return
        self._backpressure.make_room(1, message.size)
        self._writer.submit([message])
        self.wrote = True

    def write(
        self,
        messages: list[Message],
        connection: Connection | None,
        *,
        rejected: int = 0,
        day: date | None = None,
    ) -> Recorded:
        """Record ``messages`` now, committed before this returns unless ``connection`` (the
        app's transaction) is given; see ``record``."""
        if connection is None and messages:
            self._backpressure.make_room(len(messages), sum(m.size for m in messages))
        if self._writer is not None and self._writer.pending:
            # Calls queued earlier are committed first: the fold follows outbox order
            # (the latest traits win), which must be the order the app made its calls in.
            self._writer.flush(self._flush_timeout)
        try:
            with storage_errors():
                if connection is not None:
                    result = self._record(connection, messages, rejected, day)
                else:
                    result = self._shared.run(
                        lambda transaction: self._record(transaction, messages, rejected, day)
                    )
        except StorageError as exc:
            self.write_failure = str(exc)
            raise
        self.write_failure = None
        self.wrote = True
        return result

    def commit_queued(self, timeout: float | None) -> None:
        """Wait until every queued message is committed; ``StorageError`` past ``timeout``."""
        if self._writer is not None and not self._writer.flush(timeout):
            raise StorageError(
                f"queued messages were not committed within {timeout} s "
                f"({self._writer.last_error or 'the database is slow'})"
            )

    def check_writable(self) -> None:
        """While the last write failed (a full disk, say), try a write that changes nothing,
        so that health turns good as soon as the database takes writes again."""
        if self.write_failure is None:
            return
        with storage_errors(), self._database.write() as conn:
            outbox.probe_write(conn, self._clock())
        self.write_failure = None

    def close(self) -> bool:
        """Commit what is queued and stop the writer; False if it could not (it keeps trying
        until the process ends)."""
        return self._writer is None or self._writer.close()

    def after_fork_in_child(self) -> None:
        if self._writer is not None:
            self._writer.after_fork_in_child()
        self._shared = SharedCommits(self._database.direct_write)  # a parent's leader is gone

    def _record(
        self, conn: Executor, messages: Sequence[Message], rejected: int, day: date | None
    ) -> Recorded:
        return record(
            self._database,
            conn,
            messages,
            mappings=self._mappings,
            keep_payloads=self._keep_payloads,
            rejected=rejected,
            day=day,
        )

    def _commit(self, messages: Sequence[Message]) -> None:
        """The group writer's transaction: what it drops or corrects is counted on the day
        each call was received, though one commit may take calls from both sides of midnight."""
        with self._database.direct_write() as transaction:
            if messages[0].received_at.date() == messages[-1].received_at.date():  # nearly always
                self._record(transaction, messages, 0, None)
                return
            for _, same_day in groupby(messages, key=lambda m: m.received_at.date()):
                self._record(transaction, list(same_day), 0, None)

    def _waiting(self) -> int:
        queued = self.queued  # first: a message committed meanwhile counts twice, never zero
        with storage_errors(), self._database.engine.connect() as conn:
            return report.waiting(conn) + queued

    def _bytes_in_use(self) -> int:
        # Queued first, as in _waiting; a queued message counts as its JSON, about its row.
        queued = 0 if self._writer is None else self._writer.pending_size
        with storage_errors():
            return self._database.bytes_in_use() + queued

    def _count_refusal(self, n: int) -> None:
        with storage_errors(), self._database.write() as conn:
            today = self._clock().date()
            outbox.record_drops(self._database, conn, Counter({(today, Reason.BUFFER_FULL): n}))
