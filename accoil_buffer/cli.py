"""The ``accoil-buffer`` command: a thin click layer over the library."""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from functools import wraps
from pathlib import Path
from typing import IO, Any, NamedTuple, TypeVar

import click
from sqlalchemy.engine import make_url

from accoil_buffer.accoil_api import AccoilClient, Verdict
from accoil_buffer.buffer import Buffer
from accoil_buffer.cli_format import (
    count,
    dead_letter_line,
    describe,
    explain,
    mapping_lines,
    status_lines,
)
from accoil_buffer.config import Config, load_config, sqlite_file
from accoil_buffer.errors import (
    AccoilBufferError,
    BufferFull,
    ConfigError,
    ListenError,
    storage_errors,
)
from accoil_buffer.json_values import decode
from accoil_buffer.messages import MAX_MESSAGE_BYTES
from accoil_buffer.server import serve as run_server
from accoil_buffer.store.engine import Database
from accoil_buffer.store.migrate import current_revision, ensure_schema, head_revision
from accoil_buffer.watch import watch as watch_status

F = TypeVar("F", bound=Callable[..., Any])
IMPORT_BATCH = 1000


class _CannotListen(click.ClickException):
    """serve's port is taken: exit 3, uvicorn's own code for a failed start."""

    exit_code = 3


# A line longer than this cannot hold a 32 KB message, however it is spaced or escaped.
MAX_LINE_BYTES = 32 * MAX_MESSAGE_BYTES
LOG_LEVEL = click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False)


class UsageProblem(click.ClickException):
    """A configuration error exits 2, as click's usage errors do, so that a service manager can
    tell it from a failure that a restart may cure (the unit's RestartPreventExitStatus)."""

    exit_code = 2


def configure_logging(level: str) -> None:
    """One set-up for ``--log-level`` before and after the subcommand; the later one wins."""
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger().setLevel(level.upper())


def common_options(command: F) -> F:
    """``--config``, ``--database-url`` and ``--log-level`` on every command; errors become
    one clear line."""

    @click.option(
        "--config",
        "config_path",
        type=click.Path(dir_okay=False, path_type=Path),
        help="TOML configuration file (default: $ACCOIL_BUFFER_CONFIG).",
    )
    @click.option("--database-url", help="Overrides database_url from the file and environment.")
    @click.option("--log-level", type=LOG_LEVEL, help="As before the subcommand; this one wins.")
    @wraps(command)
    def wrapper(
        config_path: Path | None, database_url: str | None, log_level: str | None, **kwargs: Any
    ) -> Any:
        if log_level is not None:
            configure_logging(log_level)
        try:
            config = load_config(config_path, overrides={"database_url": database_url})
            return command(config, **kwargs)
        except ConfigError as exc:
            raise UsageProblem(str(exc)) from exc
        except AccoilBufferError as exc:
            raise click.ClickException(str(exc)) from exc

    return wrapper  # type: ignore[return-value]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="accoil-buffer")
@click.option("--log-level", default="WARNING", show_default=True, type=LOG_LEVEL)
def main(log_level: str) -> None:
    """A local-first event buffer for Accoil product analytics.

    Exit status: 0 done, 1 the operation failed, 2 a usage or configuration error, 3 (serve)
    the port could not be bound.
    """
    configure_logging(log_level)


