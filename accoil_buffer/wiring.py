"""The parts a Buffer runs on, built from one ``Config``, and the pass that folds and delivers."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx

from accoil_buffer.accoil_api import AccoilClient
from accoil_buffer.config import Config
from accoil_buffer.delivery import Delivery, DeliverySettings
from accoil_buffer.errors import storage_errors
from accoil_buffer.recording import Recorder
from accoil_buffer.reports import FlushReport
from accoil_buffer.scheduler import Scheduler
from accoil_buffer.store import rollup
from accoil_buffer.store.engine import Database
from accoil_buffer.store.migrate import ensure_schema

log = logging.getLogger(__name__)
Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Parts:
    """One buffer's database, fold settings, Accoil client and delivery (``None`` without an
    API key) and write path."""

    config: Config
    clock: Clock
    database: Database
    fold_settings: rollup.FoldSettings
    client: AccoilClient | None
    delivery: Delivery | None
    recorder: Recorder

    def fold(self) -> rollup.FoldReport:
        with storage_errors():
            report = rollup.fold(self.database, self.fold_settings, self.clock())
            if report.folded or report.duplicates:
                self.database.give_back_space()
            return report

    def run_pass(
        self,
        *,
        force: bool,
        deadline: float | None,
        progress: Callable[[int], None] | None = None,
    ) -> FlushReport:
        """Fold, then deliver (``force``: even during a backoff); no new message is sent
        once ``deadline`` (``time.monotonic()``) has passed."""
        folded = self.fold()
        delivered = None
        if self.delivery is not None:
            with storage_errors():
                delivered = self.delivery.run(force=force, deadline=deadline, progress=progress)
        return FlushReport(
            folded.folded,
            folded.pruned_anonymous_events,
            folded.pruned_anonymous_profiles,
            delivered,
            folded.duplicates,
        )

    def scheduler(self) -> Scheduler:
        """A scheduler of passes every ``flush_interval_seconds``, not yet started."""
        return Scheduler(
            functools.partial(self.run_pass, force=False, deadline=None),
            self.config.flush_interval_seconds,
        )


def wire(
    config: Config, *, clock: Clock, transport: httpx.AsyncBaseTransport | None = None
) -> Parts:
    """Open the database (migrating it if ``auto_migrate``) and build the parts on it."""
    database = Database.open(config)
    try:
        with storage_errors():
            ensure_schema(database, auto_migrate=config.auto_migrate)
    except BaseException:
        database.dispose()
        raise
    fold_settings = rollup.FoldSettings(
        batch_size=config.fold_batch_size or database.fold_batch_size,
        outbox_retention=timedelta(hours=config.outbox_retention_hours),
        dedupe_window=timedelta(hours=config.dedupe_window_hours),
        anonymous_ttl=timedelta(days=config.anonymous_ttl_days),
    )
    client: AccoilClient | None = None
    delivery: Delivery | None = None
    if config.api_key:
        client = AccoilClient(
            config.api_key,
            config.endpoint,
            transport=transport,
            timeout=config.request_timeout_seconds,
            max_connections=config.max_in_flight,
        )
        delivery = Delivery(
            database,
            client,
            DeliverySettings(
                max_in_flight=config.max_in_flight,
                max_backoff=timedelta(seconds=config.max_backoff_seconds),
                lease=timedelta(seconds=config.claim_lease_seconds),
            ),
            clock,
        )
    else:
        log.info("no api_key is set: events are buffered, delivery to Accoil is off")
    recorder = Recorder(database, config, clock)
    return Parts(config, clock, database, fold_settings, client, delivery, recorder)
