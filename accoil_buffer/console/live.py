"""The live view's memory: the last messages the sidecar took, in a ring of bounded size.

Ingest only appends what it already holds (the message as received, and its batch's outcome),
and only while someone watched in the last minute; what the mappings made of a message is
worked out when a viewer asks. Nothing of it is written anywhere.
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from accoil_buffer.reports import IngestReport

RING_SIZE = 500
WATCH_SECONDS = 60.0  # recording stops this long after the last viewer's request
PREVIEW_CHARS = 2000  # of a rejected message: it may be far larger than an accepted one
# A client may send its write key in the body; it is a credential and never shown.
_CREDENTIALS = frozenset({"writeKey"})


@dataclass(frozen=True, slots=True)
class Batch:
    """What the request a message came in did, as ``IngestReport`` counts it."""

    size: int
    stored: int
    duplicates: int
    filtered: int


@dataclass(frozen=True, slots=True)
class Seen:
    """One message as the sidecar took it: ``message`` as received when it was accepted, or a
    text preview of it (write key removed) with the ``error`` that rejected it."""

    seq: int
    received_at: datetime
    message: object
    error: str | None
    batch: Batch


class Ring:
    """The last ``size`` messages, recorded only while watched. Called on the event loop."""

    def __init__(
        self, size: int = RING_SIZE, *, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self.size = size
        self._seen: deque[Seen] = deque(maxlen=size)
        self._seq = 0
        self._monotonic = monotonic
        self._watched_until = float("-inf")

    def __len__(self) -> int:
        return len(self._seen)

    def watch(self) -> None:
        """A viewer is looking: record for the next WATCH_SECONDS."""
        self._watched_until = self._monotonic() + WATCH_SECONDS

    def record(self, messages: Sequence[object], report: IngestReport) -> None:
        """Keep one request's messages and their outcome, if anyone is watching."""
        if self._monotonic() > self._watched_until:
            return
        batch = Batch(len(messages), report.stored, report.duplicates, report.filtered)
        errors = {rejection.index: str(rejection.error) for rejection in report.rejected}
        for index, message in enumerate(messages):
            self._seq += 1
            error = errors.get(index)
            kept = message if error is None else _preview(message)
            # Ingest's arrival time, so that the view works out what ingest stored.
            self._seen.append(Seen(self._seq, report.received_at, kept, error, batch))

    def after(self, seq: int) -> list[Seen]:
        """The messages recorded after ``seq``, oldest first; all of them for a ``seq`` this
        ring never reached (a page open across a restart of the daemon)."""
        since = 0 if seq > self._seq else seq
        return [seen for seen in self._seen if seen.seq > since]


def _preview(message: object) -> str:
    if isinstance(message, dict):
        message = {k: v for k, v in message.items() if k not in _CREDENTIALS}
    try:
        text = json.dumps(message, ensure_ascii=False, default=repr)
    except (TypeError, ValueError, RecursionError):
        text = f"(a {type(message).__name__} that is not JSON)"
    # A lone surrogate (one reason to reject) is shown escaped: UTF-8 cannot carry it.
    return text[:PREVIEW_CHARS].encode("utf-8", "backslashreplace").decode()
