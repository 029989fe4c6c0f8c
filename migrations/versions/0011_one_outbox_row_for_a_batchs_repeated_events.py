"""one outbox row for a batch's repeated events: accoil_outbox.occurrences

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06 20:40:00

Events of one batch that differ in nothing the fold reads (kind, name, ids, UTC day; no
client messageId to check, no payload kept) are written as one row that counts them all.
Rows written before this revision stand for one event each, the column's default.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from accoil_buffer.store.dialects import dialect_for

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | None = None
depends_on: str | None = None

COMMENT = (
    "events this row stands for: a batch's events that differ in nothing the fold reads "
    "share one row"
)


def upgrade() -> None:
    op.add_column(
        "accoil_outbox",
        sa.Column(
            "occurrences",
            sa.Integer(),
            nullable=False,
            server_default=sa.text("1"),
            comment=COMMENT,
        ),
    )


def downgrade() -> None:
    # The older code counts each row once: a waiting row that stands for several would lose
    # all but one of its events.
    outbox = sa.table("accoil_outbox", sa.column("occurrences"), sa.column("folded_at"))
    bind = op.get_bind()
    merged = bind.scalar(
        sa.select(sa.func.count())
        .select_from(outbox)
        .where(outbox.c.folded_at.is_(None), outbox.c.occurrences > 1)
    )
    if merged:
        raise RuntimeError(
            f"{merged} outbox rows wait to be folded that stand for several events each: "
            "run `accoil-buffer flush` with this version before downgrading"
        )
    with (
        dialect_for(bind).copying(bind, "accoil_outbox"),
        op.batch_alter_table("accoil_outbox", table_kwargs={"sqlite_autoincrement": True}) as table,
    ):
        table.drop_column("occurrences")
