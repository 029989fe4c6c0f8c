"""Events/s that Segment's own Python client gets through `accoil-buffer serve`, against the same
client sending to a do-nothing receiver in the same run; and what the console costs ingest.

    .venv/bin/python -m bench.sidecar [--events 20000] [--rounds 3]

Both receivers run in their own processes on loopback, in alternating rounds; the daemon stores
into a fresh SQLite database each round with the default durability (each batch committed,
synchronous=FULL), and the count of stored events is checked afterwards. Target: >= 0.8x the
do-nothing receiver.

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


def daemon_run(
    module: str, folder: Path, events: int, env: dict[str, str], *, watched: bool = False
) -> float:
    """Events/s through ``module``'s ``serve`` on a fresh SQLite database; every event must be
    stored."""
    port = free_port()
    database_url = f"sqlite:///{folder / f'daemon-{time.monotonic_ns()}.db'}"
    command = [sys.executable, "-m", module, "serve", "--port", str(port)]
    fresh = {**env, "ACCOIL_BUFFER_DATABASE_URL": database_url}
    rate = measure(command, f"http://127.0.0.1:{port}", events, fresh, watched=watched)
    with Buffer(database_url, start=False) as buf:
        buf.flush()
        stored = buf.status()["pending"]["occurrences"]
    if stored != events:
        raise SystemExit(f"{module} stored {stored} of {events} events")
    return rate


def alternate(
    variants: dict[str, Callable[[], float]], rounds: int, baseline: str, title: str
) -> None:
    """Run each variant once a round, in an order reversed every other round, and print each
    median against the baseline's median, with the spread of single rounds."""
    results: dict[str, list[float]] = {name: [] for name in variants}
    for round_ in range(rounds):
        order = list(variants) if round_ % 2 == 0 else list(reversed(variants))
        for name in order:
            results[name].append(variants[name]())
    base = statistics.median(results[baseline])
    print(f"{title}: medians of {rounds} alternating rounds")
    for name, rates in results.items():
        median = statistics.median(rates)
        spread = f"rounds {min(rates) / base:.2f}-{max(rates) / base:.2f}x"
        print(f"  {name:<32} {median:>8,.0f} events/s   {median / base:.2f}x   ({spread})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3, help="of each comparison")
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACCOIL_")}
    env["ACCOIL_BUFFER_FLUSH_INTERVAL_SECONDS"] = "3600"
    n = args.events

    def receiver() -> float:
        port = free_port()
        command = [sys.executable, "-m", "bench.fast_accoil", str(port)]
        return measure(command, f"http://127.0.0.1:{port}", n, env)

    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        alternate(
            {
                "do-nothing receiver (baseline)": receiver,
                "accoil-buffer serve (SQLite)": lambda: daemon_run("accoil_buffer", folder, n, env),
            },
            args.rounds,
            "do-nothing receiver (baseline)",
            f"{n} track calls through segment-analytics-python (batches of 100), all stored",
        )
        alternate(
            {
                "console, no one watching": lambda: daemon_run("accoil_buffer", folder, n, env),
                "console, a page watching": lambda: daemon_run(
                    "accoil_buffer", folder, n, env, watched=True
                ),
                "without the console": lambda: daemon_run("bench.plain_sidecar", folder, n, env),
            },
            args.rounds,
            "without the console",
            "the console's cost to ingest, fresh databases",
        )


if __name__ == "__main__":
    main()
