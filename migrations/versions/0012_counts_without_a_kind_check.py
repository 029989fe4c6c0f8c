"""the daily and anonymous counts drop their CHECK on kind

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07 01:10:00

SQLite evaluates a CHECK for every row an upsert writes, and the counts are the rows a fold
writes most, so without it a fold writes them faster. Only the fold writes these tables, and it
writes only the event kinds; the check guarded nothing else.
"""

from __future__ import annotations

from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | None = None
depends_on: str | None = None

TABLES = ("accoil_daily_counts", "accoil_anonymous_counts")
KIND_CHECK = "kind IN ('track', 'page', 'screen')"


def upgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.drop_constraint(op.f(f"ck_{table}_kind"), type_="check")


def downgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.create_check_constraint(op.f(f"ck_{table}_kind"), KIND_CHECK)
