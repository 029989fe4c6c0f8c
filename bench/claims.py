"""Claiming rows to deliver while the tables hold a long delivered history.

    .venv/bin/python -m bench.claims [--delivered 1000000] [--postgres URL]

Delivered daily counts stay in their table. The baseline, measured in the same run, is a
claim of 500 pending counts in a table with no history; the ratio is how much slower the
same claim is with ``--delivered`` delivered counts beside them (1.0x: history costs nothing).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import UTC, date, datetime, timedelta

from accoil_buffer import Buffer, Config
from accoil_buffer.store import deliveries, schema
from accoil_buffer.store.engine import Database
from bench.delivery import fresh_postgres

PENDING, CLAIM, USERS_A_DAY = 2000, 500, 10_000


def claim_ms(url: str, delivered: int) -> float:
    """The median time of four claims of ``CLAIM`` pending counts, in milliseconds."""
    with Buffer(url, start=False):
        pass  # migrate
    database = Database.open(Config(database_url=url))
    now = datetime.now(UTC)
    dc = schema.daily_counts

    def count(day: date, user: str, delivered_count: int) -> dict[str, object]:
        return {
            "day": day,
            "user_id": user,
            "kind": "track",
            "name": "E",
            "count": 2,
            "delivered_count": delivered_count,
            "updated_at": now,
            "pending_since": None if delivered_count else now,
        }

    with database.write() as conn:
        for start in range(0, delivered, 20_000):
            conn.execute(
                dc.insert(),
                [
                    count(date(2026, 1, 1) + timedelta(days=i // USERS_A_DAY), f"u{i}", 2)
                    for i in range(start, min(delivered, start + 20_000))
                ],
            )
        conn.execute(dc.insert(), [count(date(2026, 11, 28), f"p{i}", 0) for i in range(PENDING)])
    database.refresh_statistics(dc, list(dc.c))  # as autovacuum would have, on PostgreSQL
    times = []
    for attempt in range(4):
        with database.write() as conn:
            started = time.perf_counter()
            claimed = deliveries.claim(
                database,
                conn,
                deliveries.KIND["counts"],
                f"flusher-{attempt}",
                now,
                timedelta(minutes=5),
                CLAIM,
            )
            times.append(time.perf_counter() - started)
        assert len(claimed) == CLAIM
    database.dispose()
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delivered", type=int, default=1_000_000)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()
    print(f"Claims of {CLAIM} of {PENDING:,} pending daily counts (median of 4)")
    for name in ("SQLite", "PostgreSQL"):
        figures = []
        for delivered in (0, args.delivered):
            with tempfile.TemporaryDirectory() as folder:
                url = (
                    f"sqlite:///{folder}/claims.db"
                    if name == "SQLite"
                    else fresh_postgres(args.postgres)
                )
                figures.append(claim_ms(url, delivered))
        base, value = figures
        print(
            f"  {name:<11} no history {base:6.1f} ms   {args.delivered:,} delivered "
            f"{value:6.1f} ms   {value / base:.2f}x"
        )


if __name__ == "__main__":
    main()
