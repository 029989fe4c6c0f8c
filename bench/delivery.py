"""Delivery throughput to a fake Accoil over loopback, against a bare-httpx baseline.

    .venv/bin/python -m bench.delivery [--messages 20000] [--in-flight 8] [--postgres URL]

A fast do-nothing Accoil (bench/fast_accoil.py) runs in its own process. The baseline posts
the same number of messages with the same concurrency through a plain httpx client, with no
database: the ratio says what the buffer's claiming and accounting cost.
Target: >= 2,000 messages/s delivered.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psycopg
from sqlalchemy.engine import make_url

from accoil_buffer import Buffer, Config
from accoil_buffer.accoil_api import AccoilClient
from accoil_buffer.delivery import Delivery, DeliverySettings
from accoil_buffer.store.engine import Database

USERS = 2000


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def baseline(url: str, n: int, in_flight: int) -> float:
    client = httpx.Client(limits=httpx.Limits(max_connections=in_flight))
    body = {"type": "track", "event": "E", "userId": "u", "timestamp": "2026-11-28T12:00:00Z"}
    started = time.perf_counter()
    with ThreadPoolExecutor(in_flight) as pool:
        list(pool.map(lambda _i: client.post(url, json=body).raise_for_status(), range(n)))
    elapsed = time.perf_counter() - started
    client.close()
    return n / elapsed


def fill(database_url: str, n: int) -> None:
    with Buffer(database_url, start=False) as buf:
        for start in range(0, n, 10_000):
            buf.ingest_many(
                {"type": "track", "userId": f"u{i % USERS}", "event": f"E{i % 5}"}
                for i in range(start, min(n, start + 10_000))
            )
        buf.flush()  # fold, so that only delivery is timed


def deliver(database_url: str, url: str, flushers: int, in_flight: int) -> float:
    def one() -> int:
        database = Database.open(Config(database_url=database_url))
        delivery = Delivery(
            database,
            AccoilClient("bench", url, max_connections=in_flight),
            DeliverySettings(max_in_flight=in_flight),
            time_now,
        )
        try:
            return delivery.run(force=True).delivered
        finally:
            database.dispose()

    started = time.perf_counter()
    with ThreadPoolExecutor(flushers) as pool:
        delivered = sum(pool.map(lambda _i: one(), range(flushers)))
    return delivered / (time.perf_counter() - started)


def time_now() -> datetime:
    return datetime.now(UTC)


def fresh_postgres(url: str) -> str:
    parsed = make_url(url)
    name = "accoil_bench"
    with psycopg.connect(
        host=parsed.host,
        port=parsed.port or 5432,
        user=parsed.username,
        dbname=parsed.database,
        autocommit=True,
    ) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {name}")
    return parsed.set(database=name).render_as_string(hide_password=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument(
        "--in-flight", type=int, default=8, help="requests in flight per flusher (max_in_flight)"
    )
    args = parser.parse_args()
    n = args.in_flight
    port = free_port()
    fake = subprocess.Popen(
        [sys.executable, "-m", "bench.fast_accoil", str(port)], stdout=subprocess.PIPE
    )
    assert fake.stdout is not None
    url = fake.stdout.readline().decode().strip()
    try:
        rows = [("bare httpx, no database (baseline)", baseline(url, args.messages, n))]
        with tempfile.TemporaryDirectory() as folder:
            sqlite_url = f"sqlite:///{Path(folder) / 'bench.db'}"
            fill(sqlite_url, args.messages)
            rows.append(("SQLite, 1 flusher", deliver(sqlite_url, url, 1, n)))
        postgres_url = fresh_postgres(args.postgres)
        fill(postgres_url, args.messages)
        rows.append(("PostgreSQL, 1 flusher", deliver(postgres_url, url, 1, n)))
        postgres_url = fresh_postgres(args.postgres)
        fill(postgres_url, args.messages)
        rows.append(("PostgreSQL, 4 flushers", deliver(postgres_url, url, 4, n)))
    finally:
        fake.terminate()
    base = rows[0][1]
    print(f"{args.messages} track messages, {n} requests in flight per flusher")
    for name, rate in rows:
        print(f"  {name:<36} {rate:>8,.0f} messages/s   {rate / base:5.2f}x baseline")


if __name__ == "__main__":
    main()
