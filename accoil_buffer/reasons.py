"""Why a message was dropped, filtered or corrected: the ``reason`` counters of ``accoil_drops``.

The values are what the database stores and what ``status`` and the metrics show, so they never
change; a mapping that made an invalid action counts under ``mapping:<its name>`` instead.
"""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    """A counter of ``accoil_drops``; each member is the string stored."""

    # Refused or not stored when accepted.
    REJECTED_INVALID = "rejected_invalid"
    DUPLICATE_MESSAGE_ID = "duplicate_message_id"
    FILTERED_INTEGRATIONS = "filtered_integrations"
    UNMAPPED = "unmapped"
    BUFFER_FULL = "buffer_full"
    # Stored, corrected.
    FUTURE_TIMESTAMP_CLAMPED = "future_timestamp_clamped"
    TRAIT_NOT_NORMALISED = "trait_not_normalised"
    # Anonymous data pruned after anonymous_ttl_days without a link to a user.
    ANONYMOUS_TTL_EVENTS = "anonymous_ttl_events"
    ANONYMOUS_TTL_PROFILES = "anonymous_ttl_profiles"


def mapping_reason(name: str) -> str:
    """The counter of the invalid actions the mapping ``name`` made."""
    return f"mapping:{name}"
