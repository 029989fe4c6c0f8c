"""index the rows waiting for delivery

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28 18:40:00

Delivered rows stay in their tables, and a claim read past all of them: a partial index over
each table's pending rows, in claim order, makes a claim or a status read only what is pending.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None

# (table, the column claims order by, the condition of a row Accoil does not have yet):
# frozen here as written in this revision, not imported from the models.
PENDING = (
    ("accoil_users", "user_id", "traits_version > delivered_version"),
    ("accoil_accounts", "group_id", "traits_version > delivered_version"),
    ("accoil_memberships", "group_id", "delivered_at IS NULL"),
    ("accoil_daily_counts", "day", "count > delivered_count"),
)


def upgrade() -> None:
    for table, column, waiting in PENDING:
        op.create_index(
            f"ix_{table}_pending",
            table,
            [column],
            sqlite_where=sa.text(waiting),
            postgresql_where=sa.text(waiting),
        )


def downgrade() -> None:
    for table, _, _ in PENDING:
        op.drop_index(f"ix_{table}_pending", table_name=table)
