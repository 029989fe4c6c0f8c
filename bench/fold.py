"""B3: fold rate (outbox events/s into daily counts) against a raw batched upsert.

    .venv/bin/python -m bench.fold [--events 200000] [--postgres URL]

The baseline is the least a fold must do, written by hand for each driver (sqlite3,
psycopg): one ``INSERT … SELECT … GROUP BY … ON CONFLICT DO UPDATE`` of the events into a
counts table, and a ``DELETE`` of the events, in one transaction. The buffer's fold does
that plus identity links, anonymous ids, traits and memberships, in its default chunks
(``fold_batch_size`` 0: 50,000 rows on SQLite, 200,000 on PostgreSQL). Target: >= 0.6x at
200,000 events, >= 0.5x at 1,000,000.

Events are recorded in batches of 10,000, as a busy sidecar or group writer would, and
folded three times over: with repeated keys (5,000 users x 20 events, each key twice a
batch, which share an outbox row), with distinct keys (a user per event: no two share a
row) recorded in about the order of their keys, and with distinct keys in no order.
"""

from __future__ import annotations

import argparse
import gc
import sqlite3
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from accoil_buffer import Buffer, Config
from accoil_buffer.messages import normalise
from accoil_buffer.recording import record
from accoil_buffer.store.engine import Database
from bench.delivery import fresh_postgres

USERS, EVENTS = 5000, 20
BASELINE_SCHEMA = [
    "CREATE TABLE events (day DATE, user_id TEXT, kind TEXT, name TEXT)",
    "CREATE TABLE counts (day DATE, user_id TEXT, kind TEXT, name TEXT, count BIGINT, "
    "PRIMARY KEY (day, user_id, kind, name))",
]
BASELINE_FOLD = [
    "INSERT INTO counts SELECT day, user_id, kind, name, count(*) FROM events WHERE true "
    "GROUP BY day, user_id, kind, name "
    "ON CONFLICT (day, user_id, kind, name) DO UPDATE SET count = counts.count + excluded.count",
    "DELETE FROM events",
]


# The userId of event i, by the shape of the traffic.
KEYS: dict[str, Callable[[int], str]] = {
    "repeated": lambda i: f"user-{i % USERS}",
    "distinct": lambda i: f"user-{i}",  # recorded in about the order of their keys
    "scattered": lambda i: f"user-{i * 2654435761 % 2**32:08x}",  # distinct, in no order
}


def rows(n: int, user: Callable[[int], str]) -> list[tuple[str, str, str, str]]:
    return [("2026-11-28", user(i), "track", f"E{i % EVENTS}") for i in range(n)]


def baseline_sqlite(path: Path, n: int, user: Callable[[int], str]) -> float:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    for statement in BASELINE_SCHEMA:
        db.execute(statement)
    db.executemany("INSERT INTO events VALUES (?, ?, ?, ?)", rows(n, user))
    started = time.perf_counter()
    db.execute("BEGIN IMMEDIATE")
    for statement in BASELINE_FOLD:
        db.execute(statement)
    db.execute("COMMIT")
    elapsed = time.perf_counter() - started
    db.close()
    return n / elapsed


def baseline_postgres(url: str, n: int, user: Callable[[int], str]) -> float:
    with psycopg.connect(url.replace("+psycopg", "")) as db:
        for statement in BASELINE_SCHEMA:
            db.execute(statement)
        with db.cursor() as cursor:
            cursor.executemany("INSERT INTO events VALUES (%s, %s, %s, %s)", rows(n, user))
        db.commit()
        started = time.perf_counter()
        for statement in BASELINE_FOLD:
            db.execute(statement)
        db.commit()
        return n / (time.perf_counter() - started)


def ours(url: str, n: int, user: Callable[[int], str]) -> float:
    with Buffer(url, start=False):
        pass  # migrate
    database = Database.open(Config(database_url=url))
    now = datetime.now(UTC)
    for start in range(0, n, 10_000):
        messages = [
            normalise(
                {"type": "track", "userId": user(i), "event": f"E{i % EVENTS}"},
                received_at=now,
            )
            for i in range(start, min(n, start + 10_000))
        ]
        with database.write() as conn:
            record(database, conn, messages)
    database.dispose()
    with Buffer(url, start=False) as buf:
        gc.collect()  # not the migration's garbage: a full collection takes 40 ms
        started = time.perf_counter()
        folded = buf.flush().folded
        elapsed = time.perf_counter() - started
    assert folded == n
    return n / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--repeat", type=int, default=3, help="rounds, each timing both")
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    n = args.events
    results: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.repeat):
        for keys, user in KEYS.items():
            with tempfile.TemporaryDirectory() as folder:
                base = baseline_sqlite(Path(folder) / "raw.db", n, user)
                results.setdefault(("SQLite", keys), []).append(
                    ours(f"sqlite:///{Path(folder) / 'ours.db'}", n, user) / base
                )
            base = baseline_postgres(fresh_postgres(args.postgres), n, user)
            results.setdefault(("PostgreSQL", keys), []).append(
                ours(fresh_postgres(args.postgres), n, user) / base
            )
    print(f"B3: folding {n:,} track events in {args.repeat} rounds, fold / raw upsert")
    for (name, keys), ratios in results.items():
        ratios.sort()
        print(
            f"  {name:<11} {keys:<9} median {ratios[len(ratios) // 2]:.2f}x "
            f"(rounds {ratios[0]:.2f}-{ratios[-1]:.2f}x)"
        )


if __name__ == "__main__":
    main()
