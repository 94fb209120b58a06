"""The worker side's Dramatiq broker: Redis, Dramatiq's default middleware, metrics."""

from __future__ import annotations

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from core.settings import Settings


def setup_broker(settings: Settings, *, metrics: bool = True) -> RedisBroker:
    """Create the Redis broker, make it the global one, and return it.

    Args:
        settings: The Redis URL and the metrics port.
        metrics: Add Dramatiq's Prometheus middleware (a worker's exposition server) when the
            metrics port is not 0.
    """
    broker = RedisBroker(url=settings.redis_url)  # type: ignore[no-untyped-call]
    if metrics and settings.metrics_port:
        # Imported here: the middleware reads its port from the environment at import time,
        # which ``mailroom-worker`` sets from the settings.
        from dramatiq.middleware.prometheus import Prometheus

        broker.add_middleware(Prometheus())
    dramatiq.set_broker(broker)
    return broker
