"""Webhook metrics on the worker's Prometheus endpoint.

* ``mailroom_webhook_deliveries_total{outcome}``: attempts by outcome (``delivered``,
  ``retry``, ``dead``), counted by the worker processes (Dramatiq's multiprocess directory).
* ``mailroom_webhook_oldest_pending_age_seconds``: how long the oldest undelivered (pending)
  delivery has waited since it was published, 0 when none; read from MongoDB at each scrape by
  the exposition server (:func:`run_exposition_server`), so it grows while nothing runs.
* The provider event counters, cluster-wide: read from Redis at each scrape
  (:class:`~workers.provider_event_metrics.ProviderEventCollector`).

prometheus_client is imported inside the functions: it picks its multiprocess mode at import,
after Dramatiq's middleware has set ``PROMETHEUS_MULTIPROC_DIR`` in the worker process.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

from core.provider_event_counts import SharedCounts
from core.settings import get_settings
from core.store.connection import connect
from core.store.documents import utcnow
from core.store.webhook_outbox import oldest_pending_created_at
from workers.provider_event_metrics import ProviderEventCollector

log = logging.getLogger(__name__)

_counter: Any = None
_counter_lock = threading.Lock()


def count_delivery(outcome: str) -> None:
    """Count one attempt's outcome."""
    global _counter
    with _counter_lock:
        if _counter is None:
            from prometheus_client import Counter

            _counter = Counter(
                "mailroom_webhook_deliveries_total",
                "Webhook delivery attempts by outcome (delivered, retry, dead).",
                ["outcome"],
            )
    _counter.labels(outcome).inc()


class OutboxCollector:
    """Reads the oldest pending delivery's age from MongoDB when scraped."""

    def collect(self) -> Iterator[Any]:
        """Yield the age gauge (nothing when MongoDB does not answer)."""
        from prometheus_client.core import GaugeMetricFamily

        try:
            oldest = oldest_pending_created_at()
        except Exception as exc:  # a scrape must never fail because of the store
            log.warning("oldest pending webhook not read: %s", exc)
            return
        age = 0.0 if oldest is None else max((utcnow() - oldest).total_seconds(), 0.0)
        yield GaugeMetricFamily(
            "mailroom_webhook_oldest_pending_age_seconds",
            "Age of the oldest undelivered webhook delivery (0 when none).",
            value=age,
        )


def run_exposition_server() -> int:
    """Dramatiq's exposition server (a forked process) plus the outbox and provider counts."""
    from http.server import HTTPServer

    from dramatiq.middleware import prometheus

    settings = get_settings()
    connect(
        settings.mongodb_uri,
        timeout_ms=max(settings.mongodb_timeout_ms, 2_000),
        subscriptions_max_age_seconds=settings.webhooks.subscriptions_max_age_seconds,
    )
    provider_events = ProviderEventCollector(
        SharedCounts.from_url(
            settings.redis_url, timeout_seconds=max(settings.redis_timeout_seconds, 2.0)
        )
    )

    class Handler(prometheus._metrics_handler):
        def do_GET(self) -> None:
            import os

            os.environ["PROMETHEUS_MULTIPROC_DIR"] = prometheus.DB_PATH
            import prometheus_client as prom
            from prometheus_client import multiprocess

            registry = prom.CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            registry.register(OutboxCollector())
            registry.register(provider_events)
            output = prom.generate_latest(registry)
            self.send_response(200)
            self.send_header("content-type", prom.CONTENT_TYPE_LATEST)
            self.end_headers()
            self.wfile.write(output)

    httpd = HTTPServer((prometheus.HTTP_HOST, prometheus.HTTP_PORT), Handler)
    httpd.serve_forever()
    return 0
