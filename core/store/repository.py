"""The emails: the new-email document, inserting it, reading it.

Everything here is one round trip by ``_id``. Changes of an email's state go through its turns
(:mod:`core.store.turns`); driver errors become Mailroom's errors in :mod:`core.store.mapping`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from bson import Binary, ObjectId
from bson.errors import InvalidId
from pymongo.collection import Collection
from pymongo.errors import BulkWriteError

from core.errors import (
    DuplicateKey,
    MailroomError,
    NotFound,
    StorageOutcomeUnknown,
    StorageUnavailable,
)
from core.store.documents import Email, Status, initial_status
from core.store.mapping import map_mongo_errors


@dataclass(frozen=True)
class NewAttachment:
    """A validated attachment."""

    filename: str
    content_type: str
    content: bytes
    content_id: str = ""


@dataclass(frozen=True)
class NewEmail:
    """A validated email, ready to be stored."""

    to: list[str]
    subject: str
    text: str
    from_address: str
    cc: list[str] = field(default_factory=list)
    bcc: list[str] = field(default_factory=list)
    html: str = ""
    reply_to: str = ""
    send_at: datetime | None = None
    idempotency_key: str = ""
    attachments: list[NewAttachment] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)


def parse_email_id(email_id: str) -> ObjectId:
    """Return the ObjectId of an email id.

    Raises:
        NotFound: The id is malformed (so no such email).
    """
    try:
        return ObjectId(email_id)
    except (InvalidId, TypeError) as exc:
        raise NotFound(f"email {email_id!r} not found") from exc


def make_message_id(email_id: str, domain: str) -> str:
    """Return the RFC 5322 Message-ID of an email: derived from its id, stable across attempts."""
    return f"<{email_id}@{domain}>"


def recipient_key(address: str) -> str:
    """The ListEmails lookup key of an address: its addr-spec, lowercased."""
    addr = address.rsplit("<", 1)[-1].rstrip(">").strip() if "<" in address else address.strip()
    return addr.lower()


def metadata_pair(key: str, value: str) -> str:
    """The ListEmails lookup key of one metadata pair."""
    return f"{key}={value}"


#: The spans, in seconds, of ListEmails' time buckets of an email id: an hour, 6 hours, a day,
#: a week, 28 days.
LIST_BUCKET_SPANS = (3600, 6 * 3600, 86_400, 7 * 86_400, 28 * 86_400)


def list_bucket(span: int, second: int) -> str:
    """The ListEmails lookup key of the ``span``-second bucket holding Unix time ``second``."""
    return f"{span}:{second // span}"


def list_buckets(email_id: ObjectId) -> list[str]:
    """The time buckets of an email id's creation second, one per span of LIST_BUCKET_SPANS."""
    second = int(email_id.generation_time.timestamp())
    return [list_bucket(span, second) for span in LIST_BUCKET_SPANS]


def new_email_document(
    new: NewEmail, *, message_id_domain: str, email_id: ObjectId, now: datetime
) -> dict[str, Any]:
    """Return the BSON document of a new :class:`Email`, as ``Email(...).to_mongo()`` would.

    Built by hand because it is the API's hot path: the mongoengine document costs about a
    tenth of a SendEmail's CPU. A unit test keeps the two equal.
    """
    document: dict[str, Any] = {
        "_id": email_id,
        "status": str(initial_status(new.send_at, now)),
        "to": list(new.to),
        "cc": list(new.cc),
        "bcc": list(new.bcc),
        "subject": new.subject,
        "text": new.text,
        "html": new.html,
        "from_address": new.from_address,
        "reply_to": new.reply_to,
        "message_id": make_message_id(str(email_id), message_id_domain),
        "created_at": now,
        "updated_at": now,
        "claim_generation": 0,  # Email.last_turn (its stored name predates cancels and replays)
        "attempt_count": 0,
        "provider_attempts": {},
        "provider": "",
        "provider_message_id": "",
        "last_error": "",
        "attempts": [],
        "attachments": [
            {
                "filename": a.filename,
                "content_type": a.content_type,
                "content": Binary(a.content),
                "content_id": a.content_id,
                "size": len(a.content),
            }
            for a in new.attachments
        ],
        "headers": dict(new.headers),
        "tags": list(new.tags),
        "metadata": dict(new.metadata),
        "recipients": sorted({recipient_key(a) for a in (*new.to, *new.cc, *new.bcc)}),
        "metadata_pairs": [metadata_pair(k, v) for k, v in sorted(new.metadata.items())],
        "list_buckets": list_buckets(email_id),
        # Provider events and their per-recipient summary (core.store.events).
        "events": [],
        "recipient_statuses": [],
    }
    if new.idempotency_key:
        document["idempotency_key"] = new.idempotency_key
    if new.send_at is not None:
        document["send_at"] = new.send_at
    return document


