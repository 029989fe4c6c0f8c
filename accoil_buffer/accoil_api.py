"""Accoil's ingestion API over httpx: endpoint, auth, bodies, and what an answer means.

Knows nothing of the database. The transport can be injected (tests, proxies); the API key is
only ever placed in the Authorization header, never in a log line or an exception message.
"""

from __future__ import annotations

import asyncio
import base64
import enum
import hashlib
import json
import math
import re
import ssl
import threading
import uuid
from collections.abc import AsyncIterator, Coroutine, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport

from accoil_buffer.errors import ConfigError
from accoil_buffer.json_values import encode
from accoil_buffer.messages import Message, format_timestamp

DEFAULT_ENDPOINT = "https://in.accoil.com/segment"
STAGING_ENDPOINT = "https://instaging.accoil.com/segment"
_STAGING_PREFIX = re.compile(r"^stg_", re.IGNORECASE)
# Namespace of our deterministic messageIds: uuid5(namespace, what the message stands for).
MESSAGE_ID_NAMESPACE = uuid.UUID("5b6f1a0e-8c1d-4c8e-9d55-6163636f696c")
_RESPONSE_EXCERPT = 2000
MAX_RETRY_AFTER = 3600.0  # seconds: a longer Retry-After is taken as an hour
T = TypeVar("T")


class Verdict(enum.Enum):
    """What to do after one request."""

    DELIVERED = "delivered"  # 2xx
    RETRY = "retry"  # network error, timeout, 408, 429, 5xx: keep it, try again later
    PAUSE = "pause"  # 401, 403: stop delivering, keep everything
    DEAD_LETTER = "dead_letter"  # 400, 413, other 4xx: this message alone is refused


@dataclass(frozen=True)
class Answer:
    verdict: Verdict
    status: int | None = None
    body: str = ""
    retry_after: float | None = None
    error: str | None = None

    def describe(self) -> str:
        if self.status is None:
            return self.error or "no answer"
        return f"HTTP {self.status}" + (f": {self.body[:200]}" if self.body else "")


def classify(status: int) -> Verdict:
    """The retry rule in one place, as Segment's own libraries write it: only a 4xx other
    than 408 and 429 refuses a message for good (a 3xx, a redirect not followed, is retried
    like a 5xx: the message waits until the endpoint is put right)."""
    if 200 <= status < 300:
        return Verdict.DELIVERED
    if status in {401, 403}:
        return Verdict.PAUSE
    if 400 <= status < 500 and status not in {408, 429}:
        return Verdict.DEAD_LETTER
    return Verdict.RETRY


def endpoint_and_key(api_key: str, endpoint: str | None) -> tuple[str, str]:
    """The URL to POST to and the key to encode: a ``stg_`` key goes to staging, unprefixed."""
    staging = bool(_STAGING_PREFIX.match(api_key))
    key = _STAGING_PREFIX.sub("", api_key, count=1)
    if not key:
        raise ConfigError("api_key is empty once its stg_ prefix is removed")
    return endpoint or (STAGING_ENDPOINT if staging else DEFAULT_ENDPOINT), key


def authorization(key: str) -> str:
    """Basic auth with the key as user and an empty password."""
    return "Basic " + base64.b64encode(f"{key}:".encode()).decode("ascii")


def message_id(*parts: object) -> str:
    """A deterministic messageId for what a message stands for, so a re-send has the same id."""
    return str(uuid.uuid5(MESSAGE_ID_NAMESPACE, "\x1f".join(str(p) for p in parts)))


def identify_body(
    user_id: str, traits: Mapping[str, Any], timestamp: datetime, version: int
) -> dict[str, Any]:
    return {
        "type": "identify",
        "userId": user_id,
        "traits": dict(traits),
        "timestamp": format_timestamp(timestamp),
        "messageId": message_id("identify", user_id, version),
    }


