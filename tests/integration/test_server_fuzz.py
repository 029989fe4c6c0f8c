"""Fuzzing the HTTP API in process: no 5xx, and no message answered as accepted is lost."""

from __future__ import annotations

import gzip
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import event
from starlette.testclient import TestClient

from accoil_buffer import Buffer, ServerConfig
from accoil_buffer.messages import apply_batch, is_deliverable
from accoil_buffer.server import ENDPOINTS, Sidecar
from tests.support import tables

LOCAL = "http://127.0.0.1:8740"  # the daemon's own address: status and metrics answer there

odd_text = st.text(
    st.characters(codec=None, categories=None) | st.sampled_from("\x00\ud800\udfff\u202e\ufeff"),
    max_size=20,
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.integers(-(10**400), 10**400),  # past a double's range
    st.sampled_from([10**400, -(10**400), 2**53 + 1, 5e-324, 1e308]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
    odd_text,
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def _nest(depth: int) -> Any:
    value: Any = "bottom"
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


# Past the nesting limit of a message (32 levels), well within what JSON parsing takes.
deep = st.integers(20, 60).map(_nest)


ids = st.one_of(st.text(max_size=12), st.integers(), st.none(), st.booleans(), json_values, deep)
message = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["identify", "group", "track", "page", "screen", "alias", "nope"]),
        "userId": ids,
        "anonymousId": ids,
        "groupId": ids,
        "previousId": ids,
        "event": st.one_of(st.text(max_size=30), json_values),
        "name": st.one_of(st.text(max_size=30), st.none(), json_values),
        "traits": json_values | deep,
        "properties": json_values | deep,
        "context": json_values,
        "integrations": st.one_of(json_values, st.just({"Accoil Analytics": False})),
        "timestamp": st.one_of(
            st.text(max_size=30),
            st.integers(),
            st.floats(allow_nan=False),
            st.just("2026-11-28T10:00:00Z"),
            scalars,
        ),
        "originalTimestamp": scalars,
        "sentAt": st.one_of(st.text(max_size=30), st.just("2026-11-28T10:00:05Z"), scalars),
    },
)


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, str]]:
    url = f"sqlite:///{tmp_path_factory.mktemp('fuzz') / 'fuzz.db'}"
    with Buffer(url, start=False) as buffer:
        yield TestClient(Sidecar(buffer, ServerConfig()).app, base_url=LOCAL), url


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
        assert tables.message_ids_kept(url, [m for m in sent if m]) == set()
        return
    batch = ENDPOINTS[endpoint] == "batch"
    refused = {r["index"] for r in answer.get("rejected", [])}
    accepted = [m for i, m in enumerate(sent) if i not in refused and m] if batch else sent[:1]
    assert all(accepted)
    # What integrations turn off for Accoil is accepted and counted, but not kept.
    merged = [apply_batch(item, body) for item in items] if batch else items
    kept = {m for m, item in zip(sent, merged, strict=True) if m in accepted and _delivered(item)}
    assert tables.message_ids_kept(url, [m for m in accepted if m]) == kept
    assert (
        tables.message_ids_kept(url, [m for i, m in enumerate(sent) if i in refused and m]) == set()
    )


def _delivered(message: dict[str, Any]) -> bool:
    return is_deliverable(message.get("integrations"))


def test_the_fuzzer_reaches_both_outcomes(sidecar: tuple[TestClient, str]) -> None:
    client, _ = sidecar
    good = client.post("/v1/track", json={"userId": "u", "event": "E"})
    bad = client.post("/v1/track", json={"event": "E"})
    assert (good.status_code, bad.status_code) == (200, 400)


