"""index anonymous data by id and by last sight, and links by the row that made them

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-28 19:00:00

Every fold pruned anonymous ids idle past the TTL by reading all anonymous data, and moving
a newly linked id's counts read all anonymous counts (their key leads with the day): with a
million anonymous count rows an empty fold took about 4 s, holding SQLite's write lock.
Indexes on last_seen_at let the prune read only rows that aged out; one on the counts'
anonymous_id lets it, and a link, find an id's rows; and one on the links' outbox_id lets a
fold find the links its chunk made instead of reading every link ever made.
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
