"""Occurrences and drops per UTC day, for the console's charts."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from sqlalchemy import Connection, func, select

from accoil_buffer.messages import EVENT_KINDS
from accoil_buffer.store import schema
from accoil_buffer.store.dialects import utc_day


def daily(conn: Connection, today: date, days: int) -> dict[str, Any]:
    """The last ``days`` days up to ``today``, oldest first: occurrences delivered, folded but
    pending, held under anonymous ids, and accepted but not yet folded; drops by reason.
    Each series is a list aligned with ``days``."""
    since = today - timedelta(days=days - 1)
    index = {since + timedelta(days=n): n for n in range(days)}

    def series(rows: Any) -> list[int]:
        values = [0] * days
        for day, n in rows:
            if day in index:
                values[index[day]] = int(n or 0)
        return values

    dc, ac, o, d = schema.daily_counts, schema.anonymous_counts, schema.outbox, schema.drops
    event_day = utc_day(o.c.timestamp)
    counted = conn.execute(
        select(dc.c.day, func.sum(dc.c.count), func.sum(dc.c.delivered_count))
        .where(dc.c.day.between(since, today))
        .group_by(dc.c.day)
    ).all()
    held = conn.execute(
        select(ac.c.day, func.sum(ac.c.count))
        .where(ac.c.day.between(since, today))
        .group_by(ac.c.day)
    ).all()
    unfolded = conn.execute(
        select(event_day, func.sum(o.c.occurrences))
        .where(o.c.folded_at.is_(None), o.c.type.in_(EVENT_KINDS), event_day.between(since, today))
        .group_by(event_day)
    ).all()
    dropped: dict[str, list[tuple[date, int]]] = {}
    for day, reason, n in conn.execute(
        select(d.c.day, d.c.reason, d.c.count).where(d.c.day.between(since, today))
    ):
        dropped.setdefault(reason, []).append((day, n))
    return {
        "days": [day.isoformat() for day in index],
        "delivered": series((day, delivered) for day, _, delivered in counted),
        "pending": series((day, total - delivered) for day, total, delivered in counted),
        "anonymous": series(held),
        "unfolded": series(unfolded),
        "drops": {reason: series(rows) for reason, rows in sorted(dropped.items())},
    }
