"""Every message rule, one by one, on the pure normalisation functions."""

from __future__ import annotations

import json
import os
import random
import time
import uuid
from collections.abc import Iterator, Mapping
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from accoil_buffer.errors import InvalidMessage
from accoil_buffer.messages import (
    Message,
    apply_batch,
    batch_shares,
    format_timestamp,
    is_deliverable,
    new_message_id,
    normalise,
    normalise_each,
)
from accoil_buffer.reasons import Reason
from tests.support.processes import fork

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def accept(**message: Any) -> Message:
    return normalise(message, received_at=NOW)


def reject(message: object) -> InvalidMessage:
    with pytest.raises(InvalidMessage) as info:
        normalise(message, received_at=NOW)
    return info.value


@pytest.mark.parametrize(
    ("message", "field", "words"),
    [
        ([1, 2], "message", "must be a JSON object"),
        ("track", "message", "must be a JSON object"),
        ({"userId": "u"}, "type", "is missing"),
        ({"type": "purchase", "userId": "u"}, "type", "must be one of"),
        ({"type": ["track"], "userId": "u"}, "type", "must be one of"),
        ({"type": "track", "event": "E"}, "userId", "is required"),
        ({"type": "track", "userId": "", "event": "E"}, "userId", "is required"),
        ({"type": "track", "userId": "u"}, "event", "is required for track"),
        ({"type": "track", "userId": "u", "event": ""}, "event", "is required for track"),
        ({"type": "track", "userId": "u", "event": 7}, "event", "must be a string"),
        ({"type": "group", "userId": "u"}, "groupId", "is required for group"),
        ({"type": "alias", "previousId": "a"}, "userId", "is required for alias"),
        ({"type": "alias", "userId": "u"}, "previousId", "is required for alias"),
        ({"type": "identify", "userId": True}, "userId", "must be a string or a number"),
        ({"type": "identify", "userId": {"id": 1}}, "userId", "must be a string or a number"),
        ({"type": "identify", "userId": "u" * 256}, "userId", "the limit is 255"),
        ({"type": "identify", "userId": "u", "messageId": "m" * 256}, "messageId", "limit is 255"),
        ({"type": "identify", "userId": "u", "traits": ["a"]}, "traits", "must be an object"),
        (
            {"type": "track", "userId": "u", "event": "E", "properties": "x"},
            "properties",
            "must be an object",
        ),
        (
            {"type": "track", "userId": "u", "event": "E", "context": 1},
            "context",
            "must be an object",
        ),
        (
            {"type": "track", "userId": "u", "event": "E", "integrations": [1]},
            "integrations",
            "must be an object",
        ),
        (
            {"type": "track", "userId": "u", "event": "E", "timestamp": "yesterday"},
            "timestamp",
            "is not an ISO 8601 timestamp",
        ),
        (
            {"type": "track", "userId": "u", "event": "E", "timestamp": True},
            "timestamp",
            "must be an ISO 8601 string or a Unix time",
        ),
        (
            {"type": "track", "userId": "u", "event": "E", "timestamp": 1e300},
            "timestamp",
            "out of range",
        ),
        (  # a moment UTC cannot hold: year 1 at +01:00 is still year 0 there
            {"type": "track", "userId": "u", "event": "E", "timestamp": "0001-01-01T00:00+01:00"},
            "timestamp",
            "out of the range of dates in UTC",
        ),
        (
            {"type": "track", "userId": "u", "event": "E", "sentAt": "9999-12-31T23:00-01:00"},
            "sentAt",
            "out of the range of dates in UTC",
        ),
        (
            {"type": "track", "userId": "u", "event": "E", "sentAt": "soon"},
            "sentAt",
            "is not an ISO 8601 timestamp",
        ),
        ({"type": "track", "userId": "u\x00", "event": "E"}, "message.userId", "NUL"),
        (
            {"type": "track", "userId": "u", "event": "E", "properties": {"k": "\ud800"}},
            "message.properties.k",
            "lone surrogate",
        ),
        (
            {"type": "track", "userId": "u", "event": "E", "properties": {"k": float("nan")}},
            "message.properties.k",
            "not a JSON number",
        ),
        (
            {"type": "track", "userId": "u", "event": "E", "properties": {"k": object()}},
            "message.properties.k",
            "not JSON",
        ),
    ],
)
def test_rejections_name_the_field(message: object, field: str, words: str) -> None:
    error = reject(message)
    assert error.field == field
    assert words in str(error)
    assert str(error).startswith(field)


