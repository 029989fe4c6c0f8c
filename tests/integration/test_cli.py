"""The ``accoil-buffer`` command, run as a subprocess the way a person runs it."""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect

from accoil_buffer.cli import MAX_LINE_BYTES
from accoil_buffer.config import load_config
from accoil_buffer.mappings import PRESET_NAMES
from accoil_buffer.store.migrate import head_revision
from tests.contract import append, message, opened
from tests.support import tables
from tests.support.fake_accoil import Reply, running
from tests.support.paths import ROOT_DIR

EXAMPLES = ROOT_DIR / "examples" / "events.jsonl"


def run(
    *args: str,
    stdin: bytes = b"",
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    python: tuple[str, ...] = ("-m", "accoil_buffer"),
) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("ACCOIL_")}
    environment.update(env or {})
    result = subprocess.run(
        [sys.executable, *python, *args],
        input=stdin,
        capture_output=True,
        env=environment,
        cwd=cwd,
        timeout=120,
        check=False,
    )
    return subprocess.CompletedProcess(
        result.args, result.returncode, result.stdout.decode(), result.stderr.decode()
    )


def test_import_the_example_and_read_the_status(database_url: str) -> None:
    imported = run("import", str(EXAMPLES), "--database-url", database_url)
    assert imported.returncode == 0, imported.stderr
    assert "imported 8 messages (0 duplicates, 1 filtered by integrations)" in imported.stdout
    today = datetime.now(UTC).date()
    counts = tables.counts(database_url)
    assert counts[today, "u1", "track", "Report Created"] == 2
    assert counts[today, "u1", "track", "Viewed Pricing"] == 1  # the anonymous event, aliased
    status = run("status", "--json", "--database-url", database_url)
    assert status.returncode == 0, status.stderr
    document = json.loads(status.stdout)
    assert document["pending"]["occurrences"] == 5
    assert document["drops"] == {"filtered_integrations": 1}
    human = run("status", "--database-url", database_url)
    assert "5 occurrences" in human.stdout
    assert "filtered_integrations 1" in human.stdout


def test_import_reports_bad_lines_by_number_and_keeps_the_rest(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'b.db'}"
    lines = [
        b'{"type": "track", "userId": "u1", "event": "Good"}',
        b"{not json",
        b"",
        b'{"type": "track", "event": "No user"}',
        b"\xff\xfe",
        b'"just a string"',
        b"[" * 100_000 + b"]" * 100_000,
        b'{"type": "track", "userId": "u1", "event": "Good"}',
    ]
    result = run("import", "-", "--database-url", url, stdin=b"\n".join(lines) + b"\n")
    assert result.returncode == 1
    reported = [line.split(":")[0] for line in result.stderr.splitlines()]
    assert reported == ["line 2", "line 4", "line 5", "line 6", "line 7"]
    assert "line 4: userId: is required" in result.stderr
    assert "imported 2 messages (0 duplicates, 0 filtered by integrations); 5 lines" in (
        result.stdout
    )
    assert sum(tables.counts(url).values()) == 2
    assert tables.drops(url) == {"rejected_invalid": 5}  # the lines that are not JSON too
    again = run("import", "-", "--database-url", url, stdin=lines[0] + b"\n" + lines[1] + b"\n")
    assert "imported 1 message (0 duplicates, 0 filtered by integrations); 1 line" in again.stdout
    assert tables.drops(url) == {"rejected_invalid": 6}


