"""Mappings: which messages become which Accoil actions, with which fields. Pure functions.

This is Segment's Accoil destination brought on-premises. A mapping is a trigger (the language
of ``triggers``), an action (identify, group, track, page, screen, or post: Post to Accoil) and
field sources; a field is a literal or a path into the normalised message
(``"$.properties.report_name"``, like Segment's ``@path``), and a field not given keeps the
action's default. With no mappings configured, the five presets apply, which is the buffer's
built-in behaviour.

Mappings are applied when a message is accepted, after deduplication: the outbox holds the
actions (one row each) ready to fold, and Post to Accoil messages go to their own table.
Identity links are not actions: an alias, and an identify that carries both ids, link the
anonymousId whatever the mappings say.

This module parses, compiles and applies mappings; ``mapping_fields`` builds each action
from the values its fields resolved to.
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from collections.abc import Mapping as AnyMapping
from dataclasses import dataclass, field
from typing import Any

import msgspec
from msgspec.structs import replace

from accoil_buffer.errors import ConfigError, InvalidMessage
from accoil_buffer.json_values import clean
from accoil_buffer.mapping_fields import BUILDERS, GROUP_TRAITS, IDENTIFY_TRAITS
from accoil_buffer.messages import TYPES, Message
from accoil_buffer.reasons import Reason, mapping_reason
from accoil_buffer.triggers import Predicate, canonical, compile_trigger, resolve

MAX_MAPPINGS = 50  # Segment's limit per destination instance
MAX_NAME_LENGTH = 55  # "mapping:<name>" must fit accoil_drops.reason
POST = "post"
log = logging.getLogger(__name__)


def _defaults(*names: str, traits: Sequence[str] = ()) -> dict[str, tuple[str, ...]]:
    """Default paths: ``$.<name>`` for each name, ``$.traits.<name>`` for each trait field, plus
    ``$.traits`` (when the action has traits) and ``$.timestamp``."""
    paths: dict[str, tuple[str, ...]] = {name: (name,) for name in names}
    paths.update({name: ("traits", name) for name in traits})
    if traits:
        paths["traits"] = ("traits",)
    paths["timestamp"] = ("timestamp",)
    return paths


# The actions of Segment's Accoil destination, each with its fields' default paths. Which
# fields an action cannot go without is checked where it is built (mapping_fields.BUILDERS).
ACTIONS: dict[str, dict[str, tuple[str, ...]]] = {
    "identify": _defaults("userId", traits=IDENTIFY_TRAITS),
    "group": _defaults("groupId", "anonymousId", "userId", traits=GROUP_TRAITS),
    "track": _defaults("event", "userId"),
    "page": _defaults("userId", "name"),
    "screen": _defaults("userId", "name"),
    POST: {},  # it forwards the whole message
}
_ACTION_NAMES = {"post to accoil": POST, "post_to_accoil": POST}
PRESET_NAMES = {
    "identify": "Identify Calls",
    "page": "Page Calls",
    "track": "Track Calls",
    "screen": "Screen Calls",
    "group": "Group Calls",
}


def default_trigger(action: str) -> str:
    """The trigger of an action when none is given, as in Segment (Post to Accoil: track)."""
    return f'type = "{"track" if action == POST else action}"'


@dataclass(frozen=True)
class Mapping:
    """One mapping as configured. ``fields`` holds the fields given, as (name, source) pairs;
    ``Mappings.load`` makes each literal a JSON value, as a message's own values are."""

    name: str
    action: str
    trigger: str
    fields: tuple[tuple[str, Any], ...] = ()
    enabled: bool = True


class Outcome(msgspec.Struct, frozen=True, gc=False):
    """What one matching mapping makes of a message: an action, or the problem that dropped it.
    A Struct: one is made for every message a mapping matches, in a fraction of a frozen
    dataclass's time."""

    mapping: str
    action: Message | None = None
    problem: str | None = None

    @property
    def reason(self) -> str:
        """The reason a drop is counted under in ``accoil_drops``."""
        return mapping_reason(self.mapping)


@dataclass
class Routed:
    """Accepted messages turned into what to store."""

    rows: list[Message] = field(default_factory=list)  # outbox rows: actions and identity links
    posts: list[Message] = field(default_factory=list)  # Post to Accoil: forwarded whole
    counts: Counter[str] = field(default_factory=Counter)  # drops and corrections, by reason


@dataclass(frozen=True)
class _Source:
    """Where a field comes from: a path into the message, or a literal."""

    path: tuple[str, ...] | None
    literal: Any = None

    def value(self, payload: AnyMapping[str, Any]) -> Any:
        return self.literal if self.path is None else resolve(payload, self.path)


@dataclass(frozen=True)
class _Compiled:
    name: str
    action: str
    matches: Predicate
    sources: dict[str, _Source]
    plain: bool  # a preset: the action is the message itself