def test_message_over_32_kb_is_rejected_and_just_under_is_accepted() -> None:
    base = {"type": "track", "userId": "u", "event": "E", "messageId": "m"}
    overhead = len(
        '{"type":"track","userId":"u","event":"E","messageId":"m","properties":{"p":""}}'
    )
    fits = {**base, "properties": {"p": "x" * (32 * 1024 - overhead)}}
    assert normalise(fits, received_at=NOW).name == "E"
    error = reject({**base, "properties": {"p": "x" * (32 * 1024 - overhead + 1)}})
    assert str(error) == f"message: is {32 * 1024 + 1} bytes; the limit is 32768 (32 KB)"


def test_a_message_may_exceed_32_kb_by_what_its_batch_shares_up_to_8_kb() -> None:
    base = {"type": "track", "userId": "u", "event": "E", "messageId": "m"}
    overhead = len(
        '{"type":"track","userId":"u","event":"E","messageId":"m","properties":{"p":""}}'
    )

    def outcome(size: int, shared: int) -> Message | InvalidMessage:
        message = {**base, "properties": {"p": "x" * (size - overhead)}}
        return next(normalise_each([message], received_at=NOW, shared_bytes=shared))

    assert isinstance(outcome(32 * 1024 + 1000, 1000), Message)
    error = outcome(32 * 1024 + 1001, 1000)
    assert isinstance(error, InvalidMessage)
    assert "the limit is 33768 (32 KB, and the 1000 bytes its batch shares)" in str(error)
    assert isinstance(outcome(40 * 1024, 100_000), Message)  # what a batch shares counts to 8 KB
    assert isinstance(outcome(40 * 1024 + 1, 100_000), InvalidMessage)


def test_a_library_message_of_32_kb_fits_with_its_batchs_context() -> None:
    # analytics-java and analytics-go hold a message to 32 KB, then send a context shared by
    # the whole batch, which is merged into each message before it is measured.
    own = {"type": "track", "userId": "u", "event": "E", "properties": {"p": "x" * 32_600}}
    context = {"library": {"name": "analytics-go", "version": "3.3.0"}, "pad": "y" * 800}
    batch = {"context": context, "sentAt": "2026-11-28T12:00:00Z"}
    assert batch_shares(batch) == len(json.dumps(batch, separators=(",", ":")))
    merged = apply_batch(own, batch)
    (message,) = normalise_each([merged], received_at=NOW, shared_bytes=batch_shares(batch))
    assert isinstance(message, Message)
    assert message.payload["context"]["pad"] == "y" * 800
    assert isinstance(normalise_each([merged], received_at=NOW).__next__(), InvalidMessage)


def test_a_batch_that_shares_nothing_storable_allows_nothing_more() -> None:
    assert batch_shares({"batch": []}) == 0
    assert batch_shares({"context": {"bad": "\ud800"}}) == 0


def test_an_item_with_empty_array_integrations_takes_the_batchs() -> None:
    batch = {"integrations": {"All": False}, "context": {"app": "a"}}
    empties: list[object] = [{}, []]
    for empty in empties:
        item = {"type": "track", "userId": "u", "event": "E", "integrations": empty, "context": []}
        merged = apply_batch(item, batch)
        assert isinstance(merged, dict)
        assert merged["integrations"] == {"All": False}
        assert merged["context"] == {"app": "a"}
        assert not normalise(merged, received_at=NOW).deliverable


@pytest.mark.parametrize("field", ["traits", "properties", "context", "integrations"])
def test_an_empty_array_is_taken_for_an_empty_object(field: str) -> None:
    # PHP's json_encode writes an empty associative array as [], and analytics-php sends its
    # integrations (and, from older apps, traits or context) as it comes.
    message = {"type": "identify", "userId": "u", field: []}
    assert normalise(message, received_at=NOW).payload[field] == {}
    assert reject({"type": "identify", "userId": "u", field: [1]}).field == field


