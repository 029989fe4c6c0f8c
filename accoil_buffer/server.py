"""The sidecar daemon: Segment's HTTP Tracking API in front of a Buffer, on Starlette.

A request is answered ``200 {"success": true}`` only after its messages are committed.
Errors are ``{"code", "message"}``: 400 for a body or message that is wrong (the client
should not retry), 401 for a bad write key, 503 when the database cannot take the messages
(the client retries). A batch with some invalid messages stores the valid ones and answers
200, listing the rejected ones: Segment's libraries drop a whole batch on any 400, which
would lose the valid messages with the invalid.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import gc
import hmac
import logging
from collections import Counter
from collections.abc import Callable
from typing import Any, cast

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from accoil_buffer.bodies import Refusal, read_body
from accoil_buffer.buffer import Buffer
from accoil_buffer.config import Config, ServerConfig
from accoil_buffer.console import Console
from accoil_buffer.errors import AccoilBufferError, StorageError
from accoil_buffer.json_values import Plain, decode
from accoil_buffer.listener import (
    TrustedHosts,
    check_exposure,
    check_tls,
    http_server,
    listen,
    run_until_signalled,
)
from accoil_buffer.messages import apply_batch, batch_shares
from accoil_buffer.metrics import CONTENT_TYPE, Metrics
from accoil_buffer.middleware import error, wrap

log = logging.getLogger(__name__)
# Segment documents 500 KB a batch, after decompression. Several of its libraries count only
# their messages' bytes (or characters) when they fill one, and a 4xx makes them drop it
# whole: the room to spare keeps those batches, while each message is still held to its own.
MAX_BODY_BYTES = 1024 * 1024
STORED_AT_ONCE = 16  # requests parsed and being stored at a time; the rest wait their turn
ENDPOINTS = {
    "identify": "identify",
    "i": "identify",
    "track": "track",
    "t": "track",
    "page": "page",
    "p": "page",
    "screen": "screen",
    "s": "screen",
    "group": "group",
    "g": "group",
    "alias": "alias",
    "a": "alias",
    "batch": "batch",
    "b": "batch",
    "import": "batch",  # older mobile libraries (analytics-android 4, early analytics-ios)
}
# Top-level fields a rejection may be counted under; anything else is counted as "message",
# so a client cannot grow the metrics without bound with field names of its own.
_REJECTION_FIELDS = frozenset(
    {
        "type",
        "userId",
        "anonymousId",
        "groupId",
        "previousId",
        "messageId",
        "event",
        "name",
        "traits",
        "properties",
        "context",
        "integrations",
        "timestamp",
        "originalTimestamp",
        "sentAt",
    }
)


def _rejection_reason(field: str) -> str:
    top = field.removeprefix("message.").split(".", 1)[0].split("[", 1)[0]
    return top if top in _REJECTION_FIELDS else "message"


def _write_key(request: Request, body: dict[str, Any]) -> str | None:
    if isinstance(body.get("writeKey"), str):
        return str(body["writeKey"])
    return _basic_user(request)


def _basic_user(request: Request) -> str | None:
    """The user part of Basic auth: Segment's libraries send the write key there."""
    header = request.headers.get("authorization", "")
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic" or not encoded:
        return None
    try:
        user, _, _password = base64.b64decode(encoded, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return user


class Sidecar:
    """The ASGI application around one Buffer."""

    def __init__(self, buffer: Buffer, server: ServerConfig) -> None:
        self._buffer = buffer
        self._write_keys = [key.encode() for key in server.write_keys]
        self._public_url = server.public_url.rstrip("/")
        self._hosts = TrustedHosts(server)
        self.metrics = Metrics(buffer.status_report)
        # A body's parsed messages take many times its bytes: so many are held at once.
        self._storing = asyncio.Semaphore(STORED_AT_ONCE)
        self.console = Console(buffer, server, lambda r: self._authorised(_basic_user(r)))
        routes = Starlette(
            routes=[
                # A trailing slash is taken as it comes: a redirect would lose a POST's body
                # in some clients.
                *_either_slash("/v1/m", self.usage_metrics, "POST"),
                *_either_slash("/v1/status", self.status, "GET"),
                *_either_slash("/v1/projects/{write_key}/settings", self.settings, "GET"),
                *_either_slash("/v1/{endpoint}", self.ingest, "POST"),
                Route("/health", self.health, methods=["GET"]),
                Route("/metrics", self.prometheus, methods=["GET"]),
            ],
            exception_handlers={HTTPException: _http_error},
        )
        routes.router.redirect_slashes = False
        self.app = wrap(routes, server, self.metrics, ahead=self.console.mount)

    def _authorised(self, key: str | None) -> bool:
        if not self._write_keys:
            return True
        given = (key or "").encode("utf-8", "surrogatepass")  # a lone surrogate: 401, not 400
        return any(hmac.compare_digest(given, allowed) for allowed in self._write_keys)

    async def ingest(self, request: Request) -> Response:
        kind = ENDPOINTS.get(request.path_params["endpoint"])
        if kind is None:
            return error(404, "not_found", f"no endpoint {request.url.path}")
        try:
            raw = await read_body(request, MAX_BODY_BYTES)
        except Refusal as refusal:
            return self._refused(refusal)
        async with self._storing:
            return await self._store(kind, request, raw)

    async def _store(self, kind: str, request: Request, raw: bytes) -> Response:
        try:
            body, plain = decode(raw)
            if not isinstance(body, dict):
                raise Refusal(400, "invalid_json", "body must be a JSON object")
            if not self._authorised(_write_key(request, body)):
                raise Refusal(401, "unauthorized", "missing or unknown write key")
            if kind == "batch":
                if not isinstance(body.get("batch"), list):
                    raise Refusal(400, "invalid_batch", "batch must be an array of messages")
                messages = [apply_batch(item, body, plain=plain) for item in body["batch"]]
                shared = batch_shares(body)
            else:
                messages = [(Plain if plain else dict)(body, type=kind)]
                shared = 0
        except Refusal as refusal:
            return self._refused(refusal)
        except (ValueError, RecursionError) as exc:
            self.metrics.rejected.labels("invalid_json").inc()
            return error(400, "invalid_json", f"body is not valid JSON: {exc}")
        try:
            report = await run_in_threadpool(
                self._buffer.ingest_many, messages, shared_bytes=shared
            )
        except AccoilBufferError as exc:
            log.error("could not store %d messages: %s", len(messages), exc)
            return error(503, "unavailable", "the buffer cannot store messages now; retry")
        self.console.ring.record(messages, report)
        refused = {rejection.index for rejection in report.rejected}
        for rejection in report.rejected:
            self.metrics.rejected.labels(_rejection_reason(rejection.error.field)).inc()
        # Every message not refused is an object with a valid type, in any case.
        kept = [m for i, m in enumerate(messages) if i not in refused] if refused else messages
        for kind_accepted, n in Counter(cast(dict[str, Any], m)["type"] for m in kept).items():
            self.metrics.accepted.labels(str(kind_accepted).lower()).inc(n)  # per type, not message
        if report.rejected and kind != "batch":
            return error(400, "invalid_message", str(report.rejected[0].error))
        answer: dict[str, Any] = {"success": True}
        if report.rejected:
            answer["rejected"] = [
                {"index": r.index, "code": "invalid_message", "message": str(r.error)}
                for r in report.rejected
            ]
        return JSONResponse(answer)

    def _refused(self, refusal: Refusal) -> Response:
        self.metrics.rejected.labels(refusal.code).inc()
        return refusal.response()

    async def usage_metrics(self, _request: Request) -> Response:
        """analytics.js reports its own usage here: taken and dropped, never stored."""
        self.metrics.discarded.inc()
        return JSONResponse({"success": True})

    async def settings(self, request: Request) -> Response:
        """The settings document analytics.js loads from Segment's CDN, pointing it here:
        ``AnalyticsBrowser.load({writeKey, cdnURL: <this daemon>})`` needs nothing else."""
        write_key = request.path_params["write_key"]
        if not self._authorised(write_key):
            return error(401, "unauthorized", "unknown write key")
        base = self._public_url or f"{request.url.scheme}://{request.url.netloc}"
        scheme, _, host = base.partition("://")
        return JSONResponse(segment_settings(write_key, f"{host}/v1", scheme))

    async def health(self, _request: Request) -> Response:
        health = await run_in_threadpool(self._buffer.health)
        return JSONResponse(health.document(), 200 if health.storing else 503)

    async def status(self, request: Request) -> Response:
        return await self._document(request, self._buffer.status, JSONResponse)

    async def prometheus(self, request: Request) -> Response:
        def text(payload: bytes) -> Response:
            return Response(payload, media_type=CONTENT_TYPE)

        return await self._document(request, self.metrics.render, text)

    async def _document(
        self, request: Request, read: Callable[[], Any], respond: Callable[[Any], Response]
    ) -> Response:
        """Status and metrics show the endpoint, errors and volumes: with write keys set (the
        daemon may listen beyond loopback), only a holder of a write key may read them."""
        if not self._authorised(_basic_user(request)):
            return error(401, "unauthorized", "a write key is required (Basic auth)")
        if refusal := self._hosts.refusal(
            request.headers.get("host", ""), "status and metrics answer"
        ):
            return refusal
        try:
            return respond(await run_in_threadpool(read))
        except StorageError as exc:
            return error(503, "unavailable", str(exc))


def _either_slash(path: str, endpoint: Callable[[Request], Any], method: str) -> list[Route]:
    return [Route(path, endpoint, methods=[method]), Route(path + "/", endpoint, methods=[method])]


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own answers (no such path, a method a path does not take) as our JSON."""
    assert isinstance(exc, HTTPException)
    where = f"{request.method} {request.url.path}"
    messages = {
        404: ("not_found", f"{where}: no such path (Segment's API is under /v1)"),
        405: ("method_not_allowed", f"{where}: this path does not take {request.method}"),
    }
    code, message = messages.get(exc.status_code, ("bad_request", str(exc.detail)))
    return error(exc.status_code, code, message, headers=exc.headers)


def segment_settings(write_key: str, api_host: str, protocol: str) -> dict[str, Any]:
    """What Segment's CDN serves analytics.js for a source, sending to ``api_host`` (a host
    and path, as ``127.0.0.1:8740/v1``); its own usage metrics are off (``sampleRate`` 0)."""
    return {
        "integrations": {
            "Segment.io": {
                "apiKey": write_key,
                "apiHost": api_host,
                "protocol": protocol,
                "unbundledIntegrations": [],
                "addBundledMetadata": True,
                "maybeBundledConfigIds": {},
            }
        },
        "plan": {"track": {"__default": {"enabled": True, "integrations": {}}}},
        "metrics": {"sampleRate": 0},
        "analyticsNextEnabled": True,
        "middlewareSettings": {},
        "enabledMiddleware": {},
        "legacyVideoPluginsEnabled": False,
        "remotePlugins": [],
    }


def serve(config: Config, *, announce: Callable[[str], None] = log.warning) -> None:
    """Run the daemon until SIGTERM/SIGINT: stop accepting, finish requests in progress, let a
    running delivery pass end its in-flight requests, close the database. Raises
    ``ListenError`` when the port cannot be bound, before anything else starts."""
    check_exposure(config.server)
    check_tls(config.server)
    sock = listen(config.server)
    try:
        buffer = Buffer(config=config, start=True)
    except BaseException:
        sock.close()
        raise
    try:
        sidecar = Sidecar(buffer, config.server)
        delivery = buffer.status_report().delivery
        server = http_server(sidecar.app, sidecar.metrics, config.server)
        scheme = "https" if config.server.tls_certfile else "http"
        announce(
            f"accoil-buffer listening on {scheme}://{_url_host(config.server.host)}:"
            f"{config.server.port}" + (" (write keys required)" if config.server.write_keys else "")
        )
        if "*" in config.server.cors_origins:
            announce(
                "WARNING: cors_origins is *: any web page a person visits can send events "
                "here; list the origins of your own pages instead"
            )
        announce(
            f"delivery to {delivery.endpoint}"
            if delivery.enabled
            else "delivery is OFF: no api_key is set; events are buffered until one is"
        )
        # What is alive now lives as long as the daemon: leave it out of the cyclic garbage
        # collector's full passes, which otherwise stop every request for tens of ms.
        gc.collect()
        gc.freeze()
        run_until_signalled(server, sock)
    finally:
        sock.close()
        buffer.close()
    announce("accoil-buffer stopped")


def _url_host(host: str) -> str:
    """A host as a URL writes it: an IPv6 address in brackets."""
    return f"[{host}]" if ":" in host else host
