"""Building each action from a mapping's resolved fields; apart from parsing and compiling them."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from msgspec.structs import replace

from accoil_buffer.errors import InvalidMessage
from accoil_buffer.messages import Message, as_id, normalise_traits, parse_timestamp
from accoil_buffer.reasons import Reason
from accoil_buffer.triggers import MISSING

# The trait fields of the identify and group actions: ``mappings.ACTIONS`` names them as
# fields, and the builders below put them inside ``traits``.
IDENTIFY_TRAITS = ("email", "name", "role", "accountStatus", "createdAt")
GROUP_TRAITS = ("name", "createdAt", "status", "plan", "mrr")


def _given(value: Any) -> Any:
    return None if value is MISSING else value


def _id(values: dict[str, Any], field_name: str) -> str | None:
    """An id field's value as Segment stores ids, or None when it resolved to nothing."""
    return as_id(_given(values[field_name]), field_name)


def _action(
    message: Message,
    kind: str,
    *,
    user_id: str | None,
    anonymous_id: str | None,
    timestamp: datetime,
    notes: tuple[Reason, ...],
    group_id: str | None = None,
    name: str = "",
    traits: dict[str, Any] | None = None,
) -> Message:
    """An action of ``message``: it carries only what its fields gave (never a previousId)."""
    return replace(
        message,
        type=kind,
        user_id=user_id,
        anonymous_id=anonymous_id,
        group_id=group_id,
        previous_id=None,
        name=name,
        timestamp=timestamp,
        traits=traits,
        notes=notes,
    )


def _subject(values: dict[str, Any], anonymous_id: str | None) -> tuple[str | None, str | None]:
    """Who an action is about. Accoil has no anonymous users: without a userId the action is
    held under the message's anonymousId until a link names its user."""
    user_id = _id(values, "userId")
    if user_id is None and anonymous_id is None:
        raise InvalidMessage("userId", "is missing, and there is no anonymousId to hold it under")
    return user_id, anonymous_id


def _when(message: Message, values: dict[str, Any]) -> tuple[datetime, tuple[Reason, ...]]:
    value = _given(values["timestamp"])
    if value is None:
        raise InvalidMessage("timestamp", "is missing")
    if value == message.payload.get("timestamp"):
        return message.timestamp, ()  # already corrected for clock skew when accepted
    moment = parse_timestamp(value, "timestamp")
    if moment > message.received_at:
        return message.received_at, (Reason.FUTURE_TIMESTAMP_CLAMPED,)
    return moment, ()


def _traits(
    message: Message, values: dict[str, Any], names: Iterable[str], *, group: bool
) -> tuple[dict[str, Any], tuple[Reason, ...]]:
    """The ``traits`` field with the mapped trait fields inside it, as Segment's action sends
    them; normalised like the traits of an accepted message. A value the message's own traits
    already held was counted when it was accepted, so only new ones are counted here."""
    base = _given(values["traits"]) or {}
    if not isinstance(base, dict):
        raise InvalidMessage("traits", f"must be an object, got {json.dumps(base)[:50]}")
    merged = {**base, **{n: values[n] for n in names if values[n] is not MISSING}}
    traits, unnormalised = normalise_traits(merged, group=group)
    own = message.traits or {}
    return traits, tuple(
        Reason.TRAIT_NOT_NORMALISED for key in unnormalised if own.get(key, MISSING) != merged[key]
    )


def _identify(message: Message, values: dict[str, Any]) -> Message:
    user_id, anonymous_id = _subject(values, message.anonymous_id)
    timestamp, notes = _when(message, values)
    traits, unnormalised = _traits(message, values, IDENTIFY_TRAITS, group=False)
    return _action(
        message,
        "identify",
        user_id=user_id,
        anonymous_id=anonymous_id,
        timestamp=timestamp,
        notes=notes + unnormalised,
        traits=traits,
    )


def _group(message: Message, values: dict[str, Any]) -> Message:
    group_id = _id(values, "groupId")
    if group_id is None:
        raise InvalidMessage("groupId", "is missing")
    timestamp, notes = _when(message, values)
    traits, unnormalised = _traits(message, values, GROUP_TRAITS, group=True)
    return _action(
        message,
        "group",
        user_id=_id(values, "userId"),
        anonymous_id=_id(values, "anonymousId"),
        timestamp=timestamp,
        notes=notes + unnormalised,
        group_id=group_id,
        traits=traits,
    )


def _event(kind: str) -> Callable[[Message, dict[str, Any]], Message]:
    field_name = "event" if kind == "track" else "name"

    def build(message: Message, values: dict[str, Any]) -> Message:
        user_id, anonymous_id = _subject(values, message.anonymous_id)
        name = _id(values, field_name) or ""
        if kind == "track" and not name:
            raise InvalidMessage("event", "is missing")
        timestamp, notes = _when(message, values)
        return _action(
            message,
            kind,
            user_id=user_id,
            anonymous_id=anonymous_id,
            timestamp=timestamp,
            notes=notes,
            name=name,
        )

    return build


# Each action but Post to Accoil, built from its fields' values; a builder raises
# InvalidMessage for a field its action cannot go without.
BUILDERS: dict[str, Callable[[Message, dict[str, Any]], Message]] = {
    "identify": _identify,
    "group": _group,
    "track": _event("track"),
    "page": _event("page"),
    "screen": _event("screen"),
}