def test_multibyte_characters_count_as_bytes_toward_the_limit() -> None:
    error = reject(
        {"type": "track", "userId": "u", "event": "E", "properties": {"p": "é" * (21 * 1024)}}
    )
    assert "bytes" in str(error)


def test_absurd_nesting_is_rejected() -> None:
    nested: dict[str, Any] = {}
    for _ in range(40):
        nested = {"n": nested}
    assert "nested" in str(
        reject({"type": "track", "userId": "u", "event": "E", "properties": nested})
    )


@pytest.mark.parametrize("leaf", [1, 1.5, Decimal("2.5"), datetime(2026, 1, 1, tzinfo=UTC)])
def test_the_deepest_value_is_judged_by_its_containers_alone(leaf: object) -> None:
    # 32 lists around a value are allowed whatever the value; 33 are not. A datetime beside
    # them sends the message down the value-by-value path, which must agree.
    for depth, accepted in ((32, True), (33, False)):
        deep: object = leaf
        for _ in range(depth - 1):  # properties itself is the first level
            deep = [deep]
        for beside in ({}, {"when": datetime(2026, 1, 1, tzinfo=UTC)}):
            message = {"type": "track", "userId": "u", "event": "E"}
            outcome = next(
                normalise_each([{**message, "properties": {"x": deep, **beside}}], received_at=NOW)
            )
            assert isinstance(outcome, Message) is accepted, (depth, beside)


def test_numeric_ids_become_strings_like_segment() -> None:
    message = accept(type="group", userId=42, groupId=7.0, anonymousId=1.5)
    assert (message.user_id, message.group_id, message.anonymous_id) == ("42", "7", "1.5")
    assert message.payload["userId"] == "42"


def test_message_id_is_kept_or_generated() -> None:
    assert accept(type="track", userId="u", event="E", messageId="abc").message_id == "abc"
    before = time.time_ns() // 1_000_000
    generated = [accept(type="track", userId="u", event="E").message_id for _ in range(50)]
    after = time.time_ns() // 1_000_000
    parsed = [uuid.UUID(g) for g in generated]
    assert [str(p) for p in parsed] == generated  # canonical form
    assert {(p.version, p.variant) for p in parsed} == {(7, uuid.RFC_4122)}
    # Time-ordered (version 7): the first 48 bits are the Unix time in milliseconds.
    assert all(before <= p.int >> 80 <= after for p in parsed)
    assert len(set(generated)) == 50


def test_generated_ids_differ_in_a_forked_child_and_ignore_the_apps_seed() -> None:
    def random_bits(ids: list[str]) -> set[int]:
        return {uuid.UUID(i).int & (1 << 74) - 1 for i in ids}

    state = random.getstate()
    seeded_twice = []
    for _ in range(2):
        random.seed(7)  # an app (or its tests) seeding the global generator
        seeded_twice.append(new_message_id())
    random.setstate(state)
    assert len(random_bits(seeded_twice)) == 2
    read, write = os.pipe()

    def send_ids() -> None:
        os.write(write, " ".join(new_message_id() for _ in range(5)).encode())

    pid = fork(send_ids)
    os.close(write)
    with os.fdopen(read) as pipe:
        child = pipe.read().split()
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    parent = [new_message_id() for _ in range(5)]
    # Had the child inherited the parent's generator, it would have drawn the same bits.
    assert len(child) == 5
    assert not random_bits(child) & random_bits(parent)


def test_type_is_case_insensitive_and_stored_lowercase() -> None:
    assert accept(type="Track", userId="u", event="E").type == "track"


def test_ids_are_taken_up_to_the_limit_and_empty_ones_are_absent() -> None:
    message = accept(type="track", userId="u" * 255, anonymousId="", event="E", messageId="")
    assert (message.user_id, message.anonymous_id) == ("u" * 255, None)
    assert message.generated_id  # an empty messageId is none: the buffer makes one


@given(
    st.datetimes(
        min_value=datetime(2, 1, 1),
        max_value=datetime(9998, 12, 31),
        timezones=st.sampled_from([UTC, timezone(timedelta(hours=-5)), timezone.max]),
    )
)
def test_timestamps_are_written_as_segment_writes_them(moment: datetime) -> None:
    text = format_timestamp(moment)
    utc = moment.astimezone(UTC)
    assert text == utc.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    assert text == format_timestamp(utc.replace(tzinfo=None))  # naive means UTC
    assert format_timestamp(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)) == "2026-01-02T03:04:05.000Z"