def group_body(
    group_id: str,
    traits: Mapping[str, Any],
    timestamp: datetime,
    *,
    user_id: str | None = None,
    version: int | None = None,
) -> dict[str, Any]:
    """An account's traits (``version`` set) or a membership (``user_id`` set)."""
    body: dict[str, Any] = {"type": "group", "groupId": group_id}
    if user_id is not None:
        body["userId"] = user_id
    body["traits"] = dict(traits)
    body["timestamp"] = format_timestamp(timestamp)
    identity = ("membership", group_id, user_id) if user_id is not None else ("group", group_id)
    body["messageId"] = message_id(*identity, *(() if version is None else (version,)))
    return body


def event_body(
    kind: str, user_id: str, name: str, timestamp: datetime, identity: tuple[object, ...]
) -> dict[str, Any]:
    """One occurrence of a track, page or screen: no properties (Accoil keeps none)."""
    body: dict[str, Any] = {"type": kind}
    if kind == "track":
        body["event"] = name
    body["userId"] = user_id
    if kind != "track" and name:
        body["name"] = name
    body["timestamp"] = format_timestamp(timestamp)
    body["messageId"] = message_id(*identity)
    return body


def action_body(action: Message) -> dict[str, Any] | None:
    """The body one action of one message amounts to (``accoil-buffer mappings test``): a post
    as it is forwarded; otherwise the body delivery sends for it on its own, before its traits
    are merged with earlier ones, without the messageId that delivery derives. None for an
    action without a userId: it is sent once a link names its user."""
    if action.type == "post":
        return dict(action.payload)
    if action.type == "group":
        body = group_body(
            action.group_id or "", action.traits or {}, action.timestamp, user_id=action.user_id
        )
    elif action.user_id is None:
        return None
    elif action.type == "identify":
        body = identify_body(action.user_id, action.traits or {}, action.timestamp, version=0)
    else:
        body = event_body(action.type, action.user_id, action.name, action.timestamp, ())
    del body["messageId"]
    return body


class AccoilClient:
    """Accoil's endpoint and key, and sessions that send one message per request.

    A delivery pass opens one ``session()`` on its own event loop and sends many messages at
    once through it; ``send()`` sends one message on its own (``check``, dead-letter replay).
    Requests are ``httpx.Request`` objects handed to an httpx transport: by default aiohttp's
    connections (httpx-aiohttp), as httpx's own pool costs more CPU per request the more
    connections it holds; tests and proxies may inject any ``httpx.AsyncBaseTransport``.
    """

    def __init__(
        self,
        api_key: str,
        endpoint: str | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 10.0,
        max_connections: int = 64,
    ) -> None:
        self.url, key = endpoint_and_key(api_key, endpoint)
        self.fingerprint = key_fingerprint(key)
        self._transport = transport
        self._timeout = timeout
        self._max_connections = max_connections
        token = authorization(key)
        # As Accoil might echo them (a proxy's error page with the request's headers, say), as
        # they are or escaped in JSON (PHP's writes "/" as "\/", which base64 holds).
        plain = (token, token.removeprefix("Basic "), api_key, key)
        self._secrets = tuple(
            dict.fromkeys(
                form
                for secret in plain
                for form in (secret, json.dumps(secret)[1:-1], secret.replace("/", "\\/"))
            )
        )
        self._headers = [
            (b"Authorization", token.encode()),
            (b"User-Agent", b"accoil-buffer"),
            (b"Content-Type", b"application/json"),
        ]
        self._tls: ssl.SSLContext | None = None  # made once: loading the CAs is slow

    @asynccontextmanager
    async def session(self) -> AsyncIterator[Session]:
        """Connections for one delivery pass, closed when it ends (an injected transport
        belongs to whoever injected it, and stays open)."""
        if self._transport is not None:
            yield Session(self._transport, self.url, self._headers, self._timeout, self._secrets)
            return
        limits = httpx.Limits(max_connections=self._max_connections)
        async with AiohttpTransport(verify=self._verify(), limits=limits) as transport:
            yield Session(transport, self.url, self._headers, self._timeout, self._secrets)

    def _verify(self) -> ssl.SSLContext:
        """Certificates are verified, against the CAs httpx trusts."""
        if self._tls is None:
            self._tls = httpx.create_ssl_context()
        return self._tls

    def send(self, body: Mapping[str, Any]) -> Answer:
        """Send one message and wait for Accoil's answer."""

        async def once() -> Answer:
            async with self.session() as session:
                return await session.send(body)

        return run_coroutine(once())