def test_import_skips_an_overlong_line_without_reading_it_whole(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    huge = b'{"type": "track", "userId": "u1", "event": "' + b"x" * (MAX_LINE_BYTES * 3) + b'"}'
    good = b'{"type": "track", "userId": "u1", "event": "After"}'
    result = run("import", "-", "--database-url", url, stdin=huge + b"\n" + good + b"\n")
    assert result.returncode == 1
    assert result.stderr.startswith(f"line 1: line is longer than {MAX_LINE_BYTES} bytes")
    assert list(tables.counts(url).values()) == [1]


def test_import_folds_as_it_goes_to_stay_within_max_outbox_rows(database_url: str) -> None:
    lines = b"".join(b'{"type": "track", "userId": "u%d", "event": "E"}\n' % i for i in range(25))
    env = {"ACCOIL_BUFFER_MAX_OUTBOX_ROWS": "10"}
    result = run("import", "-", "--database-url", database_url, stdin=lines, env=env)
    assert result.returncode == 0, result.stderr
    assert "imported 25 messages (0 duplicates" in result.stdout
    assert sum(tables.counts(database_url).values()) == 25
    assert tables.drops(database_url) == {}


def test_import_folds_as_it_goes_to_stay_within_max_outbox_bytes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'bytes.db'}"
    pad = "x" * 20_000
    lines = b"".join(
        b'{"type": "track", "userId": "u%d", "event": "E", "properties": {"pad": "%s"}}\n'
        % (i, pad.encode())
        for i in range(200)
    )  # 4 MB of messages, twice the bound, though their properties are not kept
    env = {"ACCOIL_BUFFER_MAX_OUTBOX_BYTES": "2000000"}
    result = run("import", "-", "--database-url", url, stdin=lines, env=env)
    assert result.returncode == 0, result.stderr
    assert "imported 200 messages (0 duplicates" in result.stdout
    assert tables.drops(url) == {}


def test_import_refuses_an_integer_of_thousands_of_digits_as_its_lines_problem(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'digits.db'}"
    huge = b'{"type": "identify", "userId": "u1", "traits": {"n": ' + b"9" * 5000 + b"}}"
    good = b'{"type": "track", "userId": "u1", "event": "After"}'
    result = run("import", "-", "--database-url", url, stdin=huge + b"\n" + good + b"\n")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("line 1: message.traits.n: ")
    assert "too large" in result.stderr
    assert list(tables.counts(url).values()) == [1]


def test_import_at_a_full_buffer_stops_naming_the_first_line_not_imported(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'full.db'}"
    with opened(url) as database:  # written as a daemon would, and not yet folded
        waiting = [
            message(type="track", userId="w", event="W", messageId=f"w{i}") for i in range(10)
        ]
        append(database, waiting)
    lines = b'{"type": "track", "userId": "u1", "event": "E"}\n' * 3
    env = {"ACCOIL_BUFFER_MAX_OUTBOX_ROWS": "10"}
    result = run("import", "-", "--database-url", url, stdin=lines, env=env)
    assert result.returncode == 1
    assert "imported 0 messages" in result.stdout
    assert result.stderr == (
        "Error: line 1 and the lines after it were not imported: the buffer is full (10 rows "
        "waiting; max_outbox_rows is 10); the call, adding 3, was refused and counted. Is the "
        "fold running, and can delivery reach Accoil?\n"
    )
    assert tables.drops(url) == {"buffer_full": 3}


def test_migrate_then_status_with_auto_migrate_off(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'm.db'}"
    refused = run("status", "--database-url", url, env={"ACCOIL_BUFFER_AUTO_MIGRATE": "false"})
    assert refused.returncode == 1
    assert "`accoil-buffer migrate` or `serve` creates it" in refused.stderr
    assert "Traceback" not in refused.stderr
    migrated = run("migrate", "--database-url", url)
    assert migrated.returncode == 0
    assert migrated.stdout == f"created the schema at revision {head_revision()} (head)\n"
    again = run("migrate", "--database-url", url)
    assert again.stdout == f"the schema is already at revision {head_revision()} (head)\n"
    assert (
        run("status", "--database-url", url, env={"ACCOIL_BUFFER_AUTO_MIGRATE": "false"}).returncode
        == 0
    )


