"""The worker side's Dramatiq broker: Redis, Dramatiq's default middleware, metrics."""

from __future__ import annotations

import logging
import threading

import dramatiq
from dramatiq.broker import MessageProxy
from dramatiq.brokers.redis import RedisBroker

from core.queue import CARRIED_OPTION
from core.settings import Settings
from core.store.connection import connect
from workers.redis_broker import RecoveringRedisBroker

log = logging.getLogger(__name__)


def setup_broker(settings: Settings, *, metrics: bool = True) -> RedisBroker:
    """Create the Redis broker, make it the global one, and return it.

    Args:
        settings: The Redis URL and the metrics port.
        metrics: Add Dramatiq's Prometheus middleware (a worker's exposition server) when the
            metrics port is not 0, with its delayed-messages gauge fixed
            (:class:`workers.prometheus.MailroomPrometheus`).
    """
    broker = RecoveringRedisBroker(url=settings.redis_url)
    if metrics and settings.metrics_port:
        # Imported here: the middleware reads its port from the environment at import time,
        # which ``mailroom-worker`` sets from the settings.
        from workers.prometheus import MailroomPrometheus

        broker.add_middleware(MailroomPrometheus())
    dramatiq.set_broker(broker)
    return broker


class ConnectStore(dramatiq.Middleware):
    """Connects each worker process to MongoDB once it has booted, not when it imports the actors.

    pymongo clients are not fork-safe, so each worker process makes its own after the fork:
    Dramatiq's CLI emits ``after_process_boot`` in every worker process, after importing the
    actors' module and before the worker takes a message.

    Args:
        settings: The MongoDB URI and timeout.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def after_process_boot(self, broker: dramatiq.Broker) -> None:
        """Register this process's MongoDB connection (no network yet: pymongo connects lazily).

        Raises:
            SystemExit: The connection could not be set up (e.g. an invalid URI). Dramatiq logs
                and ignores a middleware's exception, so this stops the process instead, as a
                failed import of the actors does, and ``mailroom-worker`` with it.
        """
        try:
            connect(
                self.settings.mongodb_uri,
                timeout_ms=max(self.settings.mongodb_timeout_ms, 5_000),
                subscriptions_max_age_seconds=(
                    self.settings.webhooks.subscriptions_max_age_seconds
                ),
            )
        except Exception as exc:
            log.critical("cannot set up the MongoDB connection: %s", exc, exc_info=True)
            raise SystemExit(1) from exc


class CarriedEmail(dramatiq.Middleware):
    """Hands the email a ``deliver`` message carries (``core.store.carried``) to its actor, once.

    The API puts the email as stored into the message's options (:data:`core.queue.CARRIED_OPTION`).
    Before a message is processed the copy is taken out of it, so that it serves the first
    attempt only: a retry re-enqueues the message without it (it would be stale, and would
    weigh on Redis through a long backoff), and neither a dead-letter record nor a log line
    holds the email's content. The actor, in the same worker thread, gets it from :meth:`take`.
    """

    def __init__(self) -> None:
        self._local = threading.local()

    def before_process_message(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        """Move the copy out of the message into this thread, for :meth:`take`.

        Every message sets it (None when it carries none), so a copy the actor did not take
        never reaches the thread's next message.
        """
        self._local.stored = message.options.pop(CARRIED_OPTION, None)

    def take(self) -> str | None:
        """The copy carried by the message this thread is processing, if any (once)."""
        stored: str | None = getattr(self._local, "stored", None)
        self._local.stored = None
        return stored
