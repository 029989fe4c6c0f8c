"""Throwaway PostgreSQL databases: each test's is cloned (``CREATE DATABASE … TEMPLATE``) from
one migrated per session, so it starts from a fresh schema in tens of milliseconds. There is no
skip: without PostgreSQL the PostgreSQL tests fail."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import psycopg
from sqlalchemy.engine import make_url

POSTGRES_URL = os.environ.get(
    "ACCOIL_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def admin() -> psycopg.Connection[tuple[object, ...]]:
    url = make_url(POSTGRES_URL)
    return psycopg.connect(
        host=url.host,
        port=url.port or 5432,
        user=url.username,
        password=url.password,
        dbname=url.database,
        autocommit=True,
    )


def url_of(name: str) -> str:
    return (
        make_url(POSTGRES_URL)
        .set(drivername="postgresql+psycopg", database=name)
        .render_as_string(hide_password=False)
    )


def fresh_postgres(template: str | None) -> Iterator[str]:
    name = f"accoil_test_{uuid.uuid4().hex[:12]}"
    with admin() as conn:
        clause = f' TEMPLATE "{template}"' if template else ""
        conn.execute(f'CREATE DATABASE "{name}"{clause}')
    yield url_of(name)
    with admin() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
