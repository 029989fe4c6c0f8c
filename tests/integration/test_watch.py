"""``accoil-buffer status --watch``: the console's overview, redrawn in a terminal."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console

from accoil_buffer import Buffer
from accoil_buffer.console.overview import overview
from accoil_buffer.reports import Health
from accoil_buffer.watch import render
from tests.integration.test_cli import run
from tests.support.fake_accoil import FakeAccoil, Reply

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def text(view: dict[str, object]) -> str:
    terminal = Console(record=True, width=100, force_terminal=False)
    terminal.print(render(view, NOW))
    return terminal.export_text()


def test_a_paused_delivery_names_the_key_by_its_fingerprint_only(
    tmp_path: Path, fake: FakeAccoil
) -> None:
    fake.behaviour = lambda _message: Reply(401)
    url = f"sqlite:///{tmp_path / 'watch.db'}"
    with Buffer(url, api_key="secret-api-key", endpoint=fake.url, start=False) as buffer:
        buffer.track("u1", "Signed Up")
        buffer.flush()
        shown = text(overview(buffer.health(), buffer.status_report(), datetime.now(UTC)))
    assert "PAUSED" in shown
    assert "Key refused (fingerprint)" in shown
    assert "secret-api-key" not in shown
    assert "Occurrences" in shown


def test_the_pending_table_and_ages_read_as_a_person_would_say_them(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'watch.db'}"
    with Buffer(url, start=False) as buffer:
        for i in range(1234):
            buffer.track(f"u{i % 3}", "Report Created")
        buffer.flush()
        status = buffer.status_report()
    offline = dataclasses.replace(
        status.delivery,
        offline_since=datetime(2026, 11, 28, 11, 0, tzinfo=UTC),
        last_error="connection refused",
    )
    status = dataclasses.replace(status, delivery=offline)
    shown = text(overview(Health(storing=True, delivery="offline"), status, NOW))
    assert "OFFLINE" in shown
    assert "Offline since" in shown
    assert "2026-11-28T11:00:00.000Z (1 h ago)" in shown
    assert "connection refused" in shown
    assert "1,234" in shown  # the occurrences waiting


def test_status_watch_runs_until_interrupted(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'watch.db'}"
    with Buffer(url, start=False) as buffer:
        buffer.track("u1", "Signed Up")
    environment = {k: v for k, v in os.environ.items() if not k.startswith("ACCOIL_")}
    watching = subprocess.Popen(
        [sys.executable, "-m", "accoil_buffer", "status", "--watch", "--database-url", url],
        env={**environment, "COLUMNS": "100"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(3)
    watching.send_signal(signal.SIGINT)
    out, err = watching.communicate(timeout=30)
    assert watching.returncode == 0, err
    assert "Delivery is off" in out  # a pipe gets the last drawing; a terminal, each one
    assert "Ctrl-C to stop" in out


def test_status_watch_with_json_is_a_usage_error(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'watch.db'}"
    with Buffer(url, start=False) as buffer:
        buffer.track("u1", "Signed Up")
    # A watch that ignored --json would run until run()'s timeout.
    result = run("status", "--watch", "--json", "--database-url", url)
    assert result.returncode == 2
    assert result.stderr.endswith("Error: --watch and --json cannot be used together\n")
    assert result.stdout == ""
