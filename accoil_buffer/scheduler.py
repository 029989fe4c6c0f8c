"""APScheduler 3.x wiring: one background job that runs a pass every interval.

The job store is APScheduler's in-memory one, created anew at every start: the job is code, not
state, and everything worth keeping is already in our own tables.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

from apscheduler.executors.debug import DebugExecutor
from apscheduler.schedulers.background import BackgroundScheduler

log = logging.getLogger(__name__)
JOB_ID = "accoil-buffer-pass"


class Scheduler:
    """Runs ``work`` every ``interval`` seconds on a daemon thread; never two at once."""

    def __init__(self, work: Callable[[], object], interval: float) -> None:
        self._work = work
        self._scheduler = BackgroundScheduler(
            daemon=True,
            timezone="UTC",
            # The pass runs on the scheduler's own daemon thread. The default pool's threads
            # are joined at exit before atexit runs close(), so a pass stuck on a database
            # that stopped answering would hold the app's exit for as long.
            executors={"default": DebugExecutor()},
        )
        self._scheduler.add_job(
            self._run,
            "interval",
            seconds=interval,
            id=JOB_ID,
            coalesce=True,
            max_instances=1,
            misfire_grace_time=None,
            # The first pass at once: a restarted daemon delivers its backlog now, not an
            # interval later.
            next_run_time=datetime.now(UTC),
        )

    def start(self) -> None:
        self._scheduler.start()

    def shutdown(self) -> None:
        """Stop scheduling and wait for a running pass to finish."""
        if self._scheduler.running:
            self._scheduler.shutdown(wait=True)

    def _run(self) -> None:
        try:
            self._work()
        except Exception:
            # The data is durable; the next pass retries. Keep the scheduler alive.
            log.exception("scheduled pass failed; it will run again in the next interval")
