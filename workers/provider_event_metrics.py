"""Cluster-wide provider event counts on the worker's Prometheus endpoint.

The API processes add each request's counts to a Redis hash (:mod:`core.provider_event_counts`);
the exposition server (:func:`workers.webhook_metrics.run_exposition_server`) reads it at each
scrape with :class:`ProviderEventCollector` and shows the totals under the API's metric names.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from core.errors import QueueUnavailable
from core.provider_event_counts import FAMILIES, SharedCounts

log = logging.getLogger(__name__)


class ProviderEventCollector:
    """Reads the shared provider event counts (one ``HGETALL``) when scraped.

    Args:
        shared: The counts hash on Redis.
    """

    def __init__(self, shared: SharedCounts) -> None:
        self._shared = shared

    def collect(self) -> Iterator[Any]:
        """Yield one counter family per kind (nothing when Redis does not answer)."""
        from prometheus_client.core import CounterMetricFamily

        try:
            series = self._shared.read()
        except QueueUnavailable as exc:  # a scrape must never fail because of Redis
            log.warning("provider event counts not read: %s", exc.message)
            return
        for kind, family in FAMILIES.items():
            metric = CounterMetricFamily(
                family.name, family.documentation, labels=list(family.labels)
            )
            for labels, value in sorted(series[kind].items()):
                metric.add_metric(list(labels), value)
            yield metric