@dataclass(frozen=True)
class Mappings:
    """The mappings in force, compiled once; ``Mappings.load`` validates configured ones."""

    mappings: tuple[Mapping, ...]
    _compiled: tuple[_Compiled, ...] = field(init=False, compare=False, repr=False)
    # When every mapping in force is plain (the presets), the names of those that a message
    # of each type matches: its type alone decides, and testing each trigger in turn was
    # most of the time routing took.
    _plain_by_type: dict[str, tuple[str, ...]] | None = field(init=False, compare=False, repr=False)
    # The mappings that have failed on a message, so that each is logged once, not per message.
    _failed: set[str] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        # Every mapping is compiled, disabled ones too, so a mistake fails at startup.
        compiled = [_compile(m) for m in self.mappings]
        enabled = tuple(c for c, m in zip(compiled, self.mappings, strict=True) if m.enabled)
        object.__setattr__(self, "_compiled", enabled)
        plain_by_type = None
        if all(c.plain for c in enabled):
            plain_by_type = {
                kind: tuple(c.name for c in enabled if c.action == kind) for kind in TYPES
            }
        object.__setattr__(self, "_plain_by_type", plain_by_type)
        object.__setattr__(self, "_failed", set())

    @classmethod
    def load(cls, entries: object) -> Mappings:
        """Mappings from configuration (a list of tables); none at all means the presets."""
        if entries is None:
            return PRESETS
        if not isinstance(entries, list | tuple):
            raise ConfigError(f"mappings must be a list of tables, got {type(entries).__name__}")
        if not entries:
            return PRESETS
        if len(entries) > MAX_MAPPINGS:
            raise ConfigError(
                f"mappings: {len(entries)} are configured; at most {MAX_MAPPINGS} are allowed "
                "(as in Segment's Accoil destination)"
            )
        mappings = tuple(_parse(i, entry) for i, entry in enumerate(entries))
        names = Counter(m.name for m in mappings)
        repeated = sorted(name for name, n in names.items() if n > 1)
        if repeated:
            raise ConfigError(f"mappings: names must be unique; repeated: {', '.join(repeated)}")
        return cls(mappings)

    def outcomes(self, message: Message) -> list[Outcome]:
        """What each mapping whose trigger matches ``message`` makes of it, in order."""
        if self._plain_by_type is not None:
            return [Outcome(name, message) for name in self._plain_by_type[message.type]]
        payload = message.payload
        outcomes = []
        for mapping in self._compiled:
            try:
                if mapping.matches(payload):
                    outcomes.append(_apply(mapping, message))
            except Exception as exc:  # a last line: the configuration's mistakes fail at load
                outcomes.append(self._failed_on(mapping, exc))
        return outcomes

    def _failed_on(self, mapping: _Compiled, exc: Exception) -> Outcome:
        """The drop of a message ``mapping`` failed on, whatever the reason: one message's
        data must never fail the writer's batch, and so every message after it."""
        if mapping.name not in self._failed:
            self._failed.add(mapping.name)
            # The error's type only: its text may quote the message's values.
            log.error(
                "mapping %r failed on a message (%s); each message it fails on is dropped "
                "and counted as %s",
                mapping.name,
                type(exc).__name__,
                mapping_reason(mapping.name),
            )
        return Outcome(mapping.name, problem=f"the mapping failed ({type(exc).__name__})")

    def route(self, messages: Iterable[Message]) -> Routed:
        """Turn accepted messages into outbox rows and posts, counting drops by reason."""
        routed = Routed()
        for message in messages:
            outcomes = self.outcomes(message)
            link = identity_link(message, [o.action for o in outcomes if o.action is not None])
            if link is not None:
                routed.rows.append(link)
            elif not outcomes:
                routed.counts[Reason.UNMAPPED] += 1
            for outcome in outcomes:
                action = outcome.action
                if action is None:
                    routed.counts[outcome.reason] += 1
                    continue
                if action is not message:  # the message's own notes are counted on accept
                    routed.counts.update(action.notes)
                (routed.posts if action.type == POST else routed.rows).append(action)
        return routed


def identity_link(message: Message, actions: Sequence[Message]) -> Message | None:
    """The row that links an anonymousId to a user, when no action of the message does:
    an alias, or an identify with both ids that no mapping sends (stored as an alias row)."""
    if message.type == "alias":
        return message
    if message.type != "identify" or message.user_id is None or message.anonymous_id is None:
        return None
    if any(_links(a) for a in actions):
        return None
    return replace(
        message,
        type="alias",
        previous_id=message.anonymous_id,
        anonymous_id=None,
        traits=None,
        notes=(),
    )


def links(message: Message, actions: Sequence[Message]) -> list[tuple[str | None, str | None]]:
    """The (anonymousId, userId) links a message makes, given its actions."""
    rows = [*actions, *filter(None, [identity_link(message, actions)])]
    return [
        (row.previous_id if row.type == "alias" else row.anonymous_id, row.user_id)
        for row in rows
        if row.type == "alias" or _links(row)
    ]


