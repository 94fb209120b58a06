"""Serving a process's Prometheus metrics over HTTP (the API's and the scheduler's)."""

from __future__ import annotations

import logging

from prometheus_client import start_http_server

log = logging.getLogger(__name__)


def serve_metrics(port: int, host: str = "0.0.0.0", *, label: str = "metrics") -> bool:
    """Expose this process's metrics on ``host:port``; False (logged) if 0 or the port is taken.

    Args:
        port: The port to serve ``/metrics`` on; 0 serves nothing.
        host: The address to bind.
        label: What the log lines call these metrics.
    """
    if not port:
        return False
    try:
        start_http_server(port, addr=host)
    except OSError as exc:
        # Another process of the same kind (several API processes) has the port: not fatal.
        log.warning("%s not served on port %d: %s", label, port, exc)
        return False
    log.info("%s on http://%s:%d/metrics", label, host, port)
    return True
