"""Durability modes, crashes, fork, exit and backpressure."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import closing
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from starlette.testclient import TestClient

from accoil_buffer import Buffer, BufferFull, Config, ConfigError, ServerConfig, StorageError
from accoil_buffer.messages import normalise
from accoil_buffer.server import Sidecar
from accoil_buffer.store import schema
from accoil_buffer.store.engine import Database
from accoil_buffer.writer import GroupWriter
from tests.support import tables
from tests.support.clock import Clock
from tests.support.paths import ROOT_DIR
from tests.support.processes import fork


def test_group_mode_returns_at_once_and_commits_on_flush(database_url: str, clock: Clock) -> None:
    with Buffer(database_url, start=False, clock=clock, durability="group") as buf:
        for i in range(500):
            buf.track(f"u{i % 5}", "E")
        status = buf.status()["outbox"]
        assert status["unfolded_messages"] + status["queued_in_memory"] >= 500  # none missed
        buf.flush()
        assert buf.status()["outbox"] == {
            "unfolded_messages": 0,
            "oldest_received_at": None,
            "queued_in_memory": 0,
        }
        for _ in range(7):
            buf.track("late", "E")  # committed by close()
    counts = tables.counts(database_url)
    assert sum(counts.values()) == 507


@pytest.mark.parametrize("durability", ["sync", "group"])
def test_a_process_killed_while_writing(database_url: str, durability: str) -> None:
    with Buffer(database_url, start=False):
        pass  # migrate first
    writer = subprocess.Popen(
        [sys.executable, "-m", "tests.support.workers", "record", database_url, durability],
        cwd=ROOT_DIR,
        stdout=subprocess.PIPE,
    )
    assert writer.stdout is not None
    returned = 0
    while returned < 1500:
        returned = int(writer.stdout.readline())
    writer.send_signal(signal.SIGKILL)
    writer.wait(timeout=30)
    stored = tables.outbox_size(database_url)
    ids = tables.outbox_message_ids(database_url)
    assert len(set(ids)) == len(ids) == stored  # consistent: a row per call, each id once
    if durability == "sync":
        assert stored >= returned  # every call that returned is there
    else:
        assert stored >= returned - 2000  # at most one writer batch (the documented window)
    with Buffer(database_url, start=False) as buf:
        buf.flush()
    assert sum(tables.counts(database_url).values()) == stored
    assert tables.table_count(database_url, schema.message_ids) == stored


def test_fork_in_the_middle_of_a_stream(database_url: str, clock: Clock) -> None:
    buf = Buffer(database_url, start=False, clock=clock, durability="group")
    for i in range(100):
        buf.track("parent", "E", message_id=f"p{i}")

    def child() -> None:
        for i in range(100):
            buf.track("child", "E", message_id=f"c{i}")
        buf.close()

    pid = fork(child)
    for i in range(100, 200):
        buf.track("parent", "E", message_id=f"p{i}")
    today = clock.now.date()
    assert _fold_once_the_child_is_done(pid, buf, database_url, clock) == {
        (today, "parent", "track", "E"): 200,
        (today, "child", "track", "E"): 100,
    }
    assert tables.drops(database_url) == {}  # nothing was written twice


def test_fork_while_a_thread_is_mid_transaction_on_sqlite(tmp_path: Path, clock: Clock) -> None:
    # SQLite's record of the locks a process holds is copied by fork(): had the fork not
    # waited for the transaction below, the child would wait on a lock that is never released.
    url = f"sqlite:///{tmp_path / 'fork.db'}"
    buf = Buffer(url, start=False, clock=clock, durability="sync", sqlite_busy_timeout_seconds=2)
    in_transaction = threading.Event()

    def hold_a_transaction() -> None:
        with buf._parts.database.write() as conn:
            buf.track("parent", "E", message_id="p0", connection=conn)
            in_transaction.set()
            time.sleep(0.5)

    holder = threading.Thread(target=hold_a_transaction)
    holder.start()
    in_transaction.wait()

    def child() -> None:
        buf.track("child", "E", message_id="c0")
        buf.close()

    pid = fork(child)
    holder.join()
    today = clock.now.date()
    assert _fold_once_the_child_is_done(pid, buf, url, clock) == {
        (today, "parent", "track", "E"): 1,
        (today, "child", "track", "E"): 1,
    }


def test_every_sqlite_transaction_takes_the_write_lock_as_it_begins(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'lock.db'}"
    with Buffer(url, start=False) as buf:
        other = sqlite3.connect(tmp_path / "lock.db", timeout=0, isolation_level=None)
        # Nothing is executed in the transaction: a deferred BEGIN would not take the lock.
        with (
            closing(other),
            buf._parts.database.engine.begin(),
            pytest.raises(sqlite3.OperationalError, match="locked"),
        ):
            other.execute("BEGIN IMMEDIATE")


def test_a_begin_that_outwaits_the_busy_timeout_is_a_storage_error(tmp_path: Path) -> None:
    path = tmp_path / "busy.db"
    with Buffer(
        f"sqlite:///{path}", start=False, durability="sync", sqlite_busy_timeout_seconds=0.1
    ) as buf:
        holder = sqlite3.connect(path, isolation_level=None)
        with closing(holder):
            holder.execute("BEGIN IMMEDIATE")
            with pytest.raises(StorageError, match="database is locked"):
                buf.track("u", "E")
            holder.execute("ROLLBACK")
        buf.track("u", "E")  # the connection that failed to begin is still usable
        assert buf.status()["outbox"]["unfolded_messages"] == 1


def _fold_once_the_child_is_done(pid: int, buf: Buffer, url: str, clock: Clock) -> tables.Counts:
    """Wait for the forked child, which must have succeeded, close the parent's buffer, fold
    what both recorded, and return the daily counts."""
    _, status = os.waitpid(pid, 0)
    buf.close()
    assert os.waitstatus_to_exitcode(status) == 0
    with Buffer(url, start=False, clock=clock) as after:
        after.flush()
    return tables.counts(url)


def ready_worker(command: str, url: str) -> subprocess.Popen[bytes]:
    """A ``tests.support.workers`` process that has said it is ready for its next step."""
    worker = subprocess.Popen(
        [sys.executable, "-m", "tests.support.workers", command, url],
        cwd=ROOT_DIR,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert worker.stdout is not None
    assert worker.stdout.readline().strip() == b"ready"
    return worker


def test_exit_with_the_database_gone_is_bounded(postgres_database: str) -> None:
    worker = ready_worker("exit-without-database", postgres_database)
    assert worker.stdin is not None
    admin = create_engine(
        postgres_database.rsplit("/", 1)[0] + "/test", isolation_level="AUTOCOMMIT"
    )
    name = postgres_database.rsplit("/", 1)[1]
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    admin.dispose()
    started = time.monotonic()
    worker.stdin.write(b"go\n")
    worker.stdin.flush()
    _, stderr = worker.communicate(timeout=60)
    assert time.monotonic() - started < 15
    assert worker.returncode == 0
    assert b"queued messages were not committed" in stderr


def test_exit_while_a_scheduled_pass_waits_on_a_lock_is_bounded(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    worker = ready_worker("exit-while-a-pass-waits", f"sqlite:///{path}")
    assert worker.stdin is not None
    holder = sqlite3.connect(path, isolation_level=None)  # another process's write, for ever
    holder.execute("BEGIN IMMEDIATE")
    try:
        worker.stdin.write(b"go\n")
        worker.stdin.flush()
        _, stderr = worker.communicate(timeout=120)  # a pass would wait its 300 s busy timeout
        still_held = holder.in_transaction
    finally:
        worker.kill()
        holder.rollback()
        holder.close()
    assert worker.returncode == 0, stderr.decode()
    assert still_held


def test_at_the_bound_calls_are_refused_counted_and_then_let_through(
    database_url: str, clock: Clock
) -> None:
    with Buffer(
        database_url, start=False, clock=clock, durability="sync", max_outbox_rows=5
    ) as buf:
        for _ in range(5):
            buf.track("u", "E")
        with pytest.raises(BufferFull, match="max_outbox_rows"):
            buf.track("u", "E")
        with pytest.raises(BufferFull):
            buf.ingest_many([{"type": "track", "userId": "u", "event": "E"}])
        buf.flush()  # the fold makes room
        buf.track("u", "E")
    assert tables.drops(database_url) == {"buffer_full": 2}
    assert sum(tables.counts(database_url).values()) == 6


def test_threads_calling_at_once_in_group_mode_stop_at_the_bound(database_url: str) -> None:
    refused = []

    def calls(buf: Buffer, thread: int) -> None:
        for i in range(1000):
            try:
                buf.track(f"u{thread}", "E", message_id=f"{thread}-{i}")
            except BufferFull:
                refused.append(1)

    with Buffer(database_url, start=False, durability="group", max_outbox_rows=1000) as buf:
        threads = [threading.Thread(target=calls, args=(buf, t)) for t in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        buf.flush(timeout=60)  # commits what was queued; folded rows leave the outbox
    counted = sum(tables.counts(database_url).values())
    assert 0 < counted <= 1000  # each message its own row (a messageId of its own)
    assert counted + len(refused) == 4000


def sqlite_bytes_in_use(path: Path) -> int:
    """Measured apart from the buffer: the file's pages in use."""
    with closing(sqlite3.connect(path)) as db:
        pages, free, size = (
            db.execute(f"PRAGMA {name}").fetchone()[0]
            for name in ("page_count", "freelist_count", "page_size")
        )
    return int((pages - free) * size)


