"""Taking in normalized provider events: store each once, then its consequences.

Used by the API's provider webhooks (``server/provider_events``) and by
``mailroom-admin events ingest-dsn``. For each event, in this order: store it
(:func:`core.store.events.record_event`, which also refreshes the email's events and status), add
a hard-bounced or complaining recipient to the suppression list, publish ``email.<type>`` to
webhook subscribers (also for earlier events of the same message that matched no email when
they came and are adopted now: :func:`core.store.events.adopt_unmatched`), and only then mark
the event processed. A failure part-way raises, the
provider retries, and the retry (a duplicate of a stored but unprocessed event) finishes the
work: nothing accepted is lost, and a processed event is never applied twice.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from core import events_out
from core.store import suppressions
from core.store.events import (
    EventType,
    ProviderEvent,
    Recorded,
    StoredProviderEvent,
    mark_processed,
    record_event,
)

log = logging.getLogger(__name__)

#: The outbound webhook event type of each normalized provider event.
OUTBOUND_TYPES = {
    EventType.DELIVERED: "email.delivered",
    EventType.DEFERRED: "email.deferred",
    EventType.BOUNCED: "email.bounced",
    EventType.COMPLAINED: "email.complained",
    EventType.OPENED: "email.opened",
    EventType.CLICKED: "email.clicked",
    EventType.UNSUBSCRIBED: "email.unsubscribed",
    EventType.REJECTED: "email.rejected",
}


def suppression_reason(event: ProviderEvent) -> str | None:
    """Why an event's recipient must not be mailed again (None: it may)."""
    if event.type == EventType.BOUNCED and event.bounce_type == "hard":
        return "hard_bounce"
    if event.type == EventType.COMPLAINED:
        return "complaint"
    return None


def outbound_data(event: ProviderEvent | StoredProviderEvent) -> dict[str, Any]:
    """The ``data`` of the outbound webhook for an event (``email_id`` is added by publish)."""
    data: dict[str, Any] = {
        "provider": event.provider,
        "recipient": event.recipient,
        "provider_event": event.raw_type,
    }
    for name in ("bounce_type", "diagnostic_code", "description", "url"):
        value = getattr(event, name)
        if value:
            data[name] = value
    return data


def _publish(
    email_id: str, kind: str, key: str, occurred_at: datetime, data: dict[str, Any]
) -> None:
    outbound = OUTBOUND_TYPES.get(EventType(kind))
    if outbound is None:
        return
    events_out.publish(
        email_id,
        outbound,
        data,
        occurred_at=occurred_at,
        event_id=events_out.event_id_for(email_id, outbound, key),
    )


def ingest_one(event: ProviderEvent) -> Recorded:
    """Store one event and apply its consequences (see the module docstring).

    Raises:
        StorageUnavailable: The store failed part-way; a retry of the same event finishes.
    """
    recorded = record_event(event)
    if recorded.duplicate:
        return recorded
    reason = suppression_reason(event)
    if reason is not None and event.recipient:
        suppressions.suppress(event.recipient, reason, provider=event.provider, event_id=event.key)
    if recorded.email_id:
        _publish(recorded.email_id, event.type, event.key, event.occurred_at, outbound_data(event))
        for orphan in recorded.adopted:
            # Stored before its email was known: published now, under its own key.
            _publish(
                recorded.email_id,
                orphan.type,
                orphan.key,
                orphan.occurred_at,
                outbound_data(orphan),
            )
    mark_processed(event.key)
    if not recorded.email_id:
        log.info("%s event %s matched no email (kept)", event.provider, event.key)
    return recorded


def ingest(events: Iterable[ProviderEvent]) -> list[Recorded]:
    """Take in events in order; see :func:`ingest_one`."""
    return [ingest_one(event) for event in events]
