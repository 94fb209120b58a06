"""The mongoengine documents of Mailroom.

Written for both MongoDB 7 and FerretDB 1.24: no sparse, partial or TTL indexes, no transactions.
FerretDB 1.24 does not make a conditional update or find-and-modify atomic (it reads, then
writes), on PostgreSQL as on SQLite: measured on PostgreSQL 15, 8 threads running the same
``find_one_and_update({"_id": …, "status": "QUEUED"}, …)`` had several winners in 19 of 20
trials. Inserting a duplicate ``_id`` does fail atomically
on both. So every contested state change of an email (claim, cancel, fail, replay) first inserts
an :class:`EmailTurn` keyed ``<email id>:<generation>``: exactly one writer gets each generation.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from mongoengine import (
    BinaryField,
    DateTimeField,
    DictField,
    Document,
    EmbeddedDocument,
    EmbeddedDocumentListField,
    FloatField,
    IntField,
    ListField,
    StringField,
)


def utcnow() -> datetime:
    """Return the current time, UTC, truncated to milliseconds as BSON stores it."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000, tzinfo=None)


class Status(StrEnum):
    """Where an email is on its way; mirrors ``mailroom.v1.EmailStatus``."""

    SCHEDULED = "SCHEDULED"
    QUEUED = "QUEUED"
    SENDING = "SENDING"
    RETRYING = "RETRYING"
    SENT = "SENT"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    # After SENT, from the providers' events (core.store.event_status has the rule).
    DELIVERED = "DELIVERED"
    BOUNCED = "BOUNCED"
    COMPLAINED = "COMPLAINED"


#: What the providers' events may still change: SENT and the outcomes after it.
AFTER_SENT_STATUSES = frozenset({Status.SENT, Status.DELIVERED, Status.BOUNCED, Status.COMPLAINED})
FINAL_STATUSES = frozenset({Status.FAILED, Status.CANCELLED}) | AFTER_SENT_STATUSES


def is_scheduled(send_at: datetime | None, now: datetime) -> bool:
    """The one rule for "is it scheduled?": it waits while ``send_at`` is later than ``now``.

    A ``send_at`` in the past means "send now" (it is kept, for the record).
    """
    return send_at is not None and send_at > now


def initial_status(send_at: datetime | None, now: datetime) -> Status:
    """The status a new email is stored with: SCHEDULED or QUEUED."""
    return Status.SCHEDULED if is_scheduled(send_at, now) else Status.QUEUED


def delay_ms(send_at: datetime | None, now: datetime) -> int | None:
    """How long a new email's delivery message waits on the queue (None: not at all)."""
    if send_at is None or not is_scheduled(send_at, now):
        return None
    return int((send_at - now).total_seconds() * 1000)


class Outcome(StrEnum):
    """How one attempt ended; mirrors ``mailroom.v1.AttemptOutcome``."""

    DELIVERED = "DELIVERED"
    TRANSIENT = "TRANSIENT"
    PERMANENT = "PERMANENT"
    THROTTLED = "THROTTLED"
    MISCONFIGURED = "MISCONFIGURED"
    NO_PROVIDER = "NO_PROVIDER"
    INTERRUPTED = "INTERRUPTED"


class Attempt(EmbeddedDocument):
    """One try to hand the email to a provider."""

    provider = StringField(default="")
    started_at = DateTimeField(required=True)
    duration_ms = FloatField(default=0.0)
    outcome = StringField(required=True, choices=[o.value for o in Outcome])
    error = StringField(default="")
    response = StringField(default="")
    worker = StringField(default="")


class EmailEvent(EmbeddedDocument):
    """One normalized provider event of an email (a copy; ``provider_events`` is the source)."""

    key = StringField(required=True)
    type = StringField(required=True)
    provider = StringField(default="")
    recipient = StringField(default="")
    occurred_at = DateTimeField(required=True)
    bounce_type = StringField(default="")
    diagnostic_code = StringField(default="")
    description = StringField(default="")
    url = StringField(default="")


class RecipientStatus(EmbeddedDocument):
    """Where one recipient's copy ended, from the provider events about it."""

    address = StringField(required=True)
    status = StringField(required=True)
    updated_at = DateTimeField(required=True)
    diagnostic_code = StringField(default="")


class StoredAttachment(EmbeddedDocument):
    """A file sent with an email."""

    filename = StringField(required=True)
    content_type = StringField(required=True)
    content = BinaryField()
    content_id = StringField(default="")
    # The decoded size in bytes, kept after the retention job removed the content.
    size = IntField(default=0)


