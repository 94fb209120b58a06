"""The webhook outbox: storing deliveries, their chains, attempts, the sweep's reads, replay.

A delivery's ``_id`` is ``<event id>_<subscription id>``, so publishing the same event twice
stores it once. Deliveries of one email to one subscription (a chain) go out in order: ``seq``
(nanoseconds at publish) orders them, and a worker sends a delivery only when no earlier one of
its chain is pending.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pymongo.errors import BulkWriteError

from core.store.documents import utcnow
from core.store.mapping import map_mongo_errors
from core.store.webhooks import (
    DeliveryState,
    WebhookAttempt,
    WebhookDelivery,
    subscriptions_for_events,
)


@dataclass(frozen=True)
class Queued:
    """A stored delivery to enqueue."""

    delivery_id: str
    email_id: str
    subscription_id: str


def store_deliveries(
    *,
    event_id: str,
    email_id: str,
    event_type: str,
    payload: str,
    data: dict[str, Any],
    occurred_at: datetime,
) -> list[Queued]:
    """Store one pending delivery per subscription that wants the event.

    Idempotent by ``event_id``: deliveries already stored are not stored again (nor returned).

    Raises:
        StorageUnavailable: MongoDB is unreachable; some deliveries may be stored (a retry of
            the same event stores the rest).
    """
    now = utcnow()
    seq = time.time_ns()
    wanting = [s for s in subscriptions_for_events() if s.wants(event_type, data)]
    docs = [
        WebhookDelivery(
            key=f"{event_id}_{sub.id}",
            subscription_id=str(sub.id),
            event_id=event_id,
            email_id=email_id,
            event_type=event_type,
            payload=payload,
            seq=seq + index,
            created_at=now,
            occurred_at=occurred_at,
            state=DeliveryState.PENDING,
            next_attempt_at=now,
        )
        for index, sub in enumerate(wanting)
    ]
    if not docs:
        return []
    collection = WebhookDelivery._get_collection()
    stored = {d.key for d in docs}
    with map_mongo_errors():
        try:
            collection.insert_many([d.to_mongo() for d in docs], ordered=False)
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            if any(e.get("code") != 11000 for e in errors):
                raise
            # Stored by an earlier publish of the same event: not ours to enqueue again.
            stored -= {docs[e["index"]].key for e in errors}
    return [Queued(d.key, email_id, d.subscription_id) for d in docs if d.key in stored]


def get_delivery(delivery_id: str) -> WebhookDelivery | None:
    """Read one delivery, or None."""
    with map_mongo_errors():
        return WebhookDelivery.objects(key=delivery_id).first()  # type: ignore[no-any-return]


def _first_pending_of_chain(delivery: WebhookDelivery, **seq_filter: Any) -> WebhookDelivery | None:
    """The first pending delivery, by ``seq``, of this delivery's chain matching ``seq_filter``."""
    if not delivery.email_id:
        return None
    with map_mongo_errors():
        return (  # type: ignore[no-any-return]
            WebhookDelivery.objects(
                subscription_id=delivery.subscription_id,
                email_id=delivery.email_id,
                state=DeliveryState.PENDING,
                **seq_filter,
            )
            .order_by("seq")
            .first()
        )


def earlier_pending(delivery: WebhookDelivery) -> WebhookDelivery | None:
    """The first pending delivery of the same chain published before this one, if any."""
    return _first_pending_of_chain(delivery, seq__lt=delivery.seq)


def next_in_chain(delivery: WebhookDelivery) -> WebhookDelivery | None:
    """The first pending delivery of the same chain published after this one, if any."""
    return _first_pending_of_chain(delivery, seq__gte=delivery.seq, key__ne=delivery.key)


def record_attempt(
    delivery: WebhookDelivery,
    attempt: WebhookAttempt,
    *,
    state: DeliveryState,
    next_attempt_at: datetime | None,
) -> None:
    """Append an attempt; move the delivery to ``state`` (pending: due at ``next_attempt_at``)."""
    changes: dict[str, Any] = {
        "push__attempts": attempt,
        "inc__attempt_count": 1,
        "set__state": state,
        "set__last_error": attempt.error,
    }
    if state == DeliveryState.PENDING and next_attempt_at is not None:
        changes["set__next_attempt_at"] = next_attempt_at
    else:
        changes["unset__next_attempt_at"] = True
        changes["set__finished_at"] = utcnow()
    with map_mongo_errors():
        WebhookDelivery.objects(key=delivery.key, state=DeliveryState.PENDING).update_one(**changes)


def set_due(delivery_id: str, when: datetime) -> None:
    """Make a pending delivery due at ``when`` (it waits behind an earlier one, or was swept)."""
    with map_mongo_errors():
        WebhookDelivery.objects(key=delivery_id, state=DeliveryState.PENDING).update_one(
            set__next_attempt_at=when
        )


def kill(delivery: WebhookDelivery, error: str) -> None:
    """Make a pending delivery dead without an attempt (its subscription is gone)."""
    with map_mongo_errors():
        WebhookDelivery.objects(key=delivery.key, state=DeliveryState.PENDING).update_one(
            set__state=DeliveryState.DEAD,
            set__last_error=error,
            set__finished_at=utcnow(),
            unset__next_attempt_at=True,
        )


def overdue(before: datetime, limit: int) -> list[WebhookDelivery]:
    """Pending deliveries due before ``before``, the longest overdue first."""
    with map_mongo_errors():
        return list(
            WebhookDelivery.objects(state=DeliveryState.PENDING, next_attempt_at__lte=before)
            .order_by("next_attempt_at")
            .limit(limit)
        )


def oldest_pending_created_at() -> datetime | None:
    """When the oldest undelivered (pending) delivery was published, or None."""
    with map_mongo_errors():
        first = (
            WebhookDelivery.objects(state=DeliveryState.PENDING)
            .order_by("seq")
            .only("created_at")
            .first()
        )
    return None if first is None else first.created_at


def list_deliveries(
    *,
    state: str | None = None,
    subscription_id: str | None = None,
    email_id: str | None = None,
    limit: int = 50,
    before_seq: int | None = None,
) -> list[WebhookDelivery]:
    """Deliveries, newest first, filtered; page on with ``before_seq`` (the last one's seq)."""
    query: dict[str, Any] = {}
    if state:
        query["state"] = state
    if subscription_id:
        query["subscription_id"] = subscription_id
    if email_id:
        query["email_id"] = email_id
    if before_seq is not None:
        query["seq__lt"] = before_seq
    with map_mongo_errors():
        return list(WebhookDelivery.objects(**query).order_by("-seq").limit(limit))


def replay(delivery_id: str) -> WebhookDelivery | None:
    """Make a dead delivery pending again with a fresh attempt budget, due now.

    Returns:
        The delivery, or None when it is not dead (or does not exist).
    """
    now = utcnow()
    with map_mongo_errors():
        updated = WebhookDelivery.objects(key=delivery_id, state=DeliveryState.DEAD).update_one(
            set__state=DeliveryState.PENDING,
            set__next_attempt_at=now,
            set__attempt_count=0,
            set__replayed_at=now,
            unset__finished_at=True,
        )
    return get_delivery(delivery_id) if updated else None


def purge_finished(before: datetime) -> int:
    """Delete delivered and dead deliveries that finished before ``before``; return how many."""
    with map_mongo_errors():
        return int(
            WebhookDelivery.objects(
                state__in=[DeliveryState.DELIVERED, DeliveryState.DEAD], finished_at__lt=before
            ).delete()
        )