def test_configuration_file_environment_and_flags(tmp_path: Path) -> None:
    (tmp_path / "from-file.db").touch()
    config = tmp_path / "accoil.toml"
    config.write_text(
        f'database_url = "sqlite:///{tmp_path / "from-file.db"}"\n'
        'api_key = "file-key-must-not-show"\n'
    )
    by_file = run("import", str(EXAMPLES), "--config", str(config))
    assert by_file.returncode == 0, by_file.stderr
    assert tables.outbox_size(f"sqlite:///{tmp_path / 'from-file.db'}") == 0
    env_url = f"sqlite:///{tmp_path / 'from-env.db'}"
    by_env = run(
        "import",
        str(EXAMPLES),
        env={"ACCOIL_BUFFER_CONFIG": str(config), "ACCOIL_BUFFER_DATABASE_URL": env_url},
    )
    assert by_env.returncode == 0, by_env.stderr
    assert tables.counts(env_url)
    flag_url = f"sqlite:///{tmp_path / 'from-flag.db'}"
    by_flag = run(
        "import",
        str(EXAMPLES),
        "--database-url",
        flag_url,
        env={"ACCOIL_BUFFER_DATABASE_URL": env_url},
    )
    assert by_flag.returncode == 0
    assert tables.counts(flag_url)
    for result in (by_file, by_env, by_flag):
        assert "file-key-must-not-show" not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ("databse_url = 'x'\n", "unknown configuration key(s): databse_url"),
        ("flush_interval_seconds = 'soon'\n", "flush_interval_seconds must be a number"),
        ("this is not toml", "is not valid TOML"),
        ("database_url = 'mysql://x'\n", "database_url must be sqlite:/// or postgresql://"),
        (  # an unescaped @ in the password: the parser's error would quote part of it
            "database_url = 'postgresql://app:pw@998877665544:x@db.internal/prod'\n",
            "database_url is not a database URL",
        ),
        ("database_url = 'sqlite+pysqlcipher:///x'\n", "not 'pysqlcipher'"),
        ("api_key = 998877665544\n", "api_key must be a string, got an integer"),
        ("[server]\nwrite_keys = 'wk-998877665544'\n", "write_keys must be a list of strings"),
        ("port = 9000\n", "port (it belongs under [server])"),
        ("max_in_flight = 1.7\n", "max_in_flight must be an integer, got a number"),
        ("max_in_flight = 5000\n", "max_in_flight must be at most 1000"),
        ("flush_interval_seconds = nan\n", "flush_interval_seconds must be a number"),
        ("anonymous_ttl_days = 1000000000\n", "anonymous_ttl_days must be at most 100 years"),
        ("endpoint = 'in.accoil.com/segment'\n", "endpoint must be a URL starting http://"),
    ],
)
def test_bad_configuration_is_one_clear_line(tmp_path: Path, content: str, words: str) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(content)
    result = run("migrate", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("Error: ")
    assert words in result.stderr
    assert len(result.stderr.splitlines()) == 1
    assert "998877665544" not in result.stderr
    assert list(tmp_path.iterdir()) == [config]


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda path: path.write_bytes(b"api_key = '\xff\xfe'\n"), "is not UTF-8 text"),
        (lambda path: path.mkdir(), "cannot be read: Is a directory"),
    ],
)
def test_a_configuration_file_that_cannot_be_read_is_one_clear_line(
    tmp_path: Path, make: Callable[[Path], object], words: str
) -> None:
    config = tmp_path / "bad.toml"
    make(config)
    result = run("migrate", env={"ACCOIL_BUFFER_CONFIG": str(config)}, cwd=tmp_path)
    assert (result.returncode, result.stderr.count("\n")) == (2, 1)
    assert words in result.stderr


def test_a_database_file_that_cannot_be_created_is_one_clear_line(tmp_path: Path) -> None:
    not_a_folder = tmp_path / "a-file"  # as a read-only folder would, for a user not root
    not_a_folder.write_text("")
    url = f"sqlite:///{not_a_folder / 'b.db'}"
    result = run("migrate", env={"ACCOIL_BUFFER_DATABASE_URL": url})
    assert (result.returncode, result.stderr.count("\n")) == (2, 1)
    assert "cannot create" in result.stderr


