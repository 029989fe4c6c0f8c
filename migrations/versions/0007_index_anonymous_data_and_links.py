"""index anonymous data by id and by last sight, and links by the row that made them

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-28 19:00:00

A fold's prune, its moves of linked anonymous data and its search for new links read whole
tables under SQLite's write lock: these indexes let each read only the rows it needs.
"""

from __future__ import annotations

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | None = None
depends_on: str | None = None

INDEXES = (
    ("accoil_anonymous_counts", "last_seen_at"),
    ("accoil_anonymous_counts", "anonymous_id"),
    ("accoil_anonymous_traits", "last_seen_at"),
    ("accoil_anonymous_memberships", "last_seen_at"),
    ("accoil_identity_links", "outbox_id"),
)


def upgrade() -> None:
    for table, column in INDEXES:
        op.create_index(f"ix_{table}_{column}", table, [column])


def downgrade() -> None:
    for table, column in INDEXES:
        op.drop_index(f"ix_{table}_{column}", table_name=table)
