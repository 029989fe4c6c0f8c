"""Mappings as pure functions: presets, custom actions and fields, drops, and configuration."""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime, time
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings

from accoil_buffer import Config, ConfigError, load_config, mapping_fields
from accoil_buffer.mappings import PRESETS, Mappings, Routed
from accoil_buffer.messages import Message, normalise
from accoil_buffer.reasons import Reason
from tests.integration.test_model import messages as segment_messages

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def accept(raw: dict[str, Any]) -> Message:
    return normalise(raw, received_at=NOW)


def route(mappings: Mappings, *raw: dict[str, Any]) -> Routed:
    return mappings.route([accept(m) for m in raw])


def summary(rows: list[Message]) -> list[tuple[Any, ...]]:
    return [(r.type, r.user_id, r.anonymous_id, r.group_id, r.name, r.traits) for r in rows]


# Every preset spelled out with a field set to its default: the same actions, built field by
# field instead of taking the message as it is.
SPELLED_OUT = Mappings.load(
    [
        {"name": m.name, "action": m.action, "fields": {"timestamp": "$.timestamp"}}
        for m in PRESETS.mappings
    ]
)


@settings(max_examples=200, deadline=None)
@given(segment_messages())
def test_each_preset_reproduces_the_default_behaviour(raw: dict[str, Any]) -> None:
    raw.setdefault("traits", {"createdAt": "not a date", "email": "a@b.c"})
    message = accept(raw)
    built, plain = SPELLED_OUT.route([message]), PRESETS.route([message])
    assert [msgspec.structs.replace(r, notes=()) for r in built.rows] == [
        msgspec.structs.replace(r, notes=()) for r in plain.rows
    ]
    assert built.posts == plain.posts == []
    assert built.counts == plain.counts  # the unnormalised createdAt is not counted twice


def test_with_no_mappings_the_presets_apply_and_a_message_is_stored_as_it_came() -> None:
    message = accept({"type": "track", "event": "E", "userId": "u1"})
    assert Config().mappings == PRESETS
    assert load_config(environ={}).mappings == PRESETS
    assert PRESETS.route([message]).rows == [message]
    assert [m.name for m in PRESETS.mappings] == [
        "Identify Calls",
        "Page Calls",
        "Track Calls",
        "Screen Calls",
        "Group Calls",
    ]


def test_a_custom_mapping_renames_an_event_from_a_property() -> None:
    mappings = Mappings.load(
        [
            {
                "name": "Reports",
                "action": "track",
                "trigger": 'event = "Report Viewed"',
                "fields": {"event": "$.properties.report_name"},
            }
        ]
    )
    routed = route(
        mappings,
        {
            "type": "track",
            "event": "Report Viewed",
            "userId": "u1",
            "properties": {"report_name": "Sales"},
        },
        {"type": "track", "event": "Other", "userId": "u1"},
    )
    assert summary(routed.rows) == [("track", "u1", None, None, "Sales", None)]
    assert routed.counts == {Reason.UNMAPPED: 1}


def test_a_trigger_filters_events_out() -> None:
    mappings = Mappings.load(
        [
            {
                "name": "No heartbeats",
                "action": "track",
                "trigger": 'type = "track" and event != "Heartbeat"',
            }
        ]
    )
    routed = route(
        mappings,
        {"type": "track", "event": "Heartbeat", "userId": "u1"},
        {"type": "track", "event": "Saved", "userId": "u1"},
    )
    assert [r.name for r in routed.rows] == ["Saved"]
    assert routed.counts == {Reason.UNMAPPED: 1}


