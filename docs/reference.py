"""The generated parts of docs/configuration.md and docs/cli.md (run `cog -r docs/*.md`).

A key's description is the comment above it in config.example.toml, so the user's file and
the reference cannot drift apart; the rest comes from the ``Config`` dataclass and the click
commands themselves.
"""

from __future__ import annotations

import dataclasses
import html
import re
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import click
from click.testing import CliRunner

from accoil_buffer.cli import main
from accoil_buffer.config import _FILE_ONLY, _LISTS, Config, ServerConfig, _variable
from accoil_buffer.mappings import PRESETS, Mappings

EXAMPLE = Path(__file__).resolve().parent.parent / "config.example.toml"
_KEY_LINE = re.compile(r"^([a-z_]+)\s*=")
# Wide enough that no option's help wraps differently on another terminal.
_HELP_WIDTH = 100


def example_comments(text: str) -> dict[str, str]:
    """Each key's comment in the example file (the comment lines right above it), by its
    dotted name; ``mappings`` is the comment above the first ``[[mappings]]`` table."""
    found: dict[str, str] = {}
    comment: list[str] = []
    section = ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            comment.append(stripped.lstrip("#").strip())
            continue
        if stripped == "[[mappings]]":
            found.setdefault("mappings", " ".join(comment))
            section = "mappings"
        elif stripped.startswith("["):
            section = stripped.strip("[]")
        elif (match := _KEY_LINE.match(stripped)) and section != "mappings":
            key = f"{section}.{match[1]}" if section else match[1]
            found[key] = " ".join(comment)
        comment = []
    return found


@dataclasses.dataclass(frozen=True)
class Key:
    """One configuration key, as the reference shows it."""

    name: str  # dotted: server.port
    type: str
    default: str
    variable: str
    description: str

    @property
    def label(self) -> str:
        table, _, key = self.name.rpartition(".")
        return f"[{table}] {key}" if table else key

    @property
    def anchor(self) -> str:
        return self.name.replace(".", "-").replace("_", "-")


def keys() -> Iterator[Key]:
    """Every key of Config and of its [server] table, in the order the dataclasses list them."""
    comments = example_comments(EXAMPLE.read_text())
    for cls, prefix in ((Config, ""), (ServerConfig, "server.")):
        hints, defaults = typing.get_type_hints(cls), cls()
        for field in dataclasses.fields(cls):
            if field.name == "server":
                continue
            name = prefix + field.name
            if not comments.get(name):
                raise LookupError(f"config.example.toml has no comment above {name}")
            yield Key(
                name=name,
                type=_type(hints[field.name]),
                default=_default(getattr(defaults, field.name)),
                variable=_variable_of(name),
                description=_markdown(comments[name]),
            )


def _markdown(comment: str) -> str:
    """A comment as Markdown: ``<action>`` outside backquotes is text, not an HTML tag."""
    parts = comment.split("`")
    return "`".join(
        part if i % 2 else html.escape(part, quote=False) for i, part in enumerate(parts)
    )


def _type(hint: Any) -> str:
    """A type in a user's words."""
    if typing.get_origin(hint) in (types.UnionType, typing.Union):
        (inner,) = (arg for arg in typing.get_args(hint) if arg is not type(None))
        return _type(inner)
    if typing.get_origin(hint) is Literal:
        return "one of " + ", ".join(f'`"{choice}"`' for choice in typing.get_args(hint))
    if typing.get_origin(hint) is tuple:
        return "list of strings"
    if hint is Mappings:
        return "list of tables"
    return {bool: "boolean", int: "integer", float: "number", str: "string"}[hint]


def _default(value: Any) -> str:
    """A default as it would be written in the TOML file."""
    if value is None:
        return "not set"
    if value is PRESETS:
        return "the five presets"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, str):
        return f'`"{value}"`'
    if isinstance(value, tuple):
        return "`[]`" if not value else "`" + repr(list(value)) + "`"
    return f"`{value!r}`"


def _variable_of(name: str) -> str:
    if name in _FILE_ONLY:
        return "none (the file, or `Buffer(mappings=[...])`)"
    listed = " (comma-separated)" if name in _LISTS else ""
    return f"`{_variable(name)}`{listed}"


def config_reference() -> str:
    """The summary table, then each key with its description."""
    every = list(keys())
    lines = ["| key | type | default | variable |", "| --- | --- | --- | --- |"]
    lines += [f"| `{k.label}` | {k.type} | {k.default} | {k.variable} |" for k in every]
    for k in every:
        lines += ["", f"### `{k.label}` {{#{k.anchor}}}", "", k.description, ""]
        lines.append(f"Type: {k.type}. Default: {k.default}. Variable: {k.variable}.")
    return "\n".join(lines)


def cli_reference() -> str:
    """Each command's ``--help``, the group first, then its commands in click's order."""
    lines: list[str] = []
    for path in _commands(main, ()):
        result = CliRunner().invoke(
            main, [*path, "--help"], prog_name="accoil-buffer", terminal_width=_HELP_WIDTH
        )
        if result.exit_code != 0:
            raise RuntimeError(f"accoil-buffer {' '.join(path)} --help failed: {result.output}")
        title = " ".join(["accoil-buffer", *path])
        lines += [f"## `{title}`", "", "```text", result.output.rstrip(), "```", ""]
    return "\n".join(lines).rstrip()


def _commands(command: click.Command, path: tuple[str, ...]) -> Iterator[tuple[str, ...]]:
    yield path
    if isinstance(command, click.Group):
        context = click.Context(command, info_name=path[-1] if path else "accoil-buffer")
        for name in command.list_commands(context):
            sub = command.get_command(context, name)
            if sub is not None:
                yield from _commands(sub, (*path, name))
