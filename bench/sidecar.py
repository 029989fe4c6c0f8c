"""Events/s that Segment's own Python client gets through `accoil-buffer serve`, against the same
client sending to a do-nothing receiver in the same run.

    .venv/bin/python -m bench.sidecar [--events 20000]

Both receivers run in their own processes on loopback; the daemon stores into SQLite with
the default durability (each batch committed, synchronous=FULL) and the count of stored
events is checked afterwards. Target: >= 1.0x the do-nothing receiver.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from segment.analytics.client import Client as SegmentClient

from accoil_buffer import Buffer
from bench.delivery import free_port


def send(url: str, events: int) -> float:
    errors: list[object] = []
    client = SegmentClient(
        "bench",
        host=url,
        upload_size=100,
        max_queue_size=events + 1,
        on_error=lambda error, _batch: errors.append(error),
    )
    started = time.perf_counter()
    for i in range(events):
        client.track(f"user-{i % 500}", f"Event {i % 10}", {"i": i})
    client.flush()
    elapsed = time.perf_counter() - started
    client.shutdown()
    if errors:
        raise SystemExit(f"the client reported {len(errors)} errors: {errors[0]}")
    return events / elapsed


def wait_until_up(url: str, process: subprocess.Popen[bytes]) -> None:
    for _ in range(300):
        if process.poll() is not None:
            raise SystemExit("the receiver did not start")
        try:
            httpx.post(url + "/v1/batch", json={"batch": []})
            return
        except httpx.TransportError:
            time.sleep(0.05)
    raise SystemExit("the receiver did not come up")


def measure(command: list[str], url: str, events: int, env: dict[str, str]) -> float:
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_until_up(url, process)
        return send(url, events)
    finally:
        process.terminate()
        process.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        database_url = f"sqlite:///{Path(folder) / 'sidecar.db'}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("ACCOIL_")}
        env.update(
            ACCOIL_BUFFER_DATABASE_URL=database_url, ACCOIL_BUFFER_FLUSH_INTERVAL_SECONDS="3600"
        )
        port = free_port()
        baseline = measure(
            [sys.executable, "-m", "bench.fast_accoil", str(port)],
            f"http://127.0.0.1:{port}",
            args.events,
            env,
        )
        port = free_port()
        daemon = measure(
            [sys.executable, "-m", "accoil_buffer", "serve", "--port", str(port)],
            f"http://127.0.0.1:{port}",
            args.events,
            env,
        )
        with Buffer(database_url, start=False) as buf:
            buf.flush()
            stored = buf.status()["pending"]["occurrences"]
    print(f"{args.events} track calls through segment-analytics-python (batches of 100)")
    print(f"  do-nothing receiver (baseline)   {baseline:>8,.0f} events/s   1.00x")
    print(f"  accoil-buffer serve (SQLite)     {daemon:>8,.0f} events/s   {daemon / baseline:.2f}x")
    print(f"  stored: {stored} of {args.events} ({args.events - stored} lost)")


if __name__ == "__main__":
    main()