def test_a_database_that_went_away_is_503(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'gone.db'}"
    with Buffer(url, start=False) as buffer:
        client = TestClient(Sidecar(buffer, ServerConfig()).app, base_url=LOCAL)
        (tmp_path / "gone.db").unlink()
        for suffix in ("-wal", "-shm"):
            (tmp_path / f"gone.db{suffix}").unlink(missing_ok=True)
        buffer._parts.database.dispose()  # drop pooled connections to the deleted file
        answer = client.post("/v1/track", json={"userId": "u", "event": "E"})
        health = client.get("/health")
        assert not (tmp_path / "gone.db").exists()  # no empty database took its place
    assert answer.status_code == 503
    assert answer.json()["code"] == "unavailable"
    assert health.status_code == 503


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(batch=st.lists(st.one_of(message, json_values), max_size=6))
@example(batch=[{"type": "identify", "integrations": {"Accoil Analytics": False}, "userId": 0}])
def test_ingest_many_stores_every_valid_message_beside_any_other(
    sidecar: tuple[TestClient, str], batch: list[Any]
) -> None:
    _, url = sidecar
    sent = []
    for item in batch:
        if isinstance(item, dict):
            item["messageId"] = str(uuid.uuid4())
        sent.append(item.get("messageId") if isinstance(item, dict) else None)
    with Buffer(url, start=False) as buffer:
        report = buffer.ingest_many(batch)
    refused = {r.index for r in report.rejected}
    accepted = [m for i, m in enumerate(sent) if i not in refused]
    assert all(accepted)
    # Accepted but turned off for Accoil by its integrations: not stored, as filtered.
    kept = [m for i, m in enumerate(sent) if i not in refused and _delivered(batch[i])]
    assert tables.message_ids_kept(url, [m for m in kept if m]) == set(kept)
    assert (
        tables.message_ids_kept(url, [m for i, m in enumerate(sent) if i in refused and m]) == set()
    )


def test_one_huge_number_loses_only_its_own_message(sidecar: tuple[TestClient, str]) -> None:
    client, url = sidecar
    run = uuid.uuid4().hex
    tracks = [
        {"type": "track", "userId": "u", "event": "E", "messageId": f"{run}-{i}"} for i in range(99)
    ]
    huge = "1" + "0" * 5000  # past Python's limit on the digits of an int
    body = json.dumps({"batch": tracks})[:-2] + f', {{"type": "group", "userId": {huge}}}]}}'
    answer = client.post("/v1/batch", content=body.encode())
    assert answer.status_code == 200, answer.text
    assert [r["index"] for r in answer.json()["rejected"]] == [99]
    assert "not a JSON number" in answer.json()["rejected"][0]["message"]
    assert tables.message_ids_kept(url, [t["messageId"] for t in tracks]) == {
        t["messageId"] for t in tracks
    }
    single = client.post("/v1/track", content=b'{"userId": 1' + b"0" * 400 + b', "event": "E"}')
    assert single.status_code == 400
    assert single.json()["message"].startswith("userId:")


def _full_disk(buffer: Buffer, full: bool) -> None:
    """Cap the SQLite file at the pages it has (SQLite then fails writes as on a full disk)."""
    engine = buffer._parts.database.engine

    def cap(dbapi_connection: Any, _record: Any) -> None:
        pages = dbapi_connection.execute("PRAGMA page_count").fetchone()[0]
        dbapi_connection.execute(f"PRAGMA max_page_count = {pages if full else 1 << 30}")

    event.listen(engine, "connect", cap)
    engine.dispose()


def test_health_says_it_cannot_store_while_the_disk_is_full(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'full.db'}"
    with Buffer(url, start=False) as buffer:
        client = TestClient(Sidecar(buffer, ServerConfig()).app, base_url=LOCAL)
        assert client.get("/health").json() == {
            "status": "ok",
            "storing": True,
            "delivery": "off",
        }
        _full_disk(buffer, full=True)
        batch = [{"type": "track", "userId": f"u{i}", "event": "E" * 200} for i in range(100)]
        answers = [client.post("/v1/batch", json={"batch": batch}).status_code for _ in range(50)]
        assert answers[-1] == 503
        health = client.get("/health")
        assert health.status_code == 503
        assert health.json()["storing"] is False
        assert "full" in health.json()["problem"]
        metrics = client.get("/metrics").text
        assert 'accoil_buffer_http_responses_total{status="503"}' in metrics
        _full_disk(buffer, full=False)
        assert client.get("/health").status_code == 200
        assert client.post("/v1/batch", json={"batch": batch}).status_code == 200


def test_a_defect_is_answered_500_and_counted(tmp_path: Path) -> None:
    with Buffer(f"sqlite:///{tmp_path / 'd.db'}", start=False) as buffer:
        sidecar = Sidecar(buffer, ServerConfig())

        def broken(_messages: object) -> None:
            raise RuntimeError("a defect")

        buffer.ingest_many = broken  # type: ignore[assignment,method-assign]
        client = TestClient(sidecar.app, base_url=LOCAL, raise_server_exceptions=False)
        assert client.post("/v1/track", json={"userId": "u", "event": "E"}).status_code == 500
        metrics = client.get("/metrics").text
    assert 'accoil_buffer_http_responses_total{status="500"} 1.0' in metrics
