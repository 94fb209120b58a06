"""Repository functions: storing, reading and cancelling emails, and turns (one writer each).

pymongo and mongoengine exceptions are translated here, in :func:`map_mongo_errors`, and nowhere
else: callers see :class:`server.errors.StorageUnavailable`. The other store modules build on
this one: :mod:`~server.store.claims` (workers' claims and outcomes),
:mod:`~server.store.idempotency`, :mod:`~server.store.dead_letters` and
:mod:`~server.store.pending` (the rescan's queries).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from bson import ObjectId
from bson.errors import InvalidId
from mongoengine.errors import MongoEngineException
from pymongo.errors import DuplicateKeyError, PyMongoError

from server.errors import FailedPrecondition, NotFound, StorageUnavailable
from server.store.documents import (
    Email,
    EmailTurn,
    Status,
    utcnow,
)

log = logging.getLogger(__name__)


@contextmanager
def map_mongo_errors() -> Iterator[None]:
    """Translate MongoDB driver and ODM errors into :class:`StorageUnavailable`."""
    try:
        yield
    except (PyMongoError, MongoEngineException) as exc:
        raise StorageUnavailable(f"storage unavailable: {type(exc).__name__}: {exc}") from exc


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


def new_email_document(
    new: NewEmail, *, message_id_domain: str, email_id: ObjectId, now: datetime
) -> dict[str, Any]:
    """Return the BSON document of a new :class:`Email`, as ``Email(...).to_mongo()`` would.

    Built by hand because it is the API's hot path: the mongoengine document costs about a
    tenth of a SendEmail's CPU. A unit test keeps the two equal.
    """
    scheduled = new.send_at is not None and new.send_at > now
    document: dict[str, Any] = {
        "_id": email_id,
        "status": str(Status.SCHEDULED if scheduled else Status.QUEUED),
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
        "claim_generation": 0,
        "attempt_count": 0,
        "provider_attempts": {},
        "provider": "",
        "provider_message_id": "",
        "last_error": "",
        "attempts": [],
    }
    if new.idempotency_key:
        document["idempotency_key"] = new.idempotency_key
    if new.send_at is not None:
        document["send_at"] = new.send_at
    return document


def _insert_new(new: NewEmail, *, message_id_domain: str, email_id: ObjectId) -> dict[str, Any]:
    document = new_email_document(
        new, message_id_domain=message_id_domain, email_id=email_id, now=utcnow()
    )
    with map_mongo_errors():
        Email._get_collection().insert_one(document)
    return document


def create_email(
    new: NewEmail, *, message_id_domain: str, email_id: ObjectId | None = None
) -> Email:
    """Insert a new email, QUEUED (or SCHEDULED when ``send_at`` is in the future).

    Args:
        new: The validated email.
        message_id_domain: The right-hand side of the generated Message-ID.
        email_id: A pre-allocated id (used with idempotency keys).

    Returns:
        The stored document.

    Raises:
        StorageUnavailable: MongoDB is unreachable or refused the write.
    """
    document = _insert_new(
        new, message_id_domain=message_id_domain, email_id=email_id or ObjectId()
    )
    return Email._from_son(document)  # type: ignore[no-any-return]


@dataclass(frozen=True)
class Accepted:
    """What the API needs to answer and enqueue an accepted email."""

    id: str
    status: Status
    send_at: datetime | None
    created: bool


def ensure_email(new: NewEmail, *, message_id_domain: str, email_id: ObjectId) -> Accepted:
    """Store the email under ``email_id`` unless a request with the same idempotency key did.

    Args:
        new: The validated email.
        message_id_domain: The right-hand side of the generated Message-ID.
        email_id: The id reserved with the idempotency key.

    Returns:
        The email's id, status and ``send_at``, and whether this call created it.

    Raises:
        StorageUnavailable: MongoDB is unreachable or refused the write.
    """
    try:
        document = _insert_new(new, message_id_domain=message_id_domain, email_id=email_id)
        return Accepted(str(email_id), Status(document["status"]), new.send_at, created=True)
    except StorageUnavailable as exc:
        if not isinstance(exc.__cause__, DuplicateKeyError):
            raise
    email = get_email(str(email_id))
    return Accepted(str(email.id), Status(email.status), email.send_at, created=False)


def get_email(email_id: str) -> Email:
    """Return the email with this id.

    Raises:
        NotFound: No such email (or a malformed id).
        StorageUnavailable: MongoDB is unreachable.
    """
    oid = parse_email_id(email_id)
    with map_mongo_errors():
        email = Email.objects(id=oid).first()
    if email is None:
        raise NotFound(f"email {email_id!r} not found")
    return email  # type: ignore[no-any-return]


CANCELLABLE = frozenset({Status.SCHEDULED, Status.QUEUED})


def cancel_email(email_id: str) -> Email:
    """Cancel a SCHEDULED or QUEUED email that no worker has claimed.

    Raises:
        NotFound: No such email.
        FailedPrecondition: The email is in another status (named in the message).
    """

    def cancellable(email: Email, _now: datetime) -> bool:
        return email.status in CANCELLABLE

    def cancel(_email: Email, _now: datetime) -> dict[str, Any]:
        return {"set__status": Status.CANCELLED, "set__last_error": "cancelled by request"}

    turn = take_turn(email_id, purpose="cancel", allowed=cancellable, updates=cancel)
    if turn is not None:
        return turn.email
    current = get_email(email_id)
    status = current.status if current.status not in CANCELLABLE else Status.SENDING
    raise FailedPrecondition(
        f"email {email_id} is {status}; only SCHEDULED or QUEUED emails can be cancelled"
    )


# --- turns: one writer per state change ------------------------------------------------------


@dataclass(frozen=True)
class Turn:
    """An exclusive state change of an email.

    Attributes:
        before: The email as read before the change.
        email: The email after the change.
        generation: The turn's generation (``Email.claim_generation`` now).
    """

    before: Email
    email: Email
    generation: int


def _insert_turn(email_id: str, generation: int, purpose: str, owner: str) -> bool:
    """Insert turn ``generation`` of the email; False when another writer has it already."""
    doc = EmailTurn(
        key=f"{email_id}:{generation}",
        email_id=email_id,
        purpose=purpose,
        owner=owner,
        created_at=utcnow(),
    )
    try:
        with map_mongo_errors():
            EmailTurn._get_collection().insert_one(doc.to_mongo())
    except StorageUnavailable as exc:
        if isinstance(exc.__cause__, DuplicateKeyError):
            return False
        raise
    return True


#: A turn whose writer died between taking it and writing its change blocks that generation for
#: everyone; once it is this old (and the email still shows the generation before it), the next
#: writer skips it. Far longer than the one write that follows a turn.
TURN_TAKEOVER = timedelta(seconds=60)
_MAX_SKIPPED_TURNS = 3


def _orphaned(email_id: str, generation: int, read_generation: int, takeover: timedelta) -> bool:
    """Whether turn ``generation`` was taken long ago and its change never written."""
    with map_mongo_errors():
        turn = EmailTurn.objects(key=f"{email_id}:{generation}").first()
    if turn is None or utcnow() - turn.created_at < takeover:
        return False
    # Re-read: a slow but live writer has moved the email past the generation we read.
    return int(get_email(email_id).claim_generation or 0) == read_generation


def take_turn(
    email_id: str,
    *,
    purpose: str,
    allowed: Callable[[Email, datetime], bool],
    updates: Callable[[Email, datetime], dict[str, Any]],
    owner: str = "",
    takeover: timedelta = TURN_TAKEOVER,
) -> Turn | None:
    """Change an email's state when ``allowed`` permits, with no other writer in between.

    Reads the email, checks ``allowed(email, now)``, takes the next :class:`EmailTurn` (one
    insert: exactly one concurrent writer succeeds, on MongoDB and FerretDB alike), then applies
    ``updates(email, now)`` (mongoengine update keywords). A writer that read a stale email
    loses at the insert, because the generation it wants is taken.

    Args:
        email_id: The email.
        purpose: Why (``claim``, ``cancel``, ``fail``, ``replay``…), kept on the turn.
        allowed: Whether the email's current state permits the change.
        updates: The update to apply.
        owner: Who takes the turn (a worker id), kept on the turn.
        takeover: A turn this old whose change was never written (its writer died in between:
            a SIGKILLed worker) is skipped, so the email is not blocked forever.

    Returns:
        The turn, or None when the state does not permit the change or another writer won.

    Raises:
        NotFound: No such email.
        StorageUnavailable: MongoDB is unreachable.
    """
    before = get_email(email_id)
    now = utcnow()
    if not allowed(before, now):
        return None
    read_generation = int(before.claim_generation or 0)
    generation = read_generation + 1
    while not _insert_turn(email_id, generation, purpose, owner):
        if generation - read_generation >= _MAX_SKIPPED_TURNS or not _orphaned(
            email_id, generation, read_generation, takeover
        ):
            return None
        log.warning(
            "email %s: turn %d was taken over %s ago and never used (its writer died); skipping it",
            email_id,
            generation,
            takeover,
        )
        generation += 1
    changes = {"set__claim_generation": generation, "set__updated_at": now, **updates(before, now)}
    with map_mongo_errors():
        Email.objects(id=before.id).update_one(**changes)
    return Turn(before, get_email(email_id), generation)


def failed_updates(error: str) -> dict[str, Any]:
    """The :func:`take_turn` update that makes an email FAILED with ``error``, lease dropped."""
    return {
        "set__status": Status.FAILED,
        "set__last_error": error,
        "unset__lease_token": True,
        "unset__lease_expires_at": True,
    }


def purge_turns(older_than: timedelta, now: datetime | None = None) -> int:
    """Delete turns older than ``older_than``; return how many.

    Turns only guard writers in flight, so anything older than a day is safe to drop.
    """
    cutoff = (now or utcnow()) - older_than
    with map_mongo_errors():
        return int(EmailTurn.objects(created_at__lt=cutoff).delete())