class Session:
    """Sends messages concurrently through one transport. Requests go to the transport
    directly: ``httpx.AsyncClient``'s cookies, redirects and URL merging are work that a POST
    to one fixed URL never needs, on the path of every message."""

    def __init__(
        self,
        transport: httpx.AsyncBaseTransport,
        url: str,
        headers: list[tuple[bytes, bytes]],
        timeout: float,
        secrets: tuple[str, ...],
    ) -> None:
        self._transport = transport
        self._secrets = secrets
        self._url = httpx.URL(url)
        self._headers = headers
        self._timeout = timeout
        self._extensions = {"timeout": dict.fromkeys(("connect", "read", "write", "pool"), timeout)}

    async def send(self, body: Mapping[str, Any]) -> Answer:
        request = httpx.Request(
            "POST",
            self._url,
            headers=self._headers,
            content=encode(body),
            extensions=self._extensions,
        )
        try:
            # The transport's timeouts bound each wait (a read, say), not the whole request:
            # an answer trickling in a byte at a time would hold the pass for ever.
            async with asyncio.timeout(self._timeout):
                response = await self._transport.handle_async_request(request)
                try:
                    await response.aread()
                finally:
                    await response.aclose()
        except (httpx.TransportError, aiohttp.ClientError, TimeoutError) as exc:
            return Answer(Verdict.RETRY, error=_network_failure(exc))
        return Answer(
            classify(response.status_code),
            status=response.status_code,
            body=self._redacted(response.text)[:_RESPONSE_EXCERPT],
            retry_after=retry_after(response.headers.get("Retry-After")),
        )

    def _redacted(self, text: str) -> str:
        """An answer as it may be logged, stored and shown: never with the key in it."""
        for secret in self._secrets:
            text = text.replace(secret, "[api key]")
        return text


def _network_failure(exc: Exception) -> str:
    """A request's failure in words, from the aiohttp error behind it if any: httpx-aiohttp
    turns every aiohttp connection error, a refused connection too, into ConnectTimeout."""
    cause = exc.__cause__ if isinstance(exc.__cause__, aiohttp.ClientError) else exc
    if isinstance(cause, httpx.TimeoutException | TimeoutError):
        return f"timed out ({type(exc).__name__})"
    if isinstance(cause, aiohttp.ClientConnectorError) and isinstance(
        cause.os_error, ConnectionRefusedError
    ):
        return "connection refused"
    return f"network error ({type(cause).__name__}: {cause})"


def run_coroutine(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` on an event loop of its own, in a thread of its own: the caller may
    be inside an application's running event loop, where ``asyncio.run`` is refused."""
    result: list[T] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            result.append(asyncio.run(coroutine))
        except BaseException as exc:  # handed to the caller's thread below
            failure.append(exc)

    thread = threading.Thread(target=run, name="accoil-buffer-send")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return result[0]


def key_fingerprint(key: str) -> str:
    """A short hash that tells keys apart in status and in the database, never the key."""
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), clamped to
    [0, MAX_RETRY_AFTER]; None when it says nothing usable (absent, NaN, garbage)."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            moment = parsedate_to_datetime(value)
            seconds = (moment - datetime.now(moment.tzinfo)).total_seconds()
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    if math.isnan(seconds):
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)
