"""Validation and normalisation of Segment-format messages. Pure functions: no I/O.

``normalise()`` turns whatever an app or a Segment library sent into a ``Message`` whose ids
are strings, whose timestamp is UTC and corrected for clock skew, and whose traits are merged-
ready, or raises ``InvalidMessage`` naming the field. It never stores anything itself.
"""

from __future__ import annotations

import logging
import math
import os
import random
import re
import time
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any

import msgspec

from accoil_buffer.errors import InvalidMessage
from accoil_buffer.json_values import (
    JSON,
    Plain,
    check_depth,
    clean,
    encode,
    is_number,
    json_type,
    plain_copy,
)
from accoil_buffer.reasons import Reason

log = logging.getLogger(__name__)

DESTINATION_NAME = "Accoil Analytics"
TYPES = frozenset({"identify", "group", "track", "page", "screen", "alias"})
EVENT_KINDS = ("track", "page", "screen")
MAX_MESSAGE_BYTES = 32 * 1024
# A batch's context, integrations and sentAt are merged into each of its messages before one
# is measured; libraries hold a message to 32 KB before that, so they may add up to this much.
MAX_SHARED_BYTES = 8 * 1024
MAX_ID_LENGTH = 255
_MAX_ID_BITS = 850  # an integer id of this many bits has about MAX_ID_LENGTH digits
# A Unix time above this is taken as milliseconds: 1e11 seconds is the year 5138.
_MILLISECONDS_THRESHOLD = 1e11
# The length of a UTC time that msgspec encodes without a fraction of a second, quotes included.
_WHOLE_SECOND = len(b'"2026-01-01T00:00:00Z"')
_NUMERIC = re.compile(r"[+-]?\d+(\.\d+)?")
# The random part of generated messageIds. Not os.urandom: its system call releases the GIL to
# the writer thread. Reseeded in a forked child so processes never share a sequence; our own
# instance, so an app's random.seed() cannot make ids repeat.
_ID_BITS = random.Random()
os.register_at_fork(after_in_child=_ID_BITS.seed)
_UUID7_CLEAR = ~(0xF << 76 | 0x3 << 62)  # the version and variant bits, set to 7 and RFC 9562
_UUID7_SET = 0x7 << 76 | 0x2 << 62
# Keys a client may send that must never be stored (write keys are credentials).
_NEVER_STORED = frozenset({"writeKey"})


class Message(msgspec.Struct, frozen=True, gc=False):
    """One accepted message, normalised. ``name`` is the event name (track) or page/screen name
    ('' when a page or screen has none); ``notes`` lists the corrections made to it.

    A msgspec Struct: made in C, several times faster than a frozen dataclass, and never
    tracked by the garbage collector (it refers to no cycle), so queued messages add nothing
    to its passes."""

    type: str
    message_id: str
    user_id: str | None
    anonymous_id: str | None
    group_id: str | None
    previous_id: str | None
    name: str
    timestamp: datetime
    received_at: datetime
    traits: dict[str, JSON] | None
    payload: dict[str, JSON]
    deliverable: bool
    notes: tuple[Reason, ...] = ()
    size: int = 0  # bytes of the message as compact JSON, as received
    # The buffer made the messageId itself: unique by construction, so it skips the ledger.
    generated_id: bool = False

    @property
    def day(self) -> date:
        return self.timestamp.date()


class Arrival:
    """The moment a call or request arrived, with what each of its messages derives from that
    moment made once: its text, the latest timestamp not clamped, and the ``sentAt`` that a
    batch's messages share, parsed."""

    __slots__ = ("_sent", "at", "latest", "shared_bytes", "text")

    def __init__(self, at: datetime, future_margin: timedelta, shared_bytes: int = 0) -> None:
        # In UTC whatever the clock's zone: a message's day is its timestamp's UTC date.
        at = _as_utc(at)
        self.at = at
        self.text = format_timestamp(at)
        self.latest = at + future_margin
        self.shared_bytes = min(max(shared_bytes, 0), MAX_SHARED_BYTES)
        self._sent: tuple[object, datetime] | None = None

    def sent_at(self, value: object) -> datetime:
        """``value`` as the sentAt of a message, parsed once for the messages that share it."""
        if type(value) is not str or self._sent is None or self._sent[0] != value:
            self._sent = (value, parse_timestamp(value, "sentAt"))
        return self._sent[1]


def normalise(
    raw: object,
    *,
    received_at: datetime,
    future_margin: timedelta = timedelta(minutes=5),
) -> Message:
    """Validate ``raw`` (a Segment message as a dict) and return it normalised.

    ``received_at`` is the buffer's clock; it anchors clock-skew correction and the future clamp.
    Any other failure while validating also becomes ``InvalidMessage``: one odd message must
    never fail the batch it came in.
    """
    return _checked(raw, Arrival(received_at, future_margin))


