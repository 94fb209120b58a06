"""The Dramatiq actors: ``deliver``, ``dead_letter``, ``deliver_webhook``. The workers' top layer.

``mailroom-worker`` runs ``dramatiq workers.actors``; each worker process imports this module,
which reads the settings and declares the actors without touching the network, then connects to
MongoDB itself once booted (:class:`~workers.broker.ConnectStore`: pymongo clients are not
fork-safe).
"""

from __future__ import annotations

import logging
import sys
import threading

import dramatiq
import redis

from core.events_out import webhook_queue
from core.logs import configure_logging
from core.settings import get_settings
from workers import delivery
from workers.broker import CarriedEmail, ConnectStore, setup_broker
from workers.mta.registry import build_providers, describe
from workers.routing import Router, build_router
from workers.webhooks import WebhookSender

log = logging.getLogger("workers")

settings = get_settings()
configure_logging(settings.log_level)
sys.setswitchinterval(settings.worker_switch_interval_ms / 1000)
broker = setup_broker(settings)
broker.add_middleware(ConnectStore(settings))
carried = CarriedEmail()
broker.add_middleware(carried)


_router: Router | None = None
_sender: WebhookSender | None = None
_router_lock = threading.Lock()


def router() -> Router:
    """Build this process's providers and router once, on first use, whichever thread asks."""
    global _router
    with _router_lock:
        if _router is None:
            providers, infos = build_providers(settings)
            log.info(describe(infos))
            unknown = [
                n for g in settings.provider_order for n in g.split("|") if n not in providers
            ]
            if unknown:
                log.warning("provider_order names providers that are not enabled: %s", unknown)
            _router = build_router(providers, settings)
        return _router


def _retry_when(retries: int, exc: BaseException) -> bool:
    """Our own attempt count decides for delivery failures; Dramatiq's for anything else."""
    if isinstance(exc, delivery.RetryDelivery):
        return not exc.exhausted
    return retries < settings.retry.max_retries


@dramatiq.actor(
    actor_name="deliver",
    queue_name=settings.queue_name,
    max_retries=settings.retry.max_retries,
    min_backoff=settings.retry.min_backoff_ms,
    max_backoff=settings.retry.max_backoff_ms,
    retry_when=_retry_when,
    on_retry_exhausted="dead_letter",
    # Give up on a stuck send around when its lease runs out and another worker may take over.
    time_limit=int(settings.lease_seconds * 1000),
)
def deliver(email_id: str) -> None:
    """Deliver one email (see :func:`workers.delivery.deliver`), from its carried copy if any."""
    delivery.deliver(email_id, settings=settings, router=router(), stored=carried.take())


@dramatiq.actor(actor_name="dead_letter", queue_name=settings.queue_name, max_retries=20)
def dead_letter(message: dict[str, object], info: dict[str, int]) -> None:
    """Mark the email of an exhausted message FAILED (Dramatiq's ``on_retry_exhausted``)."""
    delivery.dead_letter(
        message, retries=int(info.get("retries", 0)), max_retries=int(info.get("max_retries", 0))
    )


def sender() -> WebhookSender:
    """This process's webhook sender (HTTP client, Redis for the chain locks), made once."""
    global _sender
    with _router_lock:
        if _sender is None:
            _sender = WebhookSender(
                settings, webhook_queue(settings), redis.Redis.from_url(settings.redis_url)
            )
        return _sender


@dramatiq.actor(
    actor_name="deliver_webhook",
    queue_name=settings.webhooks.queue_name,
    # Store or Redis errors only: the attempts' own backoff is in the outbox (the sweep is
    # the backstop when these run out).
    max_retries=5,
    min_backoff=1_000,
    max_backoff=60_000,
    time_limit=int((settings.webhooks.timeout_seconds + 60) * 1000),
)
def deliver_webhook(delivery_id: str) -> None:
    """Deliver one webhook (see :mod:`workers.webhooks`)."""
    sender().deliver(delivery_id, worker=delivery.worker_id())
