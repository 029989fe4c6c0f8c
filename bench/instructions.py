"""Instructions per call, counted by valgrind's callgrind: the same for the same work however
busy the machine is, where wall-clock rates here vary by a third between runs.

    .venv/bin/python -m bench.instructions [--calls 20000]

Each workload runs twice under callgrind, with ``--calls`` and with none, so that start-up
cancels out: B1's group-commit ``Buffer.track`` against Segment's ``Client(send=False).track``,
and a sync call at ``synchronous = NORMAL`` against a raw ``sqlite3`` INSERT + COMMIT. Two
run at once (one per core); the whole takes a few minutes. Needs valgrind. What it cannot
see is time spent waiting: the hand-offs of the interpreter's lock between a call and the
writer thread, and the disk.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from segment.analytics.client import Client as SegmentClient

from bench.ingest import event, opened_buffer, raw_sqlite

WARM_UP = 500  # calls before the counted ones, in both runs: imports, caches, the first pages
WORKLOADS = ("group", "segment", "sync", "raw")


def run(workload: str, calls: int) -> None:
    """Make ``WARM_UP + calls`` calls of ``workload`` (in the process callgrind watches)."""
    total = WARM_UP + calls
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "bench.db"
        if workload == "segment":
            segment = SegmentClient("bench", send=False, max_queue_size=total + 1)
            for i in range(total):
                segment.track(*event(i))
        elif workload == "raw":
            with raw_sqlite(path, "NORMAL") as raw:
                for i in range(total):
                    raw(i)
        else:
            durability, synchronous = (
                ("group", "FULL") if workload == "group" else ("sync", "NORMAL")
            )
            with opened_buffer(path, durability, synchronous) as buf:
                for i in range(total):
                    buf.track(*event(i))
                buf.flush()


def counted(workload: str, calls: int) -> int:
    """Instructions of ``workload`` under callgrind, the whole process."""
    done = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            sys.executable,
            "-m",
            "bench.instructions",
            "--run",
            workload,
            "--calls",
            str(calls),
        ],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONHASHSEED": "0"},
    )
    found = re.search(r"refs:\s+([\d,]+)", done.stderr)
    if found is None:
        raise SystemExit(f"callgrind printed no count:\n{done.stderr[-2000:]}")
    return int(found.group(1).replace(",", ""))


def per_call(workload: str, calls: int) -> float:
    return (counted(workload, calls) - counted(workload, 0)) / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--run", choices=WORKLOADS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        run(args.run, args.calls)
        return
    with ThreadPoolExecutor(max_workers=2) as pool:
        measured = pool.map(lambda workload: per_call(workload, args.calls), WORKLOADS)
        counts = dict(zip(WORKLOADS, measured, strict=True))
    print(f"Instructions per call (callgrind, {args.calls:,} calls less none)")
    for workload, n in counts.items():
        print(f"  {workload:<8} {n:>10,.0f}")
    print(f"  group vs Segment's in-memory client: {counts['segment'] / counts['group']:.2f}x")
    print(f"  sync vs raw sqlite3 (NORMAL):         {counts['raw'] / counts['sync']:.2f}x")


if __name__ == "__main__":
    main()
