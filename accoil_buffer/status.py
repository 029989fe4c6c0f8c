"""A Buffer's status: pending work, anonymous data, drops and delivery, read by attribute.

``Status.document()`` is the JSON document of ``accoil-buffer status --json`` and the sidecar's
``/v1/status``. Only the database layer builds one (``store.report``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from accoil_buffer.messages import format_timestamp


def iso(moment: datetime | None) -> str | None:
    """A moment as the status document writes it (``None`` stays ``None``)."""
    return None if moment is None else format_timestamp(moment)


@dataclass(frozen=True)
class OutboxStatus:
    """Accepted messages not yet folded, and those still queued for the group writer."""

    unfolded_messages: int
    oldest_received_at: datetime | None
    queued_in_memory: int


@dataclass(frozen=True)
class Pending:
    """What waits to be delivered to Accoil, by kind."""

    users: int
    accounts: int
    memberships: int
    count_rows: int
    occurrences: int  # the sum of the count rows' undelivered counts
    posts: int


@dataclass(frozen=True)
class AnonymousStatus:
    """Occurrences held for anonymous ids until an identify or alias names their user."""

    ids: int
    occurrences: int


@dataclass(frozen=True)
class DeliveryStatus:
    """Where delivery goes (``None`` without an API key: delivery is off) and how it went."""

    endpoint: str | None
    last_success_at: datetime | None
    last_failure_at: datetime | None
    offline_since: datetime | None
    next_attempt_at: datetime | None
    last_error: str | None
    paused_reason: str | None
    paused_key: str | None  # the fingerprint of the key refused, never the key
    consecutive_failures: int
    delivered_total: int
    dead_letters: int

    @property
    def enabled(self) -> bool:
        return self.endpoint is not None


@dataclass(frozen=True)
class Status:
    """Pending work, anonymous data, drops and delivery, as one read of the database."""

    outbox: OutboxStatus
    pending: Pending
    anonymous: AnonymousStatus
    oldest_undelivered_at: datetime | None
    oldest_undelivered_age_seconds: float | None
    drops: Mapping[str, int]  # by reason, as accoil_drops counts them
    delivery: DeliveryStatus

    def document(self) -> dict[str, Any]:
        """The JSON document of ``accoil-buffer status --json`` and the sidecar's
        ``/v1/status``."""
        outbox, anonymous, delivery = self.outbox, self.anonymous, self.delivery
        return {
            "outbox": {
                "unfolded_messages": outbox.unfolded_messages,
                "oldest_received_at": iso(outbox.oldest_received_at),
                "queued_in_memory": outbox.queued_in_memory,
            },
            "pending": dataclasses.asdict(self.pending),
            "anonymous": {"ids": anonymous.ids, "occurrences": anonymous.occurrences},
            "oldest_undelivered_at": iso(self.oldest_undelivered_at),
            "oldest_undelivered_age_seconds": self.oldest_undelivered_age_seconds,
            "drops": dict(self.drops),
            "delivery": {
                "enabled": delivery.enabled,
                "endpoint": delivery.endpoint,
                "last_success_at": iso(delivery.last_success_at),
                "last_failure_at": iso(delivery.last_failure_at),
                "offline_since": iso(delivery.offline_since),
                "next_attempt_at": iso(delivery.next_attempt_at),
                "last_error": delivery.last_error,
                "paused_reason": delivery.paused_reason,
                "paused_key": delivery.paused_key,
                "consecutive_failures": delivery.consecutive_failures,
                "delivered_total": delivery.delivered_total,
                "dead_letters": delivery.dead_letters,
            },
        }
