"""The delivery state and the pending work as labelled lines: one wording for the console
and for ``accoil-buffer status --watch``, read from ``Buffer.health()`` and the typed
``Status``."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from accoil_buffer.reports import Health
from accoil_buffer.status import Status, iso

HEADLINES = {
    "delivering": "Delivering",
    "offline": "Offline: Accoil is unreachable or failing; retried with backoff",
    "paused": "Paused: Accoil refused the API key; delivery waits for a new one",
    "off": "Delivery is off: no api_key is set; events are buffered until one is",
    "unknown": "Unknown: the database cannot be read",
}


def overview(health: Health, status: Status, now: datetime) -> dict[str, Any]:
    """``state`` (Health's delivery word), ``headline``, and ``facts`` and ``pending`` as
    (label, value) pairs; values are text or numbers, never the API key (its fingerprint)."""
    delivery = status.delivery
    facts: list[tuple[str, Any]] = []
    if delivery.endpoint:
        facts.append(("Endpoint", delivery.endpoint))
    if delivery.paused_reason:
        facts.append(("Paused because", delivery.paused_reason))
        facts.append(("Key refused (fingerprint)", delivery.paused_key or "unknown"))
    if delivery.offline_since:
        facts.append(("Offline since", _moment(delivery.offline_since, now)))
        facts.append(("Failed passes", delivery.consecutive_failures))
        facts.append(("Last error", delivery.last_error or ""))
    if delivery.next_attempt_at:
        facts.append(("Next attempt", _moment(delivery.next_attempt_at, now)))
    facts.append(("Last success", _moment(delivery.last_success_at, now)))
    age = status.oldest_undelivered_age_seconds
    facts.append(("Oldest undelivered", "nothing waits" if age is None else _age(age) + " old"))
    facts.append(("Delivered in total", delivery.delivered_total))
    facts.append(("Dead letters", delivery.dead_letters))
    if health.problem:
        facts.insert(0, ("Cannot store", health.problem))
    pending, outbox, anonymous = status.pending, status.outbox, status.anonymous
    return {
        "state": health.delivery,
        "storing": health.storing,
        "headline": HEADLINES.get(health.delivery, health.delivery),
        "facts": facts,
        "pending": [
            ("Not yet folded", outbox.unfolded_messages),
            ("Queued in memory", outbox.queued_in_memory),
            ("Users", pending.users),
            ("Accounts", pending.accounts),
            ("Memberships", pending.memberships),
            ("Count rows", pending.count_rows),
            ("Occurrences", pending.occurrences),
            ("Posts", pending.posts),
            ("Anonymous ids held", anonymous.ids),
            ("Anonymous occurrences held", anonymous.occurrences),
        ],
    }


def _moment(moment: datetime | None, now: datetime) -> str:
    if moment is None:
        return "never"
    seconds, written = (now - moment).total_seconds(), iso(moment)
    return (
        f"{written} ({_age(seconds)} ago)" if seconds >= 0 else f"{written} (in {_age(-seconds)})"
    )


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit}"
    return f"{seconds:.0f} s"
