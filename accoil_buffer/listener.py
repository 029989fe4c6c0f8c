"""Where and how the sidecar listens: who may be let in, the socket, and uvicorn's HTTP/1.1
server with timeouts that close connections which never finish their requests."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import signal
import socket
import ssl
import threading
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import h11
import uvicorn
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from accoil_buffer.config import ServerConfig
from accoil_buffer.errors import ConfigError, ListenError
from accoil_buffer.metrics import Metrics
from accoil_buffer.middleware import error

SHUTDOWN_GRACE_SECONDS = 10
# A client has this long to send a request's headers: a connection that never finishes them
# is closed instead of held forever.
HEADER_TIMEOUT_SECONDS = 10.0
KEEP_ALIVE_SECONDS = 5
MAX_CONNECTIONS = 1000  # past this, requests are answered 503, which Segment's libraries retry


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class TrustedHosts:
    """The names a page may reach a daemon without write keys by: this machine's addresses,
    localhost and the configured host and ``public_url``. A page that reached it by any other
    name came by DNS rebinding (a name of its own, resolved to 127.0.0.1), and must not read
    what the daemon shows."""

    def __init__(self, server: ServerConfig) -> None:
        public = urlsplit(server.public_url).hostname or ""
        self._names = {server.host.lower(), public.lower()} - {""}
        self._keys_required = bool(server.write_keys)  # then a key, not the name, decides

    def refusal(self, host: str, what: str) -> JSONResponse | None:
        """The 403 for a request asking for ``what`` by ``host``, if it must be refused."""
        if self._keys_required or host in self:
            return None
        return error(
            403,
            "forbidden_host",
            f"{what} only at this machine's addresses, localhost or the configured host and "
            "public_url",
        )

    def __contains__(self, host: str) -> bool:
        """Whether a request's ``Host`` header is one of them."""
        try:
            name = (urlsplit(f"//{host}").hostname or "").lower()
        except ValueError:
            return False
        if name == "localhost" or name.endswith(".localhost") or name in self._names:
            return True
        try:
            ipaddress.ip_address(name)
        except ValueError:
            return False
        return True  # an address: DNS rebinding needs a name


def check_exposure(server: ServerConfig) -> None:
    """Refuse to listen beyond loopback without write keys: anyone could write events."""
    if not is_loopback(server.host) and not server.write_keys:
        raise ConfigError(
            f"refusing to listen on {server.host} without write keys: set [server] write_keys "
            "(or ACCOIL_BUFFER_SERVER_WRITE_KEYS), or listen on 127.0.0.1"
        )


def check_tls(server: ServerConfig) -> None:
    """Load the certificate and key before anything starts, so that a wrong path or a key
    that does not match the certificate is one line, not a traceback once serving."""
    if not server.tls_certfile:
        return
    for name, path in (("tls_certfile", server.tls_certfile), ("tls_keyfile", server.tls_keyfile)):
        try:  # ssl's own error does not say which file
            Path(path).open("rb").close()
        except OSError as exc:
            raise ConfigError(f"server.{name} {path} cannot be read: {exc.strerror}") from None
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
            server.tls_certfile, server.tls_keyfile, password=_no_passphrase
        )
    except _EncryptedKey:
        raise ConfigError(
            "server.tls_keyfile is encrypted; the daemon needs a key without a passphrase "
            "(uvicorn would ask for it on the terminal)"
        ) from None
    except ssl.SSLError as exc:  # the reason only: never anything read from the key
        raise ConfigError(
            f"server.tls_certfile and server.tls_keyfile are not a certificate and its key "
            f"({exc.reason or 'unreadable'})"
        ) from None


class _EncryptedKey(Exception):
    """OpenSSL asked for the key's passphrase."""


def _no_passphrase() -> bytes:
    raise _EncryptedKey  # instead of OpenSSL prompting on the terminal


def listen(server: ServerConfig) -> socket.socket:
    """Bind the port before anything is announced, so a busy port is the only message."""
    family = socket.AF_INET6 if ":" in server.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((server.host, server.port))
    except OSError as exc:
        sock.close()
        raise ListenError(
            f"cannot listen on {server.host}:{server.port}: {exc.strerror or exc}"
        ) from exc
    sock.set_inheritable(True)
    return sock


