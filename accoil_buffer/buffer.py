"""``Buffer``: the embedded Python API, with analytics-python's method signatures."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any

import httpx
from sqlalchemy import Connection

from accoil_buffer.config import Config, load_config
from accoil_buffer.errors import (
    BufferClosed,
    ConfigError,
    InvalidMessage,
    StorageError,
    storage_errors,
)
from accoil_buffer.lifecycle import Lifecycle
from accoil_buffer.messages import Message, normalise, normalise_each
from accoil_buffer.reports import FlushReport, Health, IngestReport, Rejection
from accoil_buffer.status import Status
from accoil_buffer.store import deliveries, history, report
from accoil_buffer.wiring import Clock, utc_now, wire


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
        given = {"database_url": database_url, "api_key": api_key, "endpoint": endpoint}
        explicit = {k: v for k, v in {**given, **settings}.items() if v is not None}
        if config is None:
            config = load_config(overrides=explicit)
        elif explicit:
            config = dataclasses.replace(config, **explicit)
        self.config = config
        self._clock = clock
        self._margin = timedelta(seconds=config.future_timestamp_margin_seconds)
        self._parts = wire(config, clock=clock, transport=transport)
        self._lifecycle = Lifecycle(self._parts, start=start)

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
        fields = {
            "type": "identify",
            "userId": user_id,
            "traits": traits,
            "context": context,
            "timestamp": timestamp,
            "anonymousId": anonymous_id,
            "integrations": integrations,
            "messageId": message_id,
        }
        return self._call(fields, connection)

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
        fields = {
            "type": "group",
            "userId": user_id,
            "groupId": group_id,
            "traits": traits,
            "context": context,
            "timestamp": timestamp,
            "anonymousId": anonymous_id,
            "integrations": integrations,
            "messageId": message_id,
        }
        return self._call(fields, connection)

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
        fields = {
            "type": "track",
            "userId": user_id,
            "event": event,
            "properties": properties,
            "context": context,
            "timestamp": timestamp,
            "anonymousId": anonymous_id,
            "integrations": integrations,
            "messageId": message_id,
        }
        return self._call(fields, connection)

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
        view = (category, name, properties, context, timestamp, anonymous_id, integrations)
        return self._view("page", user_id, *view, message_id, connection)

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
        view = (category, name, properties, context, timestamp, anonymous_id, integrations)
        return self._view("screen", user_id, *view, message_id, connection)

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
        fields = {
            "type": "alias",
            "previousId": previous_id,
            "userId": user_id,
            "context": context,
            "timestamp": timestamp,
            "integrations": integrations,
            "messageId": message_id,
        }
        return self._call(fields, connection)

    # --- Segment-format messages -----------------------------------------------------------

    def ingest(self, message: Mapping[str, Any], *, connection: Connection | None = None) -> str:
        """Store one Segment-format message; returns its messageId. Raises ``InvalidMessage``
        (nothing stored) or ``BufferFull``. With ``durability = "group"`` it returns once the
        message is queued for the writer; with a ``connection`` it is written in that
        transaction."""
        normalised = normalise(message, received_at=self._clock(), future_margin=self._margin)
        self._ensure_open()
        self._parts.recorder.accept(normalised, connection)
        return normalised.message_id

    def ingest_many(
        self,
        messages: Iterable[object],
        *,
        connection: Connection | None = None,
        shared_bytes: int = 0,
    ) -> IngestReport:
        """Store every valid message in one transaction, committed before it returns (in any
        durability mode); report the invalid ones (anything that is not a valid Segment
        message, a non-dict included) by index. ``shared_bytes``: what a batch's envelope
        merged into each message, allowed beyond its 32 KB (up to 8 KB)."""
        received_at = self._clock()
        valid: list[Message] = []
        rejected: list[Rejection] = []
        each = normalise_each(
            messages,
            received_at=received_at,
            future_margin=self._margin,
            shared_bytes=shared_bytes,
        )
        for index, message in enumerate(each):
            if isinstance(message, InvalidMessage):
                rejected.append(Rejection(index, message))
            else:
                valid.append(message)
        self._ensure_open()
        result = self._parts.recorder.write(
            valid, connection, rejected=len(rejected), day=received_at.date()
        )
        return IngestReport(
            result.stored, result.duplicates, result.filtered, tuple(rejected), received_at
        )

    # --- Work and state --------------------------------------------------------------------

    def flush(
        self, timeout: float | None = None, *, progress: Callable[[int], None] | None = None
    ) -> FlushReport:
        """Fold the outbox and deliver now, even during a backoff. With ``timeout`` (seconds),
        no new message is sent once it has passed; what is left waits for the next pass.
        ``progress`` is called with each number of messages newly accounted for."""
        self._ensure_open()
        deadline = None if timeout is None else time.monotonic() + timeout
        self._parts.recorder.commit_queued(timeout)
        return self._parts.run_pass(force=True, deadline=deadline, progress=progress)

    def status(self) -> dict[str, Any]:
        """Pending work, anonymous data and drops, as ``accoil-buffer status --json`` prints."""
        return self.status_report().document()

    def status_report(self) -> Status:
        """What ``status()`` shows, as a ``Status`` read by attribute."""
        self._ensure_open()
        # Queued first: a message committed between the two reads is counted twice, never
        # missed.
        queued = self._parts.recorder.queued
        endpoint = None if self._parts.client is None else self._parts.client.url
        with storage_errors(), self._parts.database.engine.connect() as conn:
            return report.status(conn, self._clock(), queued_in_memory=queued, endpoint=endpoint)

    def health(self) -> Health:
        """Whether a message sent now would be stored, and how delivery is going. While the
        last write failed (a full disk, say), each call tries a write that changes nothing,
        so the answer turns healthy as soon as the database takes writes again."""
        try:
            self._ensure_open()
            self._parts.recorder.check_writable()
            with storage_errors(), self._parts.database.engine.connect() as conn:
                state = deliveries.state(conn)
        except StorageError as exc:
            return Health(storing=False, delivery="unknown", problem=str(exc))
        queue_error = self._parts.recorder.queue_error
        if self._parts.client is None:
            delivery = "off"
        elif state["paused_reason"]:
            delivery = "paused"
        elif state["offline_since"]:
            delivery = "offline"
        else:
            delivery = "delivering"
        return Health(
            storing=queue_error is None,
            delivery=delivery,
            problem=None if queue_error is None else f"queued messages fail: {queue_error}",
            paused_reason=state["paused_reason"],
            offline_since=state["offline_since"],
        )

    def dead_letters(self, limit: int | None = None) -> list[dict[str, Any]]:
        """Messages Accoil refused (400, 413, other 4xx) and not yet replayed, oldest first;
        the first ``limit`` of them if given (``status()`` counts them all)."""
        self._ensure_open()
        with storage_errors(), self._parts.database.engine.connect() as conn:
            return deliveries.dead_letters(conn, limit)

    def history(self, days: int = 30) -> dict[str, Any]:
        """Occurrences (delivered, pending, held, not yet folded) and drops per UTC day."""
        self._ensure_open()
        with storage_errors(), self._parts.database.engine.connect() as conn:
            return history.daily(conn, self._clock().date(), days)

    def replay_dead_letters(self, ids: Collection[int] | None = None) -> tuple[int, int]:
        """Send dead letters (all, or those ``ids``) again; returns (accepted, refused)."""
        if ids is not None and any(isinstance(i, bool) or not isinstance(i, int) for i in ids):
            raise TypeError("ids must be dead letter ids: whole numbers, as dead_letters() has")
        self._ensure_open()
        delivery = self._parts.delivery
        if delivery is None:
            raise ConfigError("replaying dead letters needs an api_key")
        with storage_errors():
            return delivery.replay(ids)

    def close(self, timeout: float | None = None) -> None:
        """Commit queued messages, stop the scheduler, fold what this instance wrote, release
        the database. Idempotent. Waits at most ``timeout`` seconds (default
        ``close_timeout_seconds``), even when the database is gone; what was committed stays
        for the next pass, in this process or another."""
        self._lifecycle.close(timeout)

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

    def _view(
        self,
        kind: str,
        user_id: str | None,
        category: str | None,
        name: str | None,
        properties: Mapping[str, Any] | None,
        context: Mapping[str, Any] | None,
        timestamp: datetime | None,
        anonymous_id: str | None,
        integrations: Mapping[str, Any] | None,
        message_id: str | None,
        connection: Connection | None,
    ) -> str:
        """A page or a screen: the same fields under another type."""
        fields = {
            "type": kind,
            "userId": user_id,
            "category": category,
            "name": name,
            "properties": properties,
            "context": context,
            "timestamp": timestamp,
            "anonymousId": anonymous_id,
            "integrations": integrations,
            "messageId": message_id,
        }
        return self._call(fields, connection)

    def _call(self, fields: dict[str, Any], connection: Connection | None) -> str:
        """Ingest a call's message: its fields that were given (not ``None``)."""
        message = {name: value for name, value in fields.items() if value is not None}
        return self.ingest(message, connection=connection)

    def _ensure_open(self) -> None:
        if self._lifecycle.closed:
            raise BufferClosed("this Buffer is closed")
