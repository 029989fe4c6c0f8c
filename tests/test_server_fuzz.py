"""Fuzzing the HTTP API in process: no 5xx, and no message answered as accepted is lost."""

from __future__ import annotations

import gzip
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, select
from starlette.testclient import TestClient

from accoil_buffer import Buffer, ServerConfig
from accoil_buffer.server import ENDPOINTS, Sidecar
from accoil_buffer.store import schema

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
ids = st.one_of(st.text(max_size=12), st.integers(), st.none(), st.booleans(), json_values)
message = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["identify", "group", "track", "page", "screen", "alias", "nope"]),
        "userId": ids,
        "anonymousId": ids,
        "groupId": ids,
        "previousId": ids,
        "event": st.one_of(st.text(max_size=30), json_values),
        "name": st.one_of(st.text(max_size=30), st.none()),
        "traits": json_values,
        "properties": json_values,
        "context": json_values,
        "integrations": st.one_of(json_values, st.just({"Accoil Analytics": False})),
        "timestamp": st.one_of(
            st.text(max_size=30),
            st.integers(),
            st.floats(allow_nan=False),
            st.just("2026-11-28T10:00:00Z"),
        ),
        "sentAt": st.one_of(st.text(max_size=30), st.just("2026-11-28T10:00:05Z")),
    },
)


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, str]]:
    url = f"sqlite:///{tmp_path_factory.mktemp('fuzz') / 'fuzz.db'}"
    with Buffer(url, start=False) as buffer:
        yield TestClient(Sidecar(buffer, ServerConfig()).app), url


def _ledger(url: str, wanted: list[str]) -> set[str]:
    engine = create_engine(url)
    with engine.connect() as conn:
        found = set(
            conn.execute(
                select(schema.message_ids.c.message_id).where(
                    schema.message_ids.c.message_id.in_(wanted)
                )
            ).scalars()
        )
    engine.dispose()
    return found


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    endpoint=st.sampled_from(sorted(ENDPOINTS)),
    body=st.one_of(
        message,
        st.fixed_dictionaries(
            {"batch": st.lists(st.one_of(message, json_values), max_size=5)},
            optional={"context": json_values, "sentAt": json_values, "integrations": json_values},
        ),
        json_values,
    ),
    squeeze=st.booleans(),
    raw=st.one_of(st.none(), st.binary(max_size=40)),
)
def test_no_5xx_and_nothing_accepted_is_lost(
    sidecar: tuple[TestClient, str], endpoint: str, body: Any, squeeze: bool, raw: bytes | None
) -> None:
    client, url = sidecar
    sent: list[str | None] = []  # the messageId we gave each message, by position
    items = (
        body["batch"] if isinstance(body, dict) and isinstance(body.get("batch"), list) else [body]
    )
    for item in items:
        if isinstance(item, dict):
            item["messageId"] = str(uuid.uuid4())
            sent.append(item["messageId"])
        else:
            sent.append(None)
    content = raw if raw is not None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if squeeze:
        content, headers["Content-Encoding"] = gzip.compress(content), "gzip"
    response = client.post(f"/v1/{endpoint}", content=content, headers=headers)
    assert response.status_code < 500, response.text
    answer = response.json()
    if response.status_code != 200:
        assert set(answer) == {"code", "message"}
        assert _ledger(url, [m for m in sent if m]) == set()
        return
    batch = ENDPOINTS[endpoint] == "batch"
    refused = {r["index"] for r in answer.get("rejected", [])}
    accepted = [m for i, m in enumerate(sent) if i not in refused and m] if batch else sent[:1]
    assert all(accepted)
    assert _ledger(url, [m for m in accepted if m]) == set(accepted)
    assert _ledger(url, [m for i, m in enumerate(sent) if i in refused and m]) == set()


def test_the_fuzzer_reaches_both_outcomes(sidecar: tuple[TestClient, str]) -> None:
    client, _ = sidecar
    good = client.post("/v1/track", json={"userId": "u", "event": "E"})
    bad = client.post("/v1/track", json={"event": "E"})
    assert (good.status_code, bad.status_code) == (200, 400)


def test_a_database_that_went_away_is_503(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'gone.db'}"
    with Buffer(url, start=False) as buffer:
        client = TestClient(Sidecar(buffer, ServerConfig()).app)
        (tmp_path / "gone.db").unlink()
        for suffix in ("-wal", "-shm"):
            (tmp_path / f"gone.db{suffix}").unlink(missing_ok=True)
        buffer._database.dispose()  # drop pooled connections to the deleted file
        answer = client.post("/v1/track", json={"userId": "u", "event": "E"})
        health = client.get("/health")
        assert not (tmp_path / "gone.db").exists()  # no empty database took its place
    assert answer.status_code == 503
    assert answer.json()["code"] == "unavailable"
    assert health.status_code == 503
