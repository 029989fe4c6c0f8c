"""The console's routes under ``/console`` on the sidecar: the page and its assets, the JSON it
polls, and the dead-letter replay.

Every request but an asset's is checked as ``/v1/status`` is (a write key as the Basic-auth
user when write keys are set) and refused when it comes from another web page: its ``Origin``
must be the console's own or one of ``[server] cors_origins``. Without write keys the daemon
listens on loopback, and the console also refuses a ``Host`` that is not an address, a
``localhost`` name or a configured host, so that a page cannot reach it by DNS rebinding.
"""

from __future__ import annotations

import json
import mimetypes
from collections.abc import Callable, Collection
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from accoil_buffer.bodies import Refusal, read_body
from accoil_buffer.buffer import Buffer
from accoil_buffer.config import ServerConfig
from accoil_buffer.console.explain import describe
from accoil_buffer.console.live import Ring
from accoil_buffer.console.overview import overview
from accoil_buffer.errors import ConfigError, DeliveryFailed, StorageError
from accoil_buffer.listener import TrustedHosts
from accoil_buffer.messages import format_timestamp
from accoil_buffer.middleware import error
from accoil_buffer.store.deliveries import MAX_ROW_ID

PREFIX = "/console"
ASSETS = Path(__file__).with_name("assets")
HISTORY_DAYS = 30
DEAD_LETTERS_SHOWN = 100
MAX_REPLAY_BODY = 64 * 1024
_SEQ_DIGITS = 18  # a seq counts messages seen since the daemon started: it fits
_PAGE_HEADERS = {
    # Only the console's own files run in it, and no other page may frame it (a click on
    # Replay must be the operator's).
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; "
        "form-action 'none'"
    ),
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",  # "no-referrer" would make its own POSTs Origin: null
    "Cache-Control": "no-store",
}
_CHALLENGE = {"WWW-Authenticate": 'Basic realm="accoil-buffer", charset="UTF-8"'}
Authorised = Callable[[Request], bool]