class FrozenClockTime(datetime):
    """What a frozen clock in a test (freezegun's) hands out: a subclass of datetime."""


def test_a_clock_may_return_a_datetime_subclass() -> None:
    moment = FrozenClockTime(2026, 5, 1, 12, 0, 0, 123456, tzinfo=timezone(timedelta(hours=2)))
    assert format_timestamp(moment) == "2026-05-01T10:00:00.123Z"
    message = normalise({"type": "track", "userId": "u", "event": "E"}, received_at=moment)
    assert message.payload["receivedAt"] == "2026-05-01T10:00:00.123Z"


@pytest.mark.parametrize(
    ("timestamp", "expected"),
    [
        ("2026-01-15T09:30:00+02:00", datetime(2026, 1, 15, 7, 30, tzinfo=UTC)),
        ("2026-01-15T09:30:00Z", datetime(2026, 1, 15, 9, 30, tzinfo=UTC)),
        ("2026-01-15T09:30:00", datetime(2026, 1, 15, 9, 30, tzinfo=UTC)),
        (1768469400, datetime(2026, 1, 15, 9, 30, tzinfo=UTC)),
        (1768469400123, datetime(2026, 1, 15, 9, 30, 0, 123000, tzinfo=UTC)),
        ("1768469400", datetime(2026, 1, 15, 9, 30, tzinfo=UTC)),
        # Digits alone are Unix seconds, though ISO 8601 could read them as a basic-format day.
        ("20260115", datetime(1970, 8, 23, 11, 48, 35, tzinfo=UTC)),
        (" 2026-01-15T09:30:00Z ", datetime(2026, 1, 15, 9, 30, tzinfo=UTC)),
        (
            datetime(2026, 1, 15, 9, 30, tzinfo=timezone(timedelta(hours=-5))),
            datetime(2026, 1, 15, 14, 30, tzinfo=UTC),
        ),
    ],
)
def test_timestamps_are_stored_in_utc(timestamp: object, expected: datetime) -> None:
    message = accept(type="track", userId="u", event="E", timestamp=timestamp)
    assert message.timestamp == expected
    assert message.day == expected.date()


def test_missing_timestamp_is_the_receive_time() -> None:
    assert accept(type="track", userId="u", event="E").timestamp == NOW


def test_clock_skew_is_corrected_with_sent_at() -> None:
    # The device clock runs one hour fast: the event happened 10 s before it was sent.
    message = accept(
        type="track",
        userId="u",
        event="E",
        timestamp="2026-11-28T13:00:00Z",
        sentAt="2026-11-28T13:00:10Z",
    )
    assert message.timestamp == NOW - timedelta(seconds=10)
    assert message.notes == ()


_MOMENTS = st.sampled_from(
    [
        "2026-11-28T13:00:10Z",
        "2026-11-28T12:00:00+02:00",
        " 2026-11-28T11:00:00Z",
        "1768469400",
        1768469400123,
        "20261128",
        "2026-13-01T00:00:00Z",
        "soon",
        None,
    ]
)


@given(st.lists(st.fixed_dictionaries({"timestamp": _MOMENTS, "sentAt": _MOMENTS}), max_size=6))
def test_a_request_normalised_together_is_each_message_normalised_alone(
    moments: list[dict[str, object]],
) -> None:
    # What a request's messages share (sentAt above all) is worked out once for all of them.
    messages = [
        {"type": "track", "userId": "u", "event": "E", "messageId": str(i), **times}
        for i, times in enumerate(moments)
    ]
    together = list(normalise_each(messages, received_at=NOW))
    assert len(together) == len(messages)
    for message, result in zip(messages, together, strict=True):
        alone: Message | str
        try:
            alone = normalise(message, received_at=NOW)
        except InvalidMessage as exc:
            alone = str(exc)  # the same rejection, naming the same field
        assert (str(result) if isinstance(result, InvalidMessage) else result) == alone


