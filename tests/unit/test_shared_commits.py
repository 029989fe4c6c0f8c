"""Calls that commit before they return share the transactions of those made at the same time."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from accoil_buffer.writer import SharedCommits


class Ledger:
    """A transaction that keeps what its works wrote only if none of them raised."""

    def __init__(self, commit_takes: float = 0.0) -> None:
        self.committed: list[list[int]] = []
        self._commit_takes = commit_takes
        self._one_at_a_time = threading.Lock()

    @contextmanager
    def transaction(self) -> Iterator[list[int]]:
        assert self._one_at_a_time.acquire(blocking=False), "two transactions at once"
        try:
            written: list[int] = []
            yield written
            threading.Event().wait(self._commit_takes)
            self.committed.append(written)
        finally:
            self._one_at_a_time.release()


def test_concurrent_callers_share_commits_and_each_gets_its_own_result() -> None:
    ledger = Ledger(commit_takes=0.02)
    shared = SharedCommits(ledger.transaction)
    results: dict[int, int] = {}

    def call(n: int) -> None:
        def work(written: list[int]) -> int:
            written.append(n)
            return n * 10

        results[n] = shared.run(work)

    threads = [threading.Thread(target=call, args=(n,)) for n in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert results == {n: n * 10 for n in range(40)}
    assert sorted(n for group in ledger.committed for n in group) == list(range(40))
    assert len(ledger.committed) < 40  # some callers waited and went together


def test_a_work_that_fails_fails_only_its_own_caller() -> None:
    ledger = Ledger(commit_takes=0.05)
    shared = SharedCommits(ledger.transaction)
    outcomes: dict[int, object] = {}
    started = threading.Barrier(6)

    def call(n: int) -> None:
        def work(written: list[int]) -> int:
            if n == 3:
                raise ValueError("refused by the database")
            written.append(n)
            return n

        started.wait()
        try:
            outcomes[n] = shared.run(work)
        except ValueError as exc:
            outcomes[n] = exc

    threads = [threading.Thread(target=call, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert isinstance(outcomes.pop(3), ValueError)
    assert outcomes == {n: n for n in (0, 1, 2, 4, 5)}
    assert sorted(n for group in ledger.committed for n in group) == [0, 1, 2, 4, 5]


def test_a_lone_failure_is_raised_to_its_caller() -> None:
    shared = SharedCommits(Ledger().transaction)

    def work(_written: list[int]) -> int:
        raise ValueError("no room")

    with pytest.raises(ValueError, match="no room"):
        shared.run(work)
    assert shared.run(len) == 0  # and the next caller still leads
