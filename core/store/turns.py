"""Turns: one writer per state change of an email, on MongoDB and FerretDB alike.

A turn is the insert of ``<email id>:<generation>`` into ``email_turns``; a duplicate ``_id``
fails atomically where find-and-modify is not atomic (FerretDB 1.24). Claims (with a lease),
cancels, fails, replays, and the API's void and accept of an unconfirmed insert all take turns.
Taking one is :mod:`core.store.turn_taking` (re-exported here); this module holds the state
changes made with them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from core.errors import Aborted, FailedPrecondition
from core.store.documents import Email, EmailTurn, Status, utcnow
from core.store.mapping import map_mongo_errors
from core.store.repository import (
    CANCELLABLE,
    CLAIMABLE,
    get_email,
    insert_new,
    parse_email_id,
)
from core.store.turn_taking import TurnBlocked as TurnBlocked
from core.store.turn_taking import TurnPurpose as TurnPurpose
from core.store.turn_taking import TurnTaken as TurnTaken
from core.store.turn_taking import acquire_turn as acquire_turn
from core.store.turn_taking import insert_turn, is_live
from core.store.turn_taking import read_turn as read_turn


def get_email_as_seen(email_id: str) -> Email:
    """Return the email, its status SENDING while a worker's live claim holds it.

    A claim is a turn (see :func:`acquire_turn`) and writes the email only with the outcome, so
    the status stored in the document stays QUEUED or RETRYING during a send; this read of the
    next turn shows what is happening. An email the API voided is CANCELLED even when its
    insert landed after the void's write (the next claim would write that outcome).

    Raises:
        NotFound: No such email.
        StorageUnavailable: MongoDB is unreachable.
    """
    email = get_email(email_id)
    if email.status in CLAIMABLE:
        turn = read_turn(email_id, int(email.last_turn or 0) + 1)
        if turn is not None and turn.purpose == TurnPurpose.CLAIM and is_live(turn, utcnow()):
            email.status = Status.SENDING
            email.provider = turn.provider or email.provider
        elif turn is not None and turn.purpose == TurnPurpose.VOID:
            email.status = Status.CANCELLED
            email.last_error = VOID_REASON
    return email


def cancel_email(email_id: str) -> Email:
    """Cancel a SCHEDULED or QUEUED email that no worker has claimed.

    A cancel racing a worker takes the email's next turn like the worker's claim: one of them
    wins. A cancel that loses to the claim is refused as "already being sent"; one that meets
    another writer between its turn and its write (a second cancel, a dead-lettering) is
    :class:`Aborted`, to be retried: the retry sees the outcome.

    Raises:
        NotFound: No such email.
        FailedPrecondition: The email is being sent, or is in another status (named in the
            message).
        Aborted: Another writer is changing the email right now; try again.
    """

    def cancellable(email: Email, _now: datetime) -> bool:
        return email.status in CANCELLABLE

    def cancel(_email: Email, _now: datetime) -> dict[str, Any]:
        return {"set__status": Status.CANCELLED, "set__last_error": "cancelled by request"}

    turn = _take_turn(email_id, purpose=TurnPurpose.CANCEL, allowed=cancellable, updates=cancel)
    if isinstance(turn, Turn):
        return turn.email
    refused = "only SCHEDULED or QUEUED emails can be cancelled"
    current = get_email(email_id)
    if current.status not in CANCELLABLE:  # a worker's outcome, another cancel's, a void's
        raise FailedPrecondition(f"email {email_id} is {current.status}; {refused}")
    if turn is None:  # cancellable as read again: it moved back (a replay) since the first read
        raise Aborted(f"email {email_id} changed while it was being cancelled; try again")
    if turn.reason == "held":
        raise FailedPrecondition(f"email {email_id} is already being sent (SENDING); {refused}")
    if turn.reason == "void":  # its CANCELLED is being written
        raise FailedPrecondition(f"email {email_id} was not accepted (CANCELLED); {refused}")
    raise Aborted(f"email {email_id} is being changed by another request; try again")


@dataclass(frozen=True)
class Turn:
    """An exclusive state change of an email.

    Attributes:
        before: The email as read before the change.
        email: The email after the change.
        generation: The turn's generation (``Email.last_turn`` now).
    """

    before: Email
    email: Email
    generation: int


def take_turn(
    email_id: str,
    *,
    purpose: TurnPurpose,
    allowed: Callable[[Email, datetime], bool],
    updates: Callable[[Email, datetime], dict[str, Any]],
) -> Turn | None:
    """Change an email's state when ``allowed`` permits, with no other writer in between.

    Reads the email, checks ``allowed(email, now)``, takes the next turn
    (:func:`acquire_turn`), then applies ``updates(email, now)`` (mongoengine update keywords)
    and reads the result. Used by the rarer writers (cancel, fail, replay); a worker's claim
    takes its turn itself and writes only the outcome.

    Returns:
        The turn, or None when the state does not permit the change or another writer won.

    Raises:
        NotFound: No such email.
        StorageUnavailable: MongoDB is unreachable.
    """
    turn = _take_turn(email_id, purpose=purpose, allowed=allowed, updates=updates)
    return turn if isinstance(turn, Turn) else None


def _take_turn(
    email_id: str,
    *,
    purpose: TurnPurpose,
    allowed: Callable[[Email, datetime], bool],
    updates: Callable[[Email, datetime], dict[str, Any]],
) -> Turn | TurnBlocked | None:
    """:func:`take_turn`, saying why another writer won (None: the state did not permit it)."""
    before = get_email(email_id)
    now = utcnow()
    if not allowed(before, now):
        return None
    taken = acquire_turn(before, purpose)
    if isinstance(taken, TurnBlocked):
        return taken
    changes = {
        "set__last_turn": taken.generation,
        "set__updated_at": now,
        **updates(before, now),
    }
    with map_mongo_errors():
        Email.objects(id=before.id, last_turn__lt=taken.generation).update_one(**changes)
    return Turn(before, get_email(email_id), taken.generation)


def failed_updates(error: str) -> dict[str, Any]:
    """The :func:`take_turn` update that makes an email FAILED with ``error``."""
    return {"set__status": Status.FAILED, "set__last_error": error}


VOID_REASON = (
    "not accepted: the store did not confirm the email in time and the API answered so; "
    "it is never sent"
)


def void_email(email_id: str) -> bool:
    """Make sure an email whose insert the API could not confirm is never sent.

    Takes the email's first turn as ``void`` (claims meet it and cancel the email) and
    cancels the document if it landed. Loses to an idempotent retry that accepted the email
    first (or a claim after it).

    Returns:
        True when the email is void; False when a retry accepted it first.

    Raises:
        StorageUnavailable: MongoDB is unreachable (the caller tries again later).
    """
    if not insert_turn(email_id, 1, TurnPurpose.VOID):
        turn = read_turn(email_id, 1)
        if turn is None or turn.purpose != TurnPurpose.VOID:
            return False
    cancel_void(email_id, generation=1)
    return True


def cancel_void(email_id: str, *, generation: int) -> None:
    """Write the CANCELLED outcome of a void turn (idempotent; nothing when the email is absent)."""
    now = utcnow()
    with map_mongo_errors():
        Email.objects(id=parse_email_id(email_id), last_turn__lt=generation).update_one(
            set__status=Status.CANCELLED,
            set__last_error=VOID_REASON,
            set__last_turn=generation,
            set__updated_at=now,
        )


def accept_email(email_id: str) -> bool | None:
    """Claim an email for an idempotent retry, against a ``void`` of its first request.

    Returns:
        None when the email was voided (its first request was answered "not accepted"); True
        when this call accepted it (the caller makes sure it is stored and enqueued); False
        when it was accepted already (a worker claimed it, or another retry accepted it).

    Raises:
        StorageUnavailable: MongoDB is unreachable.
    """
    if insert_turn(email_id, 1, TurnPurpose.ACCEPT):
        return True
    turn = read_turn(email_id, 1)
    if turn is not None and turn.purpose == TurnPurpose.VOID:
        return None
    return False


def accept_emails(email_ids: list[str]) -> list[bool | None]:
    """:func:`accept_email` for many emails: one bulk insert of the turns, one read of the taken.

    Returns:
        For each id, what :func:`accept_email` returns for it.

    Raises:
        StorageOutcomeUnknown: The bulk insert's outcome is unknown.
        StorageUnavailable: MongoDB is unreachable.
    """
    now = utcnow()
    # The turn insert_turn writes, generation 1 of each email.
    docs = [
        {
            "_id": f"{i}:1",
            "email_id": i,
            "purpose": str(TurnPurpose.ACCEPT),
            "owner": "",
            "created_at": now,
        }
        for i in email_ids
    ]
    outcome = insert_new(EmailTurn._get_collection(), docs)
    results: list[bool | None] = [True] * len(email_ids)
    for index in outcome.refused:
        results[index] = accept_email(email_ids[index])  # one at a time, as a retry would
    if outcome.existing:
        keys = [docs[index]["_id"] for index in outcome.existing]
        with map_mongo_errors():
            purposes = {t.key: t.purpose for t in EmailTurn.objects(key__in=keys)}
        for index in outcome.existing:
            purpose = purposes.get(docs[index]["_id"])
            results[index] = None if purpose == TurnPurpose.VOID else False
    return results


def purge_turns(older_than: timedelta, now: datetime | None = None) -> int:
    """Delete turns older than ``older_than``; return how many.

    Turns only guard writers in flight, so anything older than a day is safe to drop.
    """
    cutoff = (now or utcnow()) - older_than
    with map_mongo_errors():
        return int(EmailTurn.objects(created_at__lt=cutoff).delete())
