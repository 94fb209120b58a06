"""Delivering webhooks: sign, POST, record each attempt, back off, dead-letter, keep order.

Pure logic with no Dramatiq decorators (the actor is in :mod:`workers.actors`). Each message
carries a delivery id from the outbox (:mod:`core.store.webhook_outbox`); the delivery's
state there is the truth, so duplicate and late messages are harmless:

* one worker at a time works on a chain (one subscription's deliveries of one email), under a
  Redis lock; a message meeting a busy chain comes back a second later;
* a delivery is sent only when no earlier delivery of its chain is pending (in order per email);
  one that must wait is made due with the earlier one, and whoever finishes the earlier one
  (delivered or dead) enqueues it;
* a failed attempt schedules the next after exponential backoff (``settings.webhooks``), and
  after ``max_attempts`` the delivery is dead (listed and replayable by ``mailroom-admin``).

Signing is the Standard Webhooks scheme: ``webhook-id``, ``webhook-timestamp`` and
``webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">``, keyed by the
base64 part of the subscription's ``whsec_`` secret.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from base64 import b64decode, b64encode
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx
import redis

from core.events_out import WebhookQueue, enqueue_all
from core.settings import Settings
from core.store import webhook_outbox as outbox
from core.store.documents import utcnow
from core.store.webhook_outbox import Queued
from core.store.webhooks import (
    SECRET_PREFIX,
    DeliveryState,
    WebhookAttempt,
    WebhookDelivery,
    find_subscription,
)
from workers.locks import hold
from workers.webhook_metrics import count_delivery

log = logging.getLogger(__name__)

#: A message for a chain another worker is busy with comes back after this long.
BUSY_RETRY_MS = 1_000
USER_AGENT = "mailroom-webhooks/1"


def secret_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_<base64>`` secret (a secret without the prefix is used as is)."""
    if secret.startswith(SECRET_PREFIX):
        return b64decode(secret[len(SECRET_PREFIX) :])
    return secret.encode()


def sign(secret: str, msg_id: str, timestamp: int, body: str) -> str:
    """The ``webhook-signature`` header value for one message."""
    signed = f"{msg_id}.{timestamp}.{body}".encode()
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + b64encode(digest).decode()


def signed_headers(
    secret: str, msg_id: str, body: str, *, now: float | None = None
) -> dict[str, str]:
    """The headers of one POST: content type, Standard Webhooks id, timestamp and signature."""
    timestamp = int(now if now is not None else time.time())
    return {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, msg_id, timestamp, body),
    }


def backoff_ms(failures: int, settings: Settings) -> int:
    """The wait after the ``failures``-th failed attempt (1-based): doubling, capped."""
    hooks = settings.webhooks
    return int(min(hooks.max_backoff_ms, hooks.min_backoff_ms * 2 ** max(failures - 1, 0)))


@dataclass
class Outcome:
    """What one message did: ``delivered``, ``retry``, ``dead``, or why it sent nothing."""

    kind: str
    status_code: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    # The delivery whose chain moves on (delivered or dead), once the chain's lock is released.
    finished: WebhookDelivery | None = None


