"""A body msgspec decoded without a NUL escape skips ``clean``: its messages must normalise
exactly as the same text read by the standard library does, rejections included."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime
from typing import Any

from hypothesis import event, given, settings
from hypothesis import strategies as st

from accoil_buffer.errors import InvalidMessage
from accoil_buffer.json_values import Plain, decode
from accoil_buffer.messages import Message, normalise
from tests.integration.test_server_fuzz import deep, json_values, message, odd_text

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
    return dataclasses.replace(made, message_id="", payload={**made.payload, "messageId": ""})


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
