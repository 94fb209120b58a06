"""Prometheus metrics of the scheduler's jobs (workers export Dramatiq's own)."""

from __future__ import annotations

from prometheus_client import Counter

from core.metrics_http import serve_metrics as serve_http_metrics
from workers.rescan import RescanResult

RESCAN_RUNS = Counter(
    "mailroom_rescan_runs_total", "Rescan runs by job and outcome.", ["job", "outcome"]
)
RESCAN_FOUND = Counter(
    "mailroom_rescan_found_total", "Stale emails found by a rescan, by status.", ["job", "status"]
)
RESCAN_REQUEUED = Counter(
    "mailroom_rescan_requeued_total", "Emails enqueued again by a rescan.", ["job", "status"]
)
RESCAN_FAILED = Counter(
    "mailroom_rescan_failed_total", "Emails failed by a rescan (retries spent).", ["job"]
)


def record_scan(job: str, result: RescanResult) -> None:
    """Count one scan's findings."""
    outcome = "lock_busy" if result.lock_busy else "aborted" if result.aborted else "done"
    RESCAN_RUNS.labels(job, outcome).inc()
    for status, count in result.found.items():
        RESCAN_FOUND.labels(job, status).inc(count)
    for status, count in result.requeued.items():
        RESCAN_REQUEUED.labels(job, status).inc(count)
    RESCAN_FAILED.labels(job).inc(len(result.failed))


def serve_metrics(port: int, host: str = "0.0.0.0") -> bool:
    """Expose the metrics on ``host:port``; False (logged) if the port is taken or 0."""
    return serve_http_metrics(port, host, label="metrics")