def http_server(app: ASGIApp, metrics: Metrics, config: ServerConfig) -> uvicorn.Server:
    """uvicorn serving ``app`` with the sidecar's timeouts and connection bound, over TLS with
    ``config``'s certificate if it has one; the answers given outside ``app`` (the 503s here, a
    400 to what is not HTTP) are counted too."""

    def crowded() -> bool:
        state = server.server_state
        return len(state.connections) > MAX_CONNECTIONS or len(state.tasks) > MAX_CONNECTIONS

    def count(status: int) -> None:
        metrics.responses.labels(str(status)).inc()

    class Protocol(_Protocol):
        answered = staticmethod(count)

    server = uvicorn.Server(
        uvicorn.Config(
            _Bounded(app, crowded, lambda: server.should_exit, count),
            http=Protocol,
            loop="auto",  # uvloop, a dependency wherever it builds (docs: dependencies)
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_keep_alive=KEEP_ALIVE_SECONDS,
            timeout_graceful_shutdown=SHUTDOWN_GRACE_SECONDS,
            ssl_certfile=config.tls_certfile or None,
            ssl_keyfile=config.tls_keyfile or None,
        )
    )
    return server


class _Bounded:
    """Answers 503 in JSON, as every error is, where uvicorn answers in plain text: past
    MAX_CONNECTIONS open connections or requests (uvicorn's ``limit_concurrency``), and to a
    request not answered when the shutdown grace ends, which uvicorn cancels and answers 500."""

    def __init__(
        self,
        app: ASGIApp,
        crowded: Callable[[], bool],
        stopping: Callable[[], bool],
        answered: Callable[[int], None],
    ) -> None:
        self._app, self._crowded, self._stopping = app, crowded, stopping
        self._answered = answered

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        if self._crowded():
            refusal = _unavailable(
                "unavailable", f"more than {MAX_CONNECTIONS} connections are open; retry"
            )
            self._answered(refusal.status_code)
            await refusal(scope, receive, send)
            return
        started = False

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self._app(scope, receive, watched)
        except asyncio.CancelledError:
            if started or not self._stopping():  # an answer begun can only be cut short
                raise
            refusal = _unavailable(
                "shutting_down",
                f"the daemon is stopping and this request did not finish within "
                f"{SHUTDOWN_GRACE_SECONDS} s; retry",
            )
            self._answered(refusal.status_code)
            await refusal(scope, receive, send)


def _unavailable(code: str, message: str) -> JSONResponse:
    """A 503 the client retries, closing the connection: this daemon will not serve it now."""
    return error(503, code, message, headers={"Connection": "close"})


def run_until_signalled(server: uvicorn.Server, sock: socket.socket) -> None:
    """Serve on ``sock`` until SIGTERM or SIGINT, then return instead of dying.

    uvicorn handles those signals while it serves, then re-raises the signal to the handler
    that was there before it: this one, which only notes it, so that the caller can close
    what it opened.
    """
    stopped = threading.Event()
    previous = {
        sig: signal.signal(sig, lambda *_: stopped.set()) for sig in (signal.SIGTERM, signal.SIGINT)
    }
    try:
        server.run(sockets=[sock])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class _Protocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol, closing a connection whose next request's headers are not
    complete within HEADER_TIMEOUT_SECONDS (uvicorn itself waits for them forever), and
    answering what is not HTTP/1.1 in JSON, counted (``answered``), as every error is."""

    _deadline: asyncio.TimerHandle | None = None
    _waiting_since: object = None
    answered: Callable[[int], None]

    def send_400_response(self, msg: str) -> None:
        body = json.dumps(
            {"code": "invalid_http", "message": f"not a valid HTTP/1.1 request: {msg}"}
        )
        headers = [(b"content-type", b"application/json"), (b"connection", b"close")]
        for event in (
            h11.Response(status_code=400, headers=headers, reason=b"Bad Request"),
            h11.Data(data=body.encode()),
            h11.EndOfMessage(),
        ):
            self.transport.write(self.conn.send(event))
        self.transport.close()
        if self.cycle is None or self.cycle.response_complete:
            self.answered(400)  # else a body broke off: the app sees it leave, and counts that

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_response_complete(self) -> None:
        self._arm()  # before the next pipelined request, if any, starts a new cycle
        super().on_response_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        super().connection_lost(exc)

    def _arm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._waiting_since = self.cycle
        self._deadline = self.loop.call_later(HEADER_TIMEOUT_SECONDS, self._late)

    def _late(self) -> None:
        if self.cycle is self._waiting_since and not self.transport.is_closing():
            self.transport.close()  # no request started since: headers never finished
