"""Reading what is pending, for ``accoil-buffer status`` and ``Buffer.status()``."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, func, select

from accoil_buffer.status import AnonymousStatus, DeliveryStatus, OutboxStatus, Pending, Status
from accoil_buffer.store import deliveries, schema


def status(
    conn: Connection, now: datetime, *, queued_in_memory: int, endpoint: str | None
) -> Status:
    """Pending work, anonymous data and drops as the database holds them, with what only the
    caller knows: the messages still queued in memory, and where delivery goes (``None``:
    delivery is off)."""
    o, dc, ac = schema.outbox, schema.daily_counts, schema.anonymous_counts
    unfolded, oldest_received = conn.execute(
        select(func.coalesce(func.sum(o.c.occurrences), 0), func.min(o.c.received_at)).where(
            o.c.folded_at.is_(None)
        )
    ).one()
    count_rows, occurrences, oldest_count = conn.execute(
        select(
            func.count(),
            func.coalesce(func.sum(dc.c.count - dc.c.delivered_count), 0),
            func.min(dc.c.pending_since),
        ).where(deliveries.KIND["counts"].waiting.condition)
    ).one()
    pending: dict[str, int] = {}
    waiting_since = [oldest_received, oldest_count]
    for kind in deliveries.KINDS:
        if kind.name == "counts":
            continue  # rows and occurrences, above
        n, since = conn.execute(
            select(func.count(), func.min(kind.since)).where(kind.waiting.condition)
        ).one()
        pending[kind.name] = n
        waiting_since.append(since)
    # Totals per id first, so that both databases aggregate by hashing or along the
    # anonymous_id index instead of sorting every row for count(DISTINCT).
    per_id = select(func.sum(ac.c.count).label("n")).group_by(ac.c.anonymous_id).subquery("per_id")
    anonymous_ids, anonymous_occurrences = conn.execute(
        select(func.count(), func.coalesce(func.sum(per_id.c.n), 0))
    ).one()
    drops = conn.execute(
        select(schema.drops.c.reason, func.sum(schema.drops.c.count))
        .group_by(schema.drops.c.reason)
        .order_by(schema.drops.c.reason)
    ).all()

    oldest = min((t for t in waiting_since if t is not None), default=None)
    return Status(
        outbox=OutboxStatus(unfolded, oldest_received, queued_in_memory),
        pending=Pending(
            users=pending["users"],
            accounts=pending["accounts"],
            memberships=pending["memberships"],
            count_rows=count_rows,
            occurrences=int(occurrences),
            posts=pending["posts"],
        ),
        anonymous=AnonymousStatus(anonymous_ids, int(anonymous_occurrences)),
        oldest_undelivered_at=oldest,
        oldest_undelivered_age_seconds=None
        if oldest is None
        else round((now - oldest).total_seconds(), 3),
        drops={reason: int(n) for reason, n in drops},
        delivery=_delivery(conn, endpoint),
    )


def _delivery(conn: Connection, endpoint: str | None) -> DeliveryStatus:
    state = deliveries.state(conn)
    dead = conn.scalar(
        select(func.count())
        .select_from(schema.dead_letters)
        .where(schema.dead_letters.c.replayed_at.is_(None))
    )
    return DeliveryStatus(
        endpoint=endpoint,
        last_success_at=state["last_success_at"],
        last_failure_at=state["last_failure_at"],
        offline_since=state["offline_since"],
        next_attempt_at=state["next_attempt_at"],
        last_error=state["last_error"],
        paused_reason=state["paused_reason"],
        paused_key=state["paused_key"],
        consecutive_failures=state["consecutive_failures"],
        delivered_total=int(state["delivered_total"]),
        dead_letters=int(dead or 0),
    )


def waiting(conn: Connection) -> int:
    """Rows waiting to be folded, or to be forwarded by Post to Accoil (for backpressure)."""
    o = schema.outbox
    unfolded = select(func.count()).select_from(o).where(o.c.folded_at.is_(None))
    posts = select(func.count()).select_from(schema.posts)
    return int(conn.scalar(unfolded) or 0) + int(conn.scalar(posts) or 0)
