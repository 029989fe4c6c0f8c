"""The claimed rows a delivery pass sends and their message bodies: what is sent, not how."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from datetime import time as day_time
from typing import Any

from accoil_buffer import accoil_api
from accoil_buffer.store import deliveries


@dataclass(eq=False)
class Row:
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

    def take(self, window: int, now: datetime) -> Job | None:
        """The next message of this row, if its window allows one more in flight."""
        if not self.is_count:
            if self.next > 1:
                return None
            self.next, self.in_flight = 2, 1
            return Job(self, self.body or {})
        self.next = self._next_unsent()
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
        return Job(self, body, ordinal)

    @property
    def exhausted(self) -> bool:
        """Nothing more to issue (what is issued may still be in flight)."""
        if not self.is_count:
            return self.next > 1
        return self._next_unsent() > self.last

    def _next_unsent(self) -> int:
        """The next ordinal neither sent nor acknowledged: past the watermark too, which an
        answer may have moved beyond ``next`` by closing the gap below acked ordinals."""
        ahead = max(self.next, self.watermark + 1)
        while ahead in self.acked:
            ahead += 1
        return ahead

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
class Job:
    """One message of a row (``ordinal`` 0 unless a count); beside ``Row``, whose take makes it."""

    row: Row
    body: dict[str, Any]
    ordinal: int = 0


def row_to_send(
    kind: deliveries.Kind, claimed: deliveries.Claimed, accounts: dict[str, tuple[Any, datetime]]
) -> Row:
    """The row to send, with the body of its message (counts build theirs per ordinal)."""
    v = claimed.values
    if kind.name == "counts":
        watermark = v["delivered_count"]
        acked = {n for n in v["acked_beyond"] or () if n > watermark}
        return Row(
            kind, claimed.key, watermark=watermark, last=v["count"], acked=acked, next=watermark + 1
        )
    return Row(kind, claimed.key, _BODIES[kind.name](v, accounts), v.get("traits_version", 0))


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
    """A timestamp inside ``day`` (UTC): now for today, the day's last millisecond for a day
    gone, its first for a day ahead (an event dated a little in the future, within
    ``future_timestamp_margin_seconds``, just past midnight)."""
    start = datetime.combine(day, day_time(), tzinfo=UTC)
    end = datetime.combine(day, day_time(23, 59, 59, 999000), tzinfo=UTC)
    return max(start, min(now, end))
