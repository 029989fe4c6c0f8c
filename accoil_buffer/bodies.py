"""Reading a request's body for the sidecar and its console: bounded in size and in time,
gunzipped, and refused with the status and code the client is answered with."""

from __future__ import annotations

import asyncio
import zlib

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse

from accoil_buffer.middleware import error

# A client has this long to send a request's body once its headers arrived: a connection
# that never finishes it is answered 503 instead of held forever (not 408, which several
# Segment libraries take as a refusal and drop the batch; every one retries a 503).
BODY_TIMEOUT_SECONDS = 30.0


class Refusal(Exception):
    """A request refused before what it carries reaches the buffer."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message

    def response(self) -> JSONResponse:
        return error(self.status, self.code, self.message)


async def read_body(request: Request, limit: int) -> bytes:
    """The body, gunzipped, refused past ``limit`` bytes before it is all in memory."""
    too_large = Refusal(400, "too_large", f"body is larger than {limit} bytes")
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks, size = [], 0
    try:
        async with asyncio.timeout(BODY_TIMEOUT_SECONDS):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise too_large
                chunks.append(chunk)
    except TimeoutError as exc:
        raise Refusal(
            503, "timeout", f"the body did not arrive within {BODY_TIMEOUT_SECONDS:.0f} s; retry"
        ) from exc
    except ClientDisconnect as exc:  # nobody hears the answer; it is counted as a 400, not a 500
        raise Refusal(400, "incomplete_body", "the client left before its body arrived") from exc
    raw = b"".join(chunks)
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding == "identity":
        return raw
    if encoding != "gzip":
        raise Refusal(
            400, "unsupported_encoding", f"Content-Encoding {encoding!r} is not supported (gzip is)"
        )
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        body = inflater.decompress(raw, limit + 1)
    except zlib.error as exc:
        raise Refusal(400, "invalid_gzip", f"body is not valid gzip: {exc}") from exc
    if len(body) > limit or inflater.unconsumed_tail:
        raise Refusal(400, "too_large", f"body is larger than {limit} bytes unzipped")
    if not inflater.eof:
        raise Refusal(400, "invalid_gzip", "gzip body is truncated")
    return body
