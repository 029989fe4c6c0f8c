"""Post to Accoil: messages forwarded whole

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28 13:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "accoil_outbox_posts",
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
            comment="the message's own messageId, sent as is",
        ),
        sa.Column("type", sa.String(length=16), nullable=False, comment="the message's type"),
        sa.Column(
            "payload",
            sa.JSON(),
            nullable=False,
            comment="the whole normalised message, as forwarded",
        ),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "claimed_by",
            sa.String(length=64),
            nullable=True,
            comment="the flusher sending this row now",
        ),
        sa.Column(
            "claimed_until",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="the claim lapses after this",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_accoil_outbox_posts")),
        comment="Post to Accoil: messages forwarded whole; deleted once Accoil accepts them.",
        sqlite_autoincrement=True,
    )


def downgrade() -> None:
    # The older code has no posts: one still waiting would never reach Accoil.
    posts = sa.table("accoil_outbox_posts", sa.column("id"))
    waiting = op.get_bind().scalar(sa.select(sa.func.count()).select_from(posts))
    if waiting:
        raise RuntimeError(
            f"{waiting} posts wait to be sent to Accoil: run `accoil-buffer flush` with this "
            "version before downgrading"
        )
    op.drop_table("accoil_outbox_posts")