class Email(Document):
    """An accepted email and its delivery state."""

    meta: dict[str, Any] = {
        "collection": "emails",
        # Indexes are created once at start-up (ensure_indexes), never lazily on a request.
        "auto_create_index": False,
        "indexes": [
            # The rescan walks pending emails of one status by _id; ListEmails' status filter.
            {"fields": ["status", "id"]},
            # The retention job walks the final emails not yet purged by _id (core.store.retention).
            {"fields": ["status", "purged_at", "id"]},
            # ListEmails: each filter with its newest-first order (_id descending; an index is
            # walked either way). The array fields are multikey: one entry per element.
            {"fields": ["recipients", "id"]},
            {"fields": ["tags", "id"]},
            {"fields": ["metadata_pairs", "id"]},
            {"fields": ["provider", "id"]},
            {"fields": ["idempotency_key"]},
            {"fields": ["created_at"]},
            # Provider events find their email by the provider's id or by our Message-ID.
            {"fields": ["provider_message_id"]},
            {"fields": ["message_id"]},
        ],
    }

    status = StringField(required=True, choices=[s.value for s in Status])
    to = ListField(StringField(), required=True)
    cc = ListField(StringField())
    bcc = ListField(StringField())
    subject = StringField(default="")
    text = StringField(default="")
    html = StringField(default="")
    from_address = StringField(required=True)
    reply_to = StringField(default="")
    message_id = StringField(required=True)
    idempotency_key = StringField()

    created_at = DateTimeField(required=True)
    updated_at = DateTimeField(required=True)
    send_at = DateTimeField()
    sent_at = DateTimeField()

    # The generation of the last EmailTurn whose change is written here (see EmailTurn). A
    # worker's claim is the turn after it, and holds the email until the turn's expires_at.
    # Stored as claim_generation, its name from when only claims took turns.
    last_turn = IntField(db_field="claim_generation", default=0)
    attempt_count = IntField(default=0)
    # Attempts per provider, so a retry stays with a provider until its own budget is spent.
    provider_attempts = DictField()
    next_attempt_at = DateTimeField()
    provider = StringField(default="")
    provider_message_id = StringField(default="")
    last_error = StringField(default="")
    attempts = EmbeddedDocumentListField(Attempt)

    attachments = EmbeddedDocumentListField(StoredAttachment)
    # Extra headers, name -> value (names are [A-Za-z0-9-], so they are safe BSON keys).
    headers = DictField()
    tags = ListField(StringField())
    metadata = DictField()
    # Lookup keys for ListEmails, each behind a multikey index: every to/cc/bcc addr-spec,
    # lowercased; and "key=value" for each metadata pair (one index serves any key).
    recipients = ListField(StringField())
    metadata_pairs = ListField(StringField())
    # The hour to 28-day buckets of the id's time (repository.list_buckets): FerretDB
    # sorts a query's whole result in memory, so ListEmails walks these newest first there.
    list_buckets = ListField(StringField())
    # When the retention job removed the bodies, attachments and headers.
    purged_at = DateTimeField()
    # The provider events (oldest first, the latest MAX_EMAIL_EVENTS) and the per-recipient
    # summary, both rewritten from the provider_events collection (core.store.events).
    events = EmbeddedDocumentListField(EmailEvent)
    recipient_statuses = EmbeddedDocumentListField(RecipientStatus)


class EmailTurn(Document):
    """One writer's exclusive right to change an email's state: generation N of email E.

    Inserted with ``_id = "E:N"``; a second insert of the same ``_id`` fails on MongoDB and
    FerretDB alike, which makes the turn the atomic step that find-and-modify is not on FerretDB.
    A worker's claim is a turn with an expiry (its lease): the email document is written once,
    with the outcome, fenced by ``last_turn``. Old turns are purged periodically; they
    only matter while a writer holds them.
    """

    meta: dict[str, Any] = {
        "collection": "email_turns",
        "auto_create_index": False,
        # The hourly purge of old turns; ListEmails' live claims (core.store.sending).
        "indexes": [{"fields": ["created_at"]}, {"fields": ["list_buckets"]}],
    }

    key = StringField(primary_key=True)
    email_id = StringField(required=True)
    purpose = StringField(required=True)
    owner = StringField(default="")
    created_at = DateTimeField(required=True)
    # A claim's lease: the worker holds the email until then.
    expires_at = DateTimeField()
    # The provider a claim sends through (shown when its worker dies mid-send).
    provider = StringField(default="")
    # A claim's lease minutes ("lease:<minute>"), by which ListEmails finds the live claims.
    list_buckets = ListField(StringField())


class IdempotencyKey(Document):
    """An idempotency key, keyed by ``_id`` (FerretDB has no TTL index: purged periodically)."""

    meta: dict[str, Any] = {
        "collection": "idempotency_keys",
        "auto_create_index": False,
        # The hourly purge of expired keys.
        "indexes": [{"fields": ["expires_at"]}],
    }

    key = StringField(primary_key=True)
    fingerprint = StringField(required=True)
    email_id = StringField(required=True)
    created_at = DateTimeField(required=True)
    expires_at = DateTimeField(required=True)


class DeadLetter(Document):
    """An email whose retries ran out, kept for analysis and replay."""

    meta: dict[str, Any] = {"collection": "dead_letters", "auto_create_index": False}

    email_id = StringField(primary_key=True)
    failed_at = DateTimeField(required=True)
    last_error = StringField(default="")
    retries = IntField(default=0)
    attempts = EmbeddedDocumentListField(Attempt)
    message = DictField()
    replayed_at = DateTimeField()
