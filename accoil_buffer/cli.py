"""The ``accoil-buffer`` command: a thin click layer over the library (SPEC 5.2)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from functools import wraps
from pathlib import Path
from typing import IO, Any, TypeVar

import click

from accoil_buffer.buffer import Buffer
from accoil_buffer.config import Config, load_config
from accoil_buffer.errors import AccoilBufferError
from accoil_buffer.messages import MAX_MESSAGE_BYTES
from accoil_buffer.store.engine import Database
from accoil_buffer.store.migrate import head_revision, upgrade

F = TypeVar("F", bound=Callable[..., Any])
IMPORT_BATCH = 1000
# A line longer than this cannot hold a 32 KB message, however it is spaced or escaped.
MAX_LINE_BYTES = 32 * MAX_MESSAGE_BYTES


def common_options(command: F) -> F:
    """``--config`` and ``--database-url`` on every command; errors become one clear line."""

    @click.option(
        "--config",
        "config_path",
        type=click.Path(dir_okay=False, path_type=Path),
        help="TOML configuration file (default: $ACCOIL_BUFFER_CONFIG).",
    )
    @click.option("--database-url", help="Overrides database_url from the file and environment.")
    @wraps(command)
    def wrapper(config_path: Path | None, database_url: str | None, **kwargs: Any) -> Any:
        try:
            config = load_config(config_path, overrides={"database_url": database_url})
            return command(config, **kwargs)
        except AccoilBufferError as exc:
            raise click.ClickException(str(exc)) from exc

    return wrapper  # type: ignore[return-value]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="accoil-buffer")
def main() -> None:
    """A local-first event buffer for Accoil product analytics."""


@main.command()
@common_options
def migrate(config: Config) -> None:
    """Upgrade the database schema to this version's head."""
    database = Database.open(config)
    try:
        upgrade(database)
    finally:
        database.dispose()
    click.echo(f"schema is at revision {head_revision()} (head)")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the status document as JSON.")
@common_options
def status(config: Config, as_json: bool) -> None:
    """Show what is pending delivery, waiting for identity, and what was dropped."""
    with Buffer(config=config, start=False) as buffer:
        document = buffer.status()
    if as_json:
        click.echo(json.dumps(document, indent=2))
        return
    pending = document["pending"]
    click.echo(f"outbox: {document['outbox']['unfolded_messages']} messages not yet folded")
    click.echo(
        f"pending delivery: {pending['users']} users, {pending['accounts']} accounts, "
        f"{pending['memberships']} memberships, {pending['count_rows']} count rows "
        f"({pending['occurrences']} occurrences)"
    )
    anonymous = document["anonymous"]
    click.echo(
        f"anonymous, waiting for identify/alias: {anonymous['ids']} ids, "
        f"{anonymous['occurrences']} occurrences"
    )
    if document["oldest_undelivered_at"]:
        click.echo(
            f"oldest undelivered: {document['oldest_undelivered_at']} "
            f"({document['oldest_undelivered_age_seconds']:.0f} s ago)"
        )
    drops = ", ".join(f"{reason} {n}" for reason, n in document["drops"].items()) or "none"
    click.echo(f"drops: {drops}")


@main.command("import")
@click.argument("source", type=click.File("rb"))
@common_options
def import_(config: Config, source: IO[bytes]) -> None:
    """Import Segment-format messages, one JSON object per line, from SOURCE (a file or -).

    Rejected lines are reported by number on stderr and the import continues; the exit status
    is 1 if any line was rejected.
    """
    stored = duplicates = filtered = rejected = 0
    with Buffer(config=config, start=False) as buffer:
        batch: list[tuple[int, Any]] = []
        problems: list[tuple[int, str]] = []

        def ingest() -> None:
            nonlocal stored, duplicates, filtered, rejected
            result = buffer.ingest_many(message for _, message in batch)
            stored += result.stored
            duplicates += result.duplicates
            filtered += result.filtered
            problems.extend((batch[r.index][0], str(r.error)) for r in result.rejected)
            for number, problem in sorted(problems):
                click.echo(f"line {number}: {problem}", err=True)
            rejected += len(problems)
            batch.clear()
            problems.clear()

        for number, line, unreadable in _numbered_lines(source):
            if unreadable is not None:
                problems.append((number, unreadable))
            else:
                try:
                    batch.append((number, json.loads(line)))
                except (json.JSONDecodeError, RecursionError) as exc:
                    problems.append((number, f"invalid JSON: {exc}"))
            if len(batch) >= IMPORT_BATCH:
                ingest()
        ingest()
    click.echo(
        f"imported {stored} messages ({duplicates} duplicates, {filtered} filtered by "
        f"integrations); {rejected} lines rejected"
    )
    if rejected:
        raise SystemExit(1)


def _numbered_lines(source: IO[bytes]) -> Iterator[tuple[int, str, str | None]]:
    """Yield (line number, text, problem) for each non-blank line, never holding an overlong
    line in memory."""
    number = 0
    while raw := source.readline(MAX_LINE_BYTES + 1):
        number += 1
        if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
            while (rest := source.readline(MAX_LINE_BYTES)) and not rest.endswith(b"\n"):
                pass
            yield number, "", f"line is longer than {MAX_LINE_BYTES} bytes"
            continue
        try:
            text = raw.decode("utf-8").strip()
        except UnicodeDecodeError as exc:
            yield number, "", f"not valid UTF-8 ({exc.reason} at byte {exc.start})"
            continue
        if text:
            yield number, text, None
