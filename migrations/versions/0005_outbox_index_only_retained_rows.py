"""index only the outbox rows kept for audit

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28 15:20:00

The index on (folded_at, id) covered every row. Unfolded rows are now found by id range, so
it is replaced by a partial index on folded_at over the rows kept for audit retention, which
only their pruning reads: an insert or a fold's delete no longer maintains a second index.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None

RETAINED = sa.text("folded_at IS NOT NULL")


def upgrade() -> None:
    op.drop_index("ix_accoil_outbox_folded_at_id", table_name="accoil_outbox")
    op.create_index(
        "ix_accoil_outbox_folded_at",
        "accoil_outbox",
        ["folded_at"],
        sqlite_where=RETAINED,
        postgresql_where=RETAINED,
    )


def downgrade() -> None:
    op.drop_index("ix_accoil_outbox_folded_at", table_name="accoil_outbox")
    op.create_index("ix_accoil_outbox_folded_at_id", "accoil_outbox", ["folded_at", "id"])
