"""Dramatiq's Redis broker, with consumers that give back the messages they held when they close.

Dramatiq 2.2's Redis consumer fetches messages in batches: a fetch moves them into this worker's
"acks" set in Redis and keeps them in an in-memory cache until a worker thread takes them. When
the connection to Redis breaks, the consumer thread drops that consumer and makes a new one: the
cached messages (and, for a delay queue, every message waiting for its ETA) are forgotten while
Redis still holds them in the acks set, where only the death of this worker process would free
them. A Redis restart under load thus left a few emails QUEUED until the minute rescan.

:class:`RecoveringRedisBroker` moves such messages back onto their queue (Dramatiq's own
"requeue" command, which only moves ids still in the acks set, so giving one back twice is
harmless) when the consumer closes, or, if Redis is unreachable then, before the next consumer
of that queue starts.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from typing import Any

import redis
from dramatiq import Consumer, Message, MessageProxy
from dramatiq.brokers.redis import RedisBroker, _RedisConsumer
from dramatiq.common import dq_name
from dramatiq.errors import ConnectionClosed

log = logging.getLogger(__name__)


class RecoveringRedisBroker(RedisBroker):
    """A :class:`~dramatiq.brokers.redis.RedisBroker` whose closed consumers lose no message.

    Takes the same arguments as ``RedisBroker``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]
        self._orphans: dict[str, list[str]] = {}
        self._orphans_lock = threading.Lock()

    @property
    def consumer_class(self) -> type[_RedisConsumer]:
        """The consumer :meth:`consume` makes."""
        return _GivingBackConsumer

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 5000) -> Consumer:
        """Give back what an earlier consumer of ``queue_name`` held, then make a new consumer.

        Raises:
            ConnectionClosed: Redis is still unreachable; Dramatiq's consumer thread tries again
                after its restart delay, and the messages stay marked for giving back.
        """
        self.give_back(queue_name, [])
        return super().consume(queue_name, prefetch, timeout)

    def give_back(self, queue_name: str, redis_message_ids: list[str]) -> None:
        """Move messages from this worker's acks set back onto ``queue_name``.

        Args:
            queue_name: The queue (or delay queue) the messages were fetched from.
            redis_message_ids: Their ``redis_message_id`` options; added to any left over from an
                earlier call that could not reach Redis.

        Raises:
            ConnectionClosed: Redis is unreachable; the ids are kept for the next call.
        """
        with self._orphans_lock:
            ids = self._orphans.pop(queue_name, []) + redis_message_ids
        if not ids:
            return
        try:
            self.do_requeue(queue_name, *ids)
        except BaseException as exc:
            # Whatever failed (a lost connection, a read-only replica after a failover), the ids
            # are kept: the next consumer of this queue gives them back.
            with self._orphans_lock:
                self._orphans[queue_name] = ids + self._orphans.get(queue_name, [])
            if isinstance(exc, redis.ConnectionError | redis.TimeoutError):
                raise ConnectionClosed(exc) from None  # type: ignore[no-untyped-call]
            raise
        # Also on a normal shutdown (Dramatiq requeues what its threads held): worth a line.
        log.info("gave back %d message(s) to queue %s", len(ids), queue_name)


class _GivingBackConsumer(_RedisConsumer):
    """A Redis consumer that gives back its unhandled messages when it closes."""

    broker: RecoveringRedisBroker

    def __init__(
        self, broker: RecoveringRedisBroker, queue_name: str, prefetch: int, timeout: int
    ) -> None:
        super().__init__(broker, queue_name, prefetch, timeout)  # type: ignore[no-untyped-call]
        # A delay queue's consumer thread keeps every message it took until its ETA and drops
        # them all on a connection error; a work queue's taken messages are in the worker's
        # in-memory queue, which survives the consumer, so only the cache is given back there.
        self._keeps_taken = dq_name(queue_name) == queue_name
        self._taken: dict[str, str] = {}

    def __next__(self) -> MessageProxy | None:
        proxy: MessageProxy | None = super().__next__()  # type: ignore[no-untyped-call]
        # A message without an ETA goes straight to a worker thread: not held here.
        if proxy is not None and self._keeps_taken and proxy.options.get("eta") is not None:
            self._taken[proxy.message_id] = proxy.options["redis_message_id"]
        return proxy

    def requeue(self, messages: Iterable[MessageProxy]) -> None:
        """Give back ``messages`` (Dramatiq's consumer thread does, for its delayed ones).

        Unlike Dramatiq's, never raises: Redis's own error here escaped the consumer thread's
        ``close`` and ended the thread; unreachable, the ids are kept for the next consumer.
        """
        ids = []
        for message in messages:
            self._taken.pop(message.message_id, None)
            ids.append(message.options["redis_message_id"])
        self._give_back(ids)

    def ack(self, message: MessageProxy) -> None:
        self._taken.pop(message.message_id, None)
        super().ack(message)  # type: ignore[no-untyped-call]

    def nack(self, message: MessageProxy) -> None:
        self._taken.pop(message.message_id, None)
        super().nack(message)  # type: ignore[no-untyped-call]

    def close(self) -> None:
        """Give back the cached messages (and, on a delay queue, the taken ones)."""
        ids = [
            Message.decode(data).options["redis_message_id"]
            for data in self.message_cache
            if data is not None
        ]
        taken, self._taken = self._taken, {}
        ids.extend(taken.values())
        self.message_cache = []
        self._give_back(ids)
        super().close()

    def _give_back(self, ids: list[str]) -> None:
        try:
            self.broker.give_back(self.queue_name, ids)
        except ConnectionClosed:
            log.warning(
                "Redis unreachable: %d message(s) of queue %s go back when it answers",
                len(ids),
                self.queue_name,
            )
        except Exception:
            log.exception(
                "%d message(s) of queue %s not given back yet; the next consumer tries again",
                len(ids),
                self.queue_name,
            )
