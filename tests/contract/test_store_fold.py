"""Folding the outbox into daily counts, users, accounts and memberships."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from accoil_buffer.messages import normalise
from accoil_buffer.reasons import Reason
from accoil_buffer.store import report, rollup
from tests.contract import NOW, TODAY, append, fold, message, opened
from tests.support import tables


def test_events_become_daily_counts_and_leave_the_outbox(database_url: str) -> None:
    yesterday = NOW - timedelta(days=1)
    with opened(database_url) as database:
        append(
            database,
            [
                message(type="track", userId="u1", event="Saved"),
                message(type="track", userId="u1", event="Saved"),
                message(type="track", userId="u1", event="Saved", timestamp=yesterday.isoformat()),
                message(type="page", userId="u2", name="Home"),
                message(type="screen", userId="u2", name="Feed"),
            ],
        )
        assert fold(database) == rollup.FoldReport(folded=5)
        assert fold(database) == rollup.FoldReport(folded=0)
    assert tables.counts(database_url) == {
        (TODAY, "u1", "track", "Saved"): 2,
        (yesterday.date(), "u1", "track", "Saved"): 1,
        (TODAY, "u2", "page", "Home"): 1,
        (TODAY, "u2", "screen", "Feed"): 1,
    }
    assert tables.outbox_size(database_url) == 0


def test_a_shared_row_folds_to_every_event_it_stands_for(database_url: str) -> None:
    with opened(database_url) as database:
        append(
            database,
            [message(type="track", userId="u1", event="E") for _ in range(3)]
            + [message(type="track", anonymousId="a1", event="E") for _ in range(2)]
            + [message(type="page", anonymousId="a2", name="Home") for _ in range(4)],
        )
        assert tables.outbox_size(database_url) == 3
        with database.engine.connect() as conn:
            assert (
                report.status(conn, NOW, queued_in_memory=0, endpoint=None).outbox.unfolded_messages
                == 9
            )
        append(database, [message(type="identify", userId="u2", anonymousId="a2")])
        assert fold(database) == rollup.FoldReport(folded=10)
    assert tables.counts(database_url) == {
        (TODAY, "u1", "track", "E"): 3,
        (TODAY, "u2", "page", "Home"): 4,  # moved to the user the identify linked
    }
    assert tables.anonymous_counts(database_url) == {(TODAY, "a1", "track", "E"): 2}


def _page(**ids: str) -> dict[str, str]:
    return {"type": "page", "name": "E", "timestamp": "2026-11-28T00:00:00Z", **ids}


alike_events = st.lists(
    st.fixed_dictionaries(
        {
            "type": st.sampled_from(["track", "page"]),
            "event": st.sampled_from(["E", "F"]),
            "name": st.sampled_from(["E", "F"]),
            "timestamp": st.sampled_from(["2026-11-27T23:59:59Z", "2026-11-28T00:00:00Z"]),
        },
        optional={
            "userId": st.sampled_from(["u1", "u2"]),
            "anonymousId": st.sampled_from(["a1", "a2"]),
            "messageId": st.sampled_from(["m1", "m2", "m3"]),
        },
    ).filter(lambda m: "userId" in m or "anonymousId" in m),
    max_size=12,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(events=alike_events, keep_payloads=st.booleans(), link=st.booleans())
# Events alike in all but one thing the fold reads: the anonymousId, then the day.
@example(events=[_page(anonymousId="a1"), _page(anonymousId="a2")], keep_payloads=False, link=True)
@example(
    events=[_page(userId="u1"), _page(userId="u1", timestamp="2026-11-27T23:59:59Z")],
    keep_payloads=False,
    link=False,
)
def test_a_batch_folds_as_its_events_one_by_one(
    database_url: str, events: list[dict[str, str]], keep_payloads: bool, link: bool
) -> None:
    """Shared rows change how a batch is stored, never what it folds to."""
    identify = [message(type="identify", userId="u2", anonymousId="a1")] if link else []
    results = []
    with opened(database_url) as database:
        for batches in ([events], [[event] for event in events]):
            tables.wipe(database_url)
            for batch in batches:
                normalised = [normalise(event, received_at=NOW) for event in batch]
                append(database, normalised, keep_payloads=keep_payloads)
            append(database, identify)
            folded = fold(database).folded
            results.append(
                (
                    folded,
                    tables.counts(database_url),
                    tables.anonymous_counts(database_url),
                    tables.drops(database_url),
                )
            )
    assert results[0] == results[1]


def test_events_are_counted_on_their_utc_day_whatever_the_clocks_zone(
    database_url: str,
) -> None:
    # 01:58 on Dec 2 at +02:00 is 23:58 on Dec 1 in UTC.
    at = datetime(2026, 12, 2, 1, 58, tzinfo=timezone(timedelta(hours=2)))
    with opened(database_url) as database:
        append(
            database,
            [
                message(at=at, type="track", userId="u1", event="E"),  # received: Dec 1
                message(at=at, type="track", userId="u1", event="E", timestamp="2026-12-02T00:02Z"),
            ],
        )
        fold(database)
    assert tables.counts(database_url) == {
        (date(2026, 12, 1), "u1", "track", "E"): 1,
        (date(2026, 12, 2), "u1", "track", "E"): 1,
    }


def test_counts_add_up_across_folds(database_url: str) -> None:
    with opened(database_url) as database:
        for _ in range(3):
            append(database, [message(type="track", userId="u1", event="E")])
            fold(database)
    assert tables.counts(database_url) == {(TODAY, "u1", "track", "E"): 3}


def test_traits_merge_shallowly_and_a_null_stays(database_url: str) -> None:
    with opened(database_url) as database:
        append(database, [message(type="identify", userId="u1", traits={"a": 1, "b": {"x": 1}})])
        fold(database)
        append(
            database,
            [message(type="identify", userId="u1", traits={"b": {"y": 2}, "a": None, "c": "3"})],
        )
        fold(database)
        append(database, [message(type="identify", userId="u1", traits={"c": "3"})])  # no change
        fold(database)
    assert tables.users(database_url) == {"u1": {"a": None, "b": {"y": 2}, "c": "3"}}
    assert tables.user_versions(database_url) == {"u1": 2}


def test_group_calls_make_accounts_and_memberships(database_url: str) -> None:
    with opened(database_url) as database:
        append(
            database,
            [
                message(type="group", userId="u1", groupId="g1", traits={"name": "Acme"}),
                message(type="group", userId="u2", groupId="g1", traits={"plan": "pro"}),
                message(type="group", userId="u2", groupId="g2"),
            ],
        )
        fold(database)
    assert tables.accounts(database_url) == {"g1": {"name": "Acme", "plan": "pro"}, "g2": {}}
    assert tables.memberships(database_url) == {("g1", "u1"), ("g1", "u2"), ("g2", "u2")}


def test_what_an_anonymous_id_did_moves_to_the_user_it_is_linked_to(database_url: str) -> None:
    with opened(database_url) as database:
        append(
            database,
            [
                message(type="track", anonymousId="a1", event="Viewed"),
                message(type="identify", anonymousId="a1", traits={"plan": "free", "x": 1}),
                message(type="group", anonymousId="a1", groupId="g1"),
            ],
        )
        fold(database)
        assert tables.counts(database_url) == {}
        assert tables.anonymous_counts(database_url) == {(TODAY, "a1", "track", "Viewed"): 1}
        assert tables.anonymous_traits(database_url) == {"a1": {"plan": "free", "x": 1}}
        append(
            database,
            [
                message(type="identify", userId="u1", anonymousId="a1", traits={"plan": "pro"}),
                message(type="track", anonymousId="a1", event="Viewed"),  # after the link
            ],
        )
        fold(database)
    assert tables.counts(database_url) == {(TODAY, "u1", "track", "Viewed"): 2}
    # The anonymous traits fill gaps beneath the user's own.
    assert tables.users(database_url) == {"u1": {"plan": "pro", "x": 1}}
    assert tables.memberships(database_url) == {("g1", "u1")}
    assert tables.anonymous_counts(database_url) == {}
    assert tables.anonymous_traits(database_url) == {}
    assert tables.anonymous_memberships(database_url) == set()


def test_an_alias_links_a_previous_id_and_the_first_link_wins(database_url: str) -> None:
    with opened(database_url) as database:
        append(
            database,
            [
                message(type="track", anonymousId="a1", event="E"),
                message(type="alias", previousId="a1", userId="u1"),
                message(type="alias", previousId="a1", userId="u2"),
                message(type="track", anonymousId="a1", event="E"),
            ],
        )
        fold(database)
    assert tables.counts(database_url) == {(TODAY, "u1", "track", "E"): 2}


def test_small_chunks_fold_to_the_same_tables_as_one(database_url: str) -> None:
    messages = [
        message(type="identify", userId=f"u{i % 3}", traits={"n": i}, anonymousId=f"a{i % 4}")
        if i % 5 == 0
        else message(type="track", anonymousId=f"a{i % 4}", event=f"E{i % 2}")
        for i in range(40)
    ]
    with opened(database_url) as database:
        append(database, messages)
        assert fold(database, batch_size=3).folded == 40
        chunked = (
            tables.counts(database_url),
            tables.users(database_url),
            tables.anonymous_counts(database_url),
        )
        tables.wipe(database_url)
        append(database, messages)  # the ledger was wiped too
        assert fold(database).folded == 40
    assert chunked == (
        tables.counts(database_url),
        tables.users(database_url),
        tables.anonymous_counts(database_url),
    )
    assert chunked[0]  # the links moved anonymous counts to users


def test_anonymous_ids_idle_past_the_ttl_are_pruned_and_counted(database_url: str) -> None:
    with opened(database_url) as database:
        append(
            database,
            [
                message(type="track", anonymousId="idle", event="E"),
                message(type="track", anonymousId="idle", event="E"),
                message(type="identify", anonymousId="idle", traits={"a": 1}),
            ],
        )
        fold(database)
        later = NOW + timedelta(days=2)
        append(database, [message(at=later, type="track", anonymousId="active", event="E")])
        report = fold(database, now=later + timedelta(hours=1), ttl_days=1)
    assert report == rollup.FoldReport(
        folded=1, pruned_anonymous_events=2, pruned_anonymous_profiles=1
    )
    assert set(tables.anonymous_counts(database_url)) == {(later.date(), "active", "track", "E")}
    assert tables.drops(database_url) == {
        Reason.ANONYMOUS_TTL_EVENTS: 2,
        Reason.ANONYMOUS_TTL_PROFILES: 1,
    }
