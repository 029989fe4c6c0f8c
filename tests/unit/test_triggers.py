"""The trigger language: what matches, and errors that point at the mistake."""

from __future__ import annotations

from typing import Any

import pytest

from accoil_buffer.errors import TriggerError
from accoil_buffer.triggers import MAX_NESTING, canonical, compile_trigger

MESSAGE: dict[str, Any] = {
    "type": "track",
    "event": "Report Viewed",
    "userId": "u1",
    "properties": {
        "plan": "pro",
        "seats": 12,
        "ratio": 0.5,
        "tags": ["beta", "admin"],
        "empty": None,
        "odd key": "yes",
        "items": [{"sku": "A-1"}],
    },
    "traits": {"email": "ada@example.com"},
}


@pytest.mark.parametrize(
    ("trigger", "expected"),
    [
        ('type = "track"', True),
        ('type = "identify"', False),
        ('event = "Report Viewed"', True),
        ('event != "Heartbeat"', True),
        ('event != "Report Viewed"', False),
        ('properties.plan = "pro"', True),
        ("properties.seats = 12", True),
        ("properties.seats = 12.0", True),
        ('properties.seats = "12"', False),  # typed: a number is not a string
        ("properties.seats > 10", True),
        ("properties.seats >= 12", True),
        ("properties.seats < 12", False),
        ("properties.ratio <= 0.5", True),
        ("properties.plan > 1", False),  # ordering compares numbers only
        ("traits.email exists", True),
        ("traits.phone exists", False),
        ("properties.empty exists", False),  # null is not there
        ("properties.empty = null", True),
        ('properties.missing = "x"', False),  # a missing field equals nothing…
        ('properties.missing != "x"', True),  # …and differs from everything
        ('event contains "Report"', True),
        ('event contains "report"', False),  # case-sensitive, like Segment
        ('properties.tags contains "beta"', True),
        ('properties.tags contains "owner"', False),
        ('event starts_with "Report"', True),
        ('event ends_with "Viewed"', True),
        ('event ends_with "Report"', False),
        ('properties.`odd key` = "yes"', True),
        ('properties.items.0.sku = "A-1"', True),
        ('type = "track" and event = "Report Viewed"', True),
        ('type = "track" and event = "Other"', False),
        ('type = "page" or event = "Report Viewed"', True),
        ('not event = "Heartbeat"', True),
        ('not (type = "track" and properties.plan = "pro")', False),
        ('(type = "page" or type = "track") and not properties.plan = "free"', True),
        # and binds tighter than or
        ('type = "page" and event = "x" or traits.email exists', True),
        ('type = "page" and (event = "x" or traits.email exists)', False),
        ('TYPE = "track"', False),  # field names are case-sensitive…
        ('type = "track" AND NOT event = "x"', True),  # …keywords are not
        ('event = "Report \\"Viewed\\""', False),
        ('properties.plan = "pro" and properties.seats exists', True),
    ],
)
def test_what_matches(trigger: str, expected: bool) -> None:
    assert compile_trigger(trigger)(MESSAGE) is expected


@pytest.mark.parametrize(
    ("trigger", "position", "words"),
    [
        ("", 1, "the trigger is empty"),
        ("event = ", 9, "expected a value after '='"),
        ('event = "x" and', 16, "expected a field"),
        ('(type = "x"', 12, "expected ')'"),
        ('type == "x"', 6, "compare with '='"),
        ("properties.plan", 16, "expected an operator"),
        ('type = "a" or or', 15, "expected a field"),
        ('"x" = type', 1, "expected a field"),
        ('type = "track" )', 16, "expected 'and', 'or' or the end"),
        ('type = "track" event = "x"', 16, "expected 'and', 'or' or the end"),
        ("ty#pe", 3, "unexpected character '#'"),
        ('event = "unterminated', 9, "unexpected character '\"'"),
        ("event = Report", 9, "expected a value"),
        ("properties. = 1", 13, "expected a field"),
        ('event like "x"', 7, "expected an operator"),
        ("event = 'x'", 9, "text goes in double quotes"),
        ("and = 1", 1, "expected a field"),
        ('event = "Report\\x"', 16, "not valid JSON: Invalid \\escape"),  # under the \\
        ("properties.seats = 01", 21, "not valid JSON: Extra data"),
        ("properties.seats = " + "9" * 5000, 20, "the number has too many digits"),
        ("properties.²", 12, "unexpected character '²'"),  # odd keys go in backquotes
    ],
)
def test_errors_point_at_the_position(trigger: str, position: int, words: str) -> None:
    with pytest.raises(TriggerError) as caught:
        compile_trigger(trigger, where='mapping "Reports": trigger')
    error = caught.value
    assert error.position + 1 == position
    assert words in error.problem
    message = str(error)
    assert message.startswith('mapping "Reports": trigger: ')
    assert f"at position {position}" in message
    # The caret sits under the offending character.
    lines = message.splitlines()
    assert lines[-2] == f"    {trigger}"
    assert lines[-1] == " " * (4 + position - 1) + "^"


def test_canonical_ignores_spacing_and_keyword_case() -> None:
    assert canonical('type="track"   AND  event  != "x"') == 'type = "track" and event != "x"'


def test_only_ascii_digits_of_a_sane_length_index_a_list() -> None:
    """``²`` is a digit to ``str.isdigit`` but not to ``int``: as an index it raised, per
    message, in the writer. A step that is not an index is a key, which a list lacks."""
    message = {"properties": {"items": ["a", "b"], "keys": {"²": "two"}}}
    for segment in ("`²`", "`٣`", "1" * 5000, "0" * 19 + "1", "`1`"):
        trigger = compile_trigger(f"properties.items.{segment} exists")
        assert trigger(message) is (segment == "`1`")
    assert compile_trigger('properties.keys.`²` = "two"')(message)
    assert compile_trigger('properties.items.00000000000000001 = "b"')(message)


@pytest.mark.parametrize("opening", ["not ", "("])
def test_nesting_past_the_limit_is_an_error_not_a_recursion_error(opening: str) -> None:
    def nested(depth: int) -> str:
        return opening * depth + 'type = "track"' + (")" * depth if opening == "(" else "")

    assert compile_trigger(nested(MAX_NESTING))(MESSAGE) is (MAX_NESTING % 2 == 0 or opening == "(")
    for depth in (MAX_NESTING + 1, 5000):
        with pytest.raises(TriggerError) as caught:
            compile_trigger(nested(depth), where="mapping 'Deep': trigger")
        assert caught.value.position == MAX_NESTING * len(opening)
        assert str(caught.value).startswith(
            f"mapping 'Deep': trigger: more than {MAX_NESTING} 'not's and parentheses are nested"
        )
