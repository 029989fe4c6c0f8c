"""Delivery across a slow network: the buffer against a plain client, in the same run.

    .venv/bin/python -m bench.delivery [--latency-ms 50] [--messages 22000] [--in-flight N]
        [--rounds 3] [--postgres URL] [--backlog 0]

A fake Accoil (bench/fast_accoil.py) answers 202 after ``--latency-ms``, a round trip across
the internet, in its own process. The baseline is a plain client: N threads, each with one
keep-alive ``http.client`` connection, posting the same number of messages with no database.
Each buffer case fills a database with the issue's backlog (200 users x 10 events x 10, plus
one user's heartbeats of one day: a hot row), then runs ``flush`` in flusher processes of
its own, and reports messages/s as a ratio to the baseline of the same round. Rounds
alternate the cases. The fake counts what it answered, so a message sent twice shows.
``--backlog N`` instead delivers N occurrences spread over three days, once, and reports
the rate and the flusher's peak RSS.
"""

from __future__ import annotations

import argparse
import http.client
import json
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy.engine import make_url

from accoil_buffer import Buffer

BODY = json.dumps(
    {"type": "track", "event": "E", "userId": "u", "timestamp": "2026-11-28T12:00:00.000Z"}
).encode()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def fake_accoil(latency_ms: float) -> Iterator[str]:
    port = free_port()
    fake = subprocess.Popen(
        [sys.executable, "-m", "bench.fast_accoil", str(port), str(latency_ms)],
        stdout=subprocess.PIPE,
    )
    assert fake.stdout is not None
    url = fake.stdout.readline().decode().strip()
    try:
        yield url
    finally:
        fake.terminate()
        fake.wait()


def answered(url: str) -> int:
    with urllib.request.urlopen(url) as response:
        return int(response.read())


