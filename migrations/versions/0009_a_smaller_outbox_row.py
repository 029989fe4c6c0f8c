"""a smaller outbox row: no generated messageId, no payload unless kept, no stored day

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05 10:05:00

A messageId the buffer made up names nothing a client could send again, and the fold never
reads it, nor a payload that is not kept: both are now SQL NULL rather than 36 characters
and a JSON ``null`` in every row. The day is the UTC day of ``timestamp``, derived where it
is needed rather than stored. On SQLite the table is copied (a batch alter); its
AUTOINCREMENT, and the ids it has handed out, are kept, since ids are never reused.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from accoil_buffer.store.dialects import dialect_for, utc_day

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | None = None
depends_on: str | None = None

OLD_PAYLOAD = (
    "the whole normalised message if kept for audit (outbox_retention_hours); else JSON null"
)
NEW_PAYLOAD = "the whole normalised message if kept for audit (outbox_retention_hours); else NULL"
MESSAGE_ID = "the messageId a client sent; NULL for one the buffer generated"


def _smaller(smaller: bool) -> None:
    bind = op.get_bind()
    with (
        dialect_for(bind).copying(bind, "accoil_outbox"),
        op.batch_alter_table("accoil_outbox", table_kwargs={"sqlite_autoincrement": True}) as table,
    ):
        table.alter_column(
            "message_id",
            existing_type=sa.String(255),
            nullable=smaller,
            comment=MESSAGE_ID if smaller else None,
        )
        table.alter_column(
            "payload",
            existing_type=sa.JSON(),
            nullable=smaller,
            comment=NEW_PAYLOAD if smaller else OLD_PAYLOAD,
            existing_comment=OLD_PAYLOAD if smaller else NEW_PAYLOAD,
        )
        if smaller:
            table.drop_column("day")
        else:
            table.alter_column("day", existing_type=sa.Date(), nullable=False)


def upgrade() -> None:
    _smaller(True)


def downgrade() -> None:
    op.add_column("accoil_outbox", sa.Column("day", sa.Date(), comment="UTC day of timestamp"))
    outbox = sa.table(
        "accoil_outbox",
        sa.column("message_id"),
        sa.column("payload"),
        sa.column("day"),
        sa.column("timestamp"),
    )
    op.execute(
        outbox.update().values(
            message_id=sa.func.coalesce(outbox.c.message_id, ""),
            payload=sa.func.coalesce(outbox.c.payload, sa.literal_column("'null'")),
            day=utc_day(outbox.c.timestamp),
        )
    )
    _smaller(False)
