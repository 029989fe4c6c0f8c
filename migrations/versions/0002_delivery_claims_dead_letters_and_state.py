"""delivery claims, dead letters and state

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 11:48:47.396484
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None

CLAIMED_TABLES = (
    "accoil_users",
    "accoil_accounts",
    "accoil_memberships",
    "accoil_daily_counts",
)


def upgrade() -> None:
    op.create_table(
        "accoil_dead_letters",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "message_id",
            sa.String(length=255),
            nullable=False,
            comment="the deterministic messageId sent",
        ),
        sa.Column("type", sa.String(length=16), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False, comment="the exact body sent to Accoil"),
        sa.Column("status", sa.Integer(), nullable=True, comment="Accoil's HTTP status"),
        sa.Column(
            "response",
            sa.String(length=2000),
            nullable=True,
            comment="the start of Accoil's answer",
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "replayed_at",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="set when a replay was accepted",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_accoil_dead_letters")),
        comment="Messages Accoil refused (400, 413, other 4xx); listed and replayed from the CLI.",
    )
    op.create_table(
        "accoil_delivery_state",
        sa.Column("id", sa.Integer(), nullable=False, comment="always 1"),
        sa.Column("consecutive_failures", sa.Integer(), server_default="0", nullable=False),
        sa.Column(
            "next_attempt_at",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="scheduled passes wait until then",
        ),
        sa.Column(
            "offline_since",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="first failure of the current outage",
        ),
        sa.Column(
            "paused_reason",
            sa.String(length=200),
            nullable=True,
            comment="set on 401/403: delivery waits for a new key",
        ),
        sa.Column("last_success_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_failure_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.String(length=500), nullable=True),
        sa.Column("delivered_total", sa.BigInteger(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_accoil_delivery_state")),
        comment="How delivery to Accoil is going: one row.",
    )
    for table in CLAIMED_TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(
                sa.Column(
                    "claimed_by",
                    sa.String(length=64),
                    nullable=True,
                    comment="the flusher sending this row now",
                )
            )
            batch_op.add_column(
                sa.Column(
                    "claimed_until",
                    sa.DateTime(timezone=True),
                    nullable=True,
                    comment="the claim lapses after this",
                )
            )


def downgrade() -> None:
    # The older code has no dead letters: the messages Accoil refused would be gone for good.
    letters = sa.table("accoil_dead_letters", sa.column("replayed_at"))
    kept = op.get_bind().scalar(
        sa.select(sa.func.count()).select_from(letters).where(letters.c.replayed_at.is_(None))
    )
    if kept:
        raise RuntimeError(
            f"{kept} dead letters are kept: replay them (`accoil-buffer dead-letters replay`) "
            "or delete them from accoil_dead_letters before downgrading"
        )
    for table in CLAIMED_TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column("claimed_until")
            batch_op.drop_column("claimed_by")
    op.drop_table("accoil_delivery_state")
    op.drop_table("accoil_dead_letters")
