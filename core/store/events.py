"""Provider events (delivered, bounced, complained…): stored once, appended to their email.

Each normalized event is one ``provider_events`` document keyed ``<provider>:<event id>`` (or
``<provider>:sha256:<hash of the event>`` when the provider gives no id), so a provider's retry
meets the first insert's ``_id`` and is recorded once: a duplicate ``_id`` fails atomically on
MongoDB and FerretDB alike. That collection is the source of truth; the email's ``events`` and
``recipient_statuses`` are a copy rewritten from it (:func:`refresh_email`), so concurrent events
of one email never lose each other the way two read-then-write ``$push`` updates could on
FerretDB.

The status rule is in :mod:`core.store.event_status`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from mongoengine import BooleanField, DateTimeField, Document, StringField

from core.errors import DuplicateKey
from core.store.backend import is_ferretdb_v1
from core.store.documents import (
    AFTER_SENT_STATUSES,
    Email,
    EmailEvent,
    Status,
    utcnow,
)
from core.store.event_status import EventType as EventType  # re-exported: the event vocabulary
from core.store.event_status import order, overall_status, summarize
from core.store.mapping import map_mongo_errors
from core.store.repository import parse_email_id

#: The newest events copied onto an email (opens and clicks can be many); all stay in the store.
MAX_EMAIL_EVENTS = 100
#: The longest raw event kept, in characters (a provider's event is a few hundred).
MAX_RAW_CHARS = 65_536
#: Rounds of :func:`refresh_email` before it leaves the copy to the next event's refresh.
_REFRESH_ROUNDS = 5


@dataclass(frozen=True)
class ProviderEvent:
    """One normalized event about one recipient of one email.

    Attributes:
        provider: ``sendgrid``, ``mailgun``, ``postmark``, ``ses`` or ``smtp`` (DSNs).
        type: The normalized type (``UNKNOWN`` for one Mailroom does not know).
        raw_type: The provider's own name for it (``bounce``, ``failed``, ``SpamComplaint``…).
        recipient: The recipient's address ("" when the provider names none).
        occurred_at: When it happened, naive UTC.
        event_id: The provider's id of the event; "" when it has none (a hash then dedupes).
        provider_message_ids: Candidates for the id the provider answered our send with.
        message_id: Our Message-ID when the provider echoes it ("" otherwise).
        bounce_type: ``hard`` or ``soft`` for BOUNCED.
        diagnostic_code: The SMTP status or diagnostic (``5.1.1``, ``smtp; 550 …``).
        description: The provider's explanation.
        url: The link of a CLICKED event.
        raw: The provider's record of this event, as received.
    """

    provider: str
    type: EventType
    raw_type: str
    recipient: str
    occurred_at: datetime
    event_id: str = ""
    provider_message_ids: tuple[str, ...] = ()
    message_id: str = ""
    bounce_type: str = ""
    diagnostic_code: str = ""
    description: str = ""
    url: str = ""
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """The dedupe key: the provider and its event id, or a hash of the event."""
        if self.event_id:
            return f"{self.provider}:{self.event_id}"
        canonical = json.dumps(
            {"raw": self.raw, "recipient": self.recipient, "type": self.raw_type},
            sort_keys=True,
            default=str,
        )
        return f"{self.provider}:sha256:{hashlib.sha256(canonical.encode()).hexdigest()}"


class StoredProviderEvent(Document):  # type: ignore[misc]
    """A provider event as received, keyed by its dedupe key (the source of the email's copy)."""

    meta: dict[str, Any] = {
        "collection": "provider_events",
        "auto_create_index": False,
        "indexes": [
            {"fields": ["email_id", "occurred_at"]},
            {"fields": ["received_at"]},
            # Unmatched events are adopted by the next event of their message (adopt_unmatched).
            {"fields": ["provider_message_id"]},
            {"fields": ["message_id"]},
        ],
    }

    key = StringField(primary_key=True)
    provider = StringField(required=True)
    type = StringField(required=True, choices=[t.value for t in EventType])
    raw_type = StringField(default="")
    # "" when no email matched (kept for inspection; a hard bounce still suppresses).
    email_id = StringField(default="")
    recipient = StringField(default="")
    occurred_at = DateTimeField(required=True)
    received_at = DateTimeField(required=True)
    bounce_type = StringField(default="")
    diagnostic_code = StringField(default="")
    description = StringField(default="")
    url = StringField(default="")
    provider_message_id = StringField(default="")
    message_id = StringField(default="")
    raw = StringField(default="")
    # Set once every consequence (email copy, suppression, outbound webhook) is done: a retry of
    # an event whose first delivery failed half-way redoes them instead of being dropped.
    processed = BooleanField(default=False)


@dataclass(frozen=True)
class Recorded:
    """What storing one event did.

    Attributes:
        event: The event.
        email_id: The matched email ("" when none matched).
        duplicate: An earlier delivery of the same event was already fully processed.
        adopted: Earlier events of the same message that matched no email when they came
            (before the worker had recorded the provider's id) and are this email's now.
    """

    event: ProviderEvent
    email_id: str
    duplicate: bool
    adopted: tuple[StoredProviderEvent, ...] = ()


def _bare(message_id: str) -> str:
    return message_id.strip().removeprefix("<").removesuffix(">")


def _variants(ids: Iterable[str]) -> list[str]:
    out: dict[str, None] = {}  # ordered, each form once
    for value in ids:
        bare = _bare(value)
        if bare:
            out.update({bare: None, f"<{bare}>": None})
    return list(out)


def _matching(field: str, values: list[str], **also: str) -> Iterator[dict[str, Any]]:
    """Queries for documents whose ``field`` is one of ``values`` (and ``also``), in order.

    One ``$in`` on MongoDB (served by the field's index). FerretDB 1.24 does not hand ``$in``
    to PostgreSQL and reads the whole collection for it: one equality per value there, each a
    GIN index lookup (``devtools.postgres``).
    """
    if not values:
        return
    if is_ferretdb_v1(Email._get_db()):
        for value in values:
            yield {field: value, **also}
    else:
        yield {f"{field}__in": values, **also}


def find_email_id(event: ProviderEvent) -> str:
    """The id of the email an event is about: by the provider's message id, then our Message-ID.

    Returns:
        The email id, or "" when none matches.
    """
    with map_mongo_errors():
        for field, ids in (
            ("provider_message_id", event.provider_message_ids),
            ("message_id", [event.message_id, *event.provider_message_ids]),
        ):
            for query in _matching(field, _variants(ids)):
                found = Email.objects(**query).only("id").first()
                if found is not None:
                    return str(found.id)
    return ""


def record_event(event: ProviderEvent) -> Recorded:
    """Store an event once, matched to its email, and refresh that email's copy and status.

    Returns:
        What was done; ``duplicate`` when the event was already fully processed before.

    Raises:
        StorageUnavailable: MongoDB failed; the provider should retry (nothing is lost: a retry
            finishes what a failed delivery began).
    """
    email_id = find_email_id(event)
    document = StoredProviderEvent(
        key=event.key,
        provider=event.provider,
        type=event.type.value,
        raw_type=event.raw_type[:200],
        email_id=email_id,
        recipient=event.recipient.lower(),
        occurred_at=event.occurred_at,
        received_at=utcnow(),
        bounce_type=event.bounce_type,
        diagnostic_code=event.diagnostic_code[:1000],
        description=event.description[:2000],
        url=event.url[:2000],
        provider_message_id=next(iter(event.provider_message_ids), ""),
        message_id=event.message_id,
        raw=json.dumps(event.raw, default=str)[:MAX_RAW_CHARS],
    )
    try:
        with map_mongo_errors():
            document.save(force_insert=True)
    except DuplicateKey:
        with map_mongo_errors():
            earlier = StoredProviderEvent.objects(key=event.key).first()
        if earlier is None or earlier.processed:
            return Recorded(event, earlier.email_id if earlier else email_id, duplicate=True)
        email_id = earlier.email_id or email_id
    adopted = adopt_unmatched(email_id, event) if email_id else []
    if email_id and (event.type != EventType.UNKNOWN or adopted):
        refresh_email(email_id)
    return Recorded(event, email_id, duplicate=False, adopted=tuple(adopted))


def adopt_unmatched(email_id: str, event: ProviderEvent) -> list[StoredProviderEvent]:
    """Give an email the earlier events of its message that matched no email when they came.

    A provider can report an event in the moment between accepting a message and the worker
    recording the provider's id for it; that event is stored unmatched. The next event of the
    same message that does match brings it in (indexed queries by each id).

    Returns:
        The events adopted (each now carries ``email_id``).
    """
    found: dict[str, StoredProviderEvent] = {}
    with map_mongo_errors():
        for name, ids in (
            ("provider_message_id", event.provider_message_ids),
            ("message_id", (event.message_id,)),
        ):
            for query in _matching(name, _variants(ids), email_id="", provider=event.provider):
                for orphan in StoredProviderEvent.objects(**query):
                    found[orphan.key] = orphan
        adopted = []
        for orphan in found.values():
            if orphan.key == event.key:
                continue
            StoredProviderEvent.objects(key=orphan.key, email_id="").update_one(
                set__email_id=email_id
            )
            orphan.email_id = email_id
            adopted.append(orphan)
    return adopted


def mark_processed(key: str) -> None:
    """Note that every consequence of an event is done (a later retry is a plain duplicate)."""
    with map_mongo_errors():
        StoredProviderEvent.objects(key=key).update_one(set__processed=True)


def _email_event(event: StoredProviderEvent) -> EmailEvent:
    return EmailEvent(
        key=event.key,
        type=event.type,
        provider=event.provider,
        recipient=event.recipient,
        occurred_at=event.occurred_at,
        bounce_type=event.bounce_type or "",
        diagnostic_code=event.diagnostic_code or "",
        description=event.description or "",
        url=event.url or "",
    )


def refresh_email(email_id: str) -> Status | None:
    """Rewrite an email's events, recipient summary and (once SENT) status from its events.

    Two events of one email may refresh at once; each writer checks afterwards that no event
    arrived after its read, and reads again when one did, so the last copy written has them all.

    Returns:
        The overall status the events give (None when the email has none).
    """
    oid = parse_email_id(email_id)
    known = [t.value for t in EventType if t != EventType.UNKNOWN]
    status: Status | None = None
    for _ in range(_REFRESH_ROUNDS):
        with map_mongo_errors():
            events = list(StoredProviderEvent.objects(email_id=email_id, type__in=known))
        recipients = summarize(events)
        status = overall_status(recipients)
        copy = [_email_event(e) for e in sorted(events, key=order)]
        with map_mongo_errors():
            Email.objects(id=oid).update_one(
                set__events=copy[-MAX_EMAIL_EVENTS:], set__recipient_statuses=recipients
            )
            others = [s.value for s in AFTER_SENT_STATUSES if s != status]
            Email.objects(id=oid, status__in=others).update_one(
                set__status=status.value, set__updated_at=utcnow()
            )
            count = StoredProviderEvent.objects(email_id=email_id, type__in=known).count()
        if count == len(events):
            break
    return status
