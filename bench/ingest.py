"""Recording events: per-call cost (B1), a burst of calls (B2), memory while events wait (B4).

    .venv/bin/python -m bench.ingest b1 [--calls 100000]
    .venv/bin/python -m bench.ingest b2 [--calls 1000000]
    .venv/bin/python -m bench.ingest b4 [--calls 1000000]

B1 compares ``Buffer.track`` in each durability mode with, in the same run, Segment's own
``Client(send=False).track`` (an in-memory queue) and a raw ``sqlite3`` INSERT + COMMIT per
event at the same ``synchronous`` setting (the two take turns, so both meet the same disk).
Targets: group >= 1.0x Segment's client; sync >= 0.5x raw sqlite3. B2 records a burst and
counts the stored events afterwards (target: 0 lost). B4 reports the peak RSS of a process
holding 1M undelivered events in its database (target: < 100 MiB), and the SQLite file's
size while they wait to be folded and once they are.
"""

from __future__ import annotations

import argparse
import json
import resource
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from accoil_buffer import Buffer


def rate(calls: int, record: Callable[[int], object]) -> float:
    started = time.perf_counter()
    for i in range(calls):
        record(i)
    return calls / (time.perf_counter() - started)


def interleaved(
    calls: int, legs: Mapping[str, Callable[[int], object]], turn: int = 500
) -> dict[str, float]:
    """The rate of each leg, run in turns of ``turn`` calls, so that every leg meets the
    same disk and the same machine: flush times drift by half within a minute on a shared
    machine."""
    spent = dict.fromkeys(legs, 0.0)
    for start in range(0, calls, turn):
        for name, record in legs.items():
            started = time.perf_counter()
            for i in range(start, min(calls, start + turn)):
                record(i)
            spent[name] += time.perf_counter() - started
    return {name: calls / seconds for name, seconds in spent.items()}


def event(i: int) -> tuple[str, str, dict[str, int]]:
    return f"user-{i % 1000}", f"E{i % 20}", {"i": i}


