"""A bound's measurement: when the database cannot answer it, and while it is taken."""

from __future__ import annotations

import threading

from accoil_buffer.backpressure import Bound
from accoil_buffer.errors import StorageError


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
