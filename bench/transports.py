"""Messages/s that each way of driving httpx (and two stdlib baselines) gets against a slow Accoil.

    .venv/bin/python -m bench.transports [--latency-ms 50] [--concurrency 8,64,128,512]
        [--rounds 3] [--seconds 3] [--cases httpx-async,stdlib-threads,...] [--json out.json]

What it measures. Across the internet every answer takes tens of ms, so delivery throughput is
bound by how many requests are in flight (Little's law: in-flight / latency) until the client's
CPU runs out. A fake Accoil runs in a separate process (its CPU does not share the client's
GIL): asyncio, keep-alive HTTP/1.1 with TCP_NODELAY and Content-Length bodies, answering every
POST with 202 after --latency-ms without holding a CPU (loop.call_later, what asyncio.sleep
uses). The same port also speaks HTTP/2 cleartext with prior knowledge (h2c, via the `h2`
package): a connection that opens with the HTTP/2 preface is handled as HTTP/2.

Each case posts the same ~300-byte JSON body with C requests in flight (C workers, each
sending its next request as soon as the previous answer arrives), for C in --concurrency:

    httpx-threads-shared    httpx.Client shared by C threads, Limits(max_connections=C)
    httpx-threads-own       C threads, each with its own httpx.Client (one connection)
    httpx-async             httpx.AsyncClient, C asyncio tasks, Limits(C, keepalive C)
    httpx-async-h2c         httpx.AsyncClient(http1=False, http2=True), C tasks, h2c
    httpx-aiohttp           httpx.AsyncClient(transport=httpx_aiohttp.AiohttpTransport(...))
    httpx2-async            httpx2.AsyncClient (pydantic's fork: httpx2 + httpcore2), C tasks
    httpx2-threads-shared   httpx2.Client shared by C threads
    aiohttp-raw             aiohttp.ClientSession with TCPConnector(limit=C), C tasks
    stdlib-threads          baseline: C threads, each one keep-alive http.client.HTTPConnection
    asyncio-raw             baseline: C tasks, each one asyncio.open_connection, hand-written
                            HTTP/1.1 (request line, headers, Content-Length body)

Every run of a case is a fresh child process. It starts its workers, waits until each has had
two answers (connections are open; at most --warmup-limit s, which the pathological cases hit),
then counts answers over a window of --seconds: the rate
is answers / wall time, and the client's CPU is time.process_time() over the same window (all
threads), reported per 1,000 messages. The fake's CPU over the window is read from /proc so a
saturated fake shows. Loops are bounded: each worker stops at the window's end or after
--max-messages / C requests, whichever comes first; every request has a 30 s timeout.

Cases run in rounds (each round runs every case once per concurrency, in a rotated order);
the table gives min / median / max messages/s over the rounds and the median over rounds of
the ratio to stdlib-threads at the same concurrency in the same round. Loopback only.

Needs the measured packages: `pip install -e '.[dev]' 'httpx[http2]' httpx-aiohttp aiohttp`
(h2 for the fake's h2c and httpx's HTTP/2, httpx-aiohttp and aiohttp; httpx2 is in `dev`).
Note: httpcore 1.0.x looks for `sniffio` on every async lock/event/shield it sets up; without
sniffio installed (httpx and anyio no longer pull it in) each look-up is a failed import,
~50 us. Whether sniffio is installed is printed with the versions.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from importlib import metadata
from typing import Any

import aiohttp
import h2.config
import h2.connection
import h2.events
import h2.exceptions
import httpx
import httpx2
from httpx_aiohttp import AiohttpTransport

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
ACCEPTED = b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n"
PATH = "/v1/segment"
BODY = json.dumps(
    {
        "type": "track",
        "event": "Dashboard Viewed",
        "userId": "user-000123",
        "messageId": "0b8c5bd2-6a7e-4c1e-9f52-7d7c1a4e9b31",
        "timestamp": "2026-11-28T12:00:00.000Z",
        "properties": {"plan": "enterprise", "widgets": 12, "source": "web"},
        "context": {"library": {"name": "accoil-buffer", "version": "0.1.0"}},
        "groupId": "account-42",
    },
    separators=(",", ":"),
).encode()
HEADERS = {"Content-Type": "application/json", "Authorization": "Basic YmVuY2g6"}
TIMEOUT = 30.0
BASELINE = "stdlib-threads"


# --------------------------------------------------------------------------- the fake Accoil


class FakeAccoil(asyncio.Protocol):
    """One connection: HTTP/1.1 keep-alive, or h2c if it opens with the HTTP/2 preface."""

    def __init__(self, latency: float, h2_max_streams: int) -> None:
        self._latency = latency
        self._h2_max_streams = h2_max_streams
        self._buf = bytearray()
        self._h2: h2.connection.H2Connection | None = None
        self._sniffed = False
        self._transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        if self._h2 is not None:
            self._h2_received(data)
            return
        self._buf += data
        if not self._sniffed:
            head = bytes(self._buf[: len(H2_PREFACE)])
            if H2_PREFACE.startswith(head) and len(head) < len(H2_PREFACE):
                return  # could still be either: wait for more bytes
            self._sniffed = True
            if head == H2_PREFACE:
                config = h2.config.H2Configuration(client_side=False, header_encoding=None)
                self._h2 = h2.connection.H2Connection(config=config)
                self._h2.local_settings.max_concurrent_streams = self._h2_max_streams
                self._h2.initiate_connection()
                data, self._buf = bytes(self._buf), bytearray()
                self._h2_received(data)
                return
        self._h1_parse()

    def _h1_parse(self) -> None:
        buf = self._buf
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            length = 0
            for line in bytes(buf[:end]).split(b"\r\n")[1:]:
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            if len(buf) < end + 4 + length:
                return
            del buf[: end + 4 + length]
            # Same delay for every request, so answers leave in the order requests came.
            self._loop.call_later(self._latency, self._h1_answer)

    def _h1_answer(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(ACCEPTED)

    def _h2_received(self, data: bytes) -> None:
        assert self._h2 is not None
        try:
            events = self._h2.receive_data(data)
        except h2.exceptions.ProtocolError:
            self._flush()
            if self._transport is not None:
                self._transport.close()
            return
        for event in events:
            if isinstance(event, h2.events.DataReceived):
                if event.stream_id is not None and event.flow_controlled_length is not None:
                    self._h2.acknowledge_received_data(
                        event.flow_controlled_length, event.stream_id
                    )
            elif isinstance(event, h2.events.StreamEnded):
                if event.stream_id is not None:
                    self._loop.call_later(self._latency, self._h2_answer, event.stream_id)
            elif isinstance(event, h2.events.ConnectionTerminated) and self._transport:
                self._flush()
                self._transport.close()
                return
        self._flush()

    def _h2_answer(self, stream_id: int) -> None:
        assert self._h2 is not None
        try:
            self._h2.send_headers(
                stream_id, [(b":status", b"202"), (b"content-length", b"0")], end_stream=True
            )
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            return
        self._flush()

    def _flush(self) -> None:
        assert self._h2 is not None
        out = self._h2.data_to_send()
        if out and self._transport is not None and not self._transport.is_closing():
            self._transport.write(out)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None


async def serve(port: int, latency: float, h2_max_streams: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: FakeAccoil(latency, h2_max_streams), "127.0.0.1", port, backlog=4096
    )
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


def start_fake(latency_ms: float, h2_max_streams: int) -> tuple[subprocess.Popen[str], int]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    argv = [sys.executable, "-m", "bench.transports", "serve", "--port", str(port)]
    argv += ["--latency-ms", str(latency_ms), "--h2-max-streams", str(h2_max_streams)]
    fake = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    assert fake.stdout is not None
    if fake.stdout.readline().strip() != "ready":
        fake.kill()
        raise RuntimeError("the fake Accoil did not start")
    return fake, port


# --------------------------------------------------------------------------- measuring


@dataclass
class Tally:
    """Per-worker answer counts: each worker writes only its own slot."""

    workers: int
    cap: int
    ok: list[int] = field(default_factory=list)
    errors: list[int] = field(default_factory=list)
    stop: bool = False
    first_error: str = ""

    def __post_init__(self) -> None:
        self.ok = [0] * self.workers
        self.errors = [0] * self.workers

    def running(self, worker: int) -> bool:
        return not self.stop and self.ok[worker] + self.errors[worker] < self.cap

    def record(self, worker: int, status: int) -> None:
        if status == 202:
            self.ok[worker] += 1
        else:
            self.failed(worker, f"status {status}")

    def failed(self, worker: int, what: str) -> None:
        self.errors[worker] += 1
        if not self.first_error:
            self.first_error = what

    def ready(self) -> bool:
        return min(o + e for o, e in zip(self.ok, self.errors, strict=True)) >= 2


@dataclass
class Snapshot:
    wall: float
    cpu: float
    ok: int
    errors: int
    fake_cpu: float


@dataclass
class Result:
    case: str
    concurrency: int
    round: int
    messages: int
    errors: int
    seconds: float
    per_second: float
    cpu_ms_per_1000: float
    fake_cpu_share: float
    warmup_seconds: float
    first_error: str


def fake_cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def snapshot(tally: Tally, fake_pid: int) -> Snapshot:
    return Snapshot(
        time.perf_counter(),
        time.process_time(),
        sum(tally.ok),
        sum(tally.errors),
        fake_cpu(fake_pid),
    )


def result(
    args: argparse.Namespace, tally: Tally, start: float, first: Snapshot, last: Snapshot
) -> Result:
    messages = last.ok - first.ok
    wall = last.wall - first.wall
    return Result(
        case=args.case,
        concurrency=args.concurrency,
        round=args.round,
        messages=messages,
        errors=sum(tally.errors),
        seconds=round(wall, 3),
        per_second=round(messages / wall, 1),
        cpu_ms_per_1000=round((last.cpu - first.cpu) * 1e6 / messages, 1) if messages else 0.0,
        fake_cpu_share=round((last.fake_cpu - first.fake_cpu) / wall, 3),
        warmup_seconds=round(first.wall - start, 3),
        first_error=tally.first_error,
    )


Url = tuple[str, int, str]  # host, port, full URL

ThreadWorker = Callable[[int, Tally], None]
Setup = Callable[[Url, int], tuple[ThreadWorker, Callable[[], None]]]


def run_threads(args: argparse.Namespace, setup: Setup) -> Result:
    concurrency: int = args.concurrency
    tally = Tally(concurrency, max(1, args.max_messages // concurrency))
    worker, close = setup(("127.0.0.1", args.port, args.url), concurrency)

    def guarded(i: int) -> None:
        try:
            worker(i, tally)
        except Exception as exc:  # a worker that dies must still count as an error
            tally.failed(i, f"worker died: {exc!r}")

    start = time.perf_counter()
    threads = [threading.Thread(target=guarded, args=(i,), daemon=True) for i in range(concurrency)]
    for thread in threads:
        thread.start()
    while not tally.ready() and time.perf_counter() - start < args.warmup_limit:
        time.sleep(0.05)
    time.sleep(0.2)
    first = snapshot(tally, args.fake_pid)
    time.sleep(args.seconds)
    last = snapshot(tally, args.fake_pid)
    tally.stop = True
    deadline = time.perf_counter() + TIMEOUT + 5
    for thread in threads:
        thread.join(timeout=max(0.0, deadline - time.perf_counter()))
    close()
    return result(args, tally, start, first, last)


AsyncWorker = Callable[[int, Tally], Awaitable[None]]
Close = Callable[[], Awaitable[None]]
AsyncSetup = Callable[[Url, int], Awaitable[tuple[AsyncWorker, Close]]]


async def run_tasks(args: argparse.Namespace, setup: AsyncSetup) -> Result:
    concurrency: int = args.concurrency
    tally = Tally(concurrency, max(1, args.max_messages // concurrency))
    worker, close = await setup(("127.0.0.1", args.port, args.url), concurrency)

    async def guarded(i: int) -> None:
        try:
            await worker(i, tally)
        except Exception as exc:
            tally.failed(i, f"worker died: {exc!r}")

    start = time.perf_counter()
    tasks = [asyncio.create_task(guarded(i)) for i in range(concurrency)]
    while not tally.ready() and time.perf_counter() - start < args.warmup_limit:
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.2)
    first = snapshot(tally, args.fake_pid)
    await asyncio.sleep(args.seconds)
    last = snapshot(tally, args.fake_pid)
    tally.stop = True
    _, pending = await asyncio.wait(tasks, timeout=TIMEOUT + 5)
    for task in pending:
        task.cancel()
    await close()
    return result(args, tally, start, first, last)


# --------------------------------------------------------------------------- the cases


def httpx_limits(concurrency: int) -> httpx.Limits:
    return httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)


def posting(url: Url, client_of: Callable[[int], Any], errors: type[Exception]) -> ThreadWorker:
    """A thread's loop: post with worker ``i``'s client until the window closes."""

    def worker(i: int, tally: Tally) -> None:
        client = client_of(i)
        while tally.running(i):
            try:
                tally.record(i, client.post(url[2], content=BODY).status_code)
            except errors as exc:
                tally.failed(i, repr(exc))

    return worker


def setup_httpx_threads_shared(
    url: Url, concurrency: int
) -> tuple[ThreadWorker, Callable[[], None]]:
    client = httpx.Client(limits=httpx_limits(concurrency), timeout=TIMEOUT, headers=HEADERS)
    return posting(url, lambda _i: client, httpx.HTTPError), client.close


def setup_httpx_threads_own(url: Url, concurrency: int) -> tuple[ThreadWorker, Callable[[], None]]:
    # One TLS context for all (building one per client costs ~20 ms of CPU each), and the
    # clients are built before the workers start, so neither is in the measured window.
    tls = httpx.create_ssl_context()
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    clients = [
        httpx.Client(limits=limits, timeout=TIMEOUT, headers=HEADERS, verify=tls)
        for _ in range(concurrency)
    ]

    def close() -> None:
        for client in clients:
            client.close()

    return posting(url, clients.__getitem__, httpx.HTTPError), close


def setup_httpx2_threads_shared(
    url: Url, concurrency: int
) -> tuple[ThreadWorker, Callable[[], None]]:
    limits = httpx2.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    client = httpx2.Client(limits=limits, timeout=TIMEOUT, headers=HEADERS)
    return posting(url, lambda _i: client, httpx2.HTTPError), client.close


def setup_stdlib_threads(url: Url, concurrency: int) -> tuple[ThreadWorker, Callable[[], None]]:
    def worker(i: int, tally: Tally) -> None:
        conn = http.client.HTTPConnection(url[0], url[1], timeout=TIMEOUT)
        try:
            while tally.running(i):
                try:
                    conn.request("POST", PATH, body=BODY, headers=HEADERS)
                    response = conn.getresponse()
                    response.read()
                    tally.record(i, response.status)
                except (OSError, http.client.HTTPException) as exc:
                    tally.failed(i, repr(exc))
                    conn.close()
        finally:
            conn.close()

    return worker, lambda: None


async def setup_httpx_async(url: Url, concurrency: int) -> tuple[AsyncWorker, Close]:
    client = httpx.AsyncClient(limits=httpx_limits(concurrency), timeout=TIMEOUT, headers=HEADERS)
    return _httpx_async_worker(client, url), client.aclose


async def setup_httpx_async_h2c(url: Url, concurrency: int) -> tuple[AsyncWorker, Close]:
    client = httpx.AsyncClient(
        http1=False,
        http2=True,
        limits=httpx_limits(concurrency),
        timeout=TIMEOUT,
        headers=HEADERS,
    )
    return _httpx_async_worker(client, url), client.aclose


async def setup_httpx_aiohttp(url: Url, concurrency: int) -> tuple[AsyncWorker, Close]:
    transport = AiohttpTransport(limits=httpx_limits(concurrency))
    client = httpx.AsyncClient(transport=transport, timeout=TIMEOUT, headers=HEADERS)
    return _httpx_async_worker(client, url), client.aclose


def _httpx_async_worker(
    client: Any, url: Url, errors: type[Exception] = httpx.HTTPError
) -> AsyncWorker:
    """A task's loop: post through ``client`` (httpx's or httpx2's) until the window closes."""

    async def worker(i: int, tally: Tally) -> None:
        while tally.running(i):
            try:
                response = await client.post(url[2], content=BODY)
                tally.record(i, response.status_code)
            except errors as exc:
                tally.failed(i, repr(exc))

    return worker


