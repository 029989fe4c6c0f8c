"""What a client's messageId costs: Segment batches ingested and folded with the ids every
Segment library sends, against the same batches without ids (ids the buffer generates are
never looked up), in alternating rounds on fresh databases: SQLite, or PostgreSQL with
``--postgres URL``.

    .venv/bin/python -m bench.ledger [--events 100000] [--rounds 3] [--ledger 0] [--postgres URL]

Each round ingests ``--events`` track messages with ``ingest_many`` in batches of 100 (as the
sidecar does for a Segment request: one committed transaction each), then folds them. With
``--ledger N``, the ledger first holds N ids from earlier traffic, folded before timing starts.
Reported: ingest and fold time per event, and each as a ratio to the batches without ids.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from accoil_buffer import Buffer
from bench.delivery import fresh_postgres

BATCH = 100


def batches(events: int, *, ids: bool) -> Iterator[list[dict[str, object]]]:
    for start in range(0, events, BATCH):
        batch: list[dict[str, object]] = []
        for i in range(start, min(events, start + BATCH)):
            message: dict[str, object] = {
                "type": "track",
                "userId": f"user-{i % 500}",
                "event": f"Event {i % 10}",
                "properties": {"i": i},
            }
            if ids:
                message["messageId"] = str(uuid.uuid4())
            batch.append(message)
        yield batch


def run(url: str, events: int, ledger: int, *, ids: bool) -> tuple[float, float]:
    """Seconds per event to ingest, then to fold."""
    with Buffer(url, start=False, flush_interval_seconds=3600) as buf:
        for batch in batches(ledger, ids=True):
            buf.ingest_many(batch)
        buf.flush()
        prepared = list(batches(events, ids=ids))
        started = time.perf_counter()
        for batch in prepared:
            buf.ingest_many(batch)
        ingested = time.perf_counter()
        folded = buf.flush().folded
        done = time.perf_counter()
    if folded != events:
        raise SystemExit(f"folded {folded} of {events} events")
    return (ingested - started) / events, (done - ingested) / events


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ledger", type=int, default=0, help="ids in the ledger beforehand")
    parser.add_argument("--postgres", help="a PostgreSQL URL to run on instead of SQLite")
    args = parser.parse_args()
    results: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
    with tempfile.TemporaryDirectory() as folder:
        for round_ in range(args.rounds):
            for ids in (True, False) if round_ % 2 == 0 else (False, True):
                url = (
                    fresh_postgres(args.postgres)
                    if args.postgres
                    else f"sqlite:///{Path(folder) / f'{time.monotonic_ns()}.db'}"
                )
                results[ids].append(run(url, args.events, args.ledger, ids=ids))
    print(
        f"{'PostgreSQL' if args.postgres else 'SQLite'}: {args.events:,} track messages "
        f"in batches of {BATCH}, ledger holding "
        f"{args.ledger:,} ids; medians of {args.rounds} alternating rounds"
    )
    base_ingest = statistics.median(r[0] for r in results[False])
    base_fold = statistics.median(r[1] for r in results[False])
    for ids, label in (
        (False, "without messageIds (baseline)"),
        (True, "with a client's messageIds"),
    ):
        ingest = statistics.median(r[0] for r in results[ids])
        fold = statistics.median(r[1] for r in results[ids])
        print(
            f"  {label:<30} ingest {ingest * 1e6:6.1f} us/event ({base_ingest / ingest:.2f}x)"
            f"   fold {fold * 1e6:5.1f} us/event ({base_fold / fold:.2f}x)"
            f"   both {(base_ingest + base_fold) / (ingest + fold):.2f}x"
        )


if __name__ == "__main__":
    main()