def _not_empty(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    """An empty --host is refused: bound, it would mean every address, not the default."""
    if value is not None and not value.strip():
        raise click.BadParameter("must not be empty (0.0.0.0 is every IPv4 address)")
    return value


@main.command()
@click.option(
    "--host",
    callback=_not_empty,
    help="Address to listen on (default 127.0.0.1, from [server] host).",
)
@click.option(
    "--port",
    type=click.IntRange(1, 65535),  # as [server] port: 0, any port, gives clients no address
    help="Port to listen on (default 8740, from [server] port).",
)
@common_options
def serve(config: Config, host: str | None, port: int | None) -> None:
    """Run the sidecar: Segment's HTTP Tracking API, with fold and delivery in the background.
    Stops cleanly on SIGTERM or Ctrl-C."""
    server = dataclasses.replace(
        config.server,
        host=config.server.host if host is None else host,
        port=config.server.port if port is None else port,
    )
    try:
        run_server(
            dataclasses.replace(config, server=server),
            announce=lambda line: click.echo(line, err=True),
        )
    except ListenError as exc:
        raise _CannotListen(str(exc)) from exc


@main.command()
@common_options
def migrate(config: Config) -> None:
    """Upgrade the database schema to this version's head (creating it if need be)."""
    database = Database.open(config)
    try:
        before = _revision(database)
        ensure_schema(database, auto_migrate=True)  # refuses a schema from a newer version
    finally:
        database.dispose()
    head = head_revision()
    if before == head:
        click.echo(f"the schema is already at revision {head} (head)")
    elif before is None:
        click.echo(f"created the schema at revision {head} (head)")
    else:
        click.echo(f"upgraded the schema from revision {before} to {head} (head)")


def _revision(database: Database) -> str | None:
    """The schema's revision; None for a database without our tables."""
    with storage_errors("could not read the database"), database.engine.connect() as conn:
        return current_revision(conn)


def _existing(config: Config) -> Buffer:
    """The buffer for a command that only reads: a database that is not there is an error
    rather than created, and an older schema is refused rather than migrated."""
    path = sqlite_file(config.database_url)
    if not ((path is None or path.exists()) and _has_schema(config)):
        where = (
            path.absolute()
            if path is not None
            else make_url(config.database_url).render_as_string(hide_password=True)
        )
        raise click.ClickException(
            f"no database at {where}; `accoil-buffer migrate` or `serve` creates it"
        )
    return Buffer(config=dataclasses.replace(config, auto_migrate=False), start=False)


def _has_schema(config: Config) -> bool:
    database = Database.open(config)
    try:
        return _revision(database) is not None
    finally:
        database.dispose()


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the status document as JSON.")
@click.option("--watch", is_flag=True, help="Delivery and what waits, redrawn every second.")
@common_options
def status(config: Config, as_json: bool, watch: bool) -> None:
    """Show what is pending delivery, waiting for identity, and what was dropped."""
    if watch and as_json:  # a drawing for a person; a program polls `status --json`
        raise click.UsageError("--watch and --json cannot be used together")
    with _existing(config) as buffer:
        if watch:
            watch_status(buffer)
            return
        report = buffer.status_report()
    if as_json:
        click.echo(json.dumps(report.document(), indent=2))
        return
    for line in status_lines(report):
        click.echo(line)


@main.command()
@click.option("--timeout", type=float, help="Stop sending new messages after this many seconds.")
@common_options
def flush(config: Config, timeout: float | None) -> None:
    """Fold the outbox and deliver to Accoil now (one pass). Exits 1 if delivery failed,
    stopped early, or is off."""
    with Buffer(config=config, start=False) as buffer:
        pending = buffer.status_report().pending
        total = sum(
            (
                pending.users,
                pending.accounts,
                pending.memberships,
                pending.occurrences,
                pending.posts,
            )
        )
        if sys.stdout.isatty() and total:
            with click.progressbar(length=total, label="delivering") as bar:
                result = buffer.flush(timeout, progress=bar.update)
        else:
            result = buffer.flush(timeout)
    folded = f"folded {count(result.folded, 'message')}"
    if result.duplicates:
        folded += f"; dropped {count(result.duplicates, 'copy', 'copies')} of earlier messages"
    click.echo(folded)
    delivery = result.delivery
    if delivery is None:
        raise click.ClickException("delivery is off: set api_key (or ACCOIL_API_KEY)")
    click.echo(
        f"delivered {count(delivery.delivered, 'message')} to Accoil "
        f"({delivery.dead_lettered} dead-lettered, {count(delivery.retries, 'retry', 'retries')})"
    )
    if delivery.failure is not None:
        raise click.ClickException(
            f"delivery failed: {delivery.failure}; the rest waits for the next pass"
        )
    if not delivery.complete:
        raise click.ClickException("stopped at the timeout; the rest waits for the next pass")


@main.command()
@common_options
def check(config: Config) -> None:
    """Test the connection to Accoil with an empty message."""
    if not config.api_key:
        raise click.ClickException("api_key is not set (config file api_key, or ACCOIL_API_KEY)")
    client = AccoilClient(config.api_key, config.endpoint, timeout=config.request_timeout_seconds)
    started = time.monotonic()
    answer = client.send({})
    elapsed = (time.monotonic() - started) * 1000
    if answer.status is None:
        raise click.ClickException(f"no answer from {client.url}: {answer.describe()}")
    if answer.verdict is not Verdict.DELIVERED:
        raise click.ClickException(f"{client.url} answered {answer.describe()}")
    click.echo(f"{client.url} answered HTTP {answer.status} in {elapsed:.0f} ms.")
    click.echo(
        "Note: Accoil answers 202 even to a wrong API key (it checks keys later), so "
        "this shows Accoil is reachable, not that the key is right."
    )


@main.group("dead-letters")
def dead_letters() -> None:
    """Messages Accoil refused (400, 413, other 4xx)."""


@dead_letters.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@common_options
def dead_letters_list(config: Config, as_json: bool) -> None:
    """List dead letters not yet replayed."""
    with _existing(config) as buffer:
        letters = buffer.dead_letters()
    for letter in letters:
        click.echo(dead_letter_line(letter, as_json=as_json))
    if not letters and not as_json:
        click.echo("no dead letters")


@dead_letters.command("replay")
@click.option("--id", "ids", type=int, multiple=True, help="Replay only this one (repeatable).")
@common_options
def dead_letters_replay(config: Config, ids: tuple[int, ...]) -> None:
    """Send dead letters again, as they were; exits 1 if any is refused again."""
    with Buffer(config=config, start=False) as buffer:
        accepted, refused = buffer.replay_dead_letters(ids or None)
    click.echo(f"replayed {accepted}; refused again {refused}")
    if refused:
        raise SystemExit(1)


@main.command("import")
@click.argument("source", type=click.File("rb"))
@common_options
def import_(config: Config, source: IO[bytes]) -> None:
    """Import Segment-format messages, one JSON object per line, from SOURCE (a file or -).

    Rejected lines are reported by number on stderr and the import continues; the exit status
    is 1 if any line was rejected. Under max_outbox_rows and max_outbox_bytes the import folds
    as it goes; at a full buffer it stops, naming the first line it did not import.
    """
    rows, size = config.max_outbox_rows, config.max_outbox_bytes
    # A batch fits an empty outbox with room to spare, under each bound.
    most = min(IMPORT_BATCH, rows) if rows else IMPORT_BATCH
    most_bytes = size // 4 if size else sys.maxsize
    stored = duplicates = filtered = rejected = unfolded = unfolded_bytes = batch_bytes = 0
    stopped: str | None = None
    # Delivery off: the import's flushes only fold; sending is serve's and flush's work.
    with Buffer(config=dataclasses.replace(config, api_key=None), start=False) as buffer:
        batch: list[_Line] = []

        def ingest() -> None:
            nonlocal stored, duplicates, filtered, rejected, unfolded, unfolded_bytes, batch_bytes
            if (rows and unfolded + len(batch) > rows) or (
                size and unfolded_bytes + batch_bytes > size // 2
            ):
                buffer.flush()  # the fold makes room for the next batch, as the daemon's would
                unfolded = unfolded_bytes = 0
            # A line with a problem goes in as None: rejected, and counted in accoil_drops as
            # rejected_invalid, as an invalid message is.
            result = buffer.ingest_many(line.message for line in batch)
            stored += result.stored
            unfolded += result.stored
            unfolded_bytes += batch_bytes
            duplicates += result.duplicates
            filtered += result.filtered
            for rejection in result.rejected:
                line = batch[rejection.index]
                click.echo(f"line {line.number}: {line.problem or rejection.error}", err=True)
            rejected += len(result.rejected)
            batch.clear()
            batch_bytes = 0

        try:
            for line in _json_lines(source):
                if batch and batch_bytes + line.size > most_bytes:
                    ingest()
                batch.append(line)
                batch_bytes += line.size
                if len(batch) >= most:
                    ingest()
            if batch:
                ingest()
        except BufferFull as exc:
            stopped = f"line {batch[0].number} and the lines after it were not imported: {exc}"
    click.echo(
        f"imported {count(stored, 'message')} ({count(duplicates, 'duplicate')}, {filtered} "
        f"filtered by integrations); {count(rejected, 'line')} rejected"
    )
    if stopped is not None:
        raise click.ClickException(stopped)
    if rejected:
        raise SystemExit(1)


@main.group()
def mappings() -> None:
    """The mappings in force (the presets unless [[mappings]] are configured)."""


@mappings.command("list")
@click.option("--json", "as_json", is_flag=True, help="As a JSON array.")
@common_options
def mappings_list(config: Config, as_json: bool) -> None:
    """List the mappings in force, in the order they apply."""
    if as_json:
        entries = [
            {**dataclasses.asdict(m), "fields": dict(m.fields)} for m in config.mappings.mappings
        ]
        click.echo(json.dumps(entries, indent=2, ensure_ascii=False))
        return
    for line in mapping_lines(config):
        click.echo(line)


@mappings.command("test")
@click.argument("source", type=click.File("rb"))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per message.")
@common_options
def mappings_test(config: Config, source: IO[bytes], as_json: bool) -> None:
    """Show, for sample messages (Segment-format JSON lines in SOURCE, a file or -), which
    mappings match each and what each would send. Nothing is stored or sent; the exit status
    is 1 if any line is not a valid message."""
    now = datetime.now(UTC)
    margin = timedelta(seconds=config.future_timestamp_margin_seconds)
    invalid = False
    for line in _json_lines(source):
        report = (
            {"line": line.number, "error": line.problem}
            if line.problem is not None
            else explain(config, line.number, line.message, now, margin)
        )
        invalid = invalid or "error" in report
        click.echo(json.dumps(report, ensure_ascii=False) if as_json else describe(report))
    if invalid:
        raise SystemExit(1)


class _Line(NamedTuple):
    """A non-blank line of a JSON-lines file: its decoded JSON, or the problem with it."""

    number: int
    message: Any
    problem: str | None
    size: int  # its bytes, about what its message adds to the outbox


def _json_lines(source: IO[bytes]) -> Iterator[_Line]:
    """Each non-blank line, decoded as the daemon decodes a body (an integer too long for
    Python becomes infinity, refused as its message's out-of-range number)."""
    for number, text, problem in _numbered_lines(source):
        if problem is not None:
            yield _Line(number, None, problem, len(text))
            continue
        try:
            yield _Line(number, decode(text)[0], None, len(text))
        except (ValueError, RecursionError) as exc:
            yield _Line(number, None, f"invalid JSON: {exc}", len(text))


def _numbered_lines(source: IO[bytes]) -> Iterator[tuple[int, bytes, str | None]]:
    """Yield (line number, bytes, problem) for each non-blank line, never holding an
    overlong line in memory."""
    number = 0
    while raw := source.readline(MAX_LINE_BYTES + 1):
        number += 1
        if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
            while (rest := source.readline(MAX_LINE_BYTES)) and not rest.endswith(b"\n"):
                pass
            yield number, b"", f"line is longer than {MAX_LINE_BYTES} bytes"
            continue
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield number, b"", f"not valid UTF-8 ({exc.reason} at byte {exc.start})"
            continue
        if text := raw.strip():
            yield number, text, None