def normalise_each(
    raws: Iterable[object],
    *,
    received_at: datetime,
    future_margin: timedelta = timedelta(minutes=5),
    shared_bytes: int = 0,
) -> Iterator[Message | InvalidMessage]:
    """``normalise`` for the messages of one request, received together: each one's
    ``Message``, or the ``InvalidMessage`` that names what is wrong with it, in order.
    ``shared_bytes`` (see ``batch_shares``) is allowed beyond each message's 32 KB."""
    arrival = Arrival(received_at, future_margin, shared_bytes)
    for raw in raws:
        try:
            yield _checked(raw, arrival)
        except InvalidMessage as exc:
            yield exc


def _checked(raw: object, arrival: Arrival) -> Message:
    try:
        return _normalise(raw, arrival)
    except InvalidMessage:
        raise
    except Exception as exc:
        log.warning("a message could not be validated", exc_info=True)
        raise InvalidMessage("message", f"could not be validated ({type(exc).__name__})") from exc


def _normalise(raw: object, arrival: Arrival) -> Message:
    if type(raw) is not dict and not isinstance(raw, Mapping):
        raise InvalidMessage("message", f"must be a JSON object, got {json_type(raw)}")
    cleaned, size = _storable_copy(raw)
    if size > MAX_MESSAGE_BYTES + arrival.shared_bytes:
        raise InvalidMessage("message", _too_large(size, arrival.shared_bytes))

    kind = cleaned.get("type")
    if type(kind) is not str or kind not in TYPES:  # as Segment's libraries write it: as it is
        kind = _kind(kind)

    user_id = as_id(cleaned.get("userId"), "userId")
    anonymous_id = as_id(cleaned.get("anonymousId"), "anonymousId")
    group_id = as_id(cleaned.get("groupId"), "groupId")
    previous_id = as_id(cleaned.get("previousId"), "previousId")
    if kind == "alias":
        if user_id is None:
            raise InvalidMessage("userId", "is required for alias")
        if previous_id is None:
            raise InvalidMessage("previousId", "is required for alias")
    elif user_id is None and anonymous_id is None:
        raise InvalidMessage("userId", "is required when there is no anonymousId")
    if kind == "group" and group_id is None:
        raise InvalidMessage("groupId", "is required for group")

    name = _name(cleaned, kind)
    for obj in ("traits", "properties", "context", "integrations"):
        value = cleaned.get(obj)
        if value == []:  # PHP's json_encode writes an empty object as an empty array
            cleaned[obj] = {}
        elif value is not None and not isinstance(value, dict):
            raise InvalidMessage(obj, f"must be an object, got {json_type(value)}")

    notes: list[Reason] = []
    received_at = arrival.at
    timestamp = _event_time(cleaned, arrival)
    if timestamp > arrival.latest:
        timestamp = received_at
        notes.append(Reason.FUTURE_TIMESTAMP_CLAMPED)

    traits: dict[str, JSON] | None = None
    if kind in {"identify", "group"}:
        traits, unnormalised = normalise_traits(cleaned.get("traits") or {}, group=kind == "group")
        notes.extend(Reason.TRAIT_NOT_NORMALISED for _ in unnormalised)

    given_id = as_id(cleaned.get("messageId"), "messageId")
    message_id = given_id or new_message_id()
    received = arrival.text
    cleaned.update(
        type=kind,
        messageId=message_id,
        # A call without a timestamp happened when it was received: formatted once.
        timestamp=received if timestamp is received_at else format_timestamp(timestamp),
        receivedAt=received,
    )
    for key, value in (
        ("userId", user_id),
        ("anonymousId", anonymous_id),
        ("groupId", group_id),
        ("previousId", previous_id),
    ):
        if value is not None:
            cleaned[key] = value
    if traits is not None:
        cleaned["traits"] = traits
    return Message(
        type=kind,
        message_id=message_id,
        user_id=user_id,
        anonymous_id=anonymous_id,
        group_id=group_id,
        previous_id=previous_id,
        name=name,
        timestamp=timestamp,
        received_at=received_at,
        traits=traits,
        payload=cleaned,
        deliverable=is_deliverable(cleaned.get("integrations")),
        notes=tuple(notes),
        size=size,
        generated_id=given_id is None,
    )


def _too_large(size: int, shared: int) -> str:
    if not shared:
        return f"is {size} bytes; the limit is {MAX_MESSAGE_BYTES} (32 KB)"
    return (
        f"is {size} bytes with what its batch shares with it; the limit is "
        f"{MAX_MESSAGE_BYTES + shared} (32 KB, and the {shared} bytes its batch shares)"
    )


