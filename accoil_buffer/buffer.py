"""``Buffer``: the embedded Python API (SPEC 5.1), with analytics-python's method signatures."""

from __future__ import annotations

import atexit
import dataclasses
import logging
import os
import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from types import TracebackType
from typing import Any, TypeVar

import httpx
from sqlalchemy import Connection
from sqlalchemy.exc import SQLAlchemyError

from accoil_buffer.accoil_api import AccoilClient
from accoil_buffer.backpressure import Backpressure, Bound
from accoil_buffer.config import Config, load_config
from accoil_buffer.delivery import Delivery, DeliveryReport, DeliverySettings
from accoil_buffer.errors import ConfigError, InvalidMessage, StorageError
from accoil_buffer.messages import Message, format_timestamp, normalise
from accoil_buffer.scheduler import Scheduler
from accoil_buffer.store import deliveries, history, outbox, report, rollup
from accoil_buffer.store.direct import Executor
from accoil_buffer.store.engine import Database
from accoil_buffer.store.forks import if_alive
from accoil_buffer.store.migrate import ensure_schema
from accoil_buffer.writer import GroupWriter

log = logging.getLogger(__name__)
Clock = Callable[[], datetime]
T = TypeVar("T")
# analytics-python's argument names -> Segment's field names (the rest are the same).
_SEGMENT_FIELDS = {
    "user_id": "userId",
    "anonymous_id": "anonymousId",
    "group_id": "groupId",
    "previous_id": "previousId",
    "message_id": "messageId",
}


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Rejection:
    """A message of a batch that was refused, by its position in the batch."""

    index: int
    error: InvalidMessage


@dataclass(frozen=True)
class IngestReport:
    """The outcome of ``ingest_many``: valid messages are stored even when others are rejected."""

    stored: int
    duplicates: int
    filtered: int
    rejected: tuple[Rejection, ...]


@dataclass(frozen=True)
class FlushReport:
    """What a pass did: the fold, and delivery (``None`` when no API key is set)."""

    folded: int
    pruned_anonymous_events: int
    pruned_anonymous_profiles: int
    delivery: DeliveryReport | None = None

    @property
    def ok(self) -> bool:
        """False when delivery met a failure or left work undone."""
        return self.delivery is None or (self.delivery.failure is None and self.delivery.complete)


@dataclass(frozen=True)
class Health:
    """Whether the buffer can store messages now, and how delivery is going: ``delivery`` is
    ``off`` (no API key), ``delivering``, ``offline`` (Accoil unreachable or failing; retried
    with backoff) or ``paused`` (Accoil refused the key), or ``unknown`` if the database
    cannot be read."""

    storing: bool
    delivery: str
    problem: str | None = None  # why it cannot store
    paused_reason: str | None = None
    offline_since: datetime | None = None

    def document(self) -> dict[str, Any]:
        """The JSON body of the sidecar's ``/health``."""
        document: dict[str, Any] = {
            "status": "ok" if self.storing else "unavailable",
            "storing": self.storing,
            "delivery": self.delivery,
        }
        if self.problem:
            document["problem"] = self.problem
        if self.paused_reason:
            document["paused_reason"] = self.paused_reason
        if self.offline_since:
            document["offline_since"] = format_timestamp(self.offline_since)
        return document


