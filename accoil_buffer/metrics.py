"""Prometheus metrics of the sidecar, on a registry of its own (prometheus_client).

Counters of what the HTTP API accepted and rejected are kept in memory; everything about
pending work and delivery is read from the database at scrape time, so every daemon sharing
a database reports the same truth.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from accoil_buffer.status import Status

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _StatusCollector(Collector):
    def __init__(self, status: Callable[[], Status]) -> None:
        self._status = status

    def collect(self) -> Iterator[Metric]:
        status = self._status()
        pending = GaugeMetricFamily(
            "accoil_buffer_pending", "Waiting to be delivered to Accoil", labels=["what"]
        )
        for what, n in dataclasses.asdict(status.pending).items():
            pending.add_metric([what], n)
        yield pending
        yield GaugeMetricFamily(
            "accoil_buffer_outbox_unfolded_messages",
            "Accepted messages not yet folded",
            value=status.outbox.unfolded_messages,
        )
        yield GaugeMetricFamily(
            "accoil_buffer_anonymous_occurrences",
            "Occurrences held for anonymous ids not yet linked",
            value=status.anonymous.occurrences,
        )
        yield GaugeMetricFamily(
            "accoil_buffer_oldest_undelivered_age_seconds",
            "Age of the oldest change not yet delivered: the delivery latency",
            value=status.oldest_undelivered_age_seconds or 0,
        )
        drops = CounterMetricFamily(
            "accoil_buffer_drops",
            "Drops, filters, prunes and corrections, by reason",
            labels=["reason"],
        )
        for reason, n in status.drops.items():
            drops.add_metric([reason], n)
        yield drops
        delivery = status.delivery
        yield CounterMetricFamily(
            "accoil_buffer_delivered",
            "Messages Accoil acknowledged",
            value=delivery.delivered_total,
        )
        yield GaugeMetricFamily(
            "accoil_buffer_delivery_consecutive_failures",
            "Failed delivery passes in a row",
            value=delivery.consecutive_failures,
        )
        yield GaugeMetricFamily(
            "accoil_buffer_delivery_paused",
            "1 while Accoil refuses the API key",
            value=int(delivery.paused_reason is not None),
        )
        yield GaugeMetricFamily(
            "accoil_buffer_dead_letters", "Messages Accoil refused", value=delivery.dead_letters
        )


class Metrics:
    def __init__(self, status: Callable[[], Status]) -> None:
        self.registry = CollectorRegistry()
        self.accepted = Counter(
            "accoil_buffer_http_accepted_messages",
            "Messages the HTTP API accepted (copies and filtered ones too: see drops)",
            ["type"],
            registry=self.registry,
        )
        self.rejected = Counter(
            "accoil_buffer_http_rejected_messages",
            "Messages the HTTP API refused, by reason",
            ["reason"],
            registry=self.registry,
        )
        self.responses = Counter(
            "accoil_buffer_http_responses",
            "Answers of the HTTP API, by status (503: storage failing; 500: a defect)",
            ["status"],
            registry=self.registry,
        )
        self.discarded = Counter(
            "accoil_buffer_http_discarded_usage_metrics",
            "Usage reports of analytics.js (POST /v1/m), answered and dropped",
            registry=self.registry,
        )
        self.registry.register(_StatusCollector(status))

    def render(self) -> bytes:
        return generate_latest(self.registry)
