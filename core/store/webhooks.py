"""Outbound webhooks: subscriptions and their deliveries (the outbox).

A delivery is stored, one per matching subscription, before :func:`core.events_out.publish`
returns: Redis only carries a pointer to it, so nothing is lost when Redis or a worker is down
(the sweep enqueues overdue pending deliveries again). A delivery's ``_id`` is
``<event id>:<subscription id>``, so publishing the same event twice stores it once.

Deliveries of one email to one subscription go out in order: ``seq`` (nanoseconds at publish)
orders them, and a worker sends a delivery only when no earlier one of its chain is pending.
"""

from __future__ import annotations

import secrets
import threading
import time
from base64 import b64encode
from collections.abc import Iterable
from enum import StrEnum
from typing import Any

from bson import ObjectId
from bson.errors import InvalidId
from mongoengine import (
    BooleanField,
    DateTimeField,
    Document,
    EmbeddedDocument,
    EmbeddedDocumentListField,
    FloatField,
    IntField,
    ListField,
    LongField,
    StringField,
)

from core.errors import NotFound
from core.store.documents import utcnow
from core.store.mapping import map_mongo_errors

#: Every event type a subscription may ask for.
EVENT_TYPES = (
    "email.sent",
    "email.failed",
    "email.cancelled",
    "email.delivered",
    "email.deferred",
    "email.bounced",
    "email.complained",
    "email.opened",
    "email.clicked",
    "email.unsubscribed",
    "email.rejected",
)

#: What a final-outcomes-only subscription receives: an email's outcomes, never a retry, a
#: deferral, a soft bounce or engagement (opens, clicks, unsubscribes).
FINAL_EVENT_TYPES = frozenset(
    {
        "email.sent",
        "email.failed",
        "email.cancelled",
        "email.delivered",
        "email.bounced",
        "email.complained",
        "email.rejected",
    }
)

SECRET_PREFIX = "whsec_"


class DeliveryState(StrEnum):
    """Where a webhook delivery is."""

    PENDING = "pending"
    DELIVERED = "delivered"
    DEAD = "dead"


def new_secret() -> str:
    """A Standard Webhooks secret: ``whsec_`` and 24 random bytes in base64."""
    return SECRET_PREFIX + b64encode(secrets.token_bytes(24)).decode()


def is_final_event(event_type: str, data: dict[str, Any]) -> bool:
    """The rule of final-outcomes-only subscriptions (see :data:`FINAL_EVENT_TYPES`).

    A bounce counts only when it is not soft (a soft bounce is the provider's retry notice).
    """
    if event_type not in FINAL_EVENT_TYPES:
        return False
    if event_type == "email.bounced":
        kind = str(data.get("bounce_type") or data.get("bounceType") or "").lower()
        return kind != "soft"
    return True


class WebhookSubscription(Document):  # type: ignore[misc]
    """A receiver of webhook events."""

    meta: dict[str, Any] = {"collection": "webhook_subscriptions", "auto_create_index": False}

    url = StringField(required=True)
    # Empty: every event type.
    event_types = ListField(StringField())
    secret = StringField(required=True)
    final_outcomes_only = BooleanField(default=False)
    description = StringField(default="")
    created_at = DateTimeField(required=True)

    def wants(self, event_type: str, data: dict[str, Any]) -> bool:
        """Whether this subscription receives an event."""
        if self.event_types and event_type not in self.event_types:
            return False
        return not self.final_outcomes_only or is_final_event(event_type, data)


class WebhookAttempt(EmbeddedDocument):  # type: ignore[misc]
    """One POST of a delivery to its receiver."""

    at = DateTimeField(required=True)
    duration_ms = FloatField(default=0.0)
    # 0 when no HTTP answer came (connection refused, timeout).
    status_code = IntField(default=0)
    error = StringField(default="")
    response = StringField(default="")
    worker = StringField(default="")


class WebhookDelivery(Document):  # type: ignore[misc]
    """One event for one subscription: the outbox record and its attempts."""

    meta: dict[str, Any] = {
        "collection": "webhook_deliveries",
        "auto_create_index": False,
        "indexes": [
            # The sweep and the oldest-pending gauge.
            {"fields": ["state", "next_attempt_at"]},
            # One chain (a subscription's deliveries of one email), in order.
            {"fields": ["subscription_id", "email_id", "state", "seq"]},
            # Listing, newest first, by state.
            {"fields": ["state", "seq"]},
            # The purge of finished deliveries.
            {"fields": ["state", "finished_at"]},
        ],
    }

    key = StringField(primary_key=True)
    subscription_id = StringField(required=True)
    event_id = StringField(required=True)
    email_id = StringField(default="")
    event_type = StringField(required=True)
    # The exact body that is signed and POSTed.
    payload = StringField(required=True)
    seq = LongField(required=True)
    created_at = DateTimeField(required=True)
    occurred_at = DateTimeField()
    state = StringField(required=True, choices=[s.value for s in DeliveryState])
    next_attempt_at = DateTimeField()
    attempt_count = IntField(default=0)
    attempts = EmbeddedDocumentListField(WebhookAttempt)
    last_error = StringField(default="")
    finished_at = DateTimeField()
    replayed_at = DateTimeField()


