"""The status rule of provider events (also in the README, "Provider events").

* each recipient's status is the strongest of its events: ``COMPLAINED`` > ``BOUNCED`` (a hard
  bounce) = ``REJECTED`` (the later wins) > ``DELIVERED`` (also implied by an open, a click or
  an unsubscribe) > ``DEFERRED`` (also a soft bounce: the provider keeps trying) > ``SENT``;
* the email's status, once ``SENT``: ``COMPLAINED`` when any recipient complained, else
  ``BOUNCED`` when any bounced or was rejected, else ``DELIVERED`` when any was delivered, else
  ``SENT``. One delivered recipient is enough because some providers (SMTP's DSNs) only ever
  report failures. An email not yet ``SENT`` keeps its status; its events are still stored.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from core.store.documents import RecipientStatus, Status


class EventType(StrEnum):
    """A normalized provider event; mirrors ``mailroom.v1.EmailEventType``."""

    DELIVERED = "DELIVERED"
    DEFERRED = "DEFERRED"
    BOUNCED = "BOUNCED"
    COMPLAINED = "COMPLAINED"
    OPENED = "OPENED"
    CLICKED = "CLICKED"
    UNSUBSCRIBED = "UNSUBSCRIBED"
    REJECTED = "REJECTED"
    # Kept raw and counted, never applied to an email.
    UNKNOWN = "UNKNOWN"


class RecipientState(StrEnum):
    """A recipient's summary status; mirrors ``mailroom.v1.RecipientStatus``."""

    SENT = "SENT"
    DEFERRED = "DEFERRED"
    DELIVERED = "DELIVERED"
    BOUNCED = "BOUNCED"
    REJECTED = "REJECTED"
    COMPLAINED = "COMPLAINED"


_RANK = {
    RecipientState.SENT: 0,
    RecipientState.DEFERRED: 1,
    RecipientState.DELIVERED: 2,
    RecipientState.BOUNCED: 3,
    RecipientState.REJECTED: 3,
    RecipientState.COMPLAINED: 4,
}


class StatusEvent(Protocol):
    """What the rule reads of a stored event (``core.store.events.StoredProviderEvent``)."""

    key: str
    type: str
    bounce_type: str
    recipient: str
    diagnostic_code: str
    occurred_at: datetime
    received_at: datetime


def recipient_state(event_type: str, bounce_type: str = "") -> RecipientState | None:
    """What one event says about its recipient (None: nothing, e.g. UNKNOWN)."""
    if event_type in (
        EventType.DELIVERED,
        EventType.OPENED,
        EventType.CLICKED,
        EventType.UNSUBSCRIBED,
    ):
        return RecipientState.DELIVERED
    if event_type == EventType.DEFERRED or (
        event_type == EventType.BOUNCED and bounce_type == "soft"
    ):
        return RecipientState.DEFERRED
    if event_type == EventType.BOUNCED:
        return RecipientState.BOUNCED
    if event_type == EventType.REJECTED:
        return RecipientState.REJECTED
    if event_type == EventType.COMPLAINED:
        return RecipientState.COMPLAINED
    return None


def order(event: StatusEvent) -> tuple[datetime, datetime, str]:
    """The sort key of events: oldest first, those of one moment in the order they arrived."""
    return (event.occurred_at, event.received_at, event.key)


def summarize(events: Iterable[StatusEvent]) -> list[RecipientStatus]:
    """Each recipient's status from its events, oldest first (the module's rule)."""
    summary: dict[str, RecipientStatus] = {}
    for event in sorted(events, key=order):
        state = recipient_state(event.type, event.bounce_type)
        if state is None:
            continue
        current = summary.get(event.recipient)
        if current is None or _RANK[state] >= _RANK[RecipientState(current.status)]:
            summary[event.recipient] = RecipientStatus(
                address=event.recipient,
                status=state.value,
                updated_at=event.occurred_at,
                diagnostic_code=event.diagnostic_code or "",
            )
    return list(summary.values())


def overall_status(recipients: Iterable[RecipientStatus]) -> Status:
    """The email's status after SENT from its recipients' (the module's rule)."""
    states = {r.status for r in recipients}
    if RecipientState.COMPLAINED in states:
        return Status.COMPLAINED
    if states & {RecipientState.BOUNCED, RecipientState.REJECTED}:
        return Status.BOUNCED
    if RecipientState.DELIVERED in states:
        return Status.DELIVERED
    return Status.SENT