async def setup_httpx2_async(url: Url, concurrency: int) -> tuple[AsyncWorker, Close]:
    limits = httpx2.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    client = httpx2.AsyncClient(limits=limits, timeout=TIMEOUT, headers=HEADERS)
    return _httpx_async_worker(client, url, httpx2.HTTPError), client.aclose


async def setup_aiohttp_raw(url: Url, concurrency: int) -> tuple[AsyncWorker, Close]:
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=concurrency),
        timeout=aiohttp.ClientTimeout(total=TIMEOUT),
        headers=HEADERS,
    )

    async def worker(i: int, tally: Tally) -> None:
        while tally.running(i):
            try:
                async with session.post(url[2], data=BODY) as response:
                    await response.read()
                    tally.record(i, response.status)
            except (aiohttp.ClientError, TimeoutError) as exc:
                tally.failed(i, repr(exc))

    return worker, session.close


async def setup_asyncio_raw(url: Url, concurrency: int) -> tuple[AsyncWorker, Close]:
    head = f"POST {PATH} HTTP/1.1\r\nHost: {url[0]}:{url[1]}\r\nContent-Length: {len(BODY)}\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in HEADERS.items())
    request = (head + "\r\n").encode() + BODY

    async def worker(i: int, tally: Tally) -> None:
        reader, writer = await asyncio.open_connection(url[0], url[1])
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            while tally.running(i):
                writer.write(request)
                answer = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
                lines = answer.split(b"\r\n")
                length = 0
                for line in lines[1:]:
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                if length:
                    await reader.readexactly(length)
                tally.record(i, int(lines[0].split(b" ", 2)[1]))
        finally:
            writer.close()

    async def close() -> None:
        return None

    return worker, close


