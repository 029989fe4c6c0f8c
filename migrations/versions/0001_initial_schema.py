"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-28 11:29:57.464703
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "accoil_accounts",
        sa.Column("group_id", sa.String(length=255), nullable=False),
        sa.Column(
            "traits",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("traits_version", sa.Integer(), nullable=False),
        sa.Column("delivered_version", sa.Integer(), server_default="0", nullable=False),
        sa.Column(
            "last_timestamp",
            sa.DateTime(timezone=True),
            nullable=False,
            comment="of the latest group call",
        ),
        sa.Column("first_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("pending_since", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("group_id", name=op.f("pk_accoil_accounts")),
        comment="One row per account (Segment group), traits merged.",
    )
    op.create_table(
        "accoil_anonymous_counts",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("anonymous_id", sa.String(length=255), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "kind IN ('track', 'page', 'screen')", name=op.f("ck_accoil_anonymous_counts_kind")
        ),
        sa.PrimaryKeyConstraint(
            "day", "anonymous_id", "kind", "name", name=op.f("pk_accoil_anonymous_counts")
        ),
        comment="Counts of anonymous ids not yet linked to a user; moved on identify/alias.",
    )
    op.create_table(
        "accoil_anonymous_memberships",
        sa.Column("anonymous_id", sa.String(length=255), nullable=False),
        sa.Column("group_id", sa.String(length=255), nullable=False),
        sa.Column("last_timestamp", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint(
            "anonymous_id", "group_id", name=op.f("pk_accoil_anonymous_memberships")
        ),
        comment="Group calls that carried only an anonymousId.",
    )
    op.create_table(
        "accoil_anonymous_traits",
        sa.Column("anonymous_id", sa.String(length=255), nullable=False),
        sa.Column(
            "traits",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("last_timestamp", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("anonymous_id", name=op.f("pk_accoil_anonymous_traits")),
        comment="Traits from identify calls that carried only an anonymousId.",
    )
    op.create_table(
        "accoil_daily_counts",
        sa.Column("day", sa.Date(), nullable=False, comment="UTC day"),
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False, comment="track, page or screen"),
        sa.Column(
            "name", sa.String(length=255), nullable=False, comment="event or page/screen name"
        ),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("delivered_count", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("pending_since", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "kind IN ('track', 'page', 'screen')", name=op.f("ck_accoil_daily_counts_kind")
        ),
        sa.PrimaryKeyConstraint(
            "day", "user_id", "kind", "name", name=op.f("pk_accoil_daily_counts")
        ),
        comment="Accoil's model: occurrences per (UTC day, user, kind, name).",
    )
    op.create_table(
        "accoil_drops",
        sa.Column("day", sa.Date(), nullable=False, comment="UTC day it happened"),
        sa.Column("reason", sa.String(length=64), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("day", "reason", name=op.f("pk_accoil_drops")),
        comment="Every drop, filter, prune or correction, counted per day and reason.",
    )
    op.create_table(
        "accoil_identity_links",
        sa.Column("anonymous_id", sa.String(length=255), nullable=False),
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("linked_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "outbox_id",
            sa.BigInteger(),
            nullable=False,
            comment="the outbox row that made the link",
        ),
        sa.PrimaryKeyConstraint("anonymous_id", name=op.f("pk_accoil_identity_links")),
        comment="anonymousId/previousId -> userId; the first link of an id wins.",
    )
    with op.batch_alter_table("accoil_identity_links", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_accoil_identity_links_user_id"), ["user_id"], unique=False
        )

    op.create_table(
        "accoil_memberships",
        sa.Column("group_id", sa.String(length=255), nullable=False),
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("last_timestamp", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "delivered_at",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="null until Accoil has it",
        ),
        sa.PrimaryKeyConstraint("group_id", "user_id", name=op.f("pk_accoil_memberships")),
        comment="Which users belong to which accounts.",
    )
    op.create_table(
        "accoil_message_ids",
        sa.Column("message_id", sa.String(length=255), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("message_id", name=op.f("pk_accoil_message_ids")),
        comment="messageIds seen within the dedupe window: the idempotency ledger.",
    )
    with op.batch_alter_table("accoil_message_ids", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_accoil_message_ids_received_at"), ["received_at"], unique=False
        )

    op.create_table(
        "accoil_outbox",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("message_id", sa.String(length=255), nullable=False),
        sa.Column("type", sa.String(length=16), nullable=False),
        sa.Column("user_id", sa.String(length=255), nullable=True),
        sa.Column("anonymous_id", sa.String(length=255), nullable=True),
        sa.Column("group_id", sa.String(length=255), nullable=True),
        sa.Column("previous_id", sa.String(length=255), nullable=True),
        sa.Column(
            "name",
            sa.String(length=255),
            nullable=False,
            comment="track event, or page/screen name ('' if none)",
        ),
        sa.Column("day", sa.Date(), nullable=False, comment="UTC day of timestamp"),
        sa.Column(
            "timestamp",
            sa.DateTime(timezone=True),
            nullable=False,
            comment="skew-corrected event time",
        ),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "traits",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
            comment="normalised traits of identify/group",
        ),
        sa.Column("payload", sa.JSON(), nullable=False, comment="the whole normalised message"),
        sa.Column(
            "folded_at",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="set when folded and kept for audit retention",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_accoil_outbox")),
        comment="Accepted messages not yet folded into users, accounts and counts.",
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("accoil_outbox", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_accoil_outbox_folded_at_id"), ["folded_at", "id"], unique=False
        )

    op.create_table(
        "accoil_users",
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column(
            "traits",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "traits_version", sa.Integer(), nullable=False, comment="bumped when traits change"
        ),
        sa.Column("delivered_version", sa.Integer(), server_default="0", nullable=False),
        sa.Column(
            "last_timestamp",
            sa.DateTime(timezone=True),
            nullable=False,
            comment="of the latest identify",
        ),
        sa.Column("first_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "pending_since",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="when undelivered changes began; null if none",
        ),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_accoil_users")),
        comment="One row per identified user, traits merged as Segment merges them.",
    )


def downgrade() -> None:
    op.drop_table("accoil_users")
    with op.batch_alter_table("accoil_outbox", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_accoil_outbox_folded_at_id"))

    op.drop_table("accoil_outbox")
    with op.batch_alter_table("accoil_message_ids", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_accoil_message_ids_received_at"))

    op.drop_table("accoil_message_ids")
    op.drop_table("accoil_memberships")
    with op.batch_alter_table("accoil_identity_links", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_accoil_identity_links_user_id"))

    op.drop_table("accoil_identity_links")
    op.drop_table("accoil_drops")
    op.drop_table("accoil_daily_counts")
    op.drop_table("accoil_anonymous_traits")
    op.drop_table("accoil_anonymous_memberships")
    op.drop_table("accoil_anonymous_counts")
    op.drop_table("accoil_accounts")
