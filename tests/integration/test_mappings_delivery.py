"""Custom mappings end to end: accepted, folded and delivered to the fake Accoil, on SQLite and
PostgreSQL."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from accoil_buffer import Buffer
from accoil_buffer.mapping_fields import BUILDERS
from accoil_buffer.mappings import ACTIONS, Mappings, Outcome, identity_link
from accoil_buffer.messages import Message, normalise
from accoil_buffer.reasons import Reason
from tests.integration.test_delivery import occurrences, open_buffer
from tests.integration.test_model import messages as segment_messages
from tests.support import tables
from tests.support.clock import Clock
from tests.support.fake_accoil import FakeAccoil, Reply
from tests.support.postgres import fresh_postgres

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
    with open_buffer(database_url, fake, clock, mappings=MAPPINGS) as buf:
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
    with open_buffer(database_url, fake, clock, mappings=forward) as buf:
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


# --- Any mappings, any messages: every message is accounted for, and every row folds ---------

PATHS = [
    "$.userId",
    "$.anonymousId",
    "$.groupId",
    "$.event",
    "$.name",
    "$.timestamp",
    "$.traits",
    "$.traits.k1",
    "$.properties",
    "$.properties.p",
    "$.context.nested",
    "$.missing",
]
LITERALS: list[Any] = ["x", "", 7, 1.5, True, {"k": "v"}, [1], "2026-11-27T00:00:00Z"]
CONDITIONS = [
    'type = "track"',
    'type = "identify"',
    'type = "group"',
    'event = "E1"',
    "traits.k1 exists",
    "properties.p > 0",
    'properties.p contains "x"',
    'userId starts_with "u"',
    "not anonymousId exists",
]
FIELDS = {action: list(paths) for action, paths in ACTIONS.items()}


@st.composite
def triggers(draw: st.DrawFn) -> str:
    parts = draw(st.lists(st.sampled_from(CONDITIONS), min_size=1, max_size=3))
    joiners = [draw(st.sampled_from([" and ", " or ", " and not "])) for _ in parts[1:]]
    text = parts[0] + "".join(j + p for j, p in zip(joiners, parts[1:], strict=True))
    return f"({text})" if draw(st.booleans()) else text


@st.composite
def mapping_sets(draw: st.DrawFn) -> list[dict[str, Any]]:
    entries = []
    for index in range(draw(st.integers(1, 5))):
        action = draw(st.sampled_from(sorted(ACTIONS)))
        names = (
            draw(st.lists(st.sampled_from(FIELDS[action]), max_size=3, unique=True))
            if FIELDS[action]
            else []
        )
        fields = {n: draw(st.sampled_from(PATHS) | st.sampled_from(LITERALS)) for n in names}
        entry = {"name": f"m{index}", "action": action, "fields": fields}
        if draw(st.booleans()):
            entry["trigger"] = draw(triggers())
        entries.append(entry)
    return entries


@st.composite
def varied_messages(draw: st.DrawFn) -> dict[str, Any]:
    message = draw(segment_messages())
    message.pop("integrations", None)
    if draw(st.booleans()):
        message["properties"] = {"p": draw(st.sampled_from([1, -1, "xyz", None, {"a": 1}]))}
    if draw(st.booleans()):
        message["context"] = {"nested": draw(st.sampled_from(["u9", 3, [1, 2]]))}
    return message


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(entries=mapping_sets(), raw=st.lists(varied_messages(), min_size=1, max_size=15))
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_any_mappings_account_for_every_message_and_fold(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    backend: str,
    entries: list[dict[str, Any]],
    raw: list[Any],
) -> None:
    mappings = Mappings.load(entries)
    with (
        fresh_database(request, tmp_path_factory, backend) as url,
        Buffer(url, start=False, durability="sync", mappings=entries) as buf,
    ):
        report = buf.ingest_many(raw)
        assert report.rejected == ()
        buf.flush()  # every row the mappings made folds without a constraint error
        status = buf.status()
    accepted = [normalise(m, received_at=datetime.now(UTC)) for m in raw]
    outcomes = [mappings.outcomes(m) for m in accepted]
    routed = mappings.route(accepted)
    # Every message is accounted for: an action or a drop per matching mapping, or unmapped.
    unmatched = sum(
        not o and mappings_link(m, o) is None for m, o in zip(accepted, outcomes, strict=True)
    )
    assert routed.counts[Reason.UNMAPPED] == unmatched
    assert status["drops"].get("unmapped", 0) == unmatched
    dropped = Counter(o.reason for os in outcomes for o in os if o.action is None)
    assert {k: v for k, v in status["drops"].items() if k.startswith("mapping:")} == dropped
    for row in routed.rows:
        assert row.type in {"identify", "group", "track", "page", "screen", "alias"}
        assert row.user_id is not None or row.anonymous_id is not None or row.type == "group"
    assert status["outbox"]["unfolded_messages"] == 0


@contextmanager
def fresh_database(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, backend: str
) -> Iterator[str]:
    """An empty migrated database for one example (function fixtures last the whole test)."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('any') / 'buffer.db'}"
        return
    yield from fresh_postgres(request.getfixturevalue("postgres_template"))


