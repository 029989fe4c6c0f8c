"""Fixtures every test folder sees: every contract test runs on SQLite and on a real
PostgreSQL. Tests under ``slow/`` are marked ``slow``, so ``pytest -m "not slow"`` is the fast loop.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from accoil_buffer import Buffer, Config
from accoil_buffer.store.engine import Database
from accoil_buffer.store.migrate import upgrade
from tests.support.clock import Clock
from tests.support.fake_accoil import FakeAccoil, running
from tests.support.postgres import admin, fresh_postgres, url_of

SLOW_DIR = Path(__file__).resolve().parent / "slow"
TEMPLATE = f"accoil_test_template_{os.getpid()}"


@pytest.hookimpl(tryfirst=True)  # before ``-m`` deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(SLOW_DIR):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def postgres_template() -> Iterator[str]:
    with admin() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{TEMPLATE}"')
        conn.execute(f'CREATE DATABASE "{TEMPLATE}"')
    database = Database.open(Config(database_url=url_of(TEMPLATE)))
    upgrade(database)
    database.dispose()
    yield TEMPLATE
    with admin() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{TEMPLATE}" WITH (FORCE)')


@pytest.fixture
def postgres_database(request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh migrated PostgreSQL database for one test."""
    template = request.getfixturevalue("postgres_template")
    yield from fresh_postgres(template)


@pytest.fixture
def empty_postgres_database() -> Iterator[str]:
    """A fresh PostgreSQL database with no tables at all."""
    yield from fresh_postgres(None)


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
