"""The Dramatiq actors: ``deliver`` and ``dead_letter``. The top layer of the workers.

``mailroom-worker`` runs ``dramatiq workers.actors``; each worker process imports this module and
connects to MongoDB itself (pymongo clients are not fork-safe).
"""

from __future__ import annotations

import logging
from functools import cache

import dramatiq

from server.logs import configure_logging
from server.settings import get_settings
from server.store.connection import connect
from workers import delivery
from workers.broker import setup_broker
from workers.mta.registry import build_providers, describe
from workers.routing import Router

log = logging.getLogger("workers")

settings = get_settings()
configure_logging(settings.log_level)
broker = setup_broker(settings)
connect(settings.mongodb_uri, timeout_ms=max(settings.mongodb_timeout_ms, 5_000))


@cache
def router() -> Router:
    """Build this process's providers and router once, on first use."""
    providers, infos = build_providers(settings)
    log.info(describe(infos))
    return Router(providers, settings.provider_order)


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
    """Deliver one email (see :func:`workers.delivery.deliver`)."""
    delivery.deliver(email_id, settings=settings, router=router())


@dramatiq.actor(actor_name="dead_letter", queue_name=settings.queue_name, max_retries=20)
def dead_letter(message: dict[str, object], info: dict[str, int]) -> None:
    """Mark the email of an exhausted message FAILED (Dramatiq's ``on_retry_exhausted``)."""
    delivery.dead_letter(
        message, retries=int(info.get("retries", 0)), max_retries=int(info.get("max_retries", 0))
    )