def test_fields_re_map_identify_and_group_traits_inside_traits() -> None:
    mappings = Mappings.load(
        [
            {
                "name": "Users",
                "action": "identify",
                "fields": {"email": "$.traits.work_email", "role": "Member"},
            },
            {
                "name": "Accounts",
                "action": "group",
                "fields": {"plan": "$.traits.tier", "mrr": "$.context.billing.mrr", "traits": {}},
            },
        ]
    )
    routed = route(
        mappings,
        {
            "type": "identify",
            "userId": "u1",
            "traits": {"work_email": "ada@work.example", "email": "ada@home.example"},
        },
        {
            "type": "group",
            "userId": "u1",
            "groupId": "g1",
            "traits": {"tier": "pro", "name": "Acme"},
            "context": {"billing": {"mrr": "9900"}},
        },
    )
    identify, group = routed.rows
    # The traits field (default $.traits) is kept, with the mapped fields set inside it.
    assert identify.traits == {
        "work_email": "ada@work.example",
        "email": "ada@work.example",
        "role": "Member",
    }
    # A literal {} replaces the message's traits; name still comes from $.traits.name.
    assert group.traits == {"plan": "pro", "mrr": 9900, "name": "Acme"}
    assert (group.group_id, group.user_id) == ("g1", "u1")


def test_several_mappings_each_produce_their_own_action() -> None:
    mappings = Mappings.load(
        [
            {"name": "Track Calls", "action": "track"},
            {
                "name": "Plans",
                "action": "track",
                "trigger": 'event = "Upgraded"',
                "fields": {"event": "$.properties.plan"},
            },
            {"name": "Forward upgrades", "action": "post", "trigger": 'event = "Upgraded"'},
            {
                "name": "Upgrade makes traits",
                "action": "identify",
                "trigger": 'event = "Upgraded"',
                "fields": {"traits": "$.properties"},
            },
        ]
    )
    message = accept(
        {"type": "track", "event": "Upgraded", "userId": "u1", "properties": {"plan": "pro"}}
    )
    routed = mappings.route([message])
    assert summary(routed.rows) == [
        ("track", "u1", None, None, "Upgraded", None),
        ("track", "u1", None, None, "pro", None),
        ("identify", "u1", None, None, "", {"plan": "pro"}),
    ]
    # Post to Accoil forwards the whole message, properties included.
    (post,) = routed.posts
    assert post.type == "post"
    assert post.payload == message.payload
    assert post.payload["properties"] == {"plan": "pro"}
    assert routed.counts == {}


@pytest.mark.parametrize(
    ("mapping", "raw", "problem"),
    [
        (
            {
                "action": "track",
                "fields": {"userId": "$.properties.owner"},
                "trigger": 'event = "Shared"',
            },
            {"type": "track", "event": "Shared", "userId": "u1"},
            "userId: is missing, and there is no anonymousId to hold it under",
        ),
        (
            {"action": "track", "fields": {"event": "$.properties.name"}},
            {"type": "track", "event": "E", "userId": "u1"},
            "event: is missing",
        ),
        (
            {
                "action": "group",
                "trigger": 'type = "track"',
                "fields": {"groupId": "$.properties.account"},
            },
            {"type": "track", "event": "E", "userId": "u1"},
            "groupId: is missing",
        ),
        (
            {"action": "identify", "fields": {"timestamp": "$.properties.when"}},
            {"type": "identify", "userId": "u1"},
            "timestamp: is missing",
        ),
        (
            {"action": "identify", "fields": {"timestamp": "$.traits.when"}},
            {"type": "identify", "userId": "u1", "traits": {"when": "last tuesday"}},
            "timestamp: 'last tuesday' is not an ISO 8601 timestamp",
        ),
        (
            {"action": "identify", "fields": {"traits": "$.traits.email"}},
            {"type": "identify", "userId": "u1", "traits": {"email": "a@b.c"}},
            'traits: must be an object, got "a@b.c"',
        ),
        (
            {"action": "track", "fields": {"userId": "$.properties"}},
            {"type": "track", "event": "E", "userId": "u1", "properties": {"a": 1}},
            "userId: must be a string or a number, got an object",
        ),
    ],
)
def test_an_invalid_action_is_dropped_under_the_mappings_name(
    mapping: dict[str, Any], raw: dict[str, Any], problem: str
) -> None:
    mappings = Mappings.load(
        [{"name": "Custom", **mapping}, {"name": "Track Calls", "action": "track"}]
    )
    message = accept(raw)
    outcomes = mappings.outcomes(message)
    assert [(o.mapping, o.problem) for o in outcomes if o.action is None] == [("Custom", problem)]
    routed = mappings.route([message])
    assert routed.counts["mapping:Custom"] == 1
    # Nothing else is affected: another mapping of the same message still acts.
    assert [r.type for r in routed.rows] == (["track"] if raw["type"] == "track" else [])