THREAD_CASES: dict[str, Setup] = {
    "httpx-threads-shared": setup_httpx_threads_shared,
    "httpx-threads-own": setup_httpx_threads_own,
    "httpx2-threads-shared": setup_httpx2_threads_shared,
    "stdlib-threads": setup_stdlib_threads,
}
ASYNC_CASES: dict[str, AsyncSetup] = {
    "httpx-async": setup_httpx_async,
    "httpx-async-h2c": setup_httpx_async_h2c,
    "httpx-aiohttp": setup_httpx_aiohttp,
    "httpx2-async": setup_httpx2_async,
    "aiohttp-raw": setup_aiohttp_raw,
    "asyncio-raw": setup_asyncio_raw,
}
ALL_CASES = [
    "httpx-threads-shared",
    "httpx-threads-own",
    "httpx-async",
    "httpx-async-h2c",
    "httpx-aiohttp",
    "httpx2-async",
    "httpx2-threads-shared",
    "aiohttp-raw",
    "stdlib-threads",
    "asyncio-raw",
]


def run_case(args: argparse.Namespace) -> Result:
    if args.case in THREAD_CASES:
        return run_threads(args, THREAD_CASES[args.case])
    return asyncio.run(run_tasks(args, ASYNC_CASES[args.case]))


# --------------------------------------------------------------------------- orchestration