def mappings_link(message: Message, outcomes: list[Outcome]) -> Message | None:
    return identity_link(message, [o.action for o in outcomes if o.action is not None])


# --- One message's bad data never loses the others --------------------------------------------

ODD_PATHS: list[dict[str, Any]] = [
    {"name": "Odd", "action": "track", "fields": {"event": "$.properties.items.²"}},
    {"name": "Odd trigger", "action": "page", "trigger": "properties.items.`²` exists"},
    {"name": "Track Calls", "action": "track"},
]


def record_after_a_bad_one(buf: Buffer) -> None:
    """A message with a list, then ordinary ones, committed together by the group writer; a
    writer stuck on the batch fails the flush instead of hanging the test."""
    buf.track("u1", "Listed", {"items": ["a", "b"]})
    for user in ("u2", "u3"):
        buf.track(user, "Ordinary")
    assert buf.flush(timeout=10).ok


def test_a_path_step_that_is_not_an_index_loses_no_message(
    database_url: str, fake: FakeAccoil, clock: Clock
) -> None:
    """``²`` passes ``str.isdigit`` but not ``int``: meeting a list, it raised in the group
    writer, which retried the batch forever, and no message after it was stored."""
    with open_buffer(database_url, fake, clock, mappings=ODD_PATHS, close_timeout_seconds=5) as buf:
        record_after_a_bad_one(buf)
    assert occurrences(fake.accepted()) == {
        (DAY, "u1", "track", "Listed"): 1,
        (DAY, "u2", "track", "Ordinary"): 1,
        (DAY, "u3", "track", "Ordinary"): 1,
    }
    assert tables.drops(database_url) == {"mapping:Odd": 3}  # a key a list lacks: no event


def test_a_mapping_that_fails_on_one_message_loses_no_other(
    database_url: str, fake: FakeAccoil, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The last line: whatever a mapping raises for one message drops that message alone."""
    build_track = BUILDERS["track"]

    def fails_on_lists(message: Message, values: dict[str, Any]) -> Message:
        if "items" in message.payload.get("properties", {}):
            raise RuntimeError("a mistake not found at load")
        return build_track(message, values)

    monkeypatch.setitem(BUILDERS, "track", fails_on_lists)
    tracks = [{"name": "Tracks", "action": "track", "fields": {"timestamp": "$.timestamp"}}]
    with open_buffer(database_url, fake, clock, mappings=tracks, close_timeout_seconds=5) as buf:
        record_after_a_bad_one(buf)
    assert occurrences(fake.accepted()) == {
        (DAY, "u2", "track", "Ordinary"): 1,
        (DAY, "u3", "track", "Ordinary"): 1,
    }
    assert tables.drops(database_url) == {"mapping:Tracks": 1}