def fill_until_refused(buf: Buffer) -> tuple[int, BufferFull]:
    for stored in range(100_000):
        try:
            buf.track("u", "E", {"note": "x" * 200})
        except BufferFull as refusal:
            return stored, refusal
    raise AssertionError("the bound was never reached")


def test_a_sqlite_file_at_its_byte_bound_refuses_calls_until_the_fold_frees_pages(
    tmp_path: Path, clock: Clock
) -> None:
    path = tmp_path / "bytes.db"
    url = f"sqlite:///{path}"
    with Buffer(url, start=False, clock=clock, durability="sync"):
        empty = sqlite_bytes_in_use(path)
    bound = empty + 64 * 1024  # room for a few hundred outbox rows
    with Buffer(url, start=False, clock=clock, durability="sync", max_outbox_bytes=bound) as buf:
        stored, refusal = fill_until_refused(buf)
        assert "bytes in use in the database file" in str(refusal)
        assert stored > 100
        assert sqlite_bytes_in_use(path) <= bound + 4096  # at most a page past the bound
        buf.flush()  # folding frees the outbox's pages
        buf.track("u", "E")
    assert tables.drops(url) == {"buffer_full": 1}
    assert sum(tables.counts(url).values()) == stored + 1


def test_a_byte_bound_on_postgresql_is_refused_at_start() -> None:
    with pytest.raises(ConfigError, match="max_outbox_bytes bounds the size of a SQLite file"):
        Database.open(Config(database_url="postgresql://localhost/x", max_outbox_bytes=10**9))


