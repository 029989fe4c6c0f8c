"""Programs the multi-process tests start: ``python -m tests.support.workers COMMAND URL ...``."""

from __future__ import annotations

import sys
import time

from accoil_buffer import Buffer


def write(url: str, prefix: str, n: int) -> None:
    """Record ``n`` track calls, one transaction each, folding every 250."""
    with Buffer(url, start=False) as buf:
        for i in range(n):
            buf.track(f"{prefix}-{i % 10}", "E", message_id=f"{prefix}-{i}")
            if i % 250 == 0:
                buf.flush()


def fold(url: str, batch_size: int) -> None:
    with Buffer(url, start=False, fold_batch_size=batch_size) as buf:
        print("folding", flush=True)
        buf.flush()


def deliver(url: str, endpoint: str, lease: float = 5) -> None:
    """Deliver until nothing is pending (the crash drill kills this at random points)."""
    with Buffer(
        url,
        api_key="drill-key",
        endpoint=endpoint,
        start=False,
        max_in_flight=4,
        claim_lease_seconds=lease,
        request_timeout_seconds=0.3,  # so that a lease of 5 s outlasts its tries
        max_backoff_seconds=0.2,
    ) as buf:
        print("delivering", flush=True)
        while buf.status()["pending"]["occurrences"]:
            buf.flush()


def record(url: str, durability: str) -> None:
    """Record track calls forever, printing how many have returned after each hundred."""
    buf = Buffer(url, start=False, durability=durability)
    i = 0
    while True:
        buf.track("u", "E", message_id=f"m{i}")
        i += 1
        if i % 100 == 0:
            print(i, flush=True)


def exit_without_database(url: str) -> None:
    """Queue calls, wait for the database to be dropped, queue more, and just exit."""
    buf = Buffer(url, start=False, durability="group", close_timeout_seconds=2)
    for _ in range(5):
        buf.track("u", "E")
    buf.flush()
    print("ready", flush=True)
    sys.stdin.readline()
    for _ in range(5):
        buf.track("u", "E")
    # No close(): the exit hook must not hang the interpreter.


def exit_while_a_pass_waits(url: str) -> None:
    """With the scheduler running, wait until another process locks the database, queue a
    call, and just exit while a scheduled pass waits on the lock."""
    buf = Buffer(
        url, flush_interval_seconds=0.2, sqlite_busy_timeout_seconds=300, close_timeout_seconds=2
    )
    buf.track("u", "E")
    buf.flush()
    print("ready", flush=True)
    sys.stdin.readline()
    buf.track("u", "E")
    time.sleep(1)  # a scheduled pass begins, and waits for the lock
    # No close(): the exit hook must not wait for the pass.


if __name__ == "__main__":
    command, url, *rest = sys.argv[1:]
    if command == "write":
        write(url, rest[0], int(rest[1]))
    elif command == "fold":
        fold(url, int(rest[0]))
    elif command == "deliver":
        deliver(url, rest[0], *map(float, rest[1:]))
    elif command == "record":
        record(url, rest[0])
    elif command == "exit-without-database":
        exit_without_database(url)
    elif command == "exit-while-a-pass-waits":
        exit_while_a_pass_waits(url)
    else:
        raise SystemExit(f"unknown command {command}")
