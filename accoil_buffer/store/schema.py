"""The tables. All are prefixed ``accoil_`` so they can live in an app's database.

Column comments here are the reference for the docs' tables page.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, NamedTuple

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    ColumnElement,
    Date,
    DateTime,
    Dialect,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    TypeDecorator,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

ID = String(255)
metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "pk": "pk_%(table_name)s",
    }
)
# SQLite only autoincrements an INTEGER PRIMARY KEY, not a BIGINT one.
BigId = BigInteger().with_variant(Integer(), "sqlite")
# Traits are JSONB on PostgreSQL so `traits->>'email'` and equality work; text JSON on SQLite.
Traits = JSON().with_variant(JSONB(), "postgresql")
# The outbox's optional JSON: None is SQL NULL, which takes no room in a row.
OptionalJSON = JSON(none_as_null=True)
OptionalTraits = OptionalJSON.with_variant(JSONB(none_as_null=True), "postgresql")


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in Python; ``timestamptz`` on PostgreSQL, ISO text in UTC on SQLite."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        # Aware UTC for every driver: SQLite's DATETIME stores its wall clock, offset dropped.
        if value is None:
            return None
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def claim_columns() -> list[Column[Any]]:
    """A delivery claim: which flusher holds the row, and until when (a lease that expires)."""
    return [
        Column("claimed_by", String(64), comment="the flusher sending this row now"),
        Column("claimed_until", UTCDateTime, comment="the claim lapses after this"),
    ]


outbox = Table(
    "accoil_outbox",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column(
        "message_id",
        ID,
        comment="the messageId a client sent, for the fold to check; NULL for one the buffer "
        "generated or one checked on arrival",
    ),
    Column("type", String(16), nullable=False),
    Column("user_id", ID),
    Column("anonymous_id", ID),
    Column("group_id", ID),
    Column("previous_id", ID),
    Column("name", ID, nullable=False, comment="track event, or page/screen name ('' if none)"),
    Column("timestamp", UTCDateTime, nullable=False, comment="skew-corrected event time"),
    Column("received_at", UTCDateTime, nullable=False),
    Column("traits", OptionalTraits, comment="normalised traits of identify/group"),
    Column(
        "payload",
        OptionalJSON,
        comment="the whole normalised message if kept for audit (outbox_retention_hours); "
        "else NULL",
    ),
    Column(
        "occurrences",
        Integer,
        nullable=False,
        server_default=text("1"),
        comment="events this row stands for: a batch's events that differ in nothing the fold "
        "reads share one row",
    ),
    Column("folded_at", UTCDateTime, comment="set when folded and kept for audit retention"),
    # Only rows kept for audit are indexed, for their pruning: unfolded rows are found by id
    # range, so an insert or a fold's delete maintains no second index.
    Index(
        None,
        "folded_at",
        sqlite_where=text("folded_at IS NOT NULL"),
        postgresql_where=text("folded_at IS NOT NULL"),
    ),
    comment="Accepted messages not yet folded into users, accounts and counts.",
    # Ids must never be reused once folded rows are deleted: the fold orders messages by id
    # across chunks (a message after an identity link speaks for the user).
    sqlite_autoincrement=True,
)

posts = Table(
    "accoil_outbox_posts",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("message_id", ID, nullable=False, comment="the message's own messageId, sent as is"),
    Column("type", String(16), nullable=False, comment="the message's type"),
    Column("payload", JSON, nullable=False, comment="the whole normalised message, as forwarded"),
    Column("received_at", UTCDateTime, nullable=False),
    *claim_columns(),
    comment="Post to Accoil: messages forwarded whole; deleted once Accoil accepts them.",
    sqlite_autoincrement=True,
)

message_ids = Table(
    "accoil_message_ids",
    metadata,
    Column("message_id", ID, primary_key=True),
    Column("received_at", UTCDateTime, nullable=False, index=True),
    comment="messageIds seen within the dedupe window: the idempotency ledger.",
)

users = Table(
    "accoil_users",
    metadata,
    Column("user_id", ID, primary_key=True),
    Column("traits", Traits, nullable=False),
    Column("traits_version", Integer, nullable=False, comment="bumped when traits change"),
    Column("delivered_version", Integer, nullable=False, server_default="0"),
    Column("last_timestamp", UTCDateTime, nullable=False, comment="of the latest identify"),
    Column("first_seen_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("pending_since", UTCDateTime, comment="when undelivered changes began; null if none"),
    *claim_columns(),
    comment="One row per identified user, traits merged as Segment merges them.",
)

accounts = Table(
    "accoil_accounts",
    metadata,
    Column("group_id", ID, primary_key=True),
    Column("traits", Traits, nullable=False),
    Column("traits_version", Integer, nullable=False),
    Column("delivered_version", Integer, nullable=False, server_default="0"),
    Column("last_timestamp", UTCDateTime, nullable=False, comment="of the latest group call"),
    Column("first_seen_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("pending_since", UTCDateTime),
    *claim_columns(),
    comment="One row per account (Segment group), traits merged.",
)

memberships = Table(
    "accoil_memberships",
    metadata,
    Column("group_id", ID, primary_key=True),
    Column("user_id", ID, primary_key=True),
    Column("last_timestamp", UTCDateTime, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("delivered_at", UTCDateTime, comment="null until Accoil has it"),
    *claim_columns(),
    comment="Which users belong to which accounts.",
)

daily_counts = Table(
    "accoil_daily_counts",
    metadata,
    Column("day", Date, primary_key=True, comment="UTC day"),
    Column("user_id", ID, primary_key=True),
    Column("kind", String(16), primary_key=True, comment="track, page or screen"),
    Column("name", ID, primary_key=True, comment="event or page/screen name"),
    Column("count", BigInteger, nullable=False),
    Column("delivered_count", BigInteger, nullable=False, server_default="0"),
    Column(
        "acked_beyond",
        JSON,
        comment="ordinals above delivered_count that Accoil acknowledged",
    ),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("pending_since", UTCDateTime),
    *claim_columns(),
    comment="Accoil's model: occurrences per (UTC day, user, kind, name).",
)


class Waiting(NamedTuple):
    """The condition of a row Accoil does not have yet, and the order claims take them in."""

    condition: ColumnElement[bool]
    order: Column[Any]


def _pending(table: Table, order: str, condition: ColumnElement[bool]) -> Waiting:
    """The waiting rows of ``table``, indexed over those rows only, in claim order: a claim or
    a status reads what is pending, not the history of what was delivered."""
    waiting = Waiting(condition, table.c[order])
    Index(
        f"ix_{table.name}_pending",
        waiting.order,
        sqlite_where=condition,
        postgresql_where=condition,
    )
    return waiting


# The rows waiting for delivery, by table (posts are deleted once delivered: all wait).
PENDING = {
    users.name: _pending(users, "user_id", users.c.traits_version > users.c.delivered_version),
    accounts.name: _pending(
        accounts, "group_id", accounts.c.traits_version > accounts.c.delivered_version
    ),
    memberships.name: _pending(memberships, "group_id", memberships.c.delivered_at.is_(None)),
    daily_counts.name: _pending(
        daily_counts, "day", daily_counts.c.count > daily_counts.c.delivered_count
    ),
}

anonymous_counts = Table(
    "accoil_anonymous_counts",
    metadata,
    Column("day", Date, primary_key=True),
    Column("anonymous_id", ID, primary_key=True),
    Column("kind", String(16), primary_key=True),
    Column("name", ID, primary_key=True),
    Column("count", BigInteger, nullable=False),
    Column("last_seen_at", UTCDateTime, nullable=False, index=True),
    # The key leads with the day; moving or pruning an anonymous id finds its rows here.
    Index(None, "anonymous_id"),
    comment="Counts of anonymous ids not yet linked to a user; moved on identify/alias.",
)

anonymous_traits = Table(
    "accoil_anonymous_traits",
    metadata,
    Column("anonymous_id", ID, primary_key=True),
    Column("traits", Traits, nullable=False),
    Column("last_timestamp", UTCDateTime, nullable=False),
    Column("last_seen_at", UTCDateTime, nullable=False, index=True),
    comment="Traits from identify calls that carried only an anonymousId.",
)

anonymous_memberships = Table(
    "accoil_anonymous_memberships",
    metadata,
    Column("anonymous_id", ID, primary_key=True),
    Column("group_id", ID, primary_key=True),
    Column("last_timestamp", UTCDateTime, nullable=False),
    Column("last_seen_at", UTCDateTime, nullable=False, index=True),
    comment="Group calls that carried only an anonymousId.",
)

identity_links = Table(
    "accoil_identity_links",
    metadata,
    Column("anonymous_id", ID, primary_key=True),
    Column("user_id", ID, nullable=False, index=True),
    Column("linked_at", UTCDateTime, nullable=False),
    Column(
        "outbox_id",
        BigInteger,
        nullable=False,
        index=True,
        comment="the outbox row that made the link",
    ),
    comment="anonymousId/previousId -> userId; the first link of an id wins.",
)

drops = Table(
    "accoil_drops",
    metadata,
    Column("day", Date, primary_key=True, comment="UTC day it happened"),
    Column("reason", String(64), primary_key=True),
    Column("count", BigInteger, nullable=False),
    comment="Every drop, filter, prune or correction, counted per day and reason.",
)

dead_letters = Table(
    "accoil_dead_letters",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("message_id", ID, nullable=False, comment="the deterministic messageId sent"),
    Column("type", String(16), nullable=False),
    Column("payload", JSON, nullable=False, comment="the exact body sent to Accoil"),
    Column("status", Integer, comment="Accoil's HTTP status"),
    Column("response", String(2000), comment="the start of Accoil's answer"),
    Column("created_at", UTCDateTime, nullable=False),
    Column("replayed_at", UTCDateTime, comment="set when a replay was accepted"),
    comment="Messages Accoil refused (400, 413, other 4xx); listed and replayed from the CLI.",
)

delivery_state = Table(
    "accoil_delivery_state",
    metadata,
    Column("id", Integer, primary_key=True, comment="always 1"),
    Column("consecutive_failures", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", UTCDateTime, comment="scheduled passes wait until then"),
    Column("offline_since", UTCDateTime, comment="first failure of the current outage"),
    Column("paused_reason", String(200), comment="set on 401/403: delivery waits for a new key"),
    Column("paused_key", String(32), comment="fingerprint of the API key the pause is for"),
    Column("last_success_at", UTCDateTime),
    Column("last_failure_at", UTCDateTime),
    Column("last_error", String(500)),
    Column("delivered_total", BigInteger, nullable=False, server_default="0"),
    comment="How delivery to Accoil is going: one row.",
)