class Buffer:
    """A durable outbox for Segment-style calls, rolled up into Accoil's model.

    ``Buffer("sqlite:///events.db", api_key=...)``; every keyword of ``Config`` may be passed too.
    With ``start=True`` a background scheduler folds (and delivers) every
    ``flush_interval_seconds``; ``close()`` runs a last fold either way.
    """

    def __init__(
        self,
        database_url: str | None = None,
        api_key: str | None = None,
        *,
        endpoint: str | None = None,
        config: Config | None = None,
        start: bool = True,
        clock: Clock = utc_now,
        transport: httpx.AsyncBaseTransport | None = None,
        **settings: Any,
    ) -> None:
        explicit = {
            "database_url": database_url,
            "api_key": api_key,
            "endpoint": endpoint,
            **settings,
        }
        explicit = {k: v for k, v in explicit.items() if v is not None}
        if config is None:
            config = load_config(overrides=explicit)
        elif explicit:
            config = dataclasses.replace(config, **explicit)
        self.config = config
        self._clock = clock
        self._margin = timedelta(seconds=config.future_timestamp_margin_seconds)
        self._database = Database.open(config)
        try:
            self._guard(lambda: ensure_schema(self._database, auto_migrate=config.auto_migrate))
        except BaseException:
            self._database.dispose()
            raise
        self._fold_settings = rollup.FoldSettings(
            batch_size=config.fold_batch_size or self._database.fold_batch_size,
            outbox_retention=timedelta(hours=config.outbox_retention_hours),
            dedupe_window=timedelta(hours=config.dedupe_window_hours),
            anonymous_ttl=timedelta(days=config.anonymous_ttl_days),
        )
        self._delivery: Delivery | None = None
        self._client: AccoilClient | None = None
        if config.api_key:
            self._client = AccoilClient(
                config.api_key,
                config.endpoint,
                transport=transport,
                timeout=config.request_timeout_seconds,
                max_connections=config.max_in_flight,
            )
            self._delivery = Delivery(
                self._database,
                self._client,
                DeliverySettings(
                    max_in_flight=config.max_in_flight,
                    max_backoff=timedelta(seconds=config.max_backoff_seconds),
                    lease=timedelta(seconds=config.claim_lease_seconds),
                ),
                clock,
            )
        else:
            log.info("no api_key is set: events are buffered, delivery to Accoil is off")
        self._closed = False
        self._write_failure: str | None = None  # the last write's error, until one succeeds
        self._wrote = False  # close() folds only if this instance appended something
        self._backpressure = Backpressure(
            Bound("max_outbox_rows", config.max_outbox_rows, self._waiting, "rows waiting"),
            Bound(
                "max_outbox_bytes",
                config.max_outbox_bytes,
                lambda: self._guard(self._database.bytes_in_use),
                "bytes in use in the database file",
            ),
            timeout=config.backpressure_timeout_seconds,
            refuse=self._count_refusal,
        )
        self._writer: GroupWriter | None = None
        if config.durability == "group":
            self._writer = GroupWriter(self._commit)
        self._scheduler: Scheduler | None = None
        if start:
            self._scheduler = Scheduler(self._scheduled_pass, config.flush_interval_seconds)
            self._scheduler.start()
        me = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: if_alive(me, Buffer._after_fork_in_child))
        atexit.register(if_alive, me, Buffer.close)

    # --- Segment's calls -------------------------------------------------------------------

    def identify(
        self,
        user_id: str | None = None,
        traits: Mapping[str, Any] | None = None,
        context: Mapping[str, Any] | None = None,
        timestamp: datetime | None = None,
        anonymous_id: str | None = None,
        integrations: Mapping[str, Any] | None = None,
        message_id: str | None = None,
        *,
        connection: Connection | None = None,
    ) -> str:
        return self._call("identify", locals())

    def group(
        self,
        user_id: str | None = None,
        group_id: str | None = None,
        traits: Mapping[str, Any] | None = None,
        context: Mapping[str, Any] | None = None,
        timestamp: datetime | None = None,
        anonymous_id: str | None = None,
        integrations: Mapping[str, Any] | None = None,
        message_id: str | None = None,
        *,
        connection: Connection | None = None,
    ) -> str:
        return self._call("group", locals())

    def track(
        self,
        user_id: str | None = None,
        event: str | None = None,
        properties: Mapping[str, Any] | None = None,
        context: Mapping[str, Any] | None = None,
        timestamp: datetime | None = None,
        anonymous_id: str | None = None,
        integrations: Mapping[str, Any] | None = None,
        message_id: str | None = None,
        *,
        connection: Connection | None = None,
    ) -> str:
        return self._call("track", locals())

    def page(
        self,
        user_id: str | None = None,
        category: str | None = None,
        name: str | None = None,
        properties: Mapping[str, Any] | None = None,
        context: Mapping[str, Any] | None = None,
        timestamp: datetime | None = None,
        anonymous_id: str | None = None,
        integrations: Mapping[str, Any] | None = None,
        message_id: str | None = None,
        *,
        connection: Connection | None = None,
    ) -> str:
        return self._call("page", locals())

    def screen(
        self,
        user_id: str | None = None,
        category: str | None = None,
        name: str | None = None,
        properties: Mapping[str, Any] | None = None,
        context: Mapping[str, Any] | None = None,
        timestamp: datetime | None = None,
        anonymous_id: str | None = None,
        integrations: Mapping[str, Any] | None = None,
        message_id: str | None = None,
        *,
        connection: Connection | None = None,
    ) -> str:
        return self._call("screen", locals())

    def alias(
        self,
        previous_id: str | None = None,
        user_id: str | None = None,
        context: Mapping[str, Any] | None = None,
        timestamp: datetime | None = None,
        integrations: Mapping[str, Any] | None = None,
        message_id: str | None = None,
        *,
        connection: Connection | None = None,
    ) -> str:
        return self._call("alias", locals())

    # --- Segment-format messages -----------------------------------------------------------

    def ingest(self, message: Mapping[str, Any], *, connection: Connection | None = None) -> str:
        """Store one Segment-format message; returns its messageId. Raises ``InvalidMessage``
        (nothing stored) or ``BufferFull``. With ``durability = "group"`` it returns once the
        message is queued for the writer; with a ``connection`` it is written in that
        transaction."""
        normalised = normalise(message, received_at=self._clock(), future_margin=self._margin)
        if self._writer is None or connection is not None:
            self._append([normalised], connection)
        else:
            self._ensure_open()
            self._backpressure.make_room(1, normalised.size)
            self._writer.submit([normalised])
            self._wrote = True
        return normalised.message_id

    def ingest_many(
        self, messages: Iterable[object], *, connection: Connection | None = None
    ) -> IngestReport:
        """Store every valid message in one transaction, committed before it returns (in any
        durability mode); report the invalid ones (anything that is not a valid Segment
        message, a non-dict included) by index."""
        received_at = self._clock()
        valid: list[Message] = []
        rejected: list[Rejection] = []
        for index, message in enumerate(messages):
            try:
                valid.append(
                    normalise(message, received_at=received_at, future_margin=self._margin)
                )
            except InvalidMessage as exc:
                rejected.append(Rejection(index, exc))
        result = self._append(valid, connection, rejected=len(rejected), today=received_at.date())
        return IngestReport(result.stored, result.duplicates, result.filtered, tuple(rejected))

    # --- Work and state --------------------------------------------------------------------

    def flush(
        self, timeout: float | None = None, *, progress: Callable[[int], None] | None = None
    ) -> FlushReport:
        """Fold the outbox and deliver now, even during a backoff. With ``timeout`` (seconds),
        no new message is sent once it has passed; what is left waits for the next pass.
        ``progress`` is called with each number of messages newly accounted for."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if self._writer is not None and not self._writer.flush(timeout):
            raise StorageError(
                f"queued messages were not committed within {timeout} s "
                f"({self._writer.last_error or 'the database is slow'})"
            )
        return self._pass(force=True, deadline=deadline, progress=progress)

    def status(self) -> dict[str, Any]:
        """Pending work, anonymous data and drops, as ``accoil-buffer status --json`` prints."""

        def read() -> dict[str, Any]:
            # Queued first: a message committed between the two reads is counted twice,
            # never missed.
            queued = 0 if self._writer is None else self._writer.pending
            with self._database.engine.connect() as conn:
                document = report.status(conn, self._clock())
            document["outbox"]["queued_in_memory"] = queued
            document["delivery"] = {
                "enabled": self._client is not None,
                "endpoint": None if self._client is None else self._client.url,
                **document["delivery"],
            }
            return document

        return self._guard(read)

    def health(self) -> Health:
        """Whether a message sent now would be stored, and how delivery is going. While the
        last write failed (a full disk, say), each call tries a write that changes nothing,
        so the answer turns healthy as soon as the database takes writes again."""

        def check() -> dict[str, Any]:
            if self._write_failure is not None:
                with self._database.write() as conn:
                    outbox.probe_write(conn, self._clock())
                self._write_failure = None
            with self._database.engine.connect() as conn:
                return deliveries.state(conn)

        try:
            state = self._guard(check)
        except StorageError as exc:
            return Health(storing=False, delivery="unknown", problem=str(exc))
        writer_error = None if self._writer is None else self._writer.last_error
        problem = None if writer_error is None else f"queued messages fail: {writer_error}"
        if self._client is None:
            delivery = "off"
        elif state["paused_reason"]:
            delivery = "paused"
        elif state["offline_since"]:
            delivery = "offline"
        else:
            delivery = "delivering"
        return Health(
            storing=writer_error is None,
            delivery=delivery,
            problem=problem,
            paused_reason=state["paused_reason"],
            offline_since=state["offline_since"],
        )

    def dead_letters(self) -> list[dict[str, Any]]:
        """Messages Accoil refused (400, 413, other 4xx) and not yet replayed."""

        def read() -> list[dict[str, Any]]:
            with self._database.engine.connect() as conn:
                return deliveries.dead_letters(conn)

        return self._guard(read)

    def history(self, days: int = 30) -> dict[str, Any]:
        """Occurrences (delivered, pending, held, not yet folded) and drops per UTC day."""

        def read() -> dict[str, Any]:
            with self._database.engine.connect() as conn:
                return history.daily(conn, self._clock().date(), days)

        return self._guard(read)

    def replay_dead_letters(self, ids: Collection[int] | None = None) -> tuple[int, int]:
        """Send dead letters (all, or those ``ids``) again; returns (accepted, refused)."""
        if self._delivery is None:
            raise ConfigError("replaying dead letters needs an api_key")
        delivery = self._delivery
        return self._guard(lambda: delivery.replay(ids))

    def close(self, timeout: float | None = None) -> None:
        """Commit queued messages, stop the scheduler, fold what this instance wrote, release
        the database. Idempotent. Waits at most ``timeout`` seconds (default
        ``close_timeout_seconds``), even when the database is gone; what was committed stays
        for the next pass, in this process or another."""
        if self._closed:
            return
        self._closed = True
        budget = self.config.close_timeout_seconds if timeout is None else timeout
        finisher = threading.Thread(target=self._finish, name="accoil-buffer-close", daemon=True)
        finisher.start()
        finisher.join(budget)
        if finisher.is_alive():
            lost = 0 if self._writer is None else self._writer.pending
            log.error(
                "close() gave up after %.1f s; %d queued messages were not committed", budget, lost
            )

    def _finish(self) -> None:
        if self._delivery is not None:
            self._delivery.stop()  # a running pass ends after its in-flight requests
        if self._writer is not None and not self._writer.close():
            return
        try:
            # Before waiting for a running pass: its in-flight requests may take up to
            # request_timeout_seconds, and what was accepted is folded either way.
            if self._wrote:
                self._guard(lambda: rollup.fold(self._database, self._fold_settings, self._clock()))
        except StorageError:
            log.exception("could not fold the outbox at close; the messages stay in the outbox")
        try:
            if self._scheduler is not None:
                self._scheduler.shutdown()
        finally:
            if self._delivery is not None:
                self._delivery.close()
            self._database.dispose()

    def _after_fork_in_child(self) -> None:
        """A forked child (gunicorn --preload, Celery prefork) gets a working buffer of its own:
        new connections, an empty queue (the parent commits what it had queued), a new
        delivery identity and, if the parent had one, its own scheduler."""
        if self._closed:
            return
        self._database.engine.dispose(close=False)
        if self._writer is not None:
            self._writer.after_fork_in_child()
        if self._delivery is not None:
            self._delivery.after_fork_in_child()
        if self._scheduler is not None:
            self._scheduler = Scheduler(self._scheduled_pass, self.config.flush_interval_seconds)
            self._scheduler.start()

    def __enter__(self) -> Buffer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- Internals -------------------------------------------------------------------------

    def _call(self, kind: str, arguments: Mapping[str, Any]) -> str:
        """Build the Segment message from a call method's arguments (its ``locals()``)."""
        message = {"type": kind}
        for name, value in arguments.items():
            if value is not None and name not in {"self", "connection"}:
                message[_SEGMENT_FIELDS.get(name, name)] = value
        return self.ingest(message, connection=arguments["connection"])

    def _append(
        self,
        messages: list[Message],
        connection: Connection | None,
        *,
        rejected: int = 0,
        today: date | None = None,
    ) -> outbox.AppendResult:
        self._ensure_open()
        if connection is None and messages:
            self._backpressure.make_room(len(messages), sum(m.size for m in messages))
        if self._writer is not None and self._writer.pending:
            # Calls queued earlier are committed first: the fold follows outbox order
            # (the latest traits win), which must be the order the app made its calls in.
            self._writer.flush(self.config.close_timeout_seconds)

        def write() -> outbox.AppendResult:
            if connection is not None:
                return self._store(connection, messages, rejected=rejected, today=today)
            with self._database.direct_write() as transaction:
                return self._store(transaction, messages, rejected=rejected, today=today)

        try:
            result = self._guard(write)
        except StorageError as exc:
            self._write_failure = str(exc)
            raise
        self._write_failure = None
        self._wrote = True
        return result

    def _ensure_open(self) -> None:
        if self._closed:
            raise StorageError("this Buffer is closed")

    def _commit(self, messages: Sequence[Message]) -> None:
        """The group writer's transaction."""
        with self._database.direct_write() as transaction:
            self._store(transaction, messages)

    def _store(
        self,
        conn: Executor,
        messages: Sequence[Message],
        *,
        rejected: int = 0,
        today: date | None = None,
    ) -> outbox.AppendResult:
        """Append to the outbox as this buffer's configuration says (its mappings, and
        whole messages only when they are kept for audit)."""
        return outbox.append(
            self._database,
            conn,
            messages,
            mappings=self.config.mappings,
            keep_payloads=self.config.outbox_retention_hours > 0,
            rejected=rejected,
            today=today,
        )

    def _waiting(self) -> int:
        def count() -> int:
            with self._database.engine.connect() as conn:
                return report.waiting(conn)

        queued = 0 if self._writer is None else self._writer.pending
        return self._guard(count) + queued

    def _count_refusal(self, n: int) -> None:
        def count() -> None:
            with self._database.write() as conn:
                today = self._clock().date()
                outbox.record_drops(self._database, conn, Counter({(today, BUFFER_FULL): n}))

        self._guard(count)

    def _scheduled_pass(self) -> None:
        self._pass(force=False, deadline=None)

    def _pass(
        self,
        *,
        force: bool,
        deadline: float | None,
        progress: Callable[[int], None] | None = None,
    ) -> FlushReport:
        folded = self._guard(
            lambda: rollup.fold(self._database, self._fold_settings, self._clock())
        )
        delivered = None
        if self._delivery is not None:
            delivery = self._delivery
            delivered = self._guard(
                lambda: delivery.run(force=force, deadline=deadline, progress=progress)
            )
        return FlushReport(
            folded.folded,
            folded.pruned_anonymous_events,
            folded.pruned_anonymous_profiles,
            delivered,
        )

    def _guard(self, work: Callable[[], T]) -> T:
        try:
            return work()
        except SQLAlchemyError as exc:
            raise StorageError(
                f"the database failed: {exc.__class__.__name__}: {str(exc).splitlines()[0]}"
            ) from exc


BUFFER_FULL = "buffer_full"
