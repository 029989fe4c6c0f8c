"""What became of a message the console saw: the actions its mappings made and where each
went (a count row, a user's or account's traits, held under an anonymousId, forwarded whole,
or dropped as what). Worked out from the message when a viewer asks, with the same pure
functions ingest used, so ingest itself keeps nothing more."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from accoil_buffer.console.live import Batch, Seen
from accoil_buffer.errors import InvalidMessage
from accoil_buffer.mappings import POST, Mappings, links
from accoil_buffer.messages import Message, format_timestamp, normalise
from accoil_buffer.reasons import Reason

_HELD = "until an identify or alias names its user"


def describe(seen: Seen, mappings: Mappings, margin: timedelta) -> dict[str, Any]:
    """The live view's JSON for one message."""
    document: dict[str, Any] = {"seq": seen.seq, "received_at": format_timestamp(seen.received_at)}
    if seen.error is not None:
        return {**document, "outcome": "rejected", "error": seen.error, "preview": seen.message}
    try:
        message = normalise(seen.message, received_at=seen.received_at, future_margin=margin)
    except InvalidMessage as exc:  # accepted moments ago by the same function: not expected
        return {**document, "outcome": "rejected", "error": str(exc)}
    payload = message.payload
    given_id = isinstance(seen.message, dict) and seen.message.get("messageId") is not None
    if not given_id:  # ingest generated one that cannot be known again here
        payload = {k: v for k, v in payload.items() if k != "messageId"}
    document.update(
        type=message.type,
        messageId=message.message_id if given_id else None,
        userId=message.user_id,
        anonymousId=message.anonymous_id,
        name=message.name or message.group_id or message.previous_id or "",
        timestamp=format_timestamp(message.timestamp),
        corrections=list(message.notes),
        message=payload,  # shown while the ring holds it, and never stored for this
    )
    if _all_duplicates(seen.batch):
        seen_before = "its messageId was seen before: nothing new was stored"
        return {
            **document,
            "outcome": "duplicate",
            "became": [_drop(seen_before, Reason.DUPLICATE_MESSAGE_ID)],
        }
    if seen.batch.duplicates:
        document["note"] = (
            f"{seen.batch.duplicates} of the {seen.batch.size} messages of its request were "
            "duplicates (stored nothing): this one may be one of them"
        )
    if not message.deliverable:
        off = "the integrations object turns Accoil Analytics off"
        return {
            **document,
            "outcome": "filtered",
            "became": [_drop(off, Reason.FILTERED_INTEGRATIONS)],
        }
    return {**document, "outcome": "stored", "became": _became(message, mappings)}


def _all_duplicates(batch: Batch) -> bool:
    return batch.duplicates > 0 and batch.stored == 0 and batch.filtered == 0


def _became(message: Message, mappings: Mappings) -> list[dict[str, Any]]:
    outcomes = mappings.outcomes(message)
    became: list[dict[str, Any]] = []
    for outcome in outcomes:
        if outcome.action is None:
            became.append(
                {"mapping": outcome.mapping, **_drop(str(outcome.problem), outcome.reason)}
            )
        else:
            became.append(
                {
                    "mapping": outcome.mapping,
                    "action": outcome.action.type,
                    "where": where(outcome.action),
                }
            )
    actions = [o.action for o in outcomes if o.action is not None]
    for anonymous_id, user_id in links(message, actions):
        became.append({"action": "link", "where": f"anonymousId {anonymous_id} to user {user_id}"})
    if not became:
        became.append(_drop("no mapping matches it", Reason.UNMAPPED))
    return became


def where(action: Message) -> str:
    """Where an action lands: the row it is folded into, or what holds it."""
    if action.type == POST:
        return "forwarded whole to Accoil (Post to Accoil)"
    if action.type == "group":
        account = f"traits of account {action.group_id}"
        if action.user_id is not None:
            return f"{account}; membership of user {action.user_id}"
        if action.anonymous_id is not None:
            return f"{account}; membership held under anonymousId {action.anonymous_id} {_HELD}"
        return account
    if action.type == "identify":
        if action.user_id is not None:
            return f"traits of user {action.user_id}"
        return f"traits held under anonymousId {action.anonymous_id} {_HELD}"
    row = f"{action.day.isoformat()} · {action.type} · {action.name or '(no name)'}"
    if action.user_id is not None:
        return f"count row {row} · user {action.user_id}"
    return f"held under anonymousId {action.anonymous_id}: {row}, {_HELD}"


def _drop(why: str, reason: str) -> dict[str, str]:
    return {"dropped": why, "reason": reason}