def test_original_timestamp_is_preferred_with_sent_at() -> None:
    message = accept(
        type="track",
        userId="u",
        event="E",
        originalTimestamp="2026-11-28T10:00:00Z",
        timestamp="2000-01-01T00:00:00Z",
        sentAt="2026-11-28T10:00:05Z",
    )
    assert message.timestamp == NOW - timedelta(seconds=5)


def test_future_timestamp_is_clamped_and_noted() -> None:
    message = accept(type="track", userId="u", event="E", timestamp="2026-11-29T12:00:00Z")
    assert message.timestamp == NOW
    assert message.notes == (Reason.FUTURE_TIMESTAMP_CLAMPED,)
    within_margin = accept(type="track", userId="u", event="E", timestamp="2026-11-28T12:04:00Z")
    assert within_margin.notes == ()


def test_late_events_keep_their_own_past_day() -> None:
    assert accept(type="page", userId="u", timestamp="2026-10-01T23:59:59Z").day == date(
        2026, 10, 1
    )


@pytest.mark.parametrize(
    ("integrations", "deliverable"),
    [
        (None, True),
        ({}, True),
        ({"Accoil Analytics": False}, False),
        ({"Accoil Analytics": True}, True),
        ({"All": False}, False),
        ({"All": False, "Accoil Analytics": True}, True),
        ({"All": False, "Accoil Analytics": {}}, True),  # an object is truthy, as in JavaScript
        ({"All": False, "Accoil Analytics": 0}, False),
        ({"All": True, "Accoil Analytics": False}, False),
        ({"Mixpanel": False}, True),
    ],
)
def test_integrations_object(integrations: dict[str, Any] | None, deliverable: bool) -> None:
    assert is_deliverable(integrations) is deliverable


def test_traits_created_at_and_mrr_are_normalised() -> None:
    group = accept(
        type="group",
        userId="u",
        groupId="g",
        traits={"createdAt": "2021-03-15T09:00:00+01:00", "mrr": "9900", "plan": "pro"},
    )
    assert group.traits == {"createdAt": "2021-03-15T08:00:00.000Z", "mrr": 9900, "plan": "pro"}
    identify = accept(type="identify", userId="u", traits={"created_at": 1700000000000})
    assert identify.traits == {"created_at": "2023-11-14T22:13:20.000Z"}
    assert accept(type="group", userId="u", groupId="g", traits={"mrr": "99.5"}).traits == {
        "mrr": 99.5
    }


def test_traits_that_cannot_be_normalised_are_kept_and_reported() -> None:
    message = accept(
        type="group",
        userId="u",
        groupId="g",
        traits={"createdAt": "last tuesday", "mrr": "lots", "name": None},
    )
    assert message.traits == {"createdAt": "last tuesday", "mrr": "lots", "name": None}
    assert message.notes == (Reason.TRAIT_NOT_NORMALISED, Reason.TRAIT_NOT_NORMALISED)


def test_python_values_are_made_json_as_analytics_python_does() -> None:
    message = accept(
        type="track",
        userId="u",
        event="E",
        properties={
            "when": datetime(2026, 1, 1, tzinfo=UTC),
            "day": date(2026, 1, 2),
            "price": Decimal("9.99"),
            "id": uuid.UUID(int=1),
            "tags": ("a", "b"),
            3: "numeric key",
        },
    )
    assert message.payload["properties"] == {
        "when": "2026-01-01T00:00:00+00:00",
        "day": "2026-01-02",
        "price": 9.99,
        "id": "00000000-0000-0000-0000-000000000001",
        "tags": ["a", "b"],
        "3": "numeric key",
    }


def test_write_keys_are_never_kept() -> None:
    assert "writeKey" not in accept(type="track", userId="u", event="E", writeKey="s3cret").payload


def test_odd_unicode_is_kept_intact() -> None:
    name = "Ünïcödé 🎉 \u200b مرحبا"
    message = accept(type="track", userId="用户", event=name)
    assert (message.user_id, message.name) == ("用户", name)


def test_payload_keeps_the_whole_message_normalised() -> None:
    message = accept(
        type="track",
        userId=5,
        event="E",
        properties={"a": 1},
        context={"ip": "1.2.3.4"},
        timestamp=1768469400,
    )
    assert message.payload == {
        "type": "track",
        "userId": "5",
        "event": "E",
        "properties": {"a": 1},
        "context": {"ip": "1.2.3.4"},
        "timestamp": "2026-01-15T09:30:00.000Z",
        "messageId": message.message_id,
        "receivedAt": "2026-11-28T12:00:00.000Z",
    }


