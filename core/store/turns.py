"""Turns: one writer per state change of an email, on MongoDB and FerretDB alike.

A turn is the insert of ``<email id>:<generation>`` into ``email_turns``; a duplicate ``_id``
fails atomically where find-and-modify is not atomic (FerretDB 1.24). Claims (with a lease),
cancels, fails, replays, and the API's void and accept of an unconfirmed insert all take turns.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from core.errors import Aborted, DuplicateKey, FailedPrecondition
from core.store.documents import Email, EmailTurn, Status, utcnow
from core.store.mapping import map_mongo_errors
from core.store.repository import (
    CANCELLABLE,
    CLAIMABLE,
    find_email,
    get_email,
    insert_new,
    parse_email_id,
)

log = logging.getLogger(__name__)


def get_email_as_seen(email_id: str) -> Email:
    """Return the email, its status SENDING while a worker's live claim holds it.

    A claim is a turn (see :func:`acquire_turn`) and writes the email only with the outcome, so
    the status stored in the document stays QUEUED or RETRYING during a send; this read of the
    next turn shows what is happening.

    Raises:
        NotFound: No such email.
        StorageUnavailable: MongoDB is unreachable.
    """
    email = get_email(email_id)
    if email.status in CLAIMABLE:
        turn = read_turn(email_id, int(email.last_turn or 0) + 1)
        if turn is not None and turn.purpose == TurnPurpose.CLAIM and _live(turn, utcnow()):
            email.status = Status.SENDING
            email.provider = turn.provider or email.provider
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


# --- turns: one writer per state change ------------------------------------------------------


class TurnPurpose(StrEnum):
    """Why a turn was taken; kept on the :class:`EmailTurn`."""

    CLAIM = "claim"
    CANCEL = "cancel"
    FAIL = "fail"
    REPLAY = "replay"
    #: The API could not confirm the email's insert and answered that it was not accepted.
    VOID = "void"
    #: An idempotent retry took over an email whose first request got no confirmed answer.
    ACCEPT = "accept"
    #: The retention job removed an old final email's content (core.store.retention).
    PURGE = "purge"


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


@dataclass(frozen=True)
class TurnTaken:
    """A turn this writer holds.

    Attributes:
        generation: Its generation; the writer's update sets ``last_turn`` to it.
        interrupted: An expired claim skipped on the way: a worker died (or stalled past its
            lease) mid-send, so the provider may have accepted the email already.
    """

    generation: int
    interrupted: EmailTurn | None = None


@dataclass(frozen=True)
class TurnBlocked:
    """Why a writer could not take a turn.

    Attributes:
        reason: ``held`` (a worker's live claim), ``void`` (the email was never accepted),
            ``busy`` (another writer is between its turn and its write) or ``moved`` (the
            email changed since it was read).
        until: When the live claim expires (``held``).
    """

    reason: str
    until: datetime | None = None


def _insert_turn(
    email_id: str,
    generation: int,
    purpose: TurnPurpose,
    *,
    owner: str = "",
    expires_at: datetime | None = None,
    provider: str = "",
) -> bool:
    """Insert turn ``generation`` of the email; False when another writer has it already."""
    doc: dict[str, Any] = {
        "_id": f"{email_id}:{generation}",
        "email_id": email_id,
        "purpose": str(purpose),
        "owner": owner,
        "created_at": utcnow(),
    }
    if expires_at is not None:
        doc["expires_at"] = expires_at
    if provider:
        doc["provider"] = provider
    try:
        with map_mongo_errors():
            EmailTurn._get_collection().insert_one(doc)
    except DuplicateKey:
        return False
    return True


def read_turn(email_id: str, generation: int) -> EmailTurn | None:
    """Return turn ``generation`` of the email, if it was taken.

    Raises:
        StorageUnavailable: MongoDB is unreachable.
    """
    with map_mongo_errors():
        return EmailTurn.objects(key=f"{email_id}:{generation}").first()  # type: ignore[no-any-return]


def _live(turn: EmailTurn, now: datetime) -> bool:
    return turn.expires_at is not None and turn.expires_at > now


#: A turn whose writer died between taking it and writing its change blocks that generation for
#: everyone; once it is this old (and the email still shows the generation before it), the next
#: writer skips it. Far longer than the one write that follows a turn. A claim's turn carries its
#: own expiry (the lease) instead.
TURN_TAKEOVER = timedelta(seconds=60)
_MAX_SKIPPED_TURNS = 3


def acquire_turn(
    email: Email,
    purpose: TurnPurpose,
    *,
    owner: str = "",
    expires_at: datetime | None = None,
    provider: str = "",
) -> TurnTaken | TurnBlocked:
    """Take the next turn of an email as read, skipping turns whose writers are gone.

    One insert: exactly one concurrent writer gets each generation, on MongoDB and FerretDB
    alike. A taken turn is skipped when it is an ``accept`` (it writes nothing), an expired
    claim, or another writer's turn older than :data:`TURN_TAKEOVER`, and in both latter cases
    only while the email still shows the generation read.

    Args:
        email: The email as the writer read it.
        purpose: Why.
        owner: Who (a worker id).
        expires_at: A claim's lease: until then the turn blocks every other writer.
        provider: The provider a claim sends through (shown if its worker dies).

    Raises:
        StorageUnavailable: MongoDB is unreachable.
    """
    email_id = str(email.id)
    read_generation = int(email.last_turn or 0)
    generation = read_generation + 1
    interrupted: EmailTurn | None = None
    for _ in range(_MAX_SKIPPED_TURNS):
        taken = _insert_turn(
            email_id, generation, purpose, owner=owner, expires_at=expires_at, provider=provider
        )
        if taken:
            return TurnTaken(generation, interrupted)
        turn = read_turn(email_id, generation)
        if turn is None:  # purged in between: try the same generation again
            continue
        now = utcnow()
        if turn.purpose == TurnPurpose.ACCEPT:
            generation += 1
            continue
        if turn.purpose == TurnPurpose.VOID:
            return TurnBlocked("void")
        if turn.purpose == TurnPurpose.CLAIM and _live(turn, now):
            return TurnBlocked("held", until=turn.expires_at)
        if turn.purpose != TurnPurpose.CLAIM and now - turn.created_at < TURN_TAKEOVER:
            return TurnBlocked("busy")
        # Its writer died (or outlived its lease): skip the turn if it never wrote its change.
        current = find_email(email_id)
        if current is None or int(current.last_turn or 0) != read_generation:
            return TurnBlocked("moved")
        log.warning(
            "email %s: turn %d (%s by %s) was never written; skipping it",
            email_id,
            generation,
            turn.purpose,
            turn.owner,
        )
        if turn.purpose == TurnPurpose.CLAIM:
            interrupted = turn
        generation += 1
    return TurnBlocked("busy")


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
    if not _insert_turn(email_id, 1, TurnPurpose.VOID):
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
    if _insert_turn(email_id, 1, TurnPurpose.ACCEPT):
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
    # The turn _insert_turn writes, generation 1 of each email.
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
