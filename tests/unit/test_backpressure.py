"""A bound's measurement, when the database cannot answer it."""

from __future__ import annotations

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
