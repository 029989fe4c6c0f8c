"""A body msgspec decoded without a NUL escape skips ``clean``: its messages must normalise
exactly as the same text read by the standard library does, rejections included. Likewise a
call's message copied in C (``plain_copy``) must be exactly what ``clean`` makes of it."""

from __future__ import annotations

import json
import uuid
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import Decimal
from enum import IntEnum, StrEnum
from typing import Any

import msgspec
from hypothesis import event, given, settings
from hypothesis import strategies as st

from accoil_buffer.errors import InvalidMessage
from accoil_buffer.json_values import Plain, check_depth, clean, decode, encode, plain_copy
from accoil_buffer.messages import Message, normalise
from tests.integration.test_server_fuzz import deep, json_values, message, odd_text, scalars

objects = st.dictionaries(st.text(max_size=8) | odd_text, json_values, max_size=5) | deep
# Messages that mostly pass, so that what they become is compared too, not only refusals.
likely_valid = st.fixed_dictionaries(
    {
        "type": st.sampled_from(["identify", "group", "track", "page", "screen", "alias"]),
        "userId": st.text(min_size=1, max_size=12) | st.integers(0, 2**70),
        "previousId": st.text(min_size=1, max_size=12),
        "groupId": st.text(min_size=1, max_size=12),
        "event": st.text(min_size=1, max_size=30) | odd_text,
    },
    optional={
        "name": st.text(max_size=30),
        "messageId": st.text(min_size=1, max_size=36),
        "properties": objects,
        "traits": objects,
        "context": objects,
        "integrations": st.just({"Accoil Analytics": False}) | objects,
        "timestamp": st.sampled_from(["2026-11-28T10:00:00Z", "2026-11-28T10:00:00.123+02:00"]),
        "sentAt": st.just("2026-11-28T10:00:05Z"),
    },
)

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def outcome(raw: object) -> Message | str:
    """The message made of ``raw``, its generated messageId blanked, or the error."""
    try:
        made = normalise(raw, received_at=NOW)
    except InvalidMessage as exc:
        return str(exc)
    if not made.generated_id:
        return made
    return msgspec.structs.replace(made, message_id="", payload={**made.payload, "messageId": ""})


@settings(max_examples=400, deadline=None)
@given(raw=message | likely_valid, ascii_only=st.booleans())
def test_a_plain_message_normalises_as_the_standard_library_reads_it(
    raw: dict[str, Any], ascii_only: bool
) -> None:
    text = json.dumps(raw, ensure_ascii=ascii_only)
    doc, plain = decode(text.encode("utf-8", "surrogatepass"))
    expected = outcome(json.loads(text))
    event(f"plain: {plain}, accepted: {not isinstance(expected, str)}")
    if plain:
        assert outcome(Plain(doc)) == expected
    else:  # a NUL, a lone surrogate, or a number past a double: read as before
        assert outcome(doc) == expected


def test_what_makes_a_body_plain() -> None:
    assert decode(b'{"type": "track", "userId": "u", "event": "E"}')[1]
    assert not decode(b'{"type": "track", "userId": "u\\u0000", "event": "E"}')[1]
    assert not decode(b'{"userId": "\\ud800"}')[1]  # msgspec refuses it; json reads it
    assert not decode(b'{"n": NaN}')[1]


def test_a_plain_message_nested_too_deep_is_refused_by_its_path() -> None:
    deep: Any = "bottom"
    for _ in range(40):
        deep = {"k": deep}
    raw = {"type": "track", "userId": "u", "event": "E", "properties": deep}
    expected = outcome(raw)
    assert isinstance(expected, str)
    assert "nested more than 32 levels deep" in expected
    assert outcome(Plain(raw)) == expected


class _Level(IntEnum):
    HIGH = 3


# What an app may hand a call: JSON's types, and the others clean converts or refuses.
python_scalars = (
    scalars
    | st.sampled_from(
        [
            float("nan"),
            -float("inf"),
            Decimal("1.5"),
            datetime(2026, 11, 28, 10, 0, tzinfo=UTC),
            date(2026, 11, 28),
            uuid.UUID(int=7),
            b"bytes",
            _Level.HIGH,
            object(),
        ]
    )
    | odd_text
)
python_values = st.recursive(
    python_scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.lists(inner, max_size=3).map(tuple)
        | st.dictionaries(st.text(max_size=8) | odd_text | st.integers(0, 9), inner, max_size=4)
        | st.dictionaries(st.text(max_size=4), inner, max_size=2).map(OrderedDict)
    ),
    max_leaves=12,
)


@settings(max_examples=500, deadline=None)
@given(value=st.dictionaries(st.text(max_size=8) | odd_text, python_values, max_size=5) | deep)
def test_a_copy_made_in_c_is_what_clean_makes(value: dict[str, Any]) -> None:
    made = plain_copy(value)
    event(f"copied in C: {made is not None}")
    expected = _cleaned(lambda: clean(value, ("message",)))
    if made is None:
        return
    copy, encoded = made
    if isinstance(expected, str):  # plain JSON nested too deep: check_depth says so as clean does
        assert _cleaned(lambda: check_depth(copy, encoded, ("message",))) == expected
        return
    assert copy == expected
    assert encoded == encode(expected)


def _cleaned(work: Callable[[], object]) -> object:
    """What ``work`` returns, or the error it raises, as text."""
    try:
        return work()
    except InvalidMessage as exc:
        return str(exc)


def test_what_is_copied_in_c() -> None:
    assert plain_copy({"userId": "u", "properties": {"n": 2**70, "x": [1.5, None, True]}})
    assert plain_copy({"at": datetime(2026, 11, 28, tzinfo=UTC)}) is None  # clean converts it
    assert plain_copy({"userId": "u\x00"}) is None  # clean refuses it, naming it
    assert plain_copy({"userId": "\ud800"}) is None
    assert plain_copy({"n": float("nan")}) is None
    assert plain_copy({1: "one"}) is None


class _Colour(StrEnum):
    RED = "red"


def test_an_enum_is_stored_as_its_value() -> None:
    """Both ways: copied in C, and walked by clean (a StrEnum beside a datetime)."""
    at = datetime(2026, 11, 28, tzinfo=UTC)
    assert plain_copy({"level": _Level.HIGH}) == ({"level": 3}, b'{"level":3}')
    cleaned = clean({"colour": _Colour.RED, "level": _Level.HIGH, "at": at}, ("message",))
    assert cleaned == {"colour": "red", "level": 3, "at": at.isoformat()}
    assert type(cleaned["colour"]) is str
    assert type(cleaned["level"]) is int
