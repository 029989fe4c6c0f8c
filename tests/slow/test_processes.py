"""Several processes on one database, and processes killed in the middle of a fold."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime

from accoil_buffer import Buffer, Config
from accoil_buffer.messages import normalise
from accoil_buffer.recording import record
from accoil_buffer.store.engine import Database
from tests.support import tables
from tests.support.paths import ROOT_DIR


def start(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.support.workers", *args],
        cwd=ROOT_DIR,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def test_processes_writing_and_folding_at_once_lose_nothing(database_url: str) -> None:
    with Buffer(database_url, start=False):
        pass  # migrate once, before the race
    writers = [start("write", database_url, name, "1500") for name in ("p1", "p2")]
    folder = start("fold", database_url, "100")
    for process in (*writers, folder):
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr.decode()
        assert b"locked" not in stderr
    with Buffer(database_url, start=False) as buf:
        buf.flush()
    counts = tables.counts(database_url)
    assert sum(n for (_, user, _, _), n in counts.items() if user.startswith("p1")) == 1500
    assert sum(n for (_, user, _, _), n in counts.items() if user.startswith("p2")) == 1500
    assert tables.outbox_size(database_url) == 0


def test_a_fold_killed_at_any_point_neither_loses_nor_double_counts(database_url: str) -> None:
    total = 6000
    with Buffer(database_url, start=False):
        pass  # migrate
    # Fill the outbox through the store alone, so nothing folds it before the kills.
    database = Database.open(Config(database_url=database_url))
    now = datetime.now(UTC)
    messages = [
        normalise({"type": "track", "userId": f"u{i % 50}", "event": f"E{i % 7}"}, received_at=now)
        for i in range(total)
    ]
    with database.write() as conn:
        assert record(database, conn, messages).stored == total
    database.dispose()
    rng = random.Random(7)
    kills = 0
    for _ in range(6):
        folder = start("fold", database_url, "200")
        assert folder.stdout is not None
        folder.stdout.readline()  # "folding": the fold starts now
        time.sleep(rng.uniform(0.0, 0.4))
        if folder.poll() is None:
            folder.send_signal(signal.SIGKILL)
            kills += 1
        folder.wait(timeout=60)
        assert tables.counted_and_waiting(database_url) == total
    assert kills > 0
    with Buffer(database_url, start=False) as buf:
        buf.flush()
    assert sum(tables.counts(database_url).values()) == total
    assert tables.outbox_size(database_url) == 0
