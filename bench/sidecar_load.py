"""The sidecar under load: C connections posting B-message ``/v1/batch`` bodies at once.

    .venv/bin/python -m bench.sidecar_load [--connections 16] [--batch 100] [--requests 600]
        [--rounds 3] [--compare-with CHECKOUT]

Each round posts the same number of requests to each receiver, in alternating order: a
do-nothing receiver (the baseline), ``accoil-buffer serve`` from this checkout on a fresh
SQLite file, and with ``--compare-with`` the daemon of another checkout (an earlier commit,
say) on a fresh file too. Every message has its own messageId, so nothing is a duplicate.
Reported: requests/s and events/s (ratio to the baseline), and the median and 99th
percentile of a request's time, per receiver, medians over the rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from bench.delivery import free_port
from bench.sidecar import wait_until_up


@dataclass(frozen=True)
class Round:
    requests_per_second: float
    events_per_second: float
    p50_ms: float
    p99_ms: float


def bodies(count: int, batch: int, tag: str) -> list[bytes]:
    """``count`` batch bodies of ``batch`` tracks, each message with an id of its own."""
    return [
        json.dumps(
            {
                "batch": [
                    {
                        "type": "track",
                        "userId": f"user-{(r * batch + i) % 500}",
                        "event": f"Event {i % 10}",
                        "properties": {"i": i},
                        "messageId": f"{tag}-{r}-{i}",
                        "timestamp": "2026-12-04T12:00:00.000Z",
                    }
                    for i in range(batch)
                ]
            }
        ).encode()
        for r in range(count)
    ]


async def post_all(url: str, payloads: list[bytes], connections: int, batch: int) -> Round:
    latencies: list[float] = []
    pending = iter(payloads)
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            for payload in pending:
                started = time.perf_counter()
                async with session.post(
                    url + "/v1/batch",
                    data=payload,
                    headers={"Content-Type": "application/json"},
                ) as answer:
                    await answer.read()
                    if answer.status >= 300:
                        raise SystemExit(f"the receiver answered {answer.status}")
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(connections)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    return Round(
        requests_per_second=len(payloads) / elapsed,
        events_per_second=len(payloads) * batch / elapsed,
        p50_ms=1000 * latencies[len(latencies) // 2],
        p99_ms=1000 * latencies[int(len(latencies) * 0.99)],
    )


def run(
    command: list[str],
    port: int,
    source: Path,
    env: dict[str, str],
    payloads: list[bytes],
    args: argparse.Namespace,
) -> Round:
    """Start a receiver from ``source`` (its folder leads sys.path), post, and stop it."""
    process = subprocess.Popen(
        command, cwd=source, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(url, process)
        return asyncio.run(post_all(url, payloads, args.connections, args.batch))
    finally:
        process.terminate()
        process.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--requests", type=int, default=600, help="per receiver and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--compare-with", type=Path, help="a checkout whose daemon to compare")
    args = parser.parse_args()
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("ACCOIL_")}
    base_env["ACCOIL_BUFFER_FLUSH_INTERVAL_SECONDS"] = "3600"
    here = Path(__file__).resolve().parent.parent
    daemons = {"accoil-buffer serve": here}
    if args.compare_with:
        daemons[f"serve from {args.compare_with}"] = args.compare_with.resolve()
    names = ["do-nothing receiver", *daemons]
    results: dict[str, list[Round]] = {name: [] for name in names}
    with tempfile.TemporaryDirectory() as folder:
        for round_ in range(args.rounds):
            for name in names if round_ % 2 == 0 else reversed(names):
                port = free_port()
                payloads = bodies(args.requests, args.batch, f"r{round_}")
                if name == "do-nothing receiver":
                    command = [sys.executable, "-m", "bench.fast_accoil", str(port)]
                    source, env = here, base_env
                else:
                    command = [sys.executable, "-m", "accoil_buffer", "serve", "--port", str(port)]
                    database = Path(folder) / f"{time.monotonic_ns()}.db"
                    source = daemons[name]
                    env = {**base_env, "ACCOIL_BUFFER_DATABASE_URL": f"sqlite:///{database}"}
                results[name].append(run(command, port, source, env, payloads, args))
    baseline = statistics.median(r.events_per_second for r in results[names[0]])
    print(
        f"{args.connections} connections posting {args.requests} bodies of {args.batch} tracks, "
        f"medians of {args.rounds} alternating rounds (SQLite, default durability)"
    )
    for name in names:
        rounds = results[name]
        events = statistics.median(r.events_per_second for r in rounds)
        print(
            f"  {name:<40} {statistics.median(r.requests_per_second for r in rounds):>7,.0f} req/s"
            f" {events:>8,.0f} events/s ({events / baseline:.2f}x)"
            f"  p50 {statistics.median(r.p50_ms for r in rounds):>6.1f} ms"
            f"  p99 {statistics.median(r.p99_ms for r in rounds):>7.1f} ms"
        )


if __name__ == "__main__":
    main()