class Console:
    """The console of one sidecar; ``mount`` puts it in front of the sidecar's application, and
    the sidecar records what it takes in ``ring``."""

    def __init__(self, buffer: Buffer, server: ServerConfig, authorised: Authorised) -> None:
        self.ring = Ring()
        self._buffer = buffer
        self._authorised = authorised
        public = urlsplit(server.public_url)
        self._origins = {o for o in server.cors_origins if o != "*"}
        if public.scheme and public.netloc:
            self._origins.add(f"{public.scheme}://{public.netloc}")
        self._hosts = TrustedHosts(server)
        self._assets = {
            path.name: (path.read_bytes(), mimetypes.guess_type(path.name)[0] or "text/plain")
            for path in ASSETS.iterdir()
            if path.is_file()
        }
        self._app = Starlette(
            routes=[
                Route(PREFIX, self.page, methods=["GET"]),
                Route(PREFIX + "/", self.page, methods=["GET"]),
                Route(PREFIX + "/assets/{name}", self.asset, methods=["GET"]),
                Route(PREFIX + "/api/state", self.state, methods=["GET"]),
                Route(PREFIX + "/api/history", self.history, methods=["GET"]),
                Route(PREFIX + "/api/events", self.events, methods=["GET"]),
                Route(PREFIX + "/api/dead-letters/replay", self.replay, methods=["POST"]),
            ],
            exception_handlers={HTTPException: _http_error},
        )

    def mount(self, app: ASGIApp) -> ASGIApp:
        """``app`` with the console's paths answered by the console, ahead of ``app``'s own
        refusal of foreign pages (the console checks origins itself)."""
        console = self._app

        async def dispatch(scope: Scope, receive: Receive, send: Send) -> None:
            path = scope.get("path", "")
            if scope["type"] == "http" and (path == PREFIX or path.startswith(PREFIX + "/")):
                await console(scope, receive, send)
            else:
                await app(scope, receive, send)

        return dispatch

    # --- Routes ----------------------------------------------------------------------------

    async def page(self, request: Request) -> Response:
        if refusal := self._refusal(request):
            return refusal
        self.ring.watch()  # record from now on, so the first poll already finds something
        body, media_type = self._assets["index.html"]
        return Response(body, media_type=media_type, headers=_PAGE_HEADERS)

    async def asset(self, request: Request) -> Response:
        """The page's script and style: the same for everyone, with nothing of the buffer."""
        found = self._assets.get(request.path_params["name"])
        if found is None:
            return error(404, "not_found", f"no console asset {request.url.path}")
        headers = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
        return Response(found[0], media_type=found[1], headers=headers)

    async def state(self, request: Request) -> Response:
        return await self._read(request, self._state)

    async def history(self, request: Request) -> Response:
        return await self._read(request, lambda: self._buffer.history(HISTORY_DAYS))

    async def events(self, request: Request) -> Response:
        if refusal := self._refusal(request):
            return refusal
        after = request.query_params.get("after", "0")
        if not (after.isascii() and after.isdigit() and len(after) <= _SEQ_DIGITS):
            return error(400, "invalid_after", "after must be a whole number (a seq)")
        self.ring.watch()
        seen = self.ring.after(int(after))
        config = self._buffer.config
        margin = timedelta(seconds=config.future_timestamp_margin_seconds)

        def explain() -> Response:  # encoded here too: hundreds of entries, off the event loop
            entries = [describe(s, config.mappings, margin) for s in seen]
            return JSONResponse({"size": self.ring.size, "entries": entries})

        return await run_in_threadpool(explain)

    async def replay(self, request: Request) -> Response:
        """Send dead letters again: ``{"ids": [...]}``, or all of them without ids."""
        if refusal := self._refusal(request):
            return refusal
        try:
            body = await read_body(request, MAX_REPLAY_BODY)
        except Refusal as bad:
            return bad.response()
        try:
            ids = _replay_ids(json.loads(body or b"{}", parse_int=_whole_number))
        except (ValueError, RecursionError) as exc:
            return error(400, "invalid_replay", str(exc))
        try:
            accepted, refused = await run_in_threadpool(self._buffer.replay_dead_letters, ids)
        except ConfigError as exc:
            return error(409, "delivery_off", str(exc))
        except DeliveryFailed as exc:  # Accoil's trouble, not the page's: it may try again
            return error(503, "accoil_unavailable", str(exc))
        except StorageError as exc:
            return error(503, "unavailable", str(exc))
        return JSONResponse({"accepted": accepted, "refused": refused})

    # --- Reading and checking --------------------------------------------------------------

    def _state(self) -> dict[str, Any]:
        health = self._buffer.health()
        status = self._buffer.status_report()
        # The first few only: a page polling every few seconds must not load a long history.
        letters = self._buffer.dead_letters(DEAD_LETTERS_SHOWN)
        return {
            "overview": overview(health, status, datetime.now(UTC)),
            "replay_enabled": status.delivery.enabled,
            "dead_letters_total": status.delivery.dead_letters,
            "dead_letters": [_letter(letter) for letter in letters],
        }

    async def _read(self, request: Request, read: Callable[[], Any]) -> Response:
        if refusal := self._refusal(request):
            return refusal
        try:
            return JSONResponse(await run_in_threadpool(read))
        except StorageError as exc:
            return error(503, "unavailable", str(exc))

    def _refusal(self, request: Request) -> Response | None:
        host = request.headers.get("host", "")
        if refusal := self._hosts.refusal(host, "the console answers"):
            return refusal
        origin = request.headers.get("origin")
        if origin is not None and origin not in self._origins | {
            f"http://{host}",
            f"https://{host}",
        }:
            return error(
                403,
                "forbidden_origin",
                f"web pages from {origin[:100]} may not use the console; its own page may, and "
                "those of [server] cors_origins",
            )
        if not self._authorised(request):
            return error(401, "unauthorized", "a write key is required (Basic auth)", _CHALLENGE)
        return None


def _replay_ids(document: object) -> Collection[int] | None:
    if not isinstance(document, dict) or set(document) - {"ids"}:
        raise ValueError('the body must be {"ids": [dead letter ids]}, or {} for all of them')
    if "ids" not in document:
        return None
    ids = document["ids"]
    if not isinstance(ids, list) or not all(type(i) is int for i in ids):
        raise ValueError("ids must be a list of whole numbers")
    return set(ids)


def _whole_number(digits: str) -> int:
    # Python's own error for thousands of digits names an interpreter setting, not the id.
    if len(digits.lstrip("-")) > len(str(MAX_ROW_ID)):
        raise ValueError(f"{digits[:20]}... is longer than any dead letter id")
    return int(digits)


def _letter(letter: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": letter["id"],
        "message_id": letter["message_id"],
        "type": letter["type"],
        "status": letter["status"],
        "response": letter["response"],
        "created_at": format_timestamp(letter["created_at"]),
        "payload": letter["payload"],
    }


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own answers (no such path, a method a path does not take) as JSON."""
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "bad_request")
    return error(
        exc.status_code, code, f"{request.method} {request.url.path}: {exc.detail}", exc.headers
    )