def insert_email(document: dict[str, Any]) -> None:
    """Insert a new email document (from :func:`new_email_document`) as it is.

    Raises:
        DuplicateKey: An email with this ``_id`` exists (the caller's own earlier attempt, or
            the first request with the same idempotency key).
        StorageOutcomeUnknown: The insert was sent, but whether it landed is unknown.
        StorageUnavailable: MongoDB is unreachable or refused the write.
    """
    with map_mongo_errors():
        Email._get_collection().insert_one(document)


#: MongoDB's duplicate key error code.
DUPLICATE_KEY_CODE = 11000


@dataclass(frozen=True)
class BulkInsert:
    """What an unordered ``insert_many`` did, document by document (indexes into its list).

    Every document in neither set was inserted by it.

    Attributes:
        existing: Met an existing ``_id``: not inserted by this write, but a document with the
            ``_id`` is there.
        refused: Refused for another reason: not stored.
    """

    existing: frozenset[int] = frozenset()
    refused: frozenset[int] = frozenset()


def insert_new(
    collection: Collection[dict[str, Any]], documents: list[dict[str, Any]]
) -> BulkInsert:
    """Insert documents with one unordered bulk write; report each one's fate.

    Unordered, so that one refused document does not stop the ones after it. Shared by the
    batch writes of emails, idempotency keys and turns. A batch fits in one message (gRPC admits
    at most 32 MiB, pymongo splits at 48 MB), so a whole-write error means nothing was stored.

    Raises:
        StorageOutcomeUnknown: The write was sent but its outcome is unknown (for any of the
            documents); a write concern error counts as unknown too.
        StorageUnavailable: MongoDB is unreachable or refused the whole write: none is stored.
    """
    if not documents:
        return BulkInsert()
    with map_mongo_errors():
        try:
            collection.insert_many(documents, ordered=False)
        except BulkWriteError as exc:
            details = exc.details or {}
            if details.get("writeConcernErrors"):
                raise StorageOutcomeUnknown(
                    "storage did not confirm the write (write concern error)"
                ) from exc
            errors = [(int(e["index"]), e.get("code")) for e in details.get("writeErrors", [])]
            return BulkInsert(
                existing=frozenset(i for i, code in errors if code == DUPLICATE_KEY_CODE),
                refused=frozenset(i for i, code in errors if code != DUPLICATE_KEY_CODE),
            )
    return BulkInsert()


def insert_emails(documents: list[dict[str, Any]]) -> BulkInsert:
    """Insert new email documents (from :func:`new_email_document`) with one bulk write.

    A document in ``existing`` is stored: as for :func:`insert_email`'s :class:`DuplicateKey`,
    its ``_id`` was written by the caller's own earlier attempt (a driver retry that landed) or
    by an idempotent retry storing the same email.

    Raises:
        StorageOutcomeUnknown: The write was sent but its outcome is unknown.
        StorageUnavailable: MongoDB is unreachable or refused the whole write: none is stored.
    """
    return insert_new(Email._get_collection(), documents)


def insert_email_group(documents: list[dict[str, Any]]) -> list[MailroomError | None]:
    """:func:`insert_emails` for :class:`core.group_commit.GroupCommit`: each document's fate.

    Returns:
        Per document, in order: None (inserted), :class:`DuplicateKey` (as
        :func:`insert_email` raises it), or :class:`StorageUnavailable` (refused: not stored).

    Raises:
        StorageOutcomeUnknown: The write was sent but its outcome is unknown.
        StorageUnavailable: MongoDB is unreachable or refused the whole write: none is stored.
    """
    stored = insert_emails(documents)
    fates: list[MailroomError | None] = []
    for index in range(len(documents)):
        if index in stored.existing:
            fates.append(DuplicateKey("duplicate key: an email with this id exists"))
        elif index in stored.refused:
            fates.append(StorageUnavailable("storage refused the email"))
        else:
            fates.append(None)
    return fates


def find_email(email_id: str) -> Email | None:
    """Return the email with this id, or None when there is none (or the id is malformed).

    Raises:
        StorageUnavailable: MongoDB is unreachable.
    """
    try:
        oid = ObjectId(email_id)
    except (InvalidId, TypeError):
        return None
    # The raw collection and _from_son, not a queryset: every delivery and GetEmail reads one
    # email, and the queryset's machinery cost as much CPU as decoding the document.
    with map_mongo_errors():
        raw = Email._get_collection().find_one({"_id": oid})
    return None if raw is None else Email._from_son(raw)


def get_email(email_id: str) -> Email:
    """Return the email with this id.

    Raises:
        NotFound: No such email (or a malformed id).
        StorageUnavailable: MongoDB is unreachable.
    """
    email = find_email(email_id)
    if email is None:
        raise NotFound(f"email {email_id!r} not found")
    return email


#: Statuses a worker may claim (SCHEDULED only once ``send_at`` has passed).
CLAIMABLE = frozenset({Status.QUEUED, Status.RETRYING, Status.SCHEDULED})
CANCELLABLE = frozenset({Status.SCHEDULED, Status.QUEUED})