def _storable_copy(raw: Mapping[str, Any]) -> tuple[dict[str, Any], int]:
    """A copy of ``raw`` as JSON that every database stores (the fields are then set in it),
    without the keys never stored, and its size as compact JSON. It is walked in Python only
    when it is not plain JSON already."""
    if type(raw) is Plain:
        cleaned, encoded = dict(raw), encode(raw)
    else:
        cleaned, encoded = plain_copy(raw) or (clean(raw, ("message",)), b"")
    check_depth(cleaned, encoded, ("message",))
    if not _NEVER_STORED.isdisjoint(cleaned):
        for key in _NEVER_STORED:
            cleaned.pop(key, None)
        encoded = b""
    return cleaned, len(encoded or encode(cleaned))


def new_message_id() -> str:
    """A UUID version 7 (RFC 9562): 48 bits of Unix time in milliseconds, then 74 random bits.

    Unique by construction, so the ledger never looks it up; ordered by the time it was made.
    """
    value = (time.time_ns() // 1_000_000) << 80 | _ID_BITS.getrandbits(80)
    digits = (value & _UUID7_CLEAR | _UUID7_SET).to_bytes(16).hex()  # faster than format()
    return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"


def apply_batch(item: object, batch: Mapping[str, Any], *, plain: bool = False) -> object:
    """An item of a ``/v1/batch`` body with the batch's ``context`` and ``integrations`` merged
    under its own, and the batch's ``sentAt`` when it has none; ``plain`` if the body is."""
    if type(item) is not dict and not isinstance(item, Mapping):
        return item  # normalise() rejects it with a clear message
    merged = Plain(item) if plain else dict(item)
    for key in ("context", "integrations"):
        shared = batch.get(key)
        if shared is None or not isinstance(shared, Mapping):
            continue  # most batches share neither: each message carries its own
        own = item.get(key)
        if own is None or own == [] or isinstance(own, Mapping):  # [] is PHP's empty object
            merged[key] = {**shared, **(own or {})}
    if merged.get("sentAt") is None and (sent := batch.get("sentAt")) is not None:
        merged["sentAt"] = sent
    return merged


def batch_shares(batch: Mapping[str, Any]) -> int:
    """The bytes of what ``apply_batch`` may merge into each of ``batch``'s messages, as
    compact JSON; 0 if it shares nothing, or nothing storable (its messages then fail)."""
    shared = {key: batch[key] for key in ("context", "integrations", "sentAt") if key in batch}
    try:
        return len(encode(shared)) if shared else 0
    except (TypeError, ValueError, RecursionError):
        return 0


def is_deliverable(integrations: object) -> bool:
    """Apply Segment's Integrations object to our destination, with JavaScript truthiness."""
    if not integrations or not isinstance(integrations, Mapping):  # mostly none, or {}
        return True
    ours = integrations.get(DESTINATION_NAME)
    if ours is False:
        return False
    return integrations.get("All") is not False or _js_truthy(ours)


def normalise_traits(
    traits: Mapping[str, JSON], *, group: bool
) -> tuple[dict[str, JSON], list[str]]:
    """Return traits with ``createdAt``/``created_at`` as ISO 8601 UTC and, for groups, a numeric
    ``mrr`` as a number; plus the names of traits that could not be normalised (kept as given)."""
    result = dict(traits)
    unnormalised: list[str] = []
    for key in ("createdAt", "created_at"):
        value = result.get(key)
        if value is None:
            continue
        try:
            result[key] = format_timestamp(parse_timestamp(value, f"traits.{key}"))
        except InvalidMessage:
            unnormalised.append(key)
    mrr = result.get("mrr")
    if group and mrr is not None and not is_number(mrr):
        number = _number(mrr)
        if number is None:
            unnormalised.append("mrr")
        else:
            result["mrr"] = number
    return result, unnormalised


def parse_timestamp(value: object, field: str) -> datetime:
    """Parse an ISO 8601 string (any offset; none means UTC) or Unix seconds/milliseconds."""
    try:
        return _parsed_timestamp(value, field)
    except OverflowError as exc:  # a moment UTC cannot hold: year 1 at +01:00, say
        raise InvalidMessage(field, f"{value!r} is out of the range of dates in UTC") from exc


def _parsed_timestamp(value: object, field: str) -> datetime:
    if type(value) is str and value[4:5] == "-":  # ISO 8601's "YYYY-", which no number has
        try:
            return _as_utc(datetime.fromisoformat(value))
        except ValueError:
            pass  # spaces around it, say: the rules below decide, and name what is wrong
    if isinstance(value, datetime):
        return _as_utc(value)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    if isinstance(value, str) and _NUMERIC.fullmatch(value.strip()):
        value = float(value)
    if is_number(value):
        try:
            seconds = float(value)  # type: ignore[arg-type]
            if abs(seconds) >= _MILLISECONDS_THRESHOLD:
                seconds /= 1000
            return datetime.fromtimestamp(seconds, UTC)
        except (OverflowError, OSError, ValueError) as exc:
            raise InvalidMessage(field, "is a Unix time out of range") from exc
    if isinstance(value, str):
        try:
            return _as_utc(datetime.fromisoformat(value.strip()))
        except ValueError as exc:
            raise InvalidMessage(field, f"{value!r} is not an ISO 8601 timestamp") from exc
    raise InvalidMessage(
        field, f"must be an ISO 8601 string or a Unix time, got {json_type(value)}"
    )


def format_timestamp(moment: datetime) -> str:
    """ISO 8601 in UTC with milliseconds and a ``Z``, as Segment's libraries write it.
    msgspec writes RFC 3339 in C (``"…:SSZ"``, or ``"…:SS.ffffffZ"``), cut to milliseconds
    here: several times faster than ``isoformat`` or ``%`` formatting, and this runs for every
    call."""
    m = _as_utc(moment)
    if type(m) is not datetime:  # a subclass, a test's frozen clock say: msgspec takes no other
        m = datetime.combine(m.date(), m.time(), UTC)
    text = encode(m)
    return (text[1:24] if len(text) > _WHOLE_SECOND else text[1:20] + b".000").decode() + "Z"


def _event_time(message: Mapping[str, JSON], arrival: Arrival) -> datetime:
    sent = message.get("sentAt")
    sent_at = None if sent is None else arrival.sent_at(sent)
    field = "originalTimestamp" if message.get("originalTimestamp") is not None else "timestamp"
    if message.get(field) is None:
        return arrival.at
    timestamp = parse_timestamp(message[field], field)
    if sent_at is None:
        return timestamp
    try:
        return arrival.at - (sent_at - timestamp)
    except OverflowError as exc:
        raise InvalidMessage("sentAt", "is too far from timestamp to correct clock skew") from exc


def _kind(value: JSON) -> str:
    if value is None:
        raise InvalidMessage("type", "is missing")
    if not isinstance(value, str) or value.lower() not in TYPES:
        raise InvalidMessage("type", f"must be one of {', '.join(sorted(TYPES))}, got {value!r}")
    return value.lower()


def _name(message: Mapping[str, JSON], kind: str) -> str:
    field = "event" if kind == "track" else "name"
    value = message.get(field)
    if kind not in EVENT_KINDS:
        return ""
    if value is None or value == "":
        if kind == "track":
            raise InvalidMessage("event", "is required for track")
        return ""
    if not isinstance(value, str):
        raise InvalidMessage(field, f"must be a string, got {json_type(value)}")
    if len(value) > MAX_ID_LENGTH:
        raise InvalidMessage(field, f"is {len(value)} characters; the limit is {MAX_ID_LENGTH}")
    return value


def as_id(value: JSON, field: str) -> str | None:
    """An id as Segment stores it: a string (numbers converted), or None when absent or empty."""
    if type(value) is str and len(value) <= MAX_ID_LENGTH:  # what nearly every id is
        return value or None
    if value is None or value == "":
        return None
    if type(value) is int or (isinstance(value, int) and not isinstance(value, bool)):
        if value.bit_length() > _MAX_ID_BITS:
            raise InvalidMessage(field, f"is a number of more than {MAX_ID_LENGTH} digits")
        text = str(value)  # exact: through a float, ids above 2**53 would merge
    elif is_number(value):
        number = float(value)
        text = str(int(number)) if number.is_integer() else repr(number)
    elif isinstance(value, str):
        text = value
    else:
        raise InvalidMessage(field, f"must be a string or a number, got {json_type(value)}")
    if len(text) > MAX_ID_LENGTH:
        raise InvalidMessage(field, f"is {len(text)} characters; the limit is {MAX_ID_LENGTH}")
    return text


def _as_utc(moment: datetime) -> datetime:
    if moment.tzinfo is UTC:  # a parsed "Z" or "+00:00" is: nothing to convert
        return moment
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _number(text: object) -> int | float | None:
    """A numeric string as a number (an integral one exactly), or None if it is not one."""
    if not isinstance(text, str) or not _NUMERIC.fullmatch(text.strip()):
        return None
    if "." not in text:
        try:
            return int(text)
        except ValueError:  # past Python's limit on digits: no amount of money
            return None
    number = float(text)
    if not math.isfinite(number):
        return None
    return int(number) if number.is_integer() else number


def _js_truthy(value: object) -> bool:
    if isinstance(value, Mapping | list):
        return True  # an empty object is truthy in JavaScript, unlike Python
    return bool(value)