def test_migrate_refuses_a_schema_from_a_newer_version(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'newer.db'}"
    assert run("migrate", env={"ACCOIL_BUFFER_DATABASE_URL": url}).returncode == 0
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE accoil_alembic_version SET version_num = '9999_future'")
    engine.dispose()
    result = run("migrate", env={"ACCOIL_BUFFER_DATABASE_URL": url})
    assert (result.returncode, result.stderr.count("\n")) == (1, 1)
    assert "migrated by a newer version" in result.stderr


def test_the_default_database_is_a_private_file_in_the_working_directory(tmp_path: Path) -> None:
    result = run("import", str(EXAMPLES), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "accoil_buffer.db").stat().st_mode & 0o777 == 0o600


def test_flush_check_and_dead_letters_against_the_fake(database_url: str) -> None:
    secret = "cli-secret-key"
    env = {"ACCOIL_API_KEY": secret}
    lines = b"\n".join(
        [
            b'{"type": "identify", "userId": "u1", "traits": {"email": "a@b.c"}}',
            b'{"type": "track", "userId": "u1", "event": "Good"}',
            b'{"type": "track", "userId": "u1", "event": "Bad"}',
        ]
    )
    with running() as fake:
        fake.behaviour = lambda m: Reply(400, "bad event") if m.get("event") == "Bad" else Reply()
        env["ACCOIL_BUFFER_ENDPOINT"] = fake.url
        outputs = [run("import", "-", "--database-url", database_url, stdin=lines, env=env)]
        flushed = run("flush", "--database-url", database_url, env=env)
        outputs.append(flushed)
        assert flushed.returncode == 0, flushed.stderr
        assert "delivered 2 messages to Accoil (1 dead-lettered" in flushed.stdout
        listed = run("dead-letters", "list", "--database-url", database_url, env=env)
        assert "HTTP 400" in listed.stdout
        assert "bad event" in listed.stdout
        as_json = run("dead-letters", "list", "--json", "--database-url", database_url)
        letter = json.loads(as_json.stdout)
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", letter["created_at"])
        status = run("status", "--database-url", database_url, env=env)
        assert f"delivery: to {fake.url}; 2 messages delivered" in status.stdout
        assert "dead letters: 1" in status.stdout
        refused = run("dead-letters", "replay", "--database-url", database_url, env=env)
        assert refused.returncode == 1
        fake.behaviour = lambda _m: Reply()
        replayed = run("dead-letters", "replay", "--database-url", database_url, env=env)
        assert replayed.returncode == 0
        assert "replayed 1; refused again 0" in replayed.stdout
        checked = run("check", env=env)
        assert checked.returncode == 0
        assert "answered HTTP 202" in checked.stdout
        assert "even to a wrong API key" in checked.stdout
        fake.behaviour = lambda _m: Reply(503)
        failing = run("flush", "--database-url", database_url, env=env)
        outputs += [listed, status, refused, replayed, checked, failing]
        fake.behaviour = lambda _m: Reply(401)
        unauthorised = run("check", env=env)
        outputs.append(unauthorised)
    assert failing.returncode == 0  # nothing was pending
    assert unauthorised.returncode == 1
    assert "HTTP 401" in unauthorised.stderr
    for result in outputs:
        assert secret not in result.stdout + result.stderr


def test_check_says_a_refused_connection_was_refused() -> None:
    with running() as probe:
        endpoint = probe.url  # a loopback port that is closed once the block ends
    checked = run("check", env={"ACCOIL_API_KEY": "k", "ACCOIL_BUFFER_ENDPOINT": endpoint})
    assert checked.returncode == 1
    assert checked.stderr == f"Error: no answer from {endpoint}: connection refused\n"


def test_flush_fails_clearly_when_delivery_fails_or_is_off(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'f.db'}"
    with running() as fake:
        fake.behaviour = lambda _m: Reply(503)
        env = {"ACCOIL_API_KEY": "k", "ACCOIL_BUFFER_ENDPOINT": fake.url}
        run("import", str(EXAMPLES), "--database-url", url, env=env)
        failed = run("flush", "--database-url", url, env=env)
    assert failed.returncode == 1
    assert "delivery failed: HTTP 503" in failed.stderr
    off = run("flush", "--database-url", url)
    assert off.returncode == 1
    assert "delivery is off" in off.stderr


