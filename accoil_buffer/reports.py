"""What a Buffer answers about its work: the outcome of a batch or a pass, and its health.

Each is a frozen dataclass read by attribute; ``Health.document()`` is the JSON body of the
sidecar's ``/health``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from accoil_buffer.delivery import DeliveryReport
from accoil_buffer.errors import InvalidMessage
from accoil_buffer.messages import format_timestamp


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
    received_at: datetime  # the arrival time every message of the batch was given


@dataclass(frozen=True)
class FlushReport:
    """What a pass did: the fold, and delivery (``None`` when no API key is set)."""

    folded: int
    pruned_anonymous_events: int
    pruned_anonymous_profiles: int
    delivery: DeliveryReport | None = None
    duplicates: int = 0  # outbox rows the fold deleted as copies of a messageId seen before

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
