"""Publishing events to webhook subscribers: store first, then enqueue by name.

:func:`publish` stores one delivery per subscription that wants the event (the outbox,
:mod:`core.store.webhooks`) before it returns, then enqueues the ``deliver_webhook`` actor by
queue and actor name (no worker code is imported). An enqueue that fails is only logged: the
scheduler's sweep enqueues every overdue pending delivery again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from core.errors import MailroomError, QueueUnavailable
from core.queue import enqueue_by_name, make_broker
from core.settings import Settings, get_settings
from core.store.webhook_outbox import Queued, store_deliveries
from core.store.webhooks import EVENT_TYPES

log = logging.getLogger(__name__)

WEBHOOK_ACTOR = "deliver_webhook"


class WebhookQueue:
    """Puts ``deliver_webhook(delivery_id)`` messages on the webhooks queue.

    Args:
        redis_url: The Redis broker URL.
        queue_name: The queue of the ``deliver_webhook`` actor.
        timeout_seconds: Connect and socket timeout (the delivery is stored already).
    """

    def __init__(self, redis_url: str, queue_name: str, *, timeout_seconds: float) -> None:
        self.queue_name = queue_name
        self.broker = make_broker(redis_url, timeout_seconds=timeout_seconds)

    def enqueue(self, delivery_id: str, *, delay_ms: int | None = None) -> None:
        """Enqueue one delivery.

        Raises:
            QueueUnavailable: Redis could not be reached.
        """
        enqueue_by_name(self.broker, self.queue_name, WEBHOOK_ACTOR, delivery_id, delay_ms=delay_ms)

    def close(self) -> None:
        """Release the broker's connections."""
        self.broker.close()


_queue: WebhookQueue | None = None
_queue_lock = threading.Lock()


def webhook_queue(settings: Settings | None = None) -> WebhookQueue:
    """This process's webhook queue, made on first use (after any fork)."""
    global _queue
    with _queue_lock:
        if _queue is None:
            settings = settings or get_settings()
            _queue = WebhookQueue(
                settings.redis_url,
                settings.webhooks.queue_name,
                timeout_seconds=max(settings.redis_timeout_seconds, 1.0),
            )
        return _queue


def event_id_for(email_id: str, event_type: str, key: str = "") -> str:
    """A stable event id: the same event published twice is stored once.

    Args:
        email_id: The email the event is about.
        event_type: One of :data:`core.store.webhooks.EVENT_TYPES`.
        key: What tells two events of one type for one email apart (a provider's event id);
            empty for Mailroom's own events, which happen once per email.
    """
    digest = hashlib.sha256(f"{email_id}\0{event_type}\0{key}".encode()).hexdigest()[:24]
    return f"evt_{digest}"


def _iso(when: datetime) -> str:
    aware = when if when.tzinfo else when.replace(tzinfo=UTC)
    return aware.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def build_payload(
    event_id: str, email_id: str, event_type: str, data: dict[str, Any], occurred_at: datetime
) -> str:
    """The JSON body subscribers receive (Standard Webhooks: ``type``, ``timestamp``, ``data``)."""
    body = {
        "id": event_id,
        "type": event_type,
        "timestamp": _iso(occurred_at),
        "data": {"email_id": email_id, **data},
    }
    return json.dumps(body, separators=(",", ":"), sort_keys=True, default=str)


def publish(
    email_id: str,
    event_type: str,
    data: dict[str, Any],
    *,
    occurred_at: datetime,
    event_id: str | None = None,
) -> None:
    """Store a delivery per subscriber of ``event_type``, then enqueue them.

    Args:
        email_id: The email the event is about.
        event_type: One of :data:`core.store.webhooks.EVENT_TYPES`.
        data: JSON-friendly details, sent as the payload's ``data`` (with ``email_id``).
        occurred_at: When it happened (UTC; naive means UTC).
        event_id: A stable id for the event (default: from the email and the type, see
            :func:`event_id_for`); publishing the same id again stores nothing new.

    Raises:
        ValueError: An unknown event type.
        StorageUnavailable: The deliveries could not be stored (a retry stores them once).
    """
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown event type {event_type!r}")
    event_id = event_id or event_id_for(email_id, event_type)
    payload = build_payload(event_id, email_id, event_type, data, occurred_at)
    queued = store_deliveries(
        event_id=event_id,
        email_id=email_id,
        event_type=event_type,
        payload=payload,
        data=data,
        occurred_at=occurred_at,
    )
    enqueue_all(queued)


def enqueue_all(queued: Sequence[Queued], queue: WebhookQueue | None = None) -> int:
    """Enqueue stored deliveries; failures are logged and left to the sweep.

    Returns:
        How many were enqueued.
    """
    if not queued:
        return 0
    queue = queue or webhook_queue()
    done = 0
    for item in queued:
        try:
            queue.enqueue(item.delivery_id)
        except QueueUnavailable as exc:
            log.warning("webhook delivery %s stored, not enqueued (%s); the sweep will", item, exc)
            return done
        done += 1
    return done


def publish_safely(
    email_id: str,
    event_type: str,
    data: dict[str, Any],
    *,
    occurred_at: datetime,
    retries: int = 2,
    pause_seconds: float = 0.2,
) -> bool:
    """:func:`publish` for callers whose own work is done and must not fail on it.

    The email's new state is already written, and nothing would publish its event later: a
    store error is tried again ``retries`` times (pauses doubling from ``pause_seconds``;
    publishing the same event again stores it once), then logged, and the call returns False.
    """
    for attempt in range(retries + 1):
        try:
            publish(email_id, event_type, data, occurred_at=occurred_at)
        except MailroomError as exc:
            if attempt < retries:
                time.sleep(pause_seconds * 2**attempt)
                continue
            log.error("email %s: %s event not stored for webhooks: %s", email_id, event_type, exc)
            return False
        return True
    return False
