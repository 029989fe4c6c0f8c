"""Shared fixtures: every contract test runs on SQLite and on a real PostgreSQL.

PostgreSQL: a template database is migrated once per test session and cloned for each test
(``CREATE DATABASE … TEMPLATE``), so every test starts from a fresh, migrated schema in tens
of milliseconds. There is no skip: without PostgreSQL the PostgreSQL tests fail.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

from accoil_buffer import Buffer, Config
from accoil_buffer.store.engine import Database
from accoil_buffer.store.migrate import upgrade
from tests.fake_accoil import FakeAccoil, running

ROOT_DIR = Path(__file__).resolve().parent.parent
POSTGRES_URL = os.environ.get(
    "ACCOIL_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
TEMPLATE = f"accoil_test_template_{os.getpid()}"


def fork(child: Callable[[], None]) -> int:
    """Fork; the child runs ``child`` and leaves at once, without pytest's teardown, with exit
    code 0, or 1 if it raised. Returns the child's pid."""
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            child()
        except BaseException:
            code = 1
        os._exit(code)
    return pid


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, start: datetime = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)) -> None:
        self.start = self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


def _admin() -> psycopg.Connection[tuple[object, ...]]:
    url = make_url(POSTGRES_URL)
    return psycopg.connect(
        host=url.host,
        port=url.port or 5432,
        user=url.username,
        password=url.password,
        dbname=url.database,
        autocommit=True,
    )


def _database_url(name: str) -> str:
    return (
        make_url(POSTGRES_URL)
        .set(drivername="postgresql+psycopg", database=name)
        .render_as_string(hide_password=False)
    )


@pytest.fixture(scope="session")
def postgres_template() -> Iterator[str]:
    with _admin() as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{TEMPLATE}"')
        admin.execute(f'CREATE DATABASE "{TEMPLATE}"')
    database = Database.open(Config(database_url=_database_url(TEMPLATE)))
    upgrade(database)
    database.dispose()
    yield TEMPLATE
    with _admin() as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{TEMPLATE}" WITH (FORCE)')


@pytest.fixture
def postgres_database(request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh migrated PostgreSQL database for one test."""
    template = request.getfixturevalue("postgres_template")
    yield from fresh_postgres(template)


@pytest.fixture
def empty_postgres_database() -> Iterator[str]:
    """A fresh PostgreSQL database with no tables at all."""
    yield from fresh_postgres(None)


def fresh_postgres(template: str | None) -> Iterator[str]:
    name = f"accoil_test_{uuid.uuid4().hex[:12]}"
    with _admin() as admin:
        clause = f' TEMPLATE "{template}"' if template else ""
        admin.execute(f'CREATE DATABASE "{name}"{clause}')
    yield _database_url(name)
    with _admin() as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _url(request: pytest.FixtureRequest, tmp_path: Path, postgres_fixture: str) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'buffer.db'}"
    url: str = request.getfixturevalue(postgres_fixture)
    return url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of an empty (for SQLite) or freshly migrated (PostgreSQL) test database."""
    return _url(request, tmp_path, "postgres_database")


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of a test database with no tables at all, on SQLite and on PostgreSQL."""
    return _url(request, tmp_path, "empty_postgres_database")


@pytest.fixture
def fake() -> Iterator[FakeAccoil]:
    """A real HTTP fake of Accoil on a loopback port."""
    with running() as served:
        yield served


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def buffer(database_url: str, clock: Clock) -> Iterator[Buffer]:
    with Buffer(database_url, start=False, clock=clock) as buf:
        yield buf
