"""Crashes while delivering: how soon a restarted daemon delivers again, and whether a
daemon killed over and over still drains everything.

    .venv/bin/python -m bench.restart [--latency-ms 50] [--messages 150000] [--kills 10]
        [--every 10] [--postgres URL]

A fake Accoil (bench/fast_accoil.py) answers after ``--latency-ms``. ``accoil-buffer serve``
drains a backlog and is killed with SIGKILL every ``--every`` seconds, then started again at
once. For each restart it reports the seconds from starting the new process to the first
message Accoil answers after it (the process's own start-up included); at the end, whether
everything was delivered and how many requests went out for how many messages. It runs on
SQLite, then on PostgreSQL.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from accoil_buffer import Buffer
from bench.delivery import answered, fake_accoil, fill, free_port, fresh_postgres


def start(database_url: str, accoil_url: str) -> subprocess.Popen[bytes]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("ACCOIL_")}
    environment.update(
        {
            "ACCOIL_API_KEY": "bench",
            "ACCOIL_BUFFER_ENDPOINT": accoil_url,
            "ACCOIL_BUFFER_DATABASE_URL": database_url,
            "ACCOIL_BUFFER_FLUSH_INTERVAL_SECONDS": "1",
        }
    )
    command = [sys.executable, "-m", "accoil_buffer", "serve", "--port", str(free_port())]
    return subprocess.Popen(
        command, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def resumed_after(accoil_url: str, limit: float = 60.0) -> float:
    """Seconds until Accoil answers a message it had not answered when this was called."""
    began, before = time.monotonic(), answered(accoil_url)
    while answered(accoil_url) == before:
        if time.monotonic() - began > limit:
            return float("inf")
        time.sleep(0.01)
    return time.monotonic() - began


def pending(database_url: str) -> int:
    with Buffer(database_url, start=False) as buf:
        return int(buf.status()["pending"]["occurrences"])


def drill(name: str, database_url: str, accoil_url: str, args: argparse.Namespace) -> None:
    total = fill(database_url, args.messages)
    before = answered(accoil_url)
    began = time.monotonic()
    daemon = start(database_url, accoil_url)
    first = resumed_after(accoil_url)
    resumes = []
    for _ in range(args.kills):
        time.sleep(args.every)
        daemon.send_signal(signal.SIGKILL)
        daemon.wait()
        time.sleep(3 * args.latency_ms / 1000)  # what the dead process had in flight lands
        daemon = start(database_url, accoil_url)
        resumes.append(resumed_after(accoil_url))
    while (left := pending(database_url)) and time.monotonic() - began < 600:
        time.sleep(0.5)
    took = time.monotonic() - began
    daemon.send_signal(signal.SIGTERM)
    daemon.wait()
    sent = answered(accoil_url) - before
    print(
        f"{name}: first delivery {first:.2f} s after start; after each of {len(resumes)} "
        f"kills: median {statistics.median(resumes):.2f} s, max {max(resumes):.2f} s; "
        f"{total - left:,} of {total:,} occurrences delivered in {took:.0f} s, "
        f"{sent:,} requests ({sent - total + left:,} repeated)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--messages", type=int, default=150_000)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--every", type=float, default=10.0)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()
    with fake_accoil(args.latency_ms) as url, tempfile.TemporaryDirectory() as folder:
        drill("SQLite", f"sqlite:///{Path(folder) / 'restart.db'}", url, args)
        drill("PostgreSQL", fresh_postgres(args.postgres, "accoil_bench_restart"), url, args)


if __name__ == "__main__":
    main()
