"""Custom mappings end to end: accepted, folded and delivered to the fake Accoil, on SQLite and
PostgreSQL."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from accoil_buffer import Buffer
from tests import tables
from tests.conftest import Clock
from tests.fake_accoil import FakeAccoil, Reply, running
from tests.test_delivery import occurrences

MAPPINGS: list[dict[str, Any]] = [
    {"name": "Users", "action": "identify", "fields": {"email": "$.traits.work_email"}},
    {"name": "Accounts", "action": "group", "fields": {"plan": "$.traits.tier"}},
    {
        "name": "Reports",
        "action": "track",
        "trigger": 'type = "track" and event = "Report Viewed"',
        "fields": {"event": "$.properties.report_name"},
    },
    {
        "name": "Track Calls",
        "action": "track",
        "trigger": 'type = "track" and event != "Heartbeat" and event != "Report Viewed"',
    },
    {
        "name": "Shares",
        "action": "track",
        "trigger": 'event = "Shared"',
        "fields": {"event": "Shared by owner", "userId": "$.properties.owner"},
    },
    {"name": "Forward signups", "action": "post", "trigger": 'event = "Signed Up"'},
    {"name": "Page Calls", "action": "page"},
]
DAY = "2026-11-28"


@pytest.fixture
def fake() -> Iterator[FakeAccoil]:
    with running() as served:
        yield served


def open_buffer(database_url: str, fake: FakeAccoil, clock: Clock) -> Buffer:
    return Buffer(
        database_url,
        api_key="test-key",
        endpoint=fake.url,
        start=False,
        clock=clock,
        mappings=MAPPINGS,
    )


def record_calls(buf: Buffer) -> None:
    buf.identify("u1", {"work_email": "ada@work.example", "name": "Ada"})
    buf.group("u1", "g1", {"tier": "pro", "name": "Acme"})
    for report in ("Sales", "Sales", "Ops"):
        buf.track("u1", "Report Viewed", {"report_name": report})
    for _ in range(5):
        buf.track("u1", "Heartbeat")
    buf.track("u1", "Signed Up", {"source": "ad"})
    buf.track("u1", "Shared", {"owner": "u2"})
    buf.track("u1", "Shared")  # no owner: the Shares action has no user, so it is dropped
    buf.page("u1", name="Home")
    buf.screen("u1", name="Dashboard")  # no screen mapping
    # Anonymous, then linked by an identify: the renamed count moves to u3.
    buf.track(event="Report Viewed", properties={"report_name": "Sales"}, anonymous_id="a1")
    buf.identify("u3", {"work_email": "u3@work.example"}, anonymous_id="a1")


def test_custom_mappings_are_delivered_as_configured(
    database_url: str, fake: FakeAccoil, clock: Clock
) -> None:
    with open_buffer(database_url, fake, clock) as buf:
        record_calls(buf)
        report = buf.flush()
        assert report.ok
        status = buf.status()
    assert status["pending"]["posts"] == 0
    sent = fake.accepted()
    rolled_up = [b for b in sent if "properties" not in b]
    assert occurrences(rolled_up) == {
        (DAY, "u1", "track", "Sales"): 2,
        (DAY, "u1", "track", "Ops"): 1,
        (DAY, "u1", "track", "Signed Up"): 1,  # from Track Calls…
        (DAY, "u1", "track", "Shared"): 2,  # (Track Calls does not exclude Shared)
        (DAY, "u2", "track", "Shared by owner"): 1,
        (DAY, "u1", "page", "Home"): 1,
        (DAY, "u3", "track", "Sales"): 1,
    }
    identify = {b["userId"]: b["traits"] for b in sent if b["type"] == "identify"}
    assert identify == {
        "u1": {"work_email": "ada@work.example", "email": "ada@work.example", "name": "Ada"},
        "u3": {"work_email": "u3@work.example", "email": "u3@work.example"},
    }
    accounts = [b for b in sent if b["type"] == "group" and "userId" not in b]
    assert [a["traits"] for a in accounts] == [{"tier": "pro", "name": "Acme", "plan": "pro"}]
    # …and once more, whole, from Forward signups: two mappings, two actions, as configured.
    (post,) = [b for b in sent if "properties" in b]
    assert (post["event"], post["properties"], post["userId"]) == (
        "Signed Up",
        {"source": "ad"},
        "u1",
    )
    assert tables.drops(database_url) == {"unmapped": 6, "mapping:Shares": 1}


def test_post_to_accoil_waits_through_an_outage_and_dead_letters_a_refusal(
    database_url: str, fake: FakeAccoil, clock: Clock
) -> None:
    forward = [{"name": "Forward", "action": "post", "trigger": 'type = "track"'}]
    fake.behaviour = lambda _m: Reply(503)
    with Buffer(
        database_url, api_key="k", endpoint=fake.url, start=False, clock=clock, mappings=forward
    ) as buf:
        buf.track("u1", "Good", message_id="m-good")
        buf.track("u1", "Bad", message_id="m-bad")
        assert not buf.flush().ok
        assert buf.status()["pending"]["posts"] == 2  # kept while Accoil is down
        fake.behaviour = lambda m: Reply(400, "bad event") if m["event"] == "Bad" else Reply()
        clock.advance(hours=1)
        report = buf.flush()
        assert report.delivery is not None
        assert (report.delivery.delivered, report.delivery.dead_lettered) == (1, 1)
        assert buf.status()["pending"]["posts"] == 0
        (letter,) = buf.dead_letters()
        assert (letter["message_id"], letter["status"], letter["payload"]["event"]) == (
            "m-bad",
            400,
            "Bad",
        )
        fake.behaviour = lambda _m: Reply()
        assert buf.replay_dead_letters() == (1, 0)
    forwarded = Counter((b["messageId"], b["event"]) for b in fake.accepted())
    assert forwarded == {("m-good", "Good"): 1, ("m-bad", "Bad"): 1}
    # Not rolled up: there are no counts, only the messages forwarded whole.
    assert tables.counts(database_url) == {}