def test_without_a_user_id_an_action_waits_under_the_anonymous_id() -> None:
    mappings = Mappings.load(
        [{"name": "Track Calls", "action": "track", "fields": {"userId": "$.properties.owner"}}]
    )
    routed = route(mappings, {"type": "track", "event": "E", "anonymousId": "a1"})
    assert summary(routed.rows) == [("track", None, "a1", None, "E", None)]


def test_custom_timestamps_are_parsed_and_future_ones_clamped() -> None:
    mappings = Mappings.load(
        [{"name": "Track Calls", "action": "track", "fields": {"timestamp": "$.properties.at"}}]
    )
    past, future = route(
        mappings,
        {"type": "track", "event": "E", "userId": "u1", "properties": {"at": 1700000000}},
        {
            "type": "track",
            "event": "E",
            "userId": "u1",
            "properties": {"at": "2030-01-01T00:00:00Z"},
        },
    ).rows
    assert past.timestamp == datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)
    assert future.timestamp == NOW
    routed = mappings.route(
        [
            accept(
                {"type": "track", "event": "E", "userId": "u1", "properties": {"at": "2030-01-01"}}
            )
        ]
    )
    assert routed.counts == {"future_timestamp_clamped": 1}


def test_a_literal_trait_that_cannot_be_normalised_is_counted() -> None:
    mappings = Mappings.load(
        [{"name": "Users", "action": "identify", "fields": {"createdAt": "soon"}}]
    )
    routed = route(mappings, {"type": "identify", "userId": "u1"})
    assert routed.rows[0].traits == {"createdAt": "soon"}
    assert routed.counts == {Reason.TRAIT_NOT_NORMALISED: 1}


def test_identity_links_do_not_depend_on_mappings() -> None:
    only_tracks = Mappings.load([{"name": "Track Calls", "action": "track"}])
    routed = route(
        only_tracks,
        {"type": "identify", "userId": "u1", "anonymousId": "a1", "traits": {"x": 1}},
        {"type": "alias", "userId": "u2", "previousId": "a2"},
        {"type": "identify", "userId": "u3"},
    )
    # The identify nobody maps still links a1 (as an alias row); its traits go nowhere.
    assert [(r.type, r.previous_id, r.user_id, r.traits) for r in routed.rows] == [
        ("alias", "a1", "u1", None),
        ("alias", "a2", "u2", None),
    ]
    assert routed.counts == {Reason.UNMAPPED: 1}
    # With an identify mapping, the identify row links by itself: no extra row.
    assert len(route(PRESETS, {"type": "identify", "userId": "u1", "anonymousId": "a1"}).rows) == 1


def test_a_disabled_mapping_does_nothing() -> None:
    mappings = Mappings.load([{"name": "Track Calls", "action": "track", "enabled": False}])
    assert route(mappings, {"type": "track", "event": "E", "userId": "u1"}).counts == {
        Reason.UNMAPPED: 1
    }


def mapping_list(n: int) -> list[dict[str, Any]]:
    return [{"name": f"m{i}", "action": "track"} for i in range(n)]