def _links(row: Message) -> bool:
    """Whether an outbox row links ids by itself (the fold's rule, in ``store.rollup``)."""
    return row.type == "identify" and row.user_id is not None and row.anonymous_id is not None


# --- Configuration -----------------------------------------------------------------------------

_KEYS = frozenset({"name", "action", "trigger", "fields", "enabled"})
_PATH_STEP = re.compile(r'\.([^.\[\]"]+)|\[([0-9]+)\]|\[("(?:[^"\\]|\\.)*")\]')


def _parse(index: int, entry: object) -> Mapping:
    where = f"mappings[{index}]"
    if not isinstance(entry, AnyMapping):
        raise ConfigError(f"{where} must be a table, got {type(entry).__name__}")
    unknown = sorted(set(entry) - _KEYS)
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(_KEYS))}"
        )
    name = entry.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{where}: name is required (a non-empty string)")
    if len(name) > MAX_NAME_LENGTH:
        raise ConfigError(f"{where}: name is longer than {MAX_NAME_LENGTH} characters")
    where = f"{where} ({name!r})"
    raw_action = entry.get("action")
    action = _ACTION_NAMES.get(str(raw_action).strip().lower(), str(raw_action).strip().lower())
    if not isinstance(raw_action, str) or action not in ACTIONS:
        raise ConfigError(
            f"{where}: action must be one of {', '.join(ACTIONS)} (post is Post to Accoil), "
            f"got {raw_action!r}"
        )
    trigger = entry.get("trigger", default_trigger(action))
    if not isinstance(trigger, str):
        raise ConfigError(f"{where}: trigger must be a string")
    given = entry.get("fields", {})
    if not isinstance(given, AnyMapping):
        raise ConfigError(f"{where}: fields must be a table")
    known = ACTIONS[action]
    unknown = sorted(set(given) - set(known))
    if unknown:
        listed = ", ".join(known) if known else "none (it forwards the whole message)"
        raise ConfigError(
            f"{where}: the {action} action has no field(s) {', '.join(unknown)}; its fields: "
            f"{listed}"
        )
    enabled = entry.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ConfigError(f"{where}: enabled must be true or false")
    try:  # a TOML date becomes its ISO 8601 text; what no message may hold is refused
        fields = tuple(sorted((key, clean(value, ("fields", key))) for key, value in given.items()))
    except InvalidMessage as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return Mapping(name, action, trigger, fields, enabled)


def parse_path(text: str, where: str) -> tuple[str, ...]:
    """``$.properties.plan``, ``$.context.traits["first name"]``, ``$.items[0]`` as a key path."""
    keys: list[str] = []
    position = 1
    while position < len(text):
        step = _PATH_STEP.match(text, position)
        if step is None:
            raise ConfigError(
                f"{where}: {text!r} is not a path like $.properties.name "
                f"(problem at position {position + 1})"
            )
        dotted, index, quoted = step.groups()
        try:
            keys.append(dotted or index or json.loads(quoted))
        except json.JSONDecodeError as exc:  # a bad escape: ["\x"]
            raise ConfigError(
                f"{where}: {text!r} has a key that is not a JSON string ({exc.msg} at position "
                f"{position + 2 + exc.pos})"
            ) from None
        position = step.end()
    return tuple(keys)


def _compile(mapping: Mapping) -> _Compiled:
    where = f"mapping {mapping.name!r}"
    sources = {name: _Source(path) for name, path in ACTIONS[mapping.action].items()}
    for name, value in mapping.fields:
        if isinstance(value, str) and value.startswith("$"):
            sources[name] = _Source(parse_path(value, f"{where}: fields.{name}"))
        else:
            sources[name] = _Source(None, value)
    # Compiled before canonical reads it, so that a mistake's error names the mapping.
    matches = compile_trigger(mapping.trigger, where=f"{where}: trigger")
    plain = (
        mapping.action != POST
        and not mapping.fields
        and canonical(mapping.trigger) == canonical(default_trigger(mapping.action))
    )
    return _Compiled(mapping.name, mapping.action, matches, sources, plain)


# --- Applying one mapping ----------------------------------------------------------------------


def _apply(mapping: _Compiled, message: Message) -> Outcome:
    if mapping.plain and message.type == mapping.action:
        return Outcome(mapping.name, message)
    if mapping.action == POST:
        return Outcome(mapping.name, replace(message, type=POST, notes=()))
    payload = message.payload
    values = {name: source.value(payload) for name, source in mapping.sources.items()}
    try:
        action = BUILDERS[mapping.action](message, values)
    except InvalidMessage as exc:
        return Outcome(mapping.name, problem=str(exc))
    return Outcome(mapping.name, action)


PRESETS = Mappings(
    tuple(Mapping(name, action, default_trigger(action)) for action, name in PRESET_NAMES.items())
)