def test_batch_context_integrations_and_sent_at_merge_under_the_item() -> None:
    batch = {
        "context": {"library": {"name": "py"}, "ip": "1.1.1.1"},
        "integrations": {"All": False, "Accoil Analytics": True},
        "sentAt": "2026-11-28T12:00:10Z",
    }
    item = {
        "type": "track",
        "userId": "u",
        "event": "E",
        "timestamp": "2026-11-28T12:00:00Z",
        "context": {"ip": "2.2.2.2"},
        "integrations": {"Accoil Analytics": False},
    }
    merged = apply_batch(item, batch)
    assert merged == {
        **item,
        "sentAt": "2026-11-28T12:00:10Z",
        "context": {"library": {"name": "py"}, "ip": "2.2.2.2"},
        "integrations": {"All": False, "Accoil Analytics": False},
    }
    message = normalise(merged, received_at=NOW)
    assert not message.deliverable
    assert message.timestamp == NOW - timedelta(seconds=10)
    assert apply_batch("junk", batch) == "junk"


@pytest.mark.parametrize(
    ("message", "field"),
    [
        (
            {"type": "track", "userId": "u", "event": "E", "properties": {"key": {"a": "\x00"}}},
            "message.properties.key.a",
        ),
        (
            {"type": "track", "userId": "u", "event": "E", "properties": {"l": [1, {"\x00": 1}]}},
            "message.properties.l[1] key",
        ),
        (
            {"type": "track", "userId": "u", "event": "E", "properties": {(1, 2): 1}},
            "message.properties",
        ),
    ],
)
def test_error_paths_point_into_nested_values(message: dict[str, Any], field: str) -> None:
    assert reject(message).field == field


HUGE = 10**400


@pytest.mark.parametrize(
    ("message", "field"),
    [
        ({"type": "track", "userId": HUGE, "event": "E"}, "userId"),
        ({"type": "track", "userId": "u", "event": "E", "timestamp": HUGE}, "timestamp"),
        ({"type": "track", "userId": "u", "event": "E", "sentAt": -HUGE}, "sentAt"),
        ({"type": "track", "userId": "u", "event": "E", "properties": {"n": 1e400}}, "message"),
    ],
)
def test_a_huge_number_is_its_messages_rejection(message: dict[str, Any], field: str) -> None:
    error = reject(message)
    assert error.field.split(".")[0] == field


def test_huge_numbers_in_traits_are_kept_as_given() -> None:
    created = accept(type="identify", userId="u", traits={"createdAt": HUGE})
    assert created.traits == {"createdAt": HUGE}
    assert created.notes == (Reason.TRAIT_NOT_NORMALISED,)
    group = accept(type="group", userId="u", groupId="g", traits={"mrr": HUGE})
    assert group.traits == {"mrr": HUGE}
    spelled = accept(type="group", userId="u", groupId="g", traits={"mrr": str(HUGE)})
    assert spelled.traits == {"mrr": HUGE}  # exactly, not through a float


def test_integer_ids_past_two_to_the_53_stay_distinct() -> None:
    first = accept(type="track", userId=18446744073709551616, event="E")
    second = accept(type="track", userId=18446744073709551617, event="E")
    assert (first.user_id, second.user_id) == ("18446744073709551616", "18446744073709551617")
    assert accept(type="track", userId=12.0, event="E").user_id == "12"
    assert accept(type="track", userId=1.5, event="E").user_id == "1.5"


def test_an_unexpected_failure_while_validating_is_a_rejection() -> None:
    class Exploding(Mapping[str, Any]):
        def __getitem__(self, key: str) -> Any:
            raise LookupError(key)

        def __iter__(self) -> Iterator[str]:
            raise LookupError("no keys")

        def __len__(self) -> int:
            return 1

    error = reject({"type": "track", "userId": "u", "event": "E", "properties": Exploding()})
    assert error.field == "message"
    assert "could not be validated (LookupError)" in str(error)