@pytest.mark.parametrize(
    ("entries", "words"),
    [
        (mapping_list(51), "mappings: 51 are configured; at most 50 are allowed"),
        ([{"action": "track"}], "mappings[0]: name is required"),
        ([{"name": "x" * 56, "action": "track"}], "longer than 55 characters"),
        ([{"name": "A", "action": "track"}, {"name": "A", "action": "page"}], "repeated: A"),
        (
            [{"name": "A", "action": "alias"}],
            "mappings[0] ('A'): action must be one of identify, group",
        ),
        ([{"name": "A"}], "action must be one of"),
        ([{"name": "A", "action": "track", "when": "x"}], "unknown key(s) when"),
        (
            [{"name": "A", "action": "track", "fields": {"name": "x"}}],
            "the track action has no field(s) name",
        ),
        ([{"name": "A", "action": "post", "fields": {"event": "x"}}], "its fields: none"),
        (
            [{"name": "A", "action": "track", "fields": {"event": "$.properties..x"}}],
            "fields.event: '$.properties..x' is not a path",
        ),
        (
            [{"name": "A", "action": "track", "trigger": "event = "}],
            "mapping 'A': trigger: expected a value after '='",
        ),
        ([{"name": "A", "action": "track", "enabled": "yes"}], "enabled must be true or false"),
        (  # the mapping is named even when its trigger is read before it is compiled
            [{"name": "A", "action": "track", "trigger": "type = 'track'"}],
            "mapping 'A': trigger: text goes in double quotes at position 8",
        ),
        (
            [{"name": "A", "action": "track", "trigger": 'event = "Report\\x"'}],
            "mapping 'A': trigger: not valid JSON: Invalid \\escape at position 16",
        ),
        (
            [{"name": "A", "action": "track", "trigger": "not " * 2000 + 'type = "track"'}],
            "mapping 'A': trigger: more than 32 'not's and parentheses are nested here",
        ),
        (
            [{"name": "A", "action": "track", "trigger": "(" * 2000 + "x = 1" + ")" * 2000}],
            "mapping 'A': trigger: more than 32 'not's and parentheses are nested here",
        ),
        (
            [{"name": "A", "action": "track", "fields": {"event": '$.a["\\x"]'}}],
            "mapping 'A': fields.event: '$.a[\"\\\\x\"]' has a key that is not a JSON string "
            "(Invalid \\escape at position 6)",
        ),
        (
            [{"name": "A", "action": "track", "fields": {"event": "$.items[٣]"}}],
            "fields.event: '$.items[٣]' is not a path",
        ),
        (
            [{"name": "A", "action": "identify", "fields": {"role": time(9, 30)}}],
            "mappings[0] ('A'): fields.role: has a value of type time that is not JSON",
        ),
        (
            [{"name": "A", "action": "identify", "fields": {"traits": {"x": float("nan")}}}],
            "mappings[0] ('A'): fields.traits.x: nan is not a JSON number",
        ),
        ("track", "mappings must be a list of tables"),
    ],
)
def test_bad_mappings_fail_when_the_configuration_loads(entries: Any, words: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(words)):
        load_config(environ={}, overrides={"mappings": entries})


def test_fifty_mappings_are_allowed() -> None:
    config = load_config(environ={}, overrides={"mappings": mapping_list(50)})
    assert len(config.mappings.mappings) == 50