def child(args: argparse.Namespace, port: int, fake_pid: int, case: str, c: int, r: int) -> Result:
    argv = [sys.executable, "-m", "bench.transports", "case", case, "--port", str(port)]
    argv += ["--fake-pid", str(fake_pid), "--concurrency", str(c), "--round", str(r)]
    argv += ["--seconds", str(args.seconds), "--max-messages", str(args.max_messages)]
    argv += ["--warmup-limit", str(args.warmup_limit)]
    try:
        done = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=args.seconds + args.warmup_limit + 90,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return Result(case, c, r, 0, -1, 0.0, 0.0, 0.0, 0.0, 0.0, "child timed out")
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or ["no output"]
        failed = f"exit {done.returncode}: {tail[0]}"
        return Result(case, c, r, 0, -1, 0.0, 0.0, 0.0, 0.0, 0.0, failed)
    return Result(**json.loads(done.stdout.strip().splitlines()[-1]))


def table(results: list[Result], cases: list[str], levels: list[int]) -> str:
    base = {(x.concurrency, x.round): x.per_second for x in results if x.case == BASELINE}
    lines = [
        "| case | C | msg/s min | median | max | x stdlib-threads (median) "
        "| client CPU ms / 1k msgs | fake CPU | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in levels:
        for case in cases:
            runs = [x for x in results if x.case == case and x.concurrency == c]
            failed = sum(x.errors < 0 for x in runs)
            runs = [x for x in runs if x.errors >= 0]  # failed runs have no rate
            if not runs:
                lines.append(f"| {case} | {c} | - | - | - | - | - | - | {failed} runs failed |")
                continue
            rates = [x.per_second for x in runs]
            ratios = [x.per_second / base[(c, x.round)] for x in runs if base.get((c, x.round))]
            ratio = f"{statistics.median(ratios):.2f}" if ratios else "-"
            cpu = statistics.median(x.cpu_ms_per_1000 for x in runs)
            fake = statistics.median(x.fake_cpu_share for x in runs)
            errors = str(sum(max(0, x.errors) for x in runs))
            if failed:
                errors += f" ({failed} runs failed)"
            lines.append(
                f"| {case} | {c} | {min(rates):,.0f} | {statistics.median(rates):,.0f} "
                f"| {max(rates):,.0f} | {ratio} | {cpu:.0f} | {fake:.0%} | {errors} |"
            )
    return "\n".join(lines)


def versions() -> str:
    names = ["httpx", "httpcore", "anyio", "h11", "h2", "httpx-aiohttp", "aiohttp", "httpx2"]
    names.append("sniffio")
    found = []
    for name in [*names, "httpcore2"]:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            found.append(f"{name} (not installed)")
    return f"Python {sys.version.split()[0]}; " + ", ".join(found)


def orchestrate(args: argparse.Namespace) -> None:
    cases: list[str] = args.cases.split(",")
    levels = [int(c) for c in args.concurrency.split(",")]
    unknown = [case for case in cases if case not in ALL_CASES]
    if unknown:
        raise SystemExit(f"unknown cases: {unknown}; known: {ALL_CASES}")
    fake, port = start_fake(args.latency_ms, args.h2_max_streams)
    results: list[Result] = []
    try:
        for r in range(1, args.rounds + 1):
            for c in levels:
                shift = (r - 1) % len(cases)
                for case in cases[shift:] + cases[:shift]:
                    res = child(args, port, fake.pid, case, c, r)
                    results.append(res)
                    if args.json:  # written as it goes, so a stopped run keeps what it had
                        with open(args.json, "w") as out:
                            json.dump([asdict(x) for x in results], out, indent=1)
                    print(
                        f"round {r} C={c:<4} {case:<22} {res.per_second:>8,.0f} msg/s "
                        f"cpu {res.cpu_ms_per_1000:>5.0f} ms/1k fake {res.fake_cpu_share:.0%} "
                        f"errors {res.errors} {res.first_error[:80]}",
                        file=sys.stderr,
                        flush=True,
                    )
    finally:
        fake.terminate()
        fake.wait(timeout=10)
    print(
        f"latency {args.latency_ms} ms, window {args.seconds} s, {args.rounds} rounds, "
        f"body {len(BODY)} bytes, {os.cpu_count()} CPUs"
    )
    print(versions())
    print()
    print(table(results, cases, levels))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command")
    bench = parser
    bench.add_argument("--latency-ms", type=float, default=50.0)
    bench.add_argument("--concurrency", default="8,64,128,512")
    bench.add_argument("--rounds", type=int, default=3)
    bench.add_argument("--seconds", type=float, default=3.0)
    bench.add_argument("--max-messages", type=int, default=200_000)
    bench.add_argument("--warmup-limit", type=float, default=10.0)
    bench.add_argument("--cases", default=",".join(ALL_CASES))
    bench.add_argument("--h2-max-streams", type=int, default=1000)
    bench.add_argument("--json", default="")

    fake = sub.add_parser("serve", help="run the fake Accoil (used by the benchmark itself)")
    fake.add_argument("--port", type=int, required=True)
    fake.add_argument("--latency-ms", type=float, default=50.0)
    fake.add_argument("--h2-max-streams", type=int, default=1000)

    case = sub.add_parser("case", help="run one case once (used by the benchmark itself)")
    case.add_argument("case", choices=ALL_CASES)
    case.add_argument("--port", type=int, required=True)
    case.add_argument("--fake-pid", type=int, required=True)
    case.add_argument("--concurrency", type=int, required=True)
    case.add_argument("--round", type=int, default=1)
    case.add_argument("--seconds", type=float, default=4.0)
    case.add_argument("--max-messages", type=int, default=200_000)
    case.add_argument("--warmup-limit", type=float, default=20.0)

    args = parser.parse_args()
    if args.command == "serve":
        asyncio.run(serve(args.port, args.latency_ms / 1000, args.h2_max_streams))
    elif args.command == "case":
        args.url = f"http://127.0.0.1:{args.port}{PATH}"
        print(json.dumps(asdict(run_case(args))))
    else:
        orchestrate(args)


if __name__ == "__main__":
    main()
