"""What the command line prints: status, dead letters, and what the mappings make of a message."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

from accoil_buffer.accoil_api import action_body
from accoil_buffer.config import Config
from accoil_buffer.errors import InvalidMessage
from accoil_buffer.mappings import links
from accoil_buffer.messages import format_timestamp, normalise
from accoil_buffer.reasons import Reason
from accoil_buffer.status import DeliveryStatus, Status, iso


def count(number: int, noun: str, plural: str = "") -> str:
    """A number with its noun in the right form: 1 message, 2 messages."""
    return f"{number} {noun if number == 1 else plural or noun + 's'}"


def status_lines(status: Status) -> Iterator[str]:
    """``accoil-buffer status`` without ``--json``."""
    pending = status.pending
    yield f"outbox: {status.outbox.unfolded_messages} messages not yet folded"
    yield (
        f"pending delivery: {pending.users} users, {pending.accounts} accounts, "
        f"{pending.memberships} memberships, {pending.count_rows} count rows "
        f"({pending.occurrences} occurrences), {pending.posts} posts"
    )
    anonymous = status.anonymous
    yield (
        f"anonymous, waiting for identify/alias: {anonymous.ids} ids, "
        f"{anonymous.occurrences} occurrences"
    )
    if status.oldest_undelivered_at is not None:
        yield (
            f"oldest undelivered: {iso(status.oldest_undelivered_at)} "
            f"({status.oldest_undelivered_age_seconds:.0f} s ago)"
        )
    drops = ", ".join(f"{reason} {n}" for reason, n in status.drops.items()) or "none"
    yield f"drops: {drops}"
    yield from _delivery_lines(status.delivery)


def _delivery_lines(delivery: DeliveryStatus) -> Iterator[str]:
    if not delivery.enabled:
        yield "delivery: off (no api_key is set)"
        return
    yield (
        f"delivery: to {delivery.endpoint}; {delivery.delivered_total} messages "
        f"delivered; last success {iso(delivery.last_success_at) or 'never'}"
    )
    if delivery.paused_reason:
        yield f"delivery PAUSED: {delivery.paused_reason}"
    if delivery.offline_since is not None:
        yield (
            f"offline since {iso(delivery.offline_since)} "
            f"({delivery.consecutive_failures} failed passes; last error: "
            f"{delivery.last_error}); next attempt {iso(delivery.next_attempt_at)}"
        )
    if delivery.dead_letters:
        yield f"dead letters: {delivery.dead_letters} (see `accoil-buffer dead-letters list`)"


def dead_letter_line(letter: dict[str, Any], *, as_json: bool) -> str:
    """One line of ``accoil-buffer dead-letters list``."""
    if as_json:
        return json.dumps({**letter, "created_at": format_timestamp(letter["created_at"])})
    return (
        f"{letter['id']}  {letter['created_at']:%Y-%m-%d %H:%M:%S}  "
        f"{letter['type']:<8} HTTP {letter['status']}  {letter['message_id']}  "
        f"{(letter['response'] or '')[:80]}"
    )


def mapping_lines(config: Config) -> Iterator[str]:
    """``accoil-buffer mappings list`` without ``--json``."""
    for mapping in config.mappings.mappings:
        state = "" if mapping.enabled else " (disabled)"
        yield f"{mapping.name}{state}: {mapping.action} when {mapping.trigger}"
        for name, source in mapping.fields:
            yield f"  {name} = {json.dumps(source, ensure_ascii=False)}"


def explain(
    config: Config, number: int, raw: object, now: datetime, margin: timedelta
) -> dict[str, Any]:
    """What the mappings make of the message on one line, as a JSON-ready document."""
    try:
        message = normalise(raw, received_at=now, future_margin=margin)
    except InvalidMessage as exc:
        return {"line": number, "error": str(exc)}
    report: dict[str, Any] = {"line": number, "type": message.type, "messageId": message.message_id}
    if not message.deliverable:
        return {**report, "filtered": "the integrations object turns Accoil Analytics off"}
    outcomes = config.mappings.outcomes(message)
    matches = []
    for outcome in outcomes:
        match: dict[str, Any] = {"mapping": outcome.mapping}
        action = outcome.action
        if action is None:
            match["dropped"] = f"{outcome.problem} (counted as {outcome.reason})"
        else:
            match["action"] = action.type
            body = action_body(action)
            if body is None:
                match["held_under_anonymous_id"] = action.anonymous_id
            else:
                match["body"] = body
        matches.append(match)
    actions = [o.action for o in outcomes if o.action is not None]
    linked = [{"anonymousId": a, "userId": u} for a, u in links(message, actions)]
    if linked:
        report["links"] = linked
    return {**report, "matches": matches}


def describe(report: dict[str, Any]) -> str:
    """The human-readable form of ``explain``'s document."""
    if "error" in report:
        return f"line {report['line']}: invalid: {report['error']}"
    lines = [f"line {report['line']}: {report['type']} (messageId {report['messageId']})"]
    if "filtered" in report:
        return "\n".join([*lines, f"  filtered: {report['filtered']}"])
    for link in report.get("links", ()):
        lines.append(f"  links anonymousId {link['anonymousId']} to userId {link['userId']}")
    for match in report["matches"]:
        if "dropped" in match:
            lines.append(f"  {match['mapping']}: dropped: {match['dropped']}")
        elif "held_under_anonymous_id" in match:
            lines.append(
                f"  {match['mapping']}: {match['action']}, held under anonymousId "
                f"{match['held_under_anonymous_id']} until an identify or alias links it to a user"
            )
        else:
            lines.append(f"  {match['mapping']}: {match['action']} {json.dumps(match['body'])}")
    if not report["matches"] and "links" not in report:
        lines.append(f"  no mapping matches (counted as {Reason.UNMAPPED})")
    return "\n".join(lines)
