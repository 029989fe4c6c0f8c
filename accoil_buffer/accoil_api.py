"""Accoil's ingestion API (SPEC 2) over httpx: endpoint, auth, bodies, and what an answer means.

Knows nothing of the database. The transport can be injected (tests, proxies); the API key is
only ever placed in the Authorization header, never in a log line or an exception message.
"""

from __future__ import annotations

import base64
import enum
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from accoil_buffer.errors import ConfigError
from accoil_buffer.messages import Message, format_timestamp

DEFAULT_ENDPOINT = "https://in.accoil.com/segment"
STAGING_ENDPOINT = "https://instaging.accoil.com/segment"
_STAGING_PREFIX = re.compile(r"^stg_", re.IGNORECASE)
# Namespace of our deterministic messageIds: uuid5(namespace, what the message stands for).
MESSAGE_ID_NAMESPACE = uuid.UUID("5b6f1a0e-8c1d-4c8e-9d55-6163636f696c")
_RESPONSE_EXCERPT = 2000


class Verdict(enum.Enum):
    """What to do after one request (SPEC 4.5)."""

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
    """The retry rule in one place, as Segment's own libraries write it."""
    if 200 <= status < 300:
        return Verdict.DELIVERED
    if status in {401, 403}:
        return Verdict.PAUSE
    if status in {408, 429} or status >= 500:
        return Verdict.RETRY
    return Verdict.DEAD_LETTER


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
    """Sends one message per request. Thread-safe: one connection pool shared by the senders."""

    def __init__(
        self,
        api_key: str,
        endpoint: str | None = None,
        *,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 10.0,
        max_connections: int = 8,
    ) -> None:
        self.url, key = endpoint_and_key(api_key, endpoint)
        self._client = httpx.Client(
            transport=transport,
            timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
            headers={"Authorization": authorization(key), "User-Agent": "accoil-buffer"},
            verify=True,
        )

    def send(self, body: Mapping[str, Any]) -> Answer:
        try:
            response = self._client.post(self.url, json=body)
        except httpx.TimeoutException as exc:
            return Answer(Verdict.RETRY, error=f"timed out ({type(exc).__name__})")
        except httpx.TransportError as exc:
            return Answer(Verdict.RETRY, error=f"network error ({type(exc).__name__}: {exc})")
        return Answer(
            classify(response.status_code),
            status=response.status_code,
            body=response.text[:_RESPONSE_EXCERPT],
            retry_after=_retry_after(response.headers.get("Retry-After")),
        )

    def close(self) -> None:
        self._client.close()


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (moment - datetime.now(moment.tzinfo)).total_seconds())