def test_a_call_at_the_bound_can_wait_for_room(database_url: str, clock: Clock) -> None:
    with Buffer(
        database_url,
        start=False,
        clock=clock,
        durability="group",
        max_outbox_rows=3,
        backpressure_timeout_seconds=10,
    ) as buf:
        for n in range(3):
            buf.track(f"u{n}", "E")  # a row each: the same user's events could share one
        folder = threading.Timer(0.3, buf.flush)
        folder.start()
        started = time.monotonic()
        buf.track("u3", "E")  # blocks until the fold has made room
        waited = time.monotonic() - started
        folder.join()
    assert waited >= 0.2
    assert sum(tables.counts(database_url).values()) == 4


def test_the_daemon_answers_503_when_full(tmp_path: object, clock: Clock) -> None:
    url = f"sqlite:///{tmp_path}/full.db"
    with Buffer(url, start=False, clock=clock, max_outbox_rows=1) as buf:
        client = TestClient(Sidecar(buf, ServerConfig()).app)
        first = client.post("/v1/track", json={"userId": "u", "event": "E"})
        second = client.post("/v1/track", json={"userId": "u", "event": "E"})
    assert (first.status_code, second.status_code) == (200, 503)
    assert second.json()["code"] == "unavailable"


def test_the_queue_in_memory_is_bounded_when_the_database_fails() -> None:
    on_fire = threading.Event()
    on_fire.set()

    def failing(_messages: object) -> None:
        if on_fire.is_set():
            raise OSError("disk on fire")

    writer = GroupWriter(failing, max_queued=10, retry_after=0.05)
    message = normalise({"type": "track", "userId": "u", "event": "E"}, received_at=Clock().now)
    writer.submit([message] * 10)
    with pytest.raises(BufferFull, match="disk on fire"):
        writer.submit([message])
    assert writer.pending == 10  # nothing was dropped: the queued ten are still waiting
    assert not writer.close(timeout=0.2)  # and close() gives up within its timeout
    on_fire.clear()  # the disk is mended: the writer commits the ten and stops
    assert writer.close(timeout=5)
    assert writer.pending == 0


def test_queued_calls_keep_their_order_before_a_batch(database_url: str, clock: Clock) -> None:
    with Buffer(database_url, start=False, clock=clock, durability="group") as buf:
        buf.identify("u1", {"plan": "free"})  # queued
        buf.ingest_many([{"type": "identify", "userId": "u1", "traits": {"plan": "pro"}}])
    assert tables.users(database_url) == {"u1": {"plan": "pro"}}