@contextmanager
def raw_sqlite(path: Path, synchronous: str) -> Iterator[Callable[[int], None]]:
    """An INSERT + COMMIT per event through bare ``sqlite3``, in WAL mode like the buffer."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"PRAGMA synchronous={synchronous}")
    db.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, body TEXT NOT NULL)")

    def insert(i: int) -> None:
        user_id, name, properties = event(i)
        body = {"type": "track", "userId": user_id, "event": name, "properties": properties}
        db.execute("BEGIN IMMEDIATE")
        db.execute("INSERT INTO events (body) VALUES (?)", (json.dumps(body),))
        db.execute("COMMIT")

    try:
        yield insert
    finally:
        db.close()


@contextmanager
def opened_buffer(path: Path, durability: str, synchronous: str) -> Iterator[Buffer]:
    with Buffer(
        f"sqlite:///{path}",
        start=False,
        durability=durability,
        sqlite_synchronous=synchronous,
        max_outbox_rows=0,
    ) as buf:
        yield buf


def settled(buf: Buffer, turn: int, calls: int) -> Callable[[int], object]:
    """``buf.track``, with a ``flush()`` (commit and fold) after the last call of each turn:
    timed with the turn, so that the writer's work is counted, and not left running while
    the other leg is measured."""

    def record(i: int) -> None:
        buf.track(*event(i))
        if (i + 1) % turn == 0 or i + 1 == calls:
            buf.flush()

    return record


def b1(calls: int) -> None:
    # Imported here: Segment's client and its libraries take 13 MiB, which B4's peak RSS, in
    # the same module, must not count as the buffer's.
    from segment.analytics.client import Client as SegmentClient  # noqa: PLC0415

    segment = SegmentClient("bench", send=False, max_queue_size=calls + 1)
    rates: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        for synchronous in ("FULL", "NORMAL"):
            sync_calls = calls // 10 if synchronous == "FULL" else calls // 4
            raw_name = f"raw sqlite3 commit per event, {synchronous}"
            ours_name = f"Buffer sync, {synchronous}"
            with (
                raw_sqlite(root / f"raw-{synchronous}.db", synchronous) as raw,
                opened_buffer(root / f"sync-{synchronous}.db", "sync", synchronous) as ours,
            ):
                legs = {raw_name: raw, ours_name: lambda i: ours.track(*event(i))}
                rates |= interleaved(sync_calls, legs)
        with opened_buffer(root / "group.db", "group", "FULL") as group:
            # Three rounds each, alternating, so both meet the same machine.
            turn = -(-calls // 3)
            group_legs: dict[str, Callable[[int], object]] = {
                "segment Client(send=False).track": lambda i: segment.track(*event(i)),
                "Buffer group (default), FULL": settled(group, turn, calls),
            }
            rates |= interleaved(calls, group_legs, turn=turn)
    segment_rate = rates["segment Client(send=False).track"]
    print(
        f"B1: track calls per second ({calls} calls; commit-per-event rows use fewer, "
        "alternating raw and Buffer every 500 calls; Segment's client and group mode in three "
        "alternating rounds, each of ours ending with a flush)"
    )
    for name, value in rates.items():
        print(f"  {name:<40} {value:>10,.0f}/s")
    print(
        f"  group vs Segment's in-memory client:   "
        f"{rates['Buffer group (default), FULL'] / segment_rate:.2f}x (target >= 1.0)"
    )
    for synchronous in ("FULL", "NORMAL"):
        ratio = (
            rates[f"Buffer sync, {synchronous}"]
            / rates[f"raw sqlite3 commit per event, {synchronous}"]
        )
        print(
            f"  sync vs raw sqlite3 ({synchronous}):{' ' * (19 - len(synchronous))}"
            f"{ratio:.2f}x (target >= 0.5)"
        )


def b2(calls: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{Path(folder) / 'burst.db'}"
        with Buffer(url, start=False, max_outbox_rows=0) as buf:
            started = time.perf_counter()
            for i in range(calls):
                buf.track(*event(i))
            returned = time.perf_counter() - started
            buf.flush()
            total = time.perf_counter() - started
            stored = buf.status()["pending"]["occurrences"]
    print(f"B2: a burst of {calls:,} track calls (group commit)")
    print(
        f"  calls returned at {calls / returned:,.0f}/s; committed and folded at "
        f"{calls / total:,.0f}/s"
    )
    print(f"  stored {stored:,} of {calls:,}: {calls - stored} lost")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"  peak RSS of the process: {peak:.0f} MiB")


def b4(calls: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        url = f"sqlite:///{root / 'backlog.db'}"

        def events(start: int) -> Iterator[dict[str, str]]:
            for i in range(start, start + 10_000):
                yield {"type": "track", "userId": f"user-{i % 50_000}", "event": f"E{i % 20}"}

        with (root / "events.jsonl").open("w") as lines:  # the same events as JSON lines
            for start in range(0, calls, 10_000):
                lines.writelines(json.dumps(e) + "\n" for e in events(start))
        with Buffer(url, start=False, max_outbox_rows=0) as buf:
            for start in range(0, calls, 10_000):
                buf.ingest_many(events(start))
            waiting = buf.status()["outbox"]["unfolded_messages"]
            waiting_bytes = _file_bytes(root)
            buf.flush()
            folded_bytes = _file_bytes(root)
            pending = buf.status()["pending"]["occurrences"]
        raw_bytes = (root / "events.jsonl").stat().st_size
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"B4: {waiting:,} events recorded, then {pending:,} occurrences waiting undelivered")
    print(f"  peak RSS of the process: {peak:.0f} MiB (target < 100 MiB)")
    print(
        f"  SQLite file, log included: {waiting_bytes / calls:.0f} bytes an event waiting "
        f"({waiting_bytes / raw_bytes:.2f}x the events as JSON lines, {raw_bytes / calls:.0f} "
        f"bytes); {folded_bytes / calls:.0f} bytes an event once folded"
    )


def _file_bytes(root: Path) -> int:
    return sum(path.stat().st_size for path in root.glob("backlog.db*"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("which", choices=["b1", "b2", "b4"])
    parser.add_argument("--calls", type=int)
    args = parser.parse_args()
    default = {"b1": 100_000, "b2": 1_000_000, "b4": 1_000_000}[args.which]
    {"b1": b1, "b2": b2, "b4": b4}[args.which](args.calls or default)


if __name__ == "__main__":
    main()
