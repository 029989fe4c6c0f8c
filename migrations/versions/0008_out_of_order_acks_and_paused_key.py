"""record occurrences acknowledged out of order, and which key a pause is for

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04 15:20:00

The occurrences of one count row are now sent concurrently, so Accoil may acknowledge an
ordinal above one still in flight: ``acked_beyond`` keeps those (a JSON array, null when
none), so that a failure never sends them twice. A pause after 401/403 now names the key it
was caused by (``paused_key``, a fingerprint, never the key): a new key delivers at once.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("accoil_daily_counts") as table:
        table.add_column(
            sa.Column(
                "acked_beyond",
                sa.JSON(),
                comment="ordinals above delivered_count that Accoil acknowledged",
            )
        )
    with op.batch_alter_table("accoil_delivery_state") as table:
        table.add_column(
            sa.Column(
                "paused_key",
                sa.String(32),
                comment="fingerprint of the API key the pause is for",
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("accoil_delivery_state") as table:
        table.drop_column("paused_key")
    with op.batch_alter_table("accoil_daily_counts") as table:
        table.drop_column("acked_beyond")