def test_flush_says_how_many_copies_of_earlier_messages_it_dropped(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    sent = message(type="track", userId="u1", event="E", messageId="m1")
    with opened(url) as database:  # written as a daemon would, and not yet folded
        for _ in range(3):
            append(database, [sent])
    flushed = run("flush", "--database-url", url)
    assert "folded 1 message; dropped 2 copies of earlier messages" in flushed.stdout
    assert sum(tables.counts(url).values()) == 1


MAPPINGS_EXAMPLE = EXAMPLES.parent / "mappings.toml"
MAPPING_SAMPLES = EXAMPLES.parent / "mapping-samples.jsonl"


def test_mappings_test_shows_what_each_mapping_would_send(tmp_path: Path) -> None:
    samples = MAPPING_SAMPLES.read_bytes() + b'{"type": "track"}\n'
    result = run(
        "mappings", "test", "--config", str(MAPPINGS_EXAMPLE), "-", stdin=samples, cwd=tmp_path
    )
    assert result.returncode == 1  # the last line is not a valid message
    text = result.stdout
    assert "links anonymousId anon-7 to userId u1" in text
    assert '"traits": {"name": "Acme", "tier": "enterprise", "plan": "enterprise"}' in text
    assert 'Reports by name: track {"type": "track", "event": "Sales", "userId": "u1"' in text
    lines = text.splitlines()
    heartbeat = next(i for i, line in enumerate(lines) if line.startswith("line 4: track"))
    assert lines[heartbeat + 1] == "  no mapping matches (counted as unmapped)"
    assert 'Forward sign-ups: post {"type": "track", "userId": "u1", "event": "Signed Up", ' in text
    assert "line 7: invalid: userId: is required when there is no anonymousId" in text
    assert not list(tmp_path.iterdir())  # nothing was stored: no database was even created

    as_json = run(
        "mappings", "test", "--json", "--config", str(MAPPINGS_EXAMPLE), str(MAPPING_SAMPLES)
    )
    assert as_json.returncode == 0, as_json.stderr
    documents = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert [[m["mapping"] for m in d["matches"]] for d in documents] == [
        ["Identify Calls"],
        ["Group Calls"],
        ["Track Calls", "Reports by name"],
        [],
        ["Track Calls", "Forward sign-ups"],
        ["Screen Calls"],
    ]
    assert documents[4]["matches"][1]["body"]["properties"] == {"source": "newsletter"}


def test_mappings_list_shows_what_is_in_force() -> None:
    presets = run("mappings", "list")
    assert presets.returncode == 0, presets.stderr
    assert presets.stdout.splitlines() == [
        'Identify Calls: identify when type = "identify"',
        'Page Calls: page when type = "page"',
        'Track Calls: track when type = "track"',
        'Screen Calls: screen when type = "screen"',
        'Group Calls: group when type = "group"',
    ]
    custom = run("mappings", "list", "--json", "--config", str(MAPPINGS_EXAMPLE))
    assert custom.returncode == 0, custom.stderr
    reports = next(m for m in json.loads(custom.stdout) if m["name"] == "Reports by name")
    assert reports == {
        "name": "Reports by name",
        "action": "track",
        "trigger": 'event = "Report Created" and properties.report_name exists',
        "fields": {"event": "$.properties.report_name"},
        "enabled": True,
    }


def test_mappings_test_uses_the_presets_without_configuration() -> None:
    result = run(
        "mappings", "test", "-", stdin=b'{"type": "screen", "userId": "u1", "name": "Dash"}\n'
    )
    assert result.returncode == 0, result.stderr
    assert 'Screen Calls: screen {"type": "screen", "userId": "u1", "name": "Dash"' in result.stdout


def test_a_bad_trigger_stops_every_command_with_its_position(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[[mappings]]\nname = 'Pro'\naction = 'track'\ntrigger = 'plan = pro'\n")
    for command in (("status",), ("serve",), ("mappings", "test", "-")):
        result = run(*command, "--config", str(config))
        assert result.returncode == 2
        assert result.stderr.splitlines()[-3:] == [
            "Error: mapping 'Pro': trigger: expected a value after '=' (\"text\", a number, true, "
            "false or null), got 'pro' at position 8",
            "    plan = pro",
            "           ^",
        ]


def test_the_mappings_example_keeps_every_preset_action() -> None:
    """Configured mappings replace the presets: a copy of the example must not lose a type."""
    actions = {m.action for m in load_config(MAPPINGS_EXAMPLE, environ={}).mappings.mappings}
    assert set(PRESET_NAMES) - actions == set()


def test_read_only_commands_create_no_database(tmp_path: Path) -> None:
    for command in (("status",), ("dead-letters", "list")):
        result = run(*command, cwd=tmp_path)
        assert result.returncode == 1
        assert result.stderr == (
            f"Error: no database at {tmp_path / 'accoil_buffer.db'}; "
            "`accoil-buffer migrate` or `serve` creates it\n"
        )
    assert run("mappings", "list", cwd=tmp_path).returncode == 0
    assert not list(tmp_path.iterdir())


def test_read_only_commands_leave_a_database_without_our_tables_alone(
    empty_database_url: str, tmp_path: Path
) -> None:
    if empty_database_url.startswith("sqlite"):
        (tmp_path / "buffer.db").touch()
    for command in (("status", "--json"), ("dead-letters", "list")):
        result = run(*command, "--database-url", empty_database_url)
        assert result.returncode == 1
        assert "`accoil-buffer migrate` or `serve` creates it" in result.stderr
    engine = create_engine(empty_database_url)
    assert inspect(engine).get_table_names() == []
    engine.dispose()


def test_a_relative_sqlite_path_in_a_config_file_is_beside_the_file(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "elsewhere").mkdir()
    config = tmp_path / "etc" / "my.toml"
    config.write_text('database_url = "sqlite:///cfg.db"\n')
    imported = run("import", str(EXAMPLES), "--config", "my.toml", cwd=tmp_path / "etc")
    assert imported.returncode == 0, imported.stderr
    status = run("status", "--json", "--config", str(config), cwd=tmp_path / "elsewhere")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["pending"]["occurrences"] == 5
    by_variable = run(
        "import",
        str(EXAMPLES),
        env={"ACCOIL_BUFFER_CONFIG": str(config), "ACCOIL_BUFFER_DATABASE_URL": "sqlite:///v.db"},
        cwd=tmp_path / "elsewhere",
    )
    assert by_variable.returncode == 0, by_variable.stderr
    assert sorted(p.name for p in tmp_path.rglob("*.db")) == ["cfg.db", "v.db"]
    assert (tmp_path / "elsewhere" / "v.db").exists()


def test_serve_refuses_port_0_and_an_empty_host_instead_of_the_configured_ones(
    tmp_path: Path,
) -> None:
    with socket.socket() as taken:  # the configured port: serving on it would exit 3
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        env = {"ACCOIL_BUFFER_SERVER_PORT": str(taken.getsockname()[1])}
        port = run("serve", "--port", "0", env=env, cwd=tmp_path)
        host = run("serve", "--host", "", env=env, cwd=tmp_path)
    assert port.returncode == 2, port.stderr
    assert "Invalid value for '--port': 0 is not in the range 1<=x<=65535" in port.stderr
    assert host.returncode == 2, host.stderr
    assert "Invalid value for '--host': must not be empty" in host.stderr
    assert not list(tmp_path.iterdir())  # refused before a database was opened


UNIT = EXAMPLES.parent / "accoil-buffer.service"


def _unit_setting(name: str) -> str:
    return next(
        line.split("=", 1)[1] for line in UNIT.read_text().splitlines() if line.startswith(name)
    )


def test_the_systemd_unit_command_line_parses_and_a_bad_config_stops_restarts(
    tmp_path: Path,
) -> None:
    """The unit's exact arguments reach the command (which stops on the configuration error
    added after them) with an exit status the unit does not restart on."""
    arguments = shlex.split(_unit_setting("ExecStart="))[1:]
    assert arguments[0] == "serve"
    config = tmp_path / "bad.toml"
    config.write_text("port = 9000\n")
    result = run(*arguments, "--config", str(config), cwd=tmp_path)
    assert result.stderr == (
        "Error: unknown configuration key(s): port (it belongs under [server])\n"
    )
    assert str(result.returncode) in _unit_setting("RestartPreventExitStatus=").split()


def test_log_level_goes_before_or_after_the_subcommand(tmp_path: Path) -> None:
    env = {"ACCOIL_BUFFER_DATABSE_URL": "sqlite:///x.db"}
    warned = run("mappings", "list", env=env)
    assert warned.returncode == 0
    assert "ignoring environment variable ACCOIL_BUFFER_DATABSE_URL" in warned.stderr
    assert "(did you mean ACCOIL_BUFFER_DATABASE_URL?)" in warned.stderr
    assert run("mappings", "list", "--log-level", "ERROR", env=env).stderr == ""
    assert run("--log-level", "ERROR", "mappings", "list", env=env).stderr == ""
    later = run("--log-level", "ERROR", "mappings", "list", "--log-level", "warning", env=env)
    assert "ACCOIL_BUFFER_DATABSE_URL" in later.stderr


def test_a_postgresql_url_without_psycopg_names_the_extra(tmp_path: Path) -> None:
    """Fails until store/connect.py turns the missing import into a ConfigError."""
    without_psycopg = (
        "import sys; sys.modules['psycopg'] = None; "
        "from accoil_buffer.cli import main; main(sys.argv[1:], prog_name='accoil-buffer')"
    )
    result = run(
        "migrate",
        "--database-url",
        "postgresql://postgres@127.0.0.1:1/none",
        python=("-c", without_psycopg),
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert "pip install 'accoil-buffer[postgres]'" in result.stderr


def test_mappings_commands_show_a_toml_date_as_the_text_the_daemon_sends(tmp_path: Path) -> None:
    """A TOML date is not JSON: ``mappings list`` and ``mappings test`` crashed on one that the
    daemon sends as its ISO 8601 text."""
    config = tmp_path / "dates.toml"
    config.write_text(
        '[[mappings]]\nname = "Identify Calls"\naction = "identify"\n'
        "fields = { accountStatus = 2024-01-01 }\n"
    )
    sample = b'{"type": "identify", "userId": "u1", "traits": {"email": "a@b.c"}}\n'
    listed = run("mappings", "list", "--config", str(config))
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines()[1:] == ['  accountStatus = "2024-01-01"']
    as_json = run("mappings", "list", "--json", "--config", str(config))
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout)[0]["fields"] == {"accountStatus": "2024-01-01"}
    tested = run("mappings", "test", "--json", "--config", str(config), "-", stdin=sample)
    assert tested.returncode == 0, tested.stderr
    (match,) = json.loads(tested.stdout)["matches"]
    assert match["body"]["traits"] == {"email": "a@b.c", "accountStatus": "2024-01-01"}
    # Exactly what the daemon sends.
    url = f"sqlite:///{tmp_path / 'b.db'}"
    with running() as fake:
        env = {"ACCOIL_API_KEY": "k", "ACCOIL_BUFFER_ENDPOINT": fake.url}
        imported = run("import", "-", "--config", str(config), "--database-url", url, stdin=sample)
        assert imported.returncode == 0, imported.stderr
        flushed = run("flush", "--config", str(config), "--database-url", url, env=env)
        assert flushed.returncode == 0, flushed.stderr
        (sent,) = fake.accepted()
    assert sent["traits"] == match["body"]["traits"]
