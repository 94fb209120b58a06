"""Dead letters: emails whose retries ran out, listed and replayed by ``mailroom-admin``.

The ``dead_letter`` actor writes the records (:func:`save_dead_letter`); ``mailroom-admin``
reads them and puts their emails back on the way.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from bson import ObjectId
from bson.errors import InvalidId

from core.errors import FailedPrecondition, NotFound
from core.store.documents import DeadLetter, Email, Status, utcnow
from core.store.mapping import map_mongo_errors
from core.store.repository import get_email
from core.store.turns import TurnPurpose, take_turn

log = logging.getLogger(__name__)


def save_dead_letter(
    email_id: str, *, reason: str, retries: int, message: dict[str, Any]
) -> DeadLetter:
    """Keep (or refresh) the dead-letter record of an email, with its attempts, for analysis."""
    email = get_email(email_id)
    record = DeadLetter(
        email_id=email_id,
        failed_at=utcnow(),
        last_error=reason,
        retries=retries,
        attempts=list(email.attempts),
        message=message,
    )
    with map_mongo_errors():
        record.save(validate=False)
    return record


def has_dead_letter(email_id: str) -> bool:
    """Whether the email has a dead-letter record."""
    with map_mongo_errors():
        return DeadLetter.objects(email_id=email_id).first() is not None


def list_dead_letters(*, include_replayed: bool = False, limit: int = 0) -> list[DeadLetter]:
    """Return dead letters, most recent failure first.

    Args:
        include_replayed: Also those already replayed.
        limit: At most this many (0: all).

    Raises:
        StorageUnavailable: MongoDB is unreachable.
    """
    with map_mongo_errors():
        query = DeadLetter.objects if include_replayed else DeadLetter.objects(replayed_at=None)
        query = query.order_by("-failed_at")
        if limit:
            query = query.limit(limit)
        return list(query)


def get_dead_letter(email_id: str) -> DeadLetter:
    """Return the dead letter of one email.

    Raises:
        NotFound: The email has no dead-letter record.
        StorageUnavailable: MongoDB is unreachable.
    """
    with map_mongo_errors():
        record: DeadLetter | None = DeadLetter.objects(email_id=email_id).first()
    if record is None:
        raise NotFound(f"no dead letter for email {email_id!r}")
    return record


def replay(email_id: str) -> Email | None:
    """Put a dead-lettered email back as QUEUED with fresh retry counters, keeping its history.

    Resets ``attempt_count``, ``provider_attempts``, ``next_attempt_at``, ``last_error`` and the
    current ``provider`` (the next attempt is a first attempt again, by priority), and marks the
    dead letter ``replayed_at``. The caller enqueues the email.

    Args:
        email_id: The dead letter's (and its email's) id.

    Returns:
        The email, QUEUED; None when it is no longer FAILED (already replayed and on its way, or
        sent meanwhile): nothing was changed.

    Raises:
        NotFound: No dead letter for this id.
        FailedPrecondition: The email is FAILED but the retention job purged its content.
        StorageUnavailable: MongoDB is unreachable.
    """
    get_dead_letter(email_id)
    try:
        oid = ObjectId(email_id)
    except (InvalidId, TypeError) as exc:
        raise NotFound(f"no dead letter for email {email_id!r}") from exc

    def failed(email: Email, _now: datetime) -> bool:
        if email.status == Status.FAILED and email.purged_at is not None:
            # The retention job removed its content (as a turn of its own, so never midway
            # through this replay): sending it again would send an empty body.
            raise FailedPrecondition(
                f"email {email_id} was purged by retention on "
                f"{email.purged_at:%Y-%m-%d %H:%M:%S} UTC (its content is gone); "
                "it cannot be replayed"
            )
        return bool(email.status == Status.FAILED)

    def requeue(_email: Email, _now: datetime) -> dict[str, Any]:
        return {
            "set__status": Status.QUEUED,
            "set__attempt_count": 0,
            "set__provider_attempts": {},
            "set__last_error": "",
            "set__provider": "",
            "unset__next_attempt_at": True,
        }

    turn = take_turn(str(oid), purpose=TurnPurpose.REPLAY, allowed=failed, updates=requeue)
    if turn is None:
        return None
    with map_mongo_errors():
        DeadLetter.objects(email_id=email_id).update_one(set__replayed_at=turn.email.updated_at)
    email = turn.email
    log.info("email %s replayed from the dead letters", email_id)
    return email
