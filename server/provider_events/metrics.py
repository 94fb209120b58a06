"""Prometheus metrics of provider events, counted in the API process that receives them.

Served by the API on ``MAILROOM_API_METRICS_PORT`` (``/metrics``, next to the workers' own on
``MAILROOM_METRICS_PORT``): the events arrive in the API, and Prometheus' client keeps a
registry per process. With ``MAILROOM_API_PROCESSES`` above 1 only the first API process to
bind the port serves its counts (the others log it): run one API process per container to
scrape them all.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import Counter

from core.metrics_http import serve_metrics as serve_http_metrics
from core.store.events import Recorded

EVENTS_RECEIVED = Counter(
    "mailroom_provider_events_received_total",
    "Provider events received, by provider, normalized type (UNKNOWN: kept raw) and outcome "
    "(stored, duplicate).",
    ["provider", "type", "outcome"],
)
SIGNATURE_FAILURES = Counter(
    "mailroom_provider_event_signature_failures_total",
    "Provider event requests refused (401): bad or missing signature or credentials.",
    ["provider"],
)
UNMATCHED = Counter(
    "mailroom_provider_events_unmatched_total",
    "Provider events stored that matched no email.",
    ["provider"],
)


def count(recorded: Iterable[Recorded]) -> None:
    """Count the events of one request."""
    for item in recorded:
        outcome = "duplicate" if item.duplicate else "stored"
        EVENTS_RECEIVED.labels(item.event.provider, item.event.type.value, outcome).inc()
        if not item.duplicate and not item.email_id:
            UNMATCHED.labels(item.event.provider).inc()


def serve_metrics(port: int, host: str = "0.0.0.0") -> bool:
    """Expose this process's metrics on ``host:port``; False (logged) if 0 or the port is taken."""
    return serve_http_metrics(port, host, label="API metrics")
