"""What wraps every answer of the sidecar: refusing pages from origins not allowed, CORS for
those allowed, and counting answers by status; and the JSON error body every refusal uses."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from accoil_buffer.config import ServerConfig
from accoil_buffer.metrics import Metrics

CORS_MAX_AGE_SECONDS = 600  # how long a browser may keep a granted preflight
_BODY_HEADERS = frozenset({"content-length", "content-type"})


def error(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """The sidecar's error answer: ``{"code", "message"}``."""
    return JSONResponse({"code": code, "message": message}, status_code=status, headers=headers)


def wrap(
    app: ASGIApp,
    server: ServerConfig,
    metrics: Metrics,
    *,
    ahead: Callable[[ASGIApp], ASGIApp] = lambda app: app,
) -> ASGIApp:
    """``app`` behind the origin check and CORS, every answer counted; ``ahead`` answers its
    own paths before the origin check (the console checks origins itself)."""
    browsers = _CORS(
        app,
        allow_origins=list(server.cors_origins),
        allow_methods=["GET", "POST"],
        allow_headers=["*"],  # echoes what is asked: Authorization, X-Retry-Count, …
        allow_private_network=True,  # a public page calling a daemon on this machine
        max_age=CORS_MAX_AGE_SECONDS,
    )
    guarded = _RefuseForeignPages(browsers, frozenset(server.cors_origins), metrics)
    return _CountAnswers(ahead(guarded), metrics)


class _CORS(CORSMiddleware):
    """Starlette's CORS, answering a granted preflight 204 with no body, and a refused one in
    JSON."""

    def preflight_response(self, request_headers: Headers) -> Response:
        answer = super().preflight_response(request_headers)
        kept = {k: v for k, v in answer.headers.items() if k not in _BODY_HEADERS}
        if answer.status_code != 200:  # refused: why, in JSON as every error is
            why = bytes(answer.body).decode()
            return error(answer.status_code, "preflight_refused", why, headers=kept)
        return Response(status_code=204, headers=kept)


class _RefuseForeignPages:
    """Refuses, 403, every request whose ``Origin`` is not in ``[server] cors_origins``:
    whatever its content type and whether or not write keys are set, so no web page can
    write into a daemon on a person's machine (a beacon or a no-cors fetch needs no
    preflight). Requests without ``Origin`` (servers, curl) pass."""

    def __init__(self, app: ASGIApp, allowed: frozenset[str], metrics: Metrics) -> None:
        self._app, self._allowed, self._metrics = app, allowed, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and "*" not in self._allowed:
            origin = Headers(scope=scope).get("origin")
            if origin is not None and origin not in self._allowed:
                self._metrics.rejected.labels("forbidden_origin").inc()
                refusal = error(
                    403,
                    "forbidden_origin",
                    f"web pages from {origin[:100]} may not send here: add the origin to "
                    "[server] cors_origins (ACCOIL_BUFFER_SERVER_CORS_ORIGINS)",
                )
                await refusal(scope, receive, send)
                return
        await self._app(scope, receive, send)


class _CountAnswers:
    """Counts every answer by its status, 5xx included, around the whole application."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self._app, self._metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        answered = False

        async def counted(message: Message) -> None:
            nonlocal answered
            if message["type"] == "http.response.start":
                answered = True
                self._metrics.responses.labels(str(message["status"])).inc()
            await send(message)

        try:
            await self._app(scope, receive, counted)
        except Exception:
            if not answered:  # the server answers 500 for it
                self._metrics.responses.labels("500").inc()
            raise
