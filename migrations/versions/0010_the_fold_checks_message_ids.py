"""the fold checks client messageIds: rows waiting at the upgrade were checked on arrival

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06 05:40:00

A client's messageId used to be claimed in the ledger when it arrived; now the fold claims
the id an outbox row carries, and deletes the row as a copy if the ledger holds it already.
A row written before this revision carries an id the ledger holds already (its own claim),
so the id is cleared: the fold must not take it for a copy.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from accoil_buffer.store.dialects import dialect_for

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | None = None
depends_on: str | None = None

BEFORE = "the messageId a client sent; NULL for one the buffer generated"
AFTER = (
    "the messageId a client sent, for the fold to check; NULL for one the buffer generated "
    "or one checked on arrival"
)
outbox = sa.table("accoil_outbox", sa.column("message_id"), sa.column("folded_at"))
waiting = outbox.c.folded_at.is_(None)


def _comment(comment: str, existing: str) -> None:
    if dialect_for(op.get_bind()).keeps_comments:
        op.alter_column(
            "accoil_outbox",
            "message_id",
            existing_type=sa.String(255),
            comment=comment,
            existing_comment=existing,
        )


def upgrade() -> None:
    op.execute(
        outbox.update().where(waiting, outbox.c.message_id.is_not(None)).values(message_id=None)
    )
    _comment(AFTER, BEFORE)


def downgrade() -> None:
    # The older code never checks a waiting row's id: each would be counted, copies included.
    unchecked = op.get_bind().scalar(
        sa.select(sa.func.count())
        .select_from(outbox)
        .where(waiting, outbox.c.message_id.is_not(None))
    )
    if unchecked:
        raise RuntimeError(
            f"{unchecked} outbox rows wait for the fold to check their messageId: "
            "run `accoil-buffer flush` with this version before downgrading"
        )
    _comment(BEFORE, AFTER)
