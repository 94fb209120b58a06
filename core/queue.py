"""Enqueueing delivery messages by queue and actor name, without importing worker code."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from uuid import uuid4

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import current_millis, dq_name
from redis.backoff import NoBackoff
from redis.retry import Retry

from core.redis_errors import map_redis_errors

log = logging.getLogger(__name__)

DELIVER_ACTOR = "deliver"

#: The message option carrying the email as stored (``core.store.carried``). An option, not an
#: argument: Dramatiq prints a message's arguments in its logs (the email's content does not
#: belong there), and a worker that does not know the option ignores it and reads the email.
CARRIED_OPTION = "stored_email"


def make_broker(redis_url: str, *, timeout_seconds: float) -> RedisBroker:
    """A middleware-free Redis broker for enqueueing by name, with short timeouts.

    Args:
        redis_url: The Redis broker URL.
        timeout_seconds: Connect and socket timeout: an unreachable Redis must not hold up the
            caller (what is enqueued is stored already; a rescan or sweep enqueues it again).
    """
    return RedisBroker(  # type: ignore[no-untyped-call]
        url=redis_url,
        middleware=[],
        socket_connect_timeout=timeout_seconds,
        socket_timeout=timeout_seconds,
        # redis-py retries with growing sleeps by default; one quick retry keeps us in budget.
        retry=Retry(NoBackoff(), 1),
    )


def enqueue_by_name(
    broker: RedisBroker,
    queue_name: str,
    actor_name: str,
    arg: str,
    *,
    delay_ms: int | None = None,
    options: dict[str, object] | None = None,
) -> None:
    """Enqueue ``actor_name(arg)`` on ``queue_name`` without importing the actor's code.

    Args:
        broker: The broker to enqueue on (see :func:`make_broker`).
        queue_name: The Dramatiq queue the actor consumes.
        actor_name: The actor's name.
        arg: The actor's one positional argument.
        delay_ms: Run no earlier than this many milliseconds from now.
        options: Message options for the worker's middleware, if any.

    Raises:
        QueueUnavailable: Redis could not be reached.
    """
    message: dramatiq.Message[None] = dramatiq.Message(
        queue_name=queue_name,
        actor_name=actor_name,
        args=(arg,),
        kwargs={},
        options=dict(options or {}),
    )
    with map_redis_errors():
        broker.enqueue(message, delay=delay_ms)


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
        self.broker = make_broker(redis_url, timeout_seconds=timeout_seconds)

    def enqueue_delivery(
        self, email_id: str, *, delay_ms: int | None = None, stored: str | None = None
    ) -> None:
        """Enqueue delivery of one email.

        Args:
            email_id: The stored email's id.
            delay_ms: Deliver no earlier than this many milliseconds from now.
            stored: The email as inserted (``core.store.carried.carry``), so the worker need
                not read it back; None to have it read.

        Raises:
            QueueUnavailable: Redis could not be reached.
        """
        enqueue_by_name(
            self.broker,
            self.queue_name,
            DELIVER_ACTOR,
            email_id,
            delay_ms=delay_ms,
            options={CARRIED_OPTION: stored} if stored is not None else None,
        )

    def enqueue_deliveries(
        self, items: Sequence[tuple[str, int | None]], *, stored: Mapping[str, str] | None = None
    ) -> None:
        """Enqueue delivery of many emails in one pipelined round trip to Redis.

        Each message is what :meth:`enqueue_delivery` would put there: ``RedisBroker.enqueue``
        makes the message (a fresh ``redis_message_id``; a delay moves it to the delay queue
        with an ``eta``) and runs the broker's ``dispatch`` Lua script once, one round trip per
        message. Here the same script calls go through one pipeline instead (plus, per call, the
        ``SCRIPT EXISTS`` check redis-py makes before a pipeline that runs scripts).

        Not atomic: when Redis fails half-way some messages may be enqueued. Enqueueing an email
        twice is harmless (a worker's claim lets only one delivery through), so a caller retries
        them all.

        Args:
            items: ``(email_id, delay_ms)`` pairs; ``delay_ms`` as in :meth:`enqueue_delivery`.
            stored: The emails as inserted, by id, for those whose message carries its email
                (``stored`` of :meth:`enqueue_delivery`).

        Raises:
            QueueUnavailable: Redis could not be reached; some messages may be enqueued.
        """
        if not items:
            return
        broker = self.broker
        dispatch = broker.scripts["dispatch"]
        with map_redis_errors():
            pipe = broker.client.pipeline(transaction=False)
            for email_id, delay_ms in items:
                message = self._delivery_message(email_id, delay_ms, (stored or {}).get(email_id))
                # The arguments RedisBroker._dispatch passes for "enqueue", in its order. The
                # broker has no middleware (see __init__), so enqueue's before/after hooks are
                # skipped with nothing lost.
                args = [
                    "enqueue",
                    current_millis(),
                    message.queue_name,
                    broker.broker_id,
                    broker.heartbeat_timeout,
                    broker.dead_message_ttl,
                    broker._should_do_maintenance("enqueue"),
                    broker._max_unpack_size(),  # type: ignore[no-untyped-call]
                    message.options["redis_message_id"],
                    message.encode(),
                ]
                dispatch(keys=[broker.namespace], args=args, client=pipe)
            pipe.execute()

    def _delivery_message(
        self, email_id: str, delay_ms: int | None, stored: str | None = None
    ) -> dramatiq.Message[None]:
        """The message ``RedisBroker.enqueue`` would dispatch for ``deliver(email_id)``."""
        options: dict[str, object] = {"redis_message_id": str(uuid4())}
        if stored is not None:
            options[CARRIED_OPTION] = stored
        queue_name = self.queue_name
        if delay_ms is not None:
            queue_name = dq_name(queue_name)
            options["eta"] = current_millis() + delay_ms
        return dramatiq.Message(
            queue_name=queue_name,
            actor_name=DELIVER_ACTOR,
            args=(email_id,),
            kwargs={},
            options=options,
        )

    def close(self) -> None:
        """Release the broker's connections."""
        self.broker.close()
