"""JSON values: what a message may hold, and its encoding and decoding.

Separate from the message rules (``messages``) because the store, the sidecar and the Accoil
client encode and decode JSON too, with the same limits. msgspec does the work in C and keeps
integers of any size exact; the standard library reads what msgspec refuses, so that what is
accepted and every error message stay the same.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Iterable, Mapping
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import msgspec

from accoil_buffer.errors import InvalidMessage

JSON = Any
MAX_DEPTH = 32
_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder()
# How JSON text holds a NUL, which no database stores: text with it goes through clean.
_NUL_ESCAPE = b"\\u0000"


def encode(value: JSON) -> bytes:
    """``value`` (already cleaned) as compact UTF-8 JSON, non-ASCII characters as they are."""
    return _ENCODER.encode(value)


def compact_json(value: JSON) -> str:
    """``value`` as compact JSON text, non-ASCII characters kept as they are."""
    return _ENCODER.encode(value).decode()


class Plain(dict[str, Any]):
    """A JSON object whose values are all storable as they are, since msgspec decoded them
    from text without a NUL escape: ``clean`` would only copy it. Its nesting is unchecked."""

    __slots__ = ()


def decode(body: bytes) -> tuple[JSON, bool]:
    """A JSON document, and whether it is plain (see ``Plain``); ``ValueError`` names what is
    wrong with it. An integer past Python's digit limit becomes infinity, so that it is
    refused as its own message's out-of-range number instead of failing the batch around it."""
    try:
        return _DECODER.decode(body), _NUL_ESCAPE not in body
    except msgspec.DecodeError:
        pass  # the standard library reads other encodings, NaN and lone surrogates, or says why
    try:
        return json.loads(body), False
    except ValueError as exc:
        if "integer string conversion" not in str(exc):
            raise
    return json.loads(body, parse_int=_bounded_int), False


def plain_copy(value: Mapping[Any, Any]) -> tuple[dict[str, Any], bytes] | None:
    """A copy of ``value`` made in C, by encoding and decoding it, and that encoding; None
    unless the copy equals ``value``, that is, unless it held only JSON's own types and no
    NUL, lone surrogate or non-finite number. Then ``clean`` would return the same, walking
    it in Python; otherwise ``clean`` converts it or says what is wrong. Its nesting is
    unchecked (``check_depth``)."""
    try:
        encoded = _ENCODER.encode(value)
        if _NUL_ESCAPE in encoded:
            return None
        copy = _DECODER.decode(encoded)
        return (copy, encoded) if copy == value else None
    except (TypeError, ValueError, RecursionError, msgspec.DecodeError):
        return None  # a type msgspec cannot encode, a lone surrogate, or nesting past C's stack


def clean(value: object, path: tuple[str, ...], depth: int = 0) -> Any:
    """Return a JSON-ready copy of ``value`` (datetimes, Decimals, UUIDs converted, as Segment's
    libraries do), rejecting what no database can store: NUL characters, lone surrogates,
    NaN/Infinity, unknown types and absurd nesting. Exact types are tested first: this runs
    for every value of every message."""
    kind = type(value)
    if kind is str:
        _check_text(value, path)  # type: ignore[arg-type]
        return value
    if value is None or kind is int or kind is bool:
        return value
    mapping = kind is dict or isinstance(value, Mapping)
    sequence = not mapping and (kind is list or isinstance(value, tuple | set | frozenset))
    if depth > MAX_DEPTH and (mapping or sequence):  # containers only, as check_nesting counts
        raise InvalidMessage(dotted(path), f"is nested more than {MAX_DEPTH} levels deep")
    if mapping:
        result: dict[str, Any] = {}
        item: object
        for raw_key, item in value.items():  # type: ignore[attr-defined]
            if type(raw_key) is str:
                key = raw_key
            elif isinstance(raw_key, str | int | float) and not isinstance(raw_key, bool):
                key = str(raw_key)
            else:
                raise InvalidMessage(dotted(path), f"has a key of type {type(raw_key).__name__}")
            _check_text(key, path, " key")
            result[key] = clean(item, (*path, key), depth + 1)
        return result
    if sequence:
        elements: Iterable[object] = value  # type: ignore[assignment]
        return [clean(e, (*path, f"[{i}]"), depth + 1) for i, e in enumerate(elements)]
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidMessage(dotted(path), f"{value!r} is not a JSON number (too large?)")
        return value
    # A subclass (an IntEnum or a StrEnum, say) is stored as its base type's value.
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, str):
        return clean(str.__str__(value), path, depth)
    if isinstance(value, Decimal):
        return clean(float(value), path, depth)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    raise InvalidMessage(dotted(path), f"has a value of type {kind.__name__} that is not JSON")


def check_depth(value: dict[str, Any], encoded: bytes, path: tuple[str, ...]) -> None:
    """``check_nesting`` for a plain object encoded as ``encoded``, walked only when it holds
    enough brackets to nest too deep: a message rarely has more than a few."""
    if encoded.count(b"{") + encoded.count(b"[") > MAX_DEPTH:
        check_nesting(value, path)


def check_nesting(value: dict[str, Any] | list[Any], path: tuple[str, ...], depth: int = 0) -> None:
    """Refuse what ``clean`` refuses in a plain object or array: nesting deeper than
    ``MAX_DEPTH``. Only containers are walked into; scalars need no check."""
    if depth > MAX_DEPTH:
        raise InvalidMessage(dotted(path), f"is nested more than {MAX_DEPTH} levels deep")
    if isinstance(value, list):
        for i, element in enumerate(value):
            if type(element) is dict or type(element) is list:
                check_nesting(element, (*path, f"[{i}]"), depth + 1)
        return
    for key, item in value.items():
        if type(item) is dict or type(item) is list:
            check_nesting(item, (*path, key), depth + 1)


def dotted(path: tuple[str, ...]) -> str:
    """A path as the error messages name it: ``message.properties.items[2]``."""
    return ".".join(path).replace(".[", "[")


def is_number(value: object) -> bool:
    """A finite JSON number (not a boolean)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True  # math.isfinite would overflow on an int past a double's range
    return isinstance(value, float) and math.isfinite(value)


def json_type(value: object) -> str:
    """The JSON name of ``value``'s type, for error messages."""
    return _TYPE_NAMES.get(type(value), type(value).__name__)


_TYPE_NAMES = {
    dict: "an object",
    list: "an array",
    str: "a string",
    bool: "a boolean",
    int: "a number",
    float: "a number",
    type(None): "null",
}


def _check_text(text: str, path: tuple[str, ...], suffix: str = "") -> None:
    if "\x00" in text:
        raise InvalidMessage(dotted(path) + suffix, "contains a NUL character")
    if text.isascii():
        return  # no surrogate can hide in ASCII
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidMessage(
            dotted(path) + suffix, "contains invalid Unicode (a lone surrogate)"
        ) from exc


def _bounded_int(text: str) -> int | float:
    try:
        return int(text)
    except ValueError:
        return float("inf")
