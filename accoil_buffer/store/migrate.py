"""Alembic, run in code on our own connection, with our own version table.

The scripts live in the top-level ``migrations/`` folder of the repository and inside the
package (``accoil_buffer/migrations``) once built into a wheel.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Connection

from accoil_buffer.errors import SchemaError
from accoil_buffer.store.engine import Database

VERSION_TABLE = "accoil_alembic_version"
_PACKAGE = Path(__file__).resolve().parent.parent


def include_name(name: str | None, type_: str, _parent: object) -> bool:
    """Only our own tables: the buffer may share an application's database."""
    if type_ != "table":
        return True
    return bool(name and name.startswith("accoil_") and name != VERSION_TABLE)


def script_location() -> Path:
    for candidate in (_PACKAGE / "migrations", _PACKAGE.parent / "migrations"):
        if (candidate / "env.py").is_file():
            return candidate
    raise SchemaError(f"migration scripts not found beside {_PACKAGE}; reinstall accoil-buffer")


def _alembic_config(connection: Connection | None = None) -> AlembicConfig:
    config = AlembicConfig()
    config.set_main_option("script_location", str(script_location()))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    if head is None:
        raise SchemaError("no migration scripts found")
    return head


def _is_known(revision: str) -> bool:
    try:
        return ScriptDirectory.from_config(_alembic_config()).get_revision(revision) is not None
    except CommandError:
        return False


def current_revision(connection: Connection) -> str | None:
    context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
    return context.get_current_revision()


def upgrade(database: Database, revision: str = "head") -> None:
    """Bring the schema to ``revision`` (head by default), holding the migration lock."""
    with database.engine.begin() as conn:
        database.dialect.lock_for_migration(conn)
        command.upgrade(_alembic_config(conn), revision)


def ensure_schema(database: Database, *, auto_migrate: bool) -> None:
    """Upgrade a fresh or older schema when allowed, else refuse with the command to run."""
    with database.engine.connect() as conn:
        current = current_revision(conn)
    head = head_revision()
    if current == head:
        return
    if current is not None and not _is_known(current):
        raise SchemaError(
            f"the database schema is at revision {current}, which this version of "
            "accoil-buffer does not know: it was migrated by a newer version; upgrade accoil-buffer"
        )
    if not auto_migrate:
        raise SchemaError(
            f"the database schema is at revision {current or 'none (empty)'} but this version "
            f"needs {head}: run `accoil-buffer migrate` (or set auto_migrate = true)"
        )
    upgrade(database)
