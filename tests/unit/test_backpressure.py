"""A bound's measurement: when the database cannot answer it, while it is taken, and who waits."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from accoil_buffer import backpressure
from accoil_buffer.backpressure import Backpressure, Bound
from accoil_buffer.errors import BufferFull, StorageError
from tests.support.processes import fork


def test_a_failed_measurement_keeps_the_last_one_and_what_was_added_since() -> None:
    gone = StorageError("the database is gone")
    answers: list[int | StorageError] = [3, gone, gone]

    def measure() -> int:
        answer = answers.pop(0)
        if isinstance(answer, StorageError):
            raise answer
        return answer

    bound = Bound("max_outbox_rows", 10, measure, "rows waiting")
    assert bound.fits(6)  # measured: 3 + 6 is within 10 but close, so the next call measures
    bound.take(6)
    assert not bound.fits(2)  # the measurement fails: 3 + 6 known, and 2 more is over
    assert bound.fits(1)  # fails again: 3 + 6 + 1 is still within 10
    assert answers == []


def test_far_from_the_limit_a_call_does_not_wait_for_a_measurement_in_progress() -> None:
    started, release = threading.Event(), threading.Event()

    def slow_count() -> int:
        started.set()
        release.wait(10)  # a COUNT over a long outbox
        return 100

    bound = Bound("max_outbox_rows", 1_000_000, slow_count, "rows waiting")
    measuring = threading.Thread(target=bound.fits, args=(1,))
    measuring.start()
    assert started.wait(10)
    answered: list[bool] = []
    caller = threading.Thread(target=lambda: answered.append(bound.fits(1)))
    caller.start()
    caller.join(2)
    try:
        assert answered == [True]  # from what is known, while the count still runs
    finally:
        release.set()
        measuring.join(10)
        caller.join(10)
    assert bound.describe().startswith("100 rows waiting")  # the count, once it came


def test_far_from_the_limit_a_stale_measurement_is_taken_in_the_background(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(backpressure, "_FRESH_FOR", 0.0)  # every measurement is stale at once
    started, release = threading.Event(), threading.Event()
    counts: list[int] = []

    def count() -> int:
        counts.append(100 * (len(counts) + 1))
        if len(counts) == 2:
            started.set()
            release.wait(10)  # the second count is slow, as under a busy writer
        return counts[-1]

    bound = Bound("max_outbox_rows", 1_000_000, count, "rows waiting")
    assert bound.fits(1)  # the first measurement is the caller's: nothing is known before it
    answered: list[bool] = []
    callers = [threading.Thread(target=lambda: answered.append(bound.fits(1))) for _ in range(2)]
    try:
        for caller in callers:
            caller.start()
            caller.join(2)
        assert answered == [True, True]  # from what is known, while the count runs elsewhere
        assert started.wait(10)
    finally:
        release.set()
    deadline = time.monotonic() + 10
    while not bound.describe().startswith("200 rows waiting") and time.monotonic() < deadline:
        time.sleep(0.01)
    assert bound.describe().startswith("200 rows waiting")  # the background count landed
    assert counts == [100, 200]  # the second caller started no count of its own


def test_a_child_forked_during_a_background_count_measures_for_itself(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(backpressure, "_FRESH_FOR", 0.0)  # every measurement is stale at once
    parent = os.getpid()
    counts: list[int] = []
    counting, release = threading.Event(), threading.Event()

    def count() -> int:
        counts.append(100)
        if os.getpid() == parent and len(counts) == 2:
            counting.set()
            release.wait(10)  # the parent's background count, under way at the fork
        return 100

    bound = Bound("max_outbox_rows", 1_000, count, "rows waiting")
    assert bound.fits(1)  # the first measurement, taken by the caller
    assert bound.fits(1)  # the next is taken in the background, and waits
    assert counting.wait(10)  # so the fork below happens while that count holds its lock

    def child() -> None:
        signal.alarm(10)  # a count that never ends kills the child, failing the test
        assert bound.fits(850)  # close to the limit: the child counts, and finds room
        assert bound.describe().startswith("100 rows waiting")

    try:
        pid = fork(child)
        _, status = os.waitpid(pid, 0)
    finally:
        release.set()
    assert os.waitstatus_to_exitcode(status) == 0


def pressure(waiting: int, refused: list[int], timeout: float) -> Backpressure:
    """A row bound of 10 over ``waiting`` rows, and no byte bound."""
    rows = Bound("max_outbox_rows", 10, lambda: waiting, "rows waiting")
    size = Bound("max_outbox_bytes", 0, lambda: 0, "bytes in use in the database file")
    return Backpressure(rows, size, timeout=timeout, refuse=refused.append)


def test_a_call_over_the_bound_by_itself_is_refused_at_once_and_says_so() -> None:
    refused: list[int] = []
    started = time.monotonic()
    with pytest.raises(BufferFull) as raised:
        pressure(0, refused, timeout=10).make_room(25, 2500)
    assert time.monotonic() - started < 5  # no wait for room that can never come
    assert str(raised.value) == (
        "the call adds 25, more than max_outbox_rows (10) allows at once; it was refused and "
        "counted. Send less per call."
    )
    assert refused == [25]


def test_a_full_buffer_says_what_waits_and_what_the_call_adds() -> None:
    refused: list[int] = []
    with pytest.raises(BufferFull) as raised:
        pressure(8, refused, timeout=0).make_room(3, 300)
    assert str(raised.value).startswith(
        "the buffer is full (8 rows waiting; max_outbox_rows is 10); the call, adding 3, was "
        "refused and counted."
    )
    assert refused == [3]
