"""Events/s that Segment's own Python client gets through `accoil-buffer serve`, against the same
client sending to a do-nothing receiver in the same run; and what the console costs ingest.

    .venv/bin/python -m bench.sidecar [--events 20000] [--rounds 3]

Both receivers run in their own processes on loopback; the daemon stores into SQLite with
the default durability (each batch committed, synchronous=FULL) and the count of stored
events is checked afterwards. Target: >= 1.0x the do-nothing receiver.

The console is compared in alternating rounds, each daemon on a fresh database: the daemon as
shipped with no one watching, the same with a console page polling its live view, and the
daemon without its console (bench.plain_sidecar). Target: no one watching, >= 0.98x without.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
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


def measure(
    command: list[str], url: str, events: int, env: dict[str, str], *, watched: bool = False
) -> float:
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    stop = threading.Event()
    try:
        wait_until_up(url, process)
        if watched:
            threading.Thread(target=watch_console, args=(url, stop), daemon=True).start()
            time.sleep(0.2)  # its first poll turns the live view's recording on
        return send(url, events)
    finally:
        stop.set()
        process.terminate()
        process.wait(timeout=30)


def watch_console(url: str, stop: threading.Event) -> None:
    """Poll the live view as the console page does, once a second."""
    seq = 0
    with httpx.Client(base_url=url, timeout=30) as client:
        while not stop.is_set():
            entries = client.get("/console/api/events", params={"after": seq}).json()["entries"]
            seq = entries[-1]["seq"] if entries else seq
            stop.wait(1.0)


def compare_console(folder: Path, events: int, rounds: int, env: dict[str, str]) -> None:
    """Events/s of the daemon with and without its console, in alternating rounds."""
    variants: dict[str, Callable[[], float]] = {}
    for name, module, watched in (
        ("console, no one watching", "accoil_buffer", False),
        ("console, a page watching", "accoil_buffer", True),
        ("without the console", "bench.plain_sidecar", False),
    ):

        def run(module: str = module, watched: bool = watched) -> float:
            port = free_port()
            database = folder / f"console-{time.monotonic_ns()}.db"
            command = [sys.executable, "-m", module, "serve", "--port", str(port)]
            fresh = {**env, "ACCOIL_BUFFER_DATABASE_URL": f"sqlite:///{database}"}
            return measure(command, f"http://127.0.0.1:{port}", events, fresh, watched=watched)

        variants[name] = run
    results: dict[str, list[float]] = {name: [] for name in variants}
    for round_ in range(rounds):
        order = list(variants) if round_ % 2 == 0 else list(reversed(variants))
        for name in order:
            results[name].append(variants[name]())
    plain = statistics.median(results["without the console"])
    print(f"the console's cost to ingest: medians of {rounds} alternating rounds, fresh databases")
    for name, rates in results.items():
        median = statistics.median(rates)
        spread = f"rounds {min(rates) / plain:.2f}-{max(rates) / plain:.2f}x"
        print(f"  {name:<27} {median:>8,.0f} events/s   {median / plain:.2f}x   ({spread})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3, help="of the console's comparison")
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
    with tempfile.TemporaryDirectory() as folder:
        compare_console(Path(folder), args.events, args.rounds, env)


if __name__ == "__main__":
    main()
