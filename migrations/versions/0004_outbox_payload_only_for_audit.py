"""the outbox keeps whole messages only for audit retention

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28 14:20:00

Only the column's comment changes (SQLite keeps no comments, so nothing is done there: a batch
alter would rebuild the table for nothing).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from accoil_buffer.store.dialects import dialect_for

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None

OLD = "the whole normalised message"
NEW = "the whole normalised message if kept for audit (outbox_retention_hours); else JSON null"


def _comment(comment: str, existing: str) -> None:
    if not dialect_for(op.get_bind()).keeps_comments:
        return
    op.alter_column(
        "accoil_outbox",
        "payload",
        existing_type=sa.JSON(),
        existing_nullable=False,
        comment=comment,
        existing_comment=existing,
    )


def upgrade() -> None:
    _comment(NEW, OLD)


def downgrade() -> None:
    _comment(OLD, NEW)
