"""Alembic environment for accoil-buffer; always run through accoil_buffer.store.migrate.

It uses the connection that code passes in, so it never reads alembic.ini, never calls
``fileConfig()`` (which would take over the host application's logging), and only ever
looks at ``accoil_``-prefixed tables (the buffer may share an app's database).
"""

from __future__ import annotations

from alembic import context

from accoil_buffer.store.dialects import dialect_for
from accoil_buffer.store.migrate import VERSION_TABLE, include_name
from accoil_buffer.store.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through `accoil-buffer migrate`, not the alembic CLI")
context.configure(
    connection=connection,
    target_metadata=metadata,
    version_table=VERSION_TABLE,
    include_name=include_name,
    render_as_batch=dialect_for(connection).alters_in_batch,
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
