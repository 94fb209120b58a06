"""Prometheus metrics of provider events, counted in the API process that receives them.

Each request's counts are also added to a Redis hash (:mod:`core.provider_event_counts`, best
effort: a Redis error is logged once per burst and changes no answer), which the worker's
exposition server shows cluster-wide under the same names.

Served by the API on ``MAILROOM_API_METRICS_PORT`` (``/metrics``, next to the workers' own on
``MAILROOM_METRICS_PORT``): the events arrive in the API, and Prometheus' client keeps a
registry per process. With ``MAILROOM_API_PROCESSES`` above 1 only the first API process to
bind the port serves its counts (the others log it): run one API process per container to
scrape them all.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter as Tally
from collections.abc import Iterable

from prometheus_client import Counter

from core.errors import QueueUnavailable
from core.metrics_http import serve_metrics as serve_http_metrics
from core.provider_event_counts import FAMILIES, SharedCounts, field
from core.store.events import Recorded

log = logging.getLogger(__name__)


def _counter(kind: str) -> Counter:
    family = FAMILIES[kind]
    return Counter(family.name, family.documentation, list(family.labels))


EVENTS_RECEIVED = _counter("received")
SIGNATURE_FAILURES = _counter("signature_failures")
UNMATCHED = _counter("unmatched")


class ClusterCounts:
    """Adds a request's counts to the shared hash; a failure is logged once per burst.

    Args:
        shared: The hash on Redis.
    """

    def __init__(self, shared: SharedCounts) -> None:
        self._shared = shared
        self._failing = False
        self._lock = threading.Lock()

    def add(self, increments: Tally[str]) -> None:
        """Add ``increments`` (by hash field); never raises."""
        try:
            self._shared.add(increments)
        except QueueUnavailable as exc:
            with self._lock:
                first, self._failing = not self._failing, True
            if first:
                log.warning("cluster-wide provider event counts not updated: %s", exc.message)
            return
        with self._lock:
            recovered, self._failing = self._failing, False
        if recovered:
            log.info("cluster-wide provider event counts updated again")

    def close(self) -> None:
        """Release the Redis connections."""
        self._shared.close()


def count(recorded: Iterable[Recorded], cluster: ClusterCounts | None = None) -> None:
    """Count the events of one request (also on ``cluster``, in one round trip)."""
    tally: Tally[str] = Tally()
    for item in recorded:
        outcome = "duplicate" if item.duplicate else "stored"
        EVENTS_RECEIVED.labels(item.event.provider, item.event.type.value, outcome).inc()
        tally[field("received", item.event.provider, item.event.type.value, outcome)] += 1
        if not item.duplicate and not item.email_id:
            UNMATCHED.labels(item.event.provider).inc()
            tally[field("unmatched", item.event.provider)] += 1
    if cluster is not None:
        cluster.add(tally)


def count_signature_failure(provider: str, cluster: ClusterCounts | None = None) -> None:
    """Count one request refused for its signature or credentials."""
    SIGNATURE_FAILURES.labels(provider).inc()
    if cluster is not None:
        cluster.add(Tally({field("signature_failures", provider): 1}))


def serve_metrics(port: int, host: str = "0.0.0.0") -> bool:
    """Expose this process's metrics on ``host:port``; False (logged) if 0 or the port is taken."""
    return serve_http_metrics(port, host, label="API metrics")
