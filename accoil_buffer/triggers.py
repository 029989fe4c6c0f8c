"""The trigger language of mappings: which messages a mapping applies to. Pure functions.

    expression := term ("or" term)*
    term       := factor ("and" factor)*
    factor     := "not" factor | "(" expression ")" | condition
    condition  := path "exists"
                | path ("=" | "!=" | "<" | "<=" | ">" | ">=") value
                | path ("contains" | "starts_with" | "ends_with") value
    path       := segment ("." segment)*     segment: a name, digits, or `any key` in backquotes
    value      := "a JSON string" | number | true | false | null

Paths start at the top of the normalised message (``type``, ``event``, ``properties.plan``,
``traits.email``, ``context.app.name``). A segment of ASCII digits (18 at most) indexes a list
as well as naming a key; any other segment (``²``, say) is only a key, so on a list it finds
nothing. A path the message lacks is never ``=`` anything and always ``!=``. ``exists`` means
present and not null. ``<`` and friends compare numbers only.
``contains`` is a substring test on a string and a membership test on a list. Keywords are
case-insensitive. Expressions are compiled once, when the configuration loads; a mistake
(nesting past ``MAX_NESTING`` included) raises ``TriggerError`` with the position, so it fails
at startup and not per message.
"""

from __future__ import annotations

import json
import math
import operator
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from accoil_buffer.errors import TriggerError

