"""What the live view says became of a message, worked out from the message alone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from accoil_buffer.console.explain import describe
from accoil_buffer.console.live import Batch, Seen
from accoil_buffer.mappings import PRESETS, Mappings

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
MARGIN = timedelta(minutes=5)
ONE_STORED = Batch(size=1, stored=1, duplicates=0, filtered=0)


def explain(
    message: object, batch: Batch = ONE_STORED, mappings: Mappings = PRESETS
) -> dict[str, Any]:
    return describe(Seen(1, NOW, message, None, batch), mappings, MARGIN)


def test_a_track_becomes_a_count_row_of_its_user_and_day() -> None:
    seen = explain({"type": "track", "userId": "u1", "event": "Signed Up", "messageId": "m1"})
    assert seen["outcome"] == "stored"
    assert seen["messageId"] == "m1"
    assert seen["became"] == [
        {
            "mapping": "Track Calls",
            "action": "track",
            "where": "count row 2026-11-28 · track · Signed Up · user u1",
        }
    ]


def test_an_anonymous_page_is_held_and_an_identify_links_it() -> None:
    page = explain({"type": "page", "anonymousId": "a1", "name": "Home"})
    assert page["became"][0]["where"].startswith("held under anonymousId a1: 2026-11-28 · page")
    identify = explain({"type": "identify", "userId": "u1", "anonymousId": "a1"})
    assert [b["where"] for b in identify["became"]] == [
        "traits of user u1",
        "anonymousId a1 to user u1",
    ]


def test_a_generated_message_id_is_not_shown_as_if_it_were_the_stored_one() -> None:
    seen = explain({"type": "track", "userId": "u1", "event": "E"})
    assert seen["messageId"] is None
    assert "messageId" not in seen["message"]


def test_drops_say_why_and_under_which_counter() -> None:
    mappings = Mappings.load(
        [
            {
                "name": "Accounts from tracks",
                "action": "group",
                "trigger": 'type = "track"',
                "fields": {"groupId": "$.properties.account"},
            },
            {"name": "Forward", "action": "post", "trigger": 'event = "Signed Up"'},
        ]
    )
    track = explain({"type": "track", "userId": "u1", "event": "Signed Up"}, mappings=mappings)
    assert track["became"] == [
        {
            "mapping": "Accounts from tracks",
            "dropped": "groupId: is missing",
            "reason": "mapping:Accounts from tracks",
        },
        {
            "mapping": "Forward",
            "action": "post",
            "where": "forwarded whole to Accoil (Post to Accoil)",
        },
    ]
    page = explain({"type": "page", "userId": "u1"}, mappings=mappings)
    assert page["became"] == [{"dropped": "no mapping matches it", "reason": "unmapped"}]
    off = {"type": "track", "userId": "u1", "event": "E", "integrations": {"All": False}}
    assert explain(off, Batch(1, 0, 0, 1))["outcome"] == "filtered"


def test_duplicates_are_told_from_the_outcome_of_their_request() -> None:
    message = {"type": "track", "userId": "u1", "event": "E", "messageId": "m1"}
    again = explain(message, Batch(size=1, stored=0, duplicates=1, filtered=0))
    assert again["outcome"] == "duplicate"
    assert again["became"][0]["reason"] == "duplicate_message_id"
    mixed = explain(message, Batch(size=3, stored=2, duplicates=1, filtered=0))
    assert mixed["outcome"] == "stored"
    assert mixed["note"].startswith("1 of the 3 messages of its request were duplicates")


def test_a_rejected_message_shows_its_error_and_preview() -> None:
    seen = describe(Seen(7, NOW, '{"type": "bogus"}', "type: bad", ONE_STORED), PRESETS, MARGIN)
    assert seen == {
        "seq": 7,
        "received_at": "2026-11-28T12:00:00.000Z",
        "outcome": "rejected",
        "error": "type: bad",
        "preview": '{"type": "bogus"}',
    }
