"""The live view's ring: bounded, recording only while watched, never keeping a write key."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from accoil_buffer import IngestReport, InvalidMessage, Rejection
from accoil_buffer.console.live import PREVIEW_CHARS, WATCH_SECONDS, Ring

NOW = datetime(2026, 12, 7, 23, 59, 59, 999000, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def stored(n: int) -> IngestReport:
    return IngestReport(stored=n, duplicates=0, filtered=0, rejected=(), received_at=NOW)


def track(i: int) -> dict[str, object]:
    return {"type": "track", "userId": "u1", "event": f"E{i}", "properties": {"i": i}}


def test_the_ring_keeps_the_last_n_messages_only() -> None:
    ring = Ring(size=50)
    ring.watch()
    for i in range(1000):
        ring.record([track(i)], stored(1))
    assert len(ring) == 50
    kept = ring.after(0)
    assert [seen.seq for seen in kept] == list(range(951, 1001))
    assert kept[-1].message == track(999)
    assert [seen.seq for seen in ring.after(990)] == list(range(991, 1001))
    assert ring.after(1000) == []
    assert len(ring.after(5000)) == 50  # a page from before a restart gets all there is


def test_nothing_is_kept_unless_someone_watched_in_the_last_minute() -> None:
    clock = Clock()
    ring = Ring(monotonic=clock)
    ring.record([track(1)], stored(1))
    assert len(ring) == 0
    ring.watch()
    clock.now += WATCH_SECONDS - 1
    ring.record([track(2)], stored(1))
    clock.now += 2
    ring.record([track(3)], stored(1))
    assert [seen.message for seen in ring.after(0)] == [track(2)]


def test_a_rejected_message_is_kept_as_a_short_preview_without_its_write_key() -> None:
    ring = Ring()
    ring.watch()
    huge = {"type": "track", "writeKey": "wk-secret", "properties": {"x": "." * 100_000}}
    rejection = Rejection(1, InvalidMessage("message", "is too large"))
    report = IngestReport(
        stored=1, duplicates=0, filtered=0, rejected=(rejection,), received_at=NOW
    )
    ring.record([track(1), huge], report)
    accepted, rejected = ring.after(0)
    assert accepted.error is None
    assert rejected.error == "message: is too large"
    assert isinstance(rejected.message, str)
    assert len(rejected.message) == PREVIEW_CHARS
    assert "wk-secret" not in rejected.message
    assert rejected.message.startswith('{"type": "track", "properties"')
    assert accepted.batch == rejected.batch


def test_a_preview_of_what_is_not_json_says_so() -> None:
    ring = Ring()
    ring.watch()
    nested: list[object] = []
    for _ in range(5000):
        nested = [nested]
    rejection = Rejection(0, InvalidMessage("message", "is too deep"))
    ring.record([nested], IngestReport(0, 0, 0, (rejection,), NOW))
    (seen,) = ring.after(0)
    assert seen.message == "(a list that is not JSON)"
    json.dumps(seen.message)


def test_a_message_rejected_for_a_lone_surrogate_previews_as_text_a_page_can_be_sent() -> None:
    ring = Ring()
    ring.watch()
    broken = {"type": "track", "properties": {"x": "\ud800"}}
    rejection = Rejection(0, InvalidMessage("message.properties.x", "lone surrogate"))
    ring.record(
        [broken],
        IngestReport(stored=0, duplicates=0, filtered=0, rejected=(rejection,), received_at=NOW),
    )
    (seen,) = ring.after(0)
    assert isinstance(seen.message, str)
    seen.message.encode()  # UTF-8, as the page is sent: a lone surrogate would raise here
    assert "\\ud800" in seen.message


def test_a_message_is_shown_as_received_when_ingest_received_it() -> None:
    # Not when the ring was told, later: a message received just before midnight UTC would
    # otherwise be shown in the next day's count row.
    clock = Clock()
    ring = Ring(size=10, monotonic=clock)
    ring.watch()
    ring.record([track(1)], stored(1))
    assert [seen.received_at for seen in ring.after(0)] == [NOW]