Predicate = Callable[[Mapping[str, Any]], bool]
MISSING: Any = object()
# Far more 'not's and parentheses around one condition than any trigger needs, and few enough
# that parsing them stays well inside Python's recursion limit.
MAX_NESTING = 32
# No list holds 10**18 elements; int() refuses a step of more than 4300 digits outright.
_MAX_INDEX_DIGITS = 18

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
    | (?P<string>"(?:[^"\\\x00-\x1f]|\\.)*")
    | (?P<number>-?[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?)
    | (?P<op>==|!=|<=|>=|=|<|>)
    | (?P<paren>[()])
    | (?P<dot>\.)
    | (?P<quoted>`[^`]+`)
    | (?P<word>[A-Za-z_][A-Za-z0-9_$-]*)
    """,
    re.VERBOSE,
)
_KEYWORDS = frozenset(
    {"and", "or", "not", "exists", "contains", "starts_with", "ends_with", "true", "false", "null"}
)
_CONSTANTS = {"true": True, "false": False, "null": None}


@dataclass(frozen=True)
class _Token:
    kind: str  # string, number, op, paren, dot, quoted, word, end
    text: str
    position: int

    @property
    def keyword(self) -> str | None:
        lowered = self.text.lower()
        return lowered if self.kind == "word" and lowered in _KEYWORDS else None


def compile_trigger(text: str, *, where: str = "trigger") -> Predicate:
    """Parse ``text`` and return a predicate over a normalised message (its payload dict);
    ``where`` names the expression in an error (which mapping's trigger)."""
    return _Parser(text, where).parse()


def canonical(text: str) -> str:
    """``text`` with its tokens separated by single spaces and keywords in lower case, so two
    spellings of one trigger compare equal."""
    return " ".join(t.keyword or t.text for t in _tokens(text) if t.kind != "end")


def resolve(message: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    """The value at ``path`` in ``message``, or ``MISSING``."""
    value: Any = message
    for key in path:
        if isinstance(value, Mapping):
            value = value.get(key, MISSING)
        elif isinstance(value, list) and _is_index(key) and int(key) < len(value):
            value = value[int(key)]
        else:
            return MISSING
    return value


def _is_index(key: str) -> bool:
    """Whether a path step indexes a list: ASCII digits only, since ``str.isdigit`` also
    accepts ``²``, which ``int`` refuses, and few enough for ``int`` to read."""
    return len(key) <= _MAX_INDEX_DIGITS and key.isascii() and key.isdigit()


def _tokens(text: str, where: str = "trigger") -> list[_Token]:
    tokens: list[_Token] = []
    position = 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None:
            problem = (
                "text goes in double quotes"
                if text[position] == "'"
                else f"unexpected character {text[position]!r}"
            )
            raise TriggerError(text, position, problem, where)
        kind = match.lastgroup or ""
        if kind != "space":
            tokens.append(_Token(kind, match.group(), position))
        position = match.end()
    tokens.append(_Token("end", "", len(text)))
    return tokens


class _Parser:
    """Recursive descent over the tokens; every rule returns a compiled predicate."""

    def __init__(self, text: str, where: str) -> None:
        self._text, self._where = text, where
        self._tokens = _tokens(text, where)
        self._index = 0
        self._depth = 0  # 'not's and parentheses around the factor being parsed

    def parse(self) -> Predicate:
        if self._peek().kind == "end":
            raise self._error(self._peek(), "the trigger is empty")
        predicate = self._expression()
        if self._peek().kind != "end":
            raise self._error(self._peek(), f"expected 'and', 'or' or the end, got {self._shown()}")
        return predicate

    def _peek(self) -> _Token:
        return self._tokens[self._index]

    def _next(self) -> _Token:
        token = self._tokens[self._index]
        self._index += 1
        return token

    def _shown(self) -> str:
        token = self._peek()
        return "the end" if token.kind == "end" else repr(token.text)

    def _error(self, token: _Token, problem: str) -> TriggerError:
        return TriggerError(self._text, token.position, problem, self._where)

    def _expression(self) -> Predicate:
        return self._joined("or", self._term, any)

    def _term(self) -> Predicate:
        return self._joined("and", self._factor, all)

    def _joined(
        self,
        keyword: str,
        operand: Callable[[], Predicate],
        combine: Callable[[Iterable[bool]], bool],
    ) -> Predicate:
        """Operands separated by ``keyword``, true when ``combine`` (any, all) says so."""
        parts = [operand()]
        while self._peek().keyword == keyword:
            self._next()
            parts.append(operand())
        if len(parts) == 1:
            return parts[0]
        return lambda message: combine(part(message) for part in parts)

    def _factor(self) -> Predicate:
        token = self._peek()
        if token.keyword == "not":
            self._enter(token)
            inner = self._factor()
            self._depth -= 1
            return lambda message: not inner(message)
        if token.text == "(":
            self._enter(token)
            inner = self._expression()
            if self._peek().text != ")":
                raise self._error(self._peek(), f"expected ')', got {self._shown()}")
            self._next()
            self._depth -= 1
            return inner
        return self._condition()

    def _enter(self, token: _Token) -> None:
        """Step past a 'not' or '(', refusing nesting deep enough to exhaust Python's stack."""
        if self._depth == MAX_NESTING:
            raise self._error(
                token, f"more than {MAX_NESTING} 'not's and parentheses are nested here"
            )
        self._depth += 1
        self._next()

    def _condition(self) -> Predicate:
        path = self._path()
        token = self._next()
        if token.keyword == "exists":
            return lambda message: resolve(message, path) not in (MISSING, None)
        if token.text == "==":
            raise self._error(token, "'==' is not an operator; compare with '='")
        if token.kind == "op":
            compare = _COMPARISONS[token.text]
        elif token.keyword in _TEXT_TESTS:
            compare = _TEXT_TESTS[token.keyword]
        else:
            shown = "the end" if token.kind == "end" else repr(token.text)
            raise self._error(
                token, f"expected an operator (=, !=, <, exists, contains, …), got {shown}"
            )
        expected = self._value(token)
        if compare is _equal and isinstance(expected, str):
            # The common case (type = "track"), without the generic comparison: a string
            # equals only an equal string, and MISSING equals nothing.
            if len(path) == 1:
                key = path[0]
                return lambda message: message.get(key) == expected
            return lambda message: resolve(message, path) == expected
        return lambda message: compare(resolve(message, path), expected)

    def _path(self) -> tuple[str, ...]:
        segments = [self._segment()]
        while self._peek().kind == "dot":
            self._next()
            segments.append(self._segment())
        return tuple(segments)

    def _segment(self) -> str:
        token = self._peek()
        if token.kind == "quoted":
            self._next()
            return token.text[1:-1]
        if (token.kind == "word" and token.keyword is None) or token.text.isdigit():
            self._next()  # a digit segment indexes a list: properties.items.0
            return token.text
        raise self._error(
            token, f"expected a field such as event or properties.plan, got {self._shown()}"
        )

    def _value(self, after: _Token) -> Any:
        token = self._next()
        if token.kind in ("string", "number"):
            try:
                return json.loads(token.text)
            except json.JSONDecodeError as exc:  # a bad escape ("\x"), or a leading zero
                raise TriggerError(
                    self._text, token.position + exc.pos, f"not valid JSON: {exc.msg}", self._where
                ) from None
            except ValueError:  # more digits than int reads
                raise self._error(token, "the number has too many digits") from None
        if token.keyword in _CONSTANTS:
            return _CONSTANTS[token.keyword]
        shown = "the end" if token.kind == "end" else repr(token.text)
        raise self._error(
            token,
            f'expected a value after {after.text!r} ("text", a number, true, false or '
            f"null), got {shown}",
        )


def _number(value: Any) -> bool:
    return type(value) in (int, float) and math.isfinite(value)


def _equal(actual: Any, expected: Any) -> bool:
    if actual is MISSING:
        return False
    if _number(actual) and _number(expected):
        return bool(actual == expected)
    return type(actual) is type(expected) and bool(actual == expected)


def _ordered(test: Callable[[Any, Any], bool]) -> Callable[[Any, Any], bool]:
    return lambda actual, expected: _number(actual) and _number(expected) and test(actual, expected)


def _contains(actual: Any, expected: Any) -> bool:
    if isinstance(actual, str):
        return isinstance(expected, str) and expected in actual
    if isinstance(actual, list):
        return any(_equal(item, expected) for item in actual)
    return False


def _affix(test: Callable[[str, str], bool]) -> Callable[[Any, Any], bool]:
    return lambda actual, expected: (
        isinstance(actual, str) and isinstance(expected, str) and test(actual, expected)
    )


_COMPARISONS: dict[str, Callable[[Any, Any], bool]] = {
    "=": _equal,
    "!=": lambda actual, expected: not _equal(actual, expected),
    "<": _ordered(operator.lt),
    "<=": _ordered(operator.le),
    ">": _ordered(operator.gt),
    ">=": _ordered(operator.ge),
}
_TEXT_TESTS: dict[str, Callable[[Any, Any], bool]] = {
    "contains": _contains,
    "starts_with": _affix(str.startswith),
    "ends_with": _affix(str.endswith),
}
