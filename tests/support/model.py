"""A reference model of the buffer's semantics in plain Python.

It applies messages one at a time, in order, with no database and no chunks: the fold must
arrive at the same users, accounts, memberships and counts however it is chunked.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from accoil_buffer.messages import is_deliverable, parse_timestamp

Key = tuple[date, str, str, str]


@dataclass
class Model:
    seen: set[str] = field(default_factory=set)
    links: dict[str, str] = field(default_factory=dict)
    counts: Counter[Key] = field(default_factory=Counter)
    anonymous_counts: Counter[Key] = field(default_factory=Counter)
    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    anonymous_traits: dict[str, dict[str, Any]] = field(default_factory=dict)
    accounts: dict[str, dict[str, Any]] = field(default_factory=dict)
    memberships: set[tuple[str, str]] = field(default_factory=set)
    anonymous_memberships: set[tuple[str, str]] = field(default_factory=set)

    def apply(self, message: dict[str, Any]) -> None:
        """Apply one valid message that carries its timestamp, and its messageId unless the
        buffer makes one (which is never seen before)."""
        # A message that integrations turn off for Accoil is not stored: its id is not kept.
        message_id = message.get("messageId")
        if message_id in self.seen or not is_deliverable(message.get("integrations")):
            return
        if message_id is not None:
            self.seen.add(message_id)
        kind = message["type"]
        user: str = message.get("userId") or ""
        anonymous: str = message.get("anonymousId") or ""
        subject = user or self.links.get(anonymous, "")
        if kind == "alias":
            self._link(message["previousId"], user)
        elif kind == "identify":
            if user and anonymous:
                self._link(anonymous, user)
            traits = message.get("traits") or {}
            if subject:
                self.users.setdefault(subject, {}).update(traits)
            else:
                self.anonymous_traits.setdefault(anonymous, {}).update(traits)
        elif kind == "group":
            self.accounts.setdefault(message["groupId"], {}).update(message.get("traits") or {})
            if subject:
                self.memberships.add((message["groupId"], subject))
            else:
                self.anonymous_memberships.add((anonymous, message["groupId"]))
        else:
            day = parse_timestamp(message["timestamp"], "timestamp").date()
            name = message.get("event") if kind == "track" else message.get("name")
            if subject:
                self.counts[day, subject, kind, name or ""] += 1
            else:
                self.anonymous_counts[day, anonymous, kind, name or ""] += 1

    def _link(self, anonymous: str, user: str) -> None:
        if anonymous in self.links:
            return  # the first link wins
        self.links[anonymous] = user
        for key, n in list(self.anonymous_counts.items()):
            if key[1] == anonymous:
                self.counts[key[0], user, key[2], key[3]] += n
                del self.anonymous_counts[key]
        for member, group in list(self.anonymous_memberships):
            if member == anonymous:
                self.memberships.add((group, user))
                self.anonymous_memberships.discard((member, group))
        if anonymous in self.anonymous_traits:
            pool = self.anonymous_traits.pop(anonymous)
            self.users[user] = {**pool, **self.users.get(user, {})}