@dataclass
class WebhookSender:
    """Everything a worker process needs to deliver webhooks.

    Args:
        settings: ``settings.webhooks`` (attempts, backoff, timeout).
        queue: Where follow-up messages go.
        redis_client: For the per-chain locks.
        http: The HTTP client (made from the settings when None).
    """

    settings: Settings
    queue: WebhookQueue
    redis_client: redis.Redis
    http: httpx.Client | None = None

    def __post_init__(self) -> None:
        if self.http is None:
            self.http = httpx.Client(
                timeout=self.settings.webhooks.timeout_seconds, follow_redirects=False
            )

    def deliver(self, delivery_id: str, *, worker: str = "") -> Outcome:
        """Handle one message for ``delivery_id`` (see the module docstring).

        Raises:
            StorageUnavailable: MongoDB is unreachable (Dramatiq retries; the sweep is the
                backstop).
        """
        delivery = outbox.get_delivery(delivery_id)
        if delivery is None or delivery.state != DeliveryState.PENDING:
            return Outcome("done")
        member = delivery.email_id or delivery_id
        chain = f"mailroom:lock:webhook:{delivery.subscription_id}:{member}"
        ttl = self.settings.webhooks.timeout_seconds + 30
        with hold(self.redis_client, chain, ttl_seconds=ttl) as lock:
            if lock is None:
                self.queue.enqueue(delivery_id, delay_ms=BUSY_RETRY_MS)
                return Outcome("busy")
            outcome = self._deliver_held(delivery_id, worker)
        # After the release: the next delivery's worker must not find the chain busy.
        if outcome.finished is not None:
            self._kick_next(outcome.finished)
        return outcome

    def _deliver_held(self, delivery_id: str, worker: str) -> Outcome:
        delivery = outbox.get_delivery(delivery_id)
        now = utcnow()
        if delivery is None or delivery.state != DeliveryState.PENDING:
            return Outcome("done")
        if delivery.next_attempt_at and delivery.next_attempt_at > now + timedelta(seconds=1):
            return Outcome("not_due")  # an early duplicate: its own delayed message will come
        subscription = find_subscription(delivery.subscription_id)
        if subscription is None:
            outbox.kill(delivery, "webhook deleted")
            return Outcome("dead", finished=delivery)
        earlier = outbox.earlier_pending(delivery)
        if earlier is not None:
            due = max(earlier.next_attempt_at or now, now)
            outbox.set_due(delivery.key, due)
            return Outcome("waiting", extra={"behind": earlier.key})

        attempt, ok = self._post(subscription.url, subscription.secret, delivery, worker)
        failures = int(delivery.attempt_count or 0) + 1
        if ok:
            state, next_at, kind = DeliveryState.DELIVERED, None, "delivered"
        elif failures >= self.settings.webhooks.max_attempts:
            state, next_at, kind = DeliveryState.DEAD, None, "dead"
        else:
            delay = backoff_ms(failures, self.settings)
            state, kind = DeliveryState.PENDING, "retry"
            next_at = utcnow() + timedelta(milliseconds=delay)
        outbox.record_attempt(delivery, attempt, state=state, next_attempt_at=next_at)
        count_delivery(kind)
        if kind == "retry":
            log.info(
                "webhook %s to %s failed (%s); attempt %d, retry in %d ms",
                delivery.key,
                subscription.url,
                attempt.error,
                failures,
                delay,
            )
            self.queue.enqueue(delivery.key, delay_ms=delay)
            return Outcome(kind, status_code=int(attempt.status_code or 0))
        if kind == "dead":
            log.warning(
                "webhook %s to %s dead after %d attempts: %s",
                delivery.key,
                subscription.url,
                failures,
                attempt.error,
            )
        return Outcome(kind, status_code=int(attempt.status_code or 0), finished=delivery)

    def _post(
        self, url: str, secret: str, delivery: WebhookDelivery, worker: str
    ) -> tuple[WebhookAttempt, bool]:
        assert self.http is not None
        started = utcnow()
        start = time.monotonic()
        headers = signed_headers(secret, delivery.event_id, delivery.payload)
        status_code, error, response = 0, "", ""
        try:
            answer = self.http.post(url, content=delivery.payload.encode(), headers=headers)
            status_code = answer.status_code
            response = answer.text[: self.settings.webhooks.max_response_chars]
            if not 200 <= status_code < 300:
                error = f"HTTP {status_code}"
        except httpx.HTTPError as exc:
            # The receiver's problem, recorded on the attempt; the class names it well enough.
            error = f"{type(exc).__name__}: {exc}"[:500]
        attempt = WebhookAttempt(
            at=started,
            duration_ms=(time.monotonic() - start) * 1000,
            status_code=status_code,
            error=error,
            response=response,
            worker=worker,
        )
        return attempt, not error

    def _kick_next(self, delivery: WebhookDelivery) -> None:
        following = outbox.next_in_chain(delivery)
        if following is None:
            return
        outbox.set_due(following.key, utcnow())
        enqueue_all(
            [Queued(following.key, following.email_id, following.subscription_id)], self.queue
        )


def sweep(
    queue: WebhookQueue, settings: Settings, *, now: datetime | None = None
) -> dict[str, int]:
    """Enqueue again the pending deliveries overdue by ``sweep_grace_seconds`` (messages lost).

    Each one swept is made due now, so the next sweep leaves it alone for the grace time.

    Returns:
        ``{"swept": n, "enqueued": m}``.
    """
    now = now or utcnow()
    hooks = settings.webhooks
    cutoff = now - timedelta(seconds=hooks.sweep_grace_seconds)
    overdue = outbox.overdue(cutoff, hooks.sweep_batch_size)
    for delivery in overdue:
        outbox.set_due(delivery.key, now)
    enqueued = enqueue_all([Queued(d.key, d.email_id, d.subscription_id) for d in overdue], queue)
    if overdue:
        log.info("webhook sweep: %d overdue deliveries, %d enqueued", len(overdue), enqueued)
    return {"swept": len(overdue), "enqueued": enqueued}


def purge(settings: Settings, *, now: datetime | None = None) -> int:
    """Delete the deliveries that finished more than ``webhooks.keep_days`` ago."""
    before = (now or utcnow()) - timedelta(days=settings.webhooks.keep_days)
    purged = outbox.purge_finished(before)
    if purged:
        log.info("purged %d finished webhook deliveries", purged)
    return purged