def test_a_bad_trigger_in_the_file_fails_at_startup_with_its_position(tmp_path: Path) -> None:
    path = tmp_path / "accoil.toml"
    path.write_text(
        '[[mappings]]\nname = "Reports"\naction = "track"\ntrigger = \'event = "A" and (plan\'\n'
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert str(caught.value).splitlines() == [
        "mapping 'Reports': trigger: expected an operator (=, !=, <, exists, contains, …), "
        "got the end at position 22",
        '    event = "A" and (plan',
        "                         ^",
    ]


def test_action_names_as_segment_writes_them() -> None:
    mappings = Mappings.load([{"name": "Forward", "action": "Post to Accoil"}])
    assert mappings.mappings[0].action == "post"
    assert mappings.mappings[0].trigger == 'type = "track"'  # Segment's default for it


def test_a_step_that_is_not_ascii_digits_is_a_key_and_never_an_index() -> None:
    """``²`` passes ``str.isdigit`` but not ``int``: as an index it raised in the writer and
    lost the batch. It is a key; a list has no keys, so the field resolves to nothing."""
    mappings = Mappings.load(
        [
            {"name": "Odd", "action": "track", "fields": {"event": "$.properties.items.²"}},
            {
                "name": "Odd trigger",
                "action": "track",
                "trigger": "properties.items.`²` exists or properties.items." + "1" * 5000 + " = 1",
            },
            {"name": "First", "action": "track", "fields": {"event": "$.properties.items[0]"}},
            {"name": "Keyed", "action": "track", "fields": {"event": '$.properties.keys["²"]'}},
        ]
    )
    routed = route(
        mappings,
        {"type": "track", "event": "E", "userId": "u1", "properties": {"items": ["a", "b"]}},
        {"type": "track", "event": "E", "userId": "u1", "properties": {"keys": {"²": "two"}}},
    )
    assert [r.name for r in routed.rows] == ["a", "two"]
    assert routed.counts == {
        "mapping:Odd": 2,  # event: is missing
        "mapping:First": 1,
        "mapping:Keyed": 1,
    }


def test_a_mapping_that_fails_on_a_message_drops_that_message_alone(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A last line behind the configuration's checks: whatever a mapping raises for one
    message is counted as its drop, and never reaches the writer to fail the batch."""
    build_track = mapping_fields.BUILDERS["track"]

    def fails_on_secrets(message: Message, values: dict[str, Any]) -> Message:
        if values["event"] == "secret-value":
            raise KeyError(values["event"])
        return build_track(message, values)

    monkeypatch.setitem(mapping_fields.BUILDERS, "track", fails_on_secrets)
    mappings = Mappings.load(
        [
            {"name": "Custom", "action": "track", "fields": {"timestamp": "$.timestamp"}},
            {"name": "Page Calls", "action": "page"},
        ]
    )
    raws = [
        {"type": "track", "event": name, "userId": "u1"}
        for name in ("before", "secret-value", "secret-value", "after")
    ]
    with caplog.at_level(logging.ERROR, logger="accoil_buffer.mappings"):
        routed = route(mappings, *raws, {"type": "page", "userId": "u1", "name": "Home"})
    assert [(r.type, r.name) for r in routed.rows] == [
        ("track", "before"),
        ("track", "after"),
        ("page", "Home"),
    ]
    assert routed.counts == {"mapping:Custom": 2}
    (outcome,) = mappings.outcomes(accept(raws[1]))
    assert (outcome.action, outcome.problem) == (None, "the mapping failed (KeyError)")
    # Logged once for the mapping, naming the error's type but none of the message's values.
    (record,) = caplog.records
    assert "'Custom' failed on a message (KeyError)" in record.getMessage()
    assert "secret-value" not in caplog.text


def test_a_toml_date_literal_is_the_text_the_daemon_sends(tmp_path: Path) -> None:
    path = tmp_path / "accoil.toml"
    path.write_text(
        '[[mappings]]\nname = "Users"\naction = "identify"\n'
        "fields = { accountStatus = 2024-01-01, role = 2024-01-01T09:30:00Z }\n"
    )
    mappings = load_config(path, environ={}).mappings
    assert mappings.mappings[0].fields == (
        ("accountStatus", "2024-01-01"),
        ("role", "2024-01-01T09:30:00+00:00"),
    )
    (row,) = route(mappings, {"type": "identify", "userId": "u1"}).rows
    assert row.traits == {"accountStatus": "2024-01-01", "role": "2024-01-01T09:30:00+00:00"}