WEBHOOK_DOCUMENTS = (WebhookSubscription, WebhookDelivery)


def _object_id(value: str, what: str) -> ObjectId:
    try:
        return ObjectId(value)
    except (InvalidId, TypeError) as exc:
        raise NotFound(f"no such {what}: {value}") from exc


# --- subscriptions -----------------------------------------------------------------------


def create_subscription(
    url: str,
    event_types: Iterable[str] = (),
    *,
    final_outcomes_only: bool = False,
    description: str = "",
    secret: str | None = None,
) -> WebhookSubscription:
    """Store a subscription (the caller has validated it) with a fresh secret unless given.

    Raises:
        StorageUnavailable: MongoDB is unreachable.
    """
    subscription = WebhookSubscription(
        url=url,
        event_types=list(event_types),
        secret=secret or new_secret(),
        final_outcomes_only=final_outcomes_only,
        description=description,
        created_at=utcnow(),
    )
    with map_mongo_errors():
        subscription.save(force_insert=True)
    _copy.forget()
    # Every process's copy of the list is at most this old: once it has passed, each event
    # published anywhere reaches the new subscription (see cache_subscriptions).
    time.sleep(_copy.max_age_seconds)
    return subscription


def list_subscriptions() -> list[WebhookSubscription]:
    """Every subscription, oldest first (there are few)."""
    with map_mongo_errors():
        return list(WebhookSubscription.objects.order_by("id"))


class _SubscriptionsCopy:
    """This process's copy of the subscription list, read again once it is too old."""

    def __init__(self) -> None:
        self.max_age_seconds = 0.0
        self._lock = threading.Lock()
        self._subscriptions: list[WebhookSubscription] | None = None
        self._read_at = 0.0

    def get(self) -> list[WebhookSubscription]:
        started = time.monotonic()
        with self._lock:
            fresh = started - self._read_at < self.max_age_seconds
            if self._subscriptions is not None and fresh:
                return self._subscriptions
        subscriptions = list_subscriptions()
        with self._lock:
            # Its age counts from before the read: the answer may be that old.
            if self.max_age_seconds and started >= self._read_at:
                self._subscriptions, self._read_at = subscriptions, started
        return subscriptions

    def forget(self) -> None:
        with self._lock:
            self._subscriptions = None
            self._read_at = 0.0


_copy = _SubscriptionsCopy()


def cache_subscriptions(max_age_seconds: float) -> None:
    """Let :func:`subscriptions_for_events` answer from a copy up to ``max_age_seconds`` old.

    Every event looks the list up to store a delivery per subscriber: read from the store, that
    was one more round trip per delivered email (and 7 % of the worker's CPU). Each entry point
    sets the same age (``MAILROOM_WEBHOOKS__SUBSCRIPTIONS_MAX_AGE_SECONDS``), and
    :func:`create_subscription` waits that long before it returns, so an event published after
    a subscription was created reaches it. 0 (the default until an entry point sets it) reads
    the store every time. A deleted subscription may still get deliveries stored for a moment:
    they die as "webhook deleted" when their turn comes.
    """
    _copy.max_age_seconds = max(0.0, max_age_seconds)
    _copy.forget()


def subscriptions_for_events() -> list[WebhookSubscription]:
    """Every subscription, oldest first, from this process's copy when it is recent enough.

    Raises:
        StorageUnavailable: The copy is too old and MongoDB is unreachable.
    """
    return _copy.get()


def get_subscription(subscription_id: str) -> WebhookSubscription:
    """Read one subscription.

    Raises:
        NotFound: No such subscription.
    """
    oid = _object_id(subscription_id, "webhook")
    with map_mongo_errors():
        found = WebhookSubscription.objects(id=oid).first()
    if found is None:
        raise NotFound(f"no such webhook: {subscription_id}")
    return found  # type: ignore[no-any-return]


def find_subscription(subscription_id: str) -> WebhookSubscription | None:
    """Read one subscription, or None when it was deleted."""
    try:
        return get_subscription(subscription_id)
    except NotFound:
        return None


def delete_subscription(subscription_id: str) -> bool:
    """Delete a subscription; its pending deliveries become dead ("webhook deleted").

    Returns:
        Whether it existed.
    """
    oid = _object_id(subscription_id, "webhook")
    _copy.forget()
    with map_mongo_errors():
        deleted = WebhookSubscription.objects(id=oid).delete()
        WebhookDelivery.objects(
            subscription_id=subscription_id, state=DeliveryState.PENDING
        ).update(
            set__state=DeliveryState.DEAD,
            set__last_error="webhook deleted",
            set__finished_at=utcnow(),
            unset__next_attempt_at=True,
        )
    return bool(deleted)
