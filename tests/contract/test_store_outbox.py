"""Appending to the outbox: each messageId once, and every drop counted."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from accoil_buffer.mappings import Mappings
from accoil_buffer.reasons import Reason
from accoil_buffer.recording import Recorded, record
from accoil_buffer.store import outbox, rollup, schema
from accoil_buffer.store.dialects import utc_day
from tests.contract import NOW, TODAY, append, fold, message, opened
from tests.support import tables


def test_a_message_id_is_stored_once_within_a_batch_and_folded_once_across_batches(
    database_url: str,
) -> None:
    first = message(type="track", userId="u1", event="E", messageId="m1")
    second = message(type="track", userId="u2", event="E", messageId="m2")
    with opened(database_url) as database:
        assert append(database, [first, second, first]) == Recorded(2, 1, 0)
        # Seen in an earlier batch: stored, for the fold to drop.
        assert append(database, [first]) == Recorded(1, 0, 0)
        assert append(database, [first, second]) == Recorded(2, 0, 0)
        assert tables.outbox_size(database_url) == 5
        assert fold(database) == rollup.FoldReport(folded=2, duplicates=3)
        assert append(database, [second]) == Recorded(1, 0, 0)
        # The ledger still knows it once folded.
        assert fold(database) == rollup.FoldReport(folded=0, duplicates=1)
    assert tables.counts(database_url) == {
        (TODAY, "u1", "track", "E"): 1,
        (TODAY, "u2", "track", "E"): 1,
    }
    assert tables.outbox_size(database_url) == 0
    assert tables.table_count(database_url, schema.message_ids) == 2
    assert tables.drops(database_url) == {Reason.DUPLICATE_MESSAGE_ID: 5}


@pytest.mark.parametrize("batch_size", [1, 2, 1000])
def test_a_message_sent_again_is_folded_once_however_the_outbox_is_chunked(
    database_url: str, batch_size: int
) -> None:
    later, next_day = NOW + timedelta(minutes=1), NOW + timedelta(days=1)
    sent = [
        message(type="track", userId="u1", event="E", messageId="m1"),
        message(type="track", userId="u2", event="E"),
        message(next_day, type="track", userId="u1", event="E", messageId="m1"),
        message(later, type="identify", userId="u3", messageId="m3", traits={"plan": "a"}),
        message(later, type="identify", userId="u3", messageId="m3", traits={"plan": "b"}),
    ]
    with opened(database_url) as database:
        for one in sent:
            append(database, [one])
        assert fold(database, batch_size=batch_size).folded == 3
        with database.engine.connect() as conn:
            drops = conn.execute(schema.drops.select()).all()
    # Each copy is counted on the day it arrived.
    assert sorted(tuple(row) for row in drops) == [
        (TODAY, Reason.DUPLICATE_MESSAGE_ID, 1),
        (next_day.date(), Reason.DUPLICATE_MESSAGE_ID, 1),
    ]
    assert tables.counts(database_url) == {
        (TODAY, "u1", "track", "E"): 1,
        (TODAY, "u2", "track", "E"): 1,
    }
    assert tables.users(database_url)["u3"] == {"plan": "a"}  # the first arrival's traits


def test_a_message_id_the_buffer_generated_is_stored_without_a_ledger_row(
    database_url: str,
) -> None:
    generated = [message(type="track", userId="u1", event="E") for _ in range(3)]
    given = message(type="track", userId="u1", event="E", messageId="m1")
    assert all(m.generated_id for m in generated)
    assert not given.generated_id
    with opened(database_url) as database:
        assert append(database, generated[:1]) == Recorded(stored=1, duplicates=0, filtered=0)
        assert append(database, [*generated[1:], given, given]) == Recorded(3, 1, 0)
        assert tables.table_count(database_url, schema.message_ids) == 0  # until folded
        fold(database)
    assert tables.counts(database_url) == {(TODAY, "u1", "track", "E"): 4}
    assert tables.table_count(database_url, schema.message_ids) == 1  # only the given id


def test_a_message_that_excludes_accoil_is_filtered_each_time(database_url: str) -> None:
    excluded = message(
        type="track", userId="u1", event="E", messageId="m1", integrations={"All": False}
    )
    with opened(database_url) as database:
        assert append(database, [excluded]) == Recorded(0, 0, 1)
        assert append(database, [excluded]) == Recorded(0, 0, 1)
    assert tables.outbox_size(database_url) == 0
    assert tables.table_count(database_url, schema.message_ids) == 0
    assert tables.drops(database_url) == {Reason.FILTERED_INTEGRATIONS: 2}


@pytest.mark.parametrize(
    "second",
    [
        {"name": "Forward", "action": "post", "trigger": 'type = "track"'},
        {"name": "Plans", "action": "track", "fields": {"event": "$.properties.plan"}},
    ],
    ids=["a post", "two rows"],
)
def test_a_message_the_fold_cannot_check_is_claimed_on_arrival(
    database_url: str, second: dict[str, Any]
) -> None:
    mappings = Mappings.load([{"name": "Track Calls", "action": "track"}, second])
    sent = message(type="track", userId="u1", event="E", messageId="m1", properties={"plan": "pro"})

    def record_once() -> Recorded:
        with database.direct_write() as conn:
            return record(database, conn, [sent], mappings=mappings)

    with opened(database_url) as database:
        assert record_once() == Recorded(1, 0, 0)
        assert tables.table_count(database_url, schema.message_ids) == 1
        assert record_once() == Recorded(0, 1, 0)
        fold(database)
    # Its own rows are not taken for a second arrival: every action is folded.
    expected = {(TODAY, "u1", "track", "E"): 1}
    if second["action"] == "track":
        expected[(TODAY, "u1", "track", "pro")] = 1
    assert tables.counts(database_url) == expected
    assert tables.drops(database_url) == {Reason.DUPLICATE_MESSAGE_ID: 1}


def test_rejected_messages_are_counted_on_the_day_given(database_url: str) -> None:
    with opened(database_url) as database:
        assert append(database, [], rejected=3) == Recorded(0, 0, 0)
        append(database, [], rejected=2)
        with pytest.raises(ValueError, match="day"):
            append(database, [], rejected=1, today=None)
    assert tables.drops(database_url) == {Reason.REJECTED_INVALID: 5}


def test_whole_messages_are_kept_only_for_audit(database_url: str) -> None:
    kept = message(type="track", userId="u1", event="E", messageId="kept")
    dropped = message(type="track", userId="u1", event="E", messageId="dropped")
    with opened(database_url) as database:
        append(database, [kept], keep_payloads=True)
        append(database, [dropped])
    payloads = tables.outbox_payloads(database_url)
    assert payloads[1] is None
    assert payloads[0]["messageId"] == "kept"
    assert payloads[0]["event"] == "E"


def test_drop_counters_add_up_per_day_and_reason(database_url: str) -> None:
    yesterday = TODAY - timedelta(days=1)
    with opened(database_url) as database:
        for _ in range(2):
            with database.write() as conn:
                outbox.record_drops(
                    database, conn, Counter({(TODAY, "a"): 2, (yesterday, "a"): 1, (TODAY, "b"): 0})
                )
        with database.engine.connect() as conn:
            rows = conn.execute(schema.drops.select()).all()
    assert sorted(tuple(row) for row in rows) == [
        (yesterday, "a", 2),
        (TODAY, "a", 4),
    ]


def test_an_outbox_row_holds_what_the_fold_reads(database_url: str) -> None:
    identify = message(
        type="identify", userId="u1", anonymousId="a1", traits={"plan": "pro"}, messageId="m"
    )
    with opened(database_url) as database:
        append(database, [identify])
        with database.engine.connect() as conn:
            o = schema.outbox
            row = conn.execute(select(o, utc_day(o.c.timestamp).label("day"))).one()
    assert (row.message_id, row.type, row.user_id, row.anonymous_id) == (
        "m",
        "identify",
        "u1",
        "a1",
    )
    assert row.traits == {"plan": "pro"}
    assert row.day == TODAY  # derived, not stored
    assert row.payload is None  # SQL NULL: not kept for audit
    assert row.received_at == NOW
    assert row.folded_at is None


def _outbox_rows(database_url: str) -> list[Any]:
    o = schema.outbox
    query = select(o.c.type, o.c.user_id, o.c.anonymous_id, o.c.name, o.c.occurrences)
    with opened(database_url) as database, database.engine.connect() as conn:
        return [tuple(row) for row in conn.execute(query.order_by(o.c.id))]


def test_a_batchs_events_that_differ_in_nothing_the_fold_reads_share_a_row(
    database_url: str,
) -> None:
    yesterday = (NOW - timedelta(days=1)).isoformat()
    with opened(database_url) as database:
        append(
            database,
            [
                message(type="track", userId="u1", event="E", properties={"n": 1}),
                message(type="track", anonymousId="a1", event="E"),
                message(type="track", userId="u1", event="E", properties={"n": 2}),
                message(type="track", userId="u1", event="E", timestamp=yesterday),
                message(type="page", userId="u1", name="E"),
                message(type="track", userId="u1", event="F"),
                message(type="identify", userId="u1", traits={"plan": "pro"}),
                message(type="identify", userId="u1", traits={"plan": "pro"}),
                message(type="track", anonymousId="a1", event="E"),
                message(type="track", userId="u1", event="E"),
            ],
        )
        append(database, [message(type="track", userId="u1", event="E")])  # another batch
    assert _outbox_rows(database_url) == [
        ("track", "u1", None, "E", 3),  # at the first one's place
        ("track", None, "a1", "E", 2),
        ("track", "u1", None, "E", 1),  # another day
        ("page", "u1", None, "E", 1),
        ("track", "u1", None, "F", 1),
        ("identify", "u1", None, "", 1),  # traits are merged by the fold, in order
        ("identify", "u1", None, "", 1),
        ("track", "u1", None, "E", 1),
    ]


def test_a_shared_row_carries_its_latest_event_times(database_url: str) -> None:
    earlier, later = NOW - timedelta(hours=2), NOW - timedelta(hours=1)
    with opened(database_url) as database:
        append(
            database,
            [  # the latest timestamp of one, the latest arrival of the other
                message(at=earlier, type="track", userId="u1", event="E"),
                message(at=later, type="track", userId="u1", event="E", timestamp="2026-11-28"),
            ],
        )
        o = schema.outbox
        with database.engine.connect() as conn:
            row = conn.execute(select(o.c.timestamp, o.c.received_at, o.c.occurrences)).one()
    assert tuple(row) == (earlier, later, 2)


def test_events_the_fold_checks_or_keeps_whole_have_a_row_each(database_url: str) -> None:
    with opened(database_url) as database:
        append(
            database,
            [message(type="track", userId="u1", event="E", messageId=f"m{n}") for n in range(2)],
        )
        append(
            database,
            [message(type="track", userId="u2", event="E") for _ in range(2)],
            keep_payloads=True,
        )
    assert (
        _outbox_rows(database_url)
        == [("track", "u1", None, "E", 1)] * 2 + [("track", "u2", None, "E", 1)] * 2
    )
