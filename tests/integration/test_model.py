"""Property: any sequence of calls, folded at any points in any chunk size (and trait merges in
any step size), gives the same state as the reference model, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any
from unittest.mock import patch

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from accoil_buffer import Buffer
from accoil_buffer.store import rollup
from tests.support import tables
from tests.support.clock import Clock
from tests.support.model import Model

USERS = ["u1", "u2", "u3"]
ANONYMOUS = ["a1", "a2", "a3"]
DAYS = ["2026-11-26T10:00:00Z", "2026-11-27T23:59:59Z", "2026-11-28T00:00:00Z"]

traits = st.dictionaries(
    st.sampled_from(["k1", "k2", "k3"]),
    st.one_of(
        st.none(),
        st.integers(-2, 2),
        st.sampled_from(["x", "y"]),
        st.booleans(),
        st.just({"nested": [1, "two"]}),
    ),
    max_size=3,
)


@st.composite
def identities(draw: st.DrawFn) -> dict[str, str]:
    choice = draw(st.sampled_from(["user", "anonymous", "both"]))
    ids = {}
    if choice in {"user", "both"}:
        ids["userId"] = draw(st.sampled_from(USERS))
    if choice in {"anonymous", "both"}:
        ids["anonymousId"] = draw(st.sampled_from(ANONYMOUS))
    return ids


@st.composite
def messages(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["identify", "group", "track", "page", "screen", "alias"]))
    message: dict[str, Any] = {"type": kind, "timestamp": draw(st.sampled_from(DAYS))}
    if kind == "alias":
        message["previousId"] = draw(st.sampled_from(ANONYMOUS + USERS[:1]))
        message["userId"] = draw(st.sampled_from(USERS))
    else:
        message.update(draw(identities()))
    if kind in {"identify", "group"}:
        message["traits"] = draw(traits)
    if kind == "group":
        message["groupId"] = draw(st.sampled_from(["g1", "g2"]))
    if kind == "track":
        message["event"] = draw(st.sampled_from(["E1", "E2"]))
    if kind in {"page", "screen"} and draw(st.booleans()):
        message["name"] = draw(st.sampled_from(["Home", "Settings"]))
    if draw(st.integers(0, 9)) == 0:
        message["integrations"] = {"Accoil Analytics": False}
    return message


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[dict[str, Any]], set[int], set[int], int, int]:
    calls = draw(st.lists(messages(), min_size=1, max_size=40))
    for index, call in enumerate(calls):
        # A few messageIds repeat, as a retrying client's would; some calls have none, and
        # the buffer makes one (a batch's alike events without one share a row).
        given = draw(st.sampled_from(["repeated", "own", "none"]))
        if given != "none":
            call["messageId"] = f"m{draw(st.integers(0, index)) if given == 'repeated' else index}"
    # Calls from one boundary to the next are sent as one batch (ingest_many).
    boundaries = draw(st.sets(st.integers(1, len(calls)), max_size=8)) | {len(calls)}
    fold_points = draw(st.sets(st.integers(1, len(calls)), max_size=5))
    batch_size = draw(st.integers(1, 12))
    # Steps of a chunk's trait merges, smaller than, equal to or larger than the chunk.
    profile_step = draw(st.integers(1, 12))
    return calls, boundaries, fold_points, batch_size, profile_step


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(scenario=scenarios())
def test_fold_matches_the_reference_model(
    database_url: str, scenario: tuple[list[dict[str, Any]], set[int], set[int], int, int]
) -> None:
    calls, boundaries, fold_points, batch_size, profile_step = scenario
    model = Model()
    with (
        patch.object(rollup, "_PROFILE_STEP", profile_step),
        Buffer(database_url, start=False, clock=Clock(), fold_batch_size=batch_size) as buf,
    ):
        tables.wipe(database_url)  # the examples share one database
        start = 0
        for end in sorted(boundaries | fold_points):
            batch = calls[start:end]
            if len(batch) == 1:
                buf.ingest(batch[0])
            else:
                assert not buf.ingest_many(batch).rejected
            for call in batch:
                model.apply(call)
            if end in fold_points:
                buf.flush()
            start = end
    assert tables.counts(database_url) == dict(model.counts)
    assert tables.anonymous_counts(database_url) == dict(model.anonymous_counts)
    assert tables.users(database_url) == model.users
    assert tables.anonymous_traits(database_url) == model.anonymous_traits
    assert tables.accounts(database_url) == model.accounts
    assert tables.memberships(database_url) == model.memberships
    assert tables.anonymous_memberships(database_url) == model.anonymous_memberships
