"""Enqueueing delivery messages by queue and actor name, without importing worker code."""

from __future__ import annotations

import logging

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from redis.backoff import NoBackoff
from redis.retry import Retry

from core.redis_errors import map_redis_errors

log = logging.getLogger(__name__)

DELIVER_ACTOR = "deliver"


class DeliveryQueue:
    """Puts ``deliver(email_id)`` messages on the Dramatiq queue the workers consume.

    Args:
        redis_url: The Redis broker URL.
        queue_name: The Dramatiq queue of the ``deliver`` actor.
        timeout_seconds: Connect and socket timeout: an unreachable Redis must not hold up the
            API's answer (the email is already stored; the rescan will enqueue it).
    """

    def __init__(self, redis_url: str, queue_name: str, *, timeout_seconds: float) -> None:
        self.queue_name = queue_name
        self.broker = RedisBroker(  # type: ignore[no-untyped-call]
            url=redis_url,
            middleware=[],
            socket_connect_timeout=timeout_seconds,
            socket_timeout=timeout_seconds,
            # redis-py retries with growing sleeps by default; one quick retry keeps us in budget.
            retry=Retry(NoBackoff(), 1),
        )

    def enqueue_delivery(self, email_id: str, *, delay_ms: int | None = None) -> None:
        """Enqueue delivery of one email.

        Args:
            email_id: The stored email's id.
            delay_ms: Deliver no earlier than this many milliseconds from now.

        Raises:
            QueueUnavailable: Redis could not be reached.
        """
        message: dramatiq.Message[None] = dramatiq.Message(
            queue_name=self.queue_name,
            actor_name=DELIVER_ACTOR,
            args=(email_id,),
            kwargs={},
            options={},
        )
        with map_redis_errors():
            self.broker.enqueue(message, delay=delay_ms)

    def close(self) -> None:
        """Release the broker's connections."""
        self.broker.close()