def plain_client(url: str, n: int, in_flight: int) -> float:
    """Messages/s of ``in_flight`` threads, each with one keep-alive connection."""
    port = urllib.parse.urlsplit(url).port
    left = iter(range(n))
    lock = threading.Lock()

    def sender() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port)
        while True:
            with lock:
                if next(left, None) is None:
                    break
            connection.request("POST", "/segment", BODY, {"Content-Type": "application/json"})
            connection.getresponse().read()
        connection.close()

    threads = [threading.Thread(target=sender) for _ in range(in_flight)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return n / (time.perf_counter() - started)


def fill(database_url: str, messages: int, days: int = 1) -> int:
    """The issue's backlog: 200 users x 10 events, the rest as one user's heartbeats (a hot
    row); with ``days`` > 1, spread over that many past days. Returns the occurrences."""
    now = datetime.now(UTC)
    hot = max(0, messages - 20_000) if days == 1 else 0
    spread = messages - hot

    def message(i: int) -> dict[str, Any]:
        moment = now - timedelta(days=days - 1 - (i * days // spread)) if days > 1 else now
        return {
            "type": "track",
            "userId": f"u{i % 200}",
            "event": f"E{i // 200 % 10}",
            "timestamp": moment.isoformat(),
        }

    with Buffer(database_url, start=False) as buf:
        for start in range(0, spread, 20_000):
            buf.ingest_many(message(i) for i in range(start, min(spread, start + 20_000)))
        buf.ingest_many({"type": "track", "userId": "heavy", "event": "Beat"} for _ in range(hot))
        buf.flush()  # fold, so that only delivery is timed
    return messages


def flusher(database_url: str, url: str, in_flight: int | None) -> None:
    """One flusher process: deliver everything; print the messages delivered, when the
    flush began and ended (wall clock, so processes compare), and the peak RSS (KiB)."""
    settings: dict[str, Any] = {} if in_flight is None else {"max_in_flight": in_flight}
    with Buffer(database_url, api_key="bench", endpoint=url, start=False, **settings) as buf:
        began = time.time()
        report = buf.flush()
        ended = time.time()
    delivered = 0 if report.delivery is None else report.delivery.delivered
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(delivered, began, ended, rss, flush=True)


def deliver(database_url: str, url: str, flushers: int, in_flight: int | None) -> tuple[float, int]:
    """Messages/s of ``flushers`` processes draining one database, from the first flush's
    start to the last one's end (process start-up left out), and the peak RSS (KiB)."""
    command = [sys.executable, "-m", "bench.delivery", "--flusher", database_url, url]
    command += [] if in_flight is None else ["--in-flight", str(in_flight)]
    processes = [subprocess.Popen(command, stdout=subprocess.PIPE) for _ in range(flushers)]
    results = [process.communicate()[0].decode().split() for process in processes]
    span = max(float(r[2]) for r in results) - min(float(r[1]) for r in results)
    return sum(int(r[0]) for r in results) / span, max(int(r[3]) for r in results)


def fresh_postgres(url: str, name: str = "accoil_bench") -> str:
    parsed = make_url(url)
    with psycopg.connect(
        host=parsed.host,
        port=parsed.port or 5432,
        user=parsed.username,
        dbname=parsed.database,
        autocommit=True,
    ) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {name}")
    return parsed.set(drivername="postgresql+psycopg", database=name).render_as_string(
        hide_password=False
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--messages", type=int, default=22_000)
    parser.add_argument("--in-flight", type=int, help="max_in_flight (default: the config's)")
    parser.add_argument("--baseline-in-flight", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--backlog", type=int, default=0)
    parser.add_argument("--flusher", nargs=2, metavar=("DATABASE_URL", "ACCOIL_URL"))
    args = parser.parse_args()
    if args.flusher:
        database_url, accoil_url = args.flusher
        flusher(database_url, accoil_url, args.in_flight)
        return
    with fake_accoil(args.latency_ms) as url, tempfile.TemporaryDirectory() as folder:
        if args.backlog:
            backlog(args, url, folder)
        else:
            compare(args, url, folder)


def compare(args: argparse.Namespace, url: str, folder: str) -> None:
    ratios: dict[str, list[float]] = {}
    rates: dict[str, list[float]] = {}

    def sqlite_url() -> str:
        path = Path(folder) / f"bench-{time.monotonic_ns()}.db"
        return f"sqlite:///{path}"

    cases: list[tuple[str, Callable[[], str], int]] = [
        ("SQLite, 1 daemon", sqlite_url, 1),
        ("PostgreSQL, 1 daemon", lambda: fresh_postgres(args.postgres), 1),
        ("PostgreSQL, 4 daemons", lambda: fresh_postgres(args.postgres), 4),
    ]
    for round_number in range(args.rounds):
        base = plain_client(url, args.messages, args.baseline_in_flight)
        rates.setdefault("plain client", []).append(base)
        for name, database, flushers in cases[:: 1 if round_number % 2 == 0 else -1]:
            database_url = database()
            total = fill(database_url, args.messages)
            before = answered(url)
            rate, _ = deliver(database_url, url, flushers, args.in_flight)
            sent = answered(url) - before
            assert sent == total, f"{name}: {sent} requests for {total} messages"
            rates.setdefault(name, []).append(rate)
            ratios.setdefault(name, []).append(rate / base)
    print(
        f"{args.messages:,} occurrences ({max(0, args.messages - 20_000):,} in one hot row), "
        f"{args.latency_ms:.0f} ms round trip, max_in_flight {args.in_flight or 'default'}, "
        f"plain client {args.baseline_in_flight} threads; {args.rounds} rounds"
    )
    for name, values in rates.items():
        line = f"  {name:<24} {statistics.median(values):>8,.0f} messages/s"
        if name in ratios:
            low, mid, high = min(ratios[name]), statistics.median(ratios[name]), max(ratios[name])
            line += f"   {mid:.2f}x plain (min {low:.2f}, max {high:.2f})"
        print(line)


def backlog(args: argparse.Namespace, url: str, folder: str) -> None:
    database_url = f"sqlite:///{Path(folder) / 'backlog.db'}"
    total = fill(database_url, args.backlog, days=3)
    rate, rss = deliver(database_url, url, 1, args.in_flight)
    print(
        f"{total:,} occurrences over 3 days: {rate:,.0f} messages/s, "
        f"{total / rate:,.0f} s, flusher peak RSS {rss / 1024:.0f} MiB"
    )


if __name__ == "__main__":
    main()
