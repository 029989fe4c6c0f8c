"""A fake of Accoil's ingestion endpoint: a real HTTP server on a loopback port.

It records every request and answers 202 unless told otherwise: a ``behaviour`` function
chooses, per message, a status, a Retry-After, a delay, a dropped connection, an answer that is
not HTTP, or one that trickles in.
``python -m tests.support.fake_accoil PORT`` runs one in its own process (for benchmarks).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Reply:
    status: int = 202
    body: str = ""
    retry_after: str | None = None
    delay: float = 0.0
    drop: bool = False
    garbage: bool = False  # a line that is not HTTP, as a proxy in a bad way might send
    trickle: float = 0.0  # 202's headers, then a byte of its body every so many seconds


@dataclass(frozen=True)
class Request:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    status: int | None  # None: the connection was dropped


Behaviour = Callable[[dict[str, Any]], Reply]


@dataclass
class FakeAccoil:
    behaviour: Behaviour = field(default=lambda _message: Reply())
    requests: list[Request] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/segment"

    def accepted(self) -> list[dict[str, Any]]:
        """Bodies answered with a 2xx, in arrival order."""
        with self.lock:
            return [r.body for r in self.requests if r.status is not None and r.status < 300]

    def record(self, request: Request) -> None:
        with self.lock:
            self.requests.append(request)


def _handler(fake: FakeAccoil) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as Accoil's load balancer offers
        disable_nagle_algorithm = True  # TCP_NODELAY: no 40 ms delayed-ACK stalls

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            raw = self.rfile.read(length)
            if len(raw) < length or not raw:  # the client died mid-request: nothing arrived
                self.close_connection = True
                return
            body = json.loads(raw)
            reply = fake.behaviour(body)
            if reply.delay:
                time.sleep(reply.delay)
            headers = {k.lower(): v for k, v in self.headers.items()}
            if reply.drop or reply.garbage or reply.trickle:
                fake.record(Request(self.path, headers, body, None))
                self.close_connection = True
                if reply.garbage:
                    self.wfile.write(b"garbage\r\n\r\n")
                elif reply.trickle:
                    self._trickle(reply.trickle)
                self.connection.close()
                return
            fake.record(Request(self.path, headers, body, reply.status))
            payload = reply.body.encode()
            self.send_response(reply.status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(payload)))
            if reply.retry_after is not None:
                self.send_header("Retry-After", reply.retry_after)
            self.end_headers()
            self.wfile.write(payload)

        def _trickle(self, interval: float) -> None:
            self.send_response(202)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            for _ in range(1000):
                try:
                    self.wfile.write(b"x")
                    self.wfile.flush()
                except OSError:  # the client gave up on it
                    return
                time.sleep(interval)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet: tests read fake.requests instead

    return Handler


class _QuietServer(ThreadingHTTPServer):
    # A pass opens dozens of connections at once: with the default backlog of 5, the kernel
    # drops SYNs, and a request that arrives seconds late is answered after the test moved on.
    request_queue_size = 1024

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


@contextmanager
def running(fake: FakeAccoil | None = None, port: int = 0) -> Iterator[FakeAccoil]:
    """Serve ``fake`` on 127.0.0.1 (a free port unless one is given) until the block ends."""
    fake = fake or FakeAccoil()
    server = _QuietServer(("127.0.0.1", port), _handler(fake))
    server.daemon_threads = True
    fake.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


if __name__ == "__main__":
    with running(port=int(sys.argv[1])) as served:
        print(served.url, flush=True)
        threading.Event().wait()
