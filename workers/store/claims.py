"""Claims and outcomes: how a worker takes an email, and what it writes after each attempt.

A claim is the email's next turn (:func:`core.store.turns.acquire_turn`) with an expiry,
the lease: one insert, and the email document is not written until the outcome. Every outcome
write is fenced by the claim's generation (``last_turn < mine``), so a worker whose lease
was taken over after it expired does not overwrite the newer claim's outcome. A first-attempt
delivery costs three round trips to the store: read the email, insert the claim, write SENT;
two when the message carries the email (``core.store.carried``) and the claim is taken from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from core.store.documents import (
    FINAL_STATUSES,
    Attempt,
    Email,
    Outcome,
    Status,
    is_scheduled,
    utcnow,
)
from core.store.mapping import map_mongo_errors
from core.store.repository import CLAIMABLE, find_email, parse_email_id
from core.store.turns import (
    TurnBlocked,
    TurnPurpose,
    acquire_turn,
    cancel_void,
    failed_updates,
    take_turn,
)


@dataclass(frozen=True)
class Claim:
    """A worker's hold on an email.

    Attributes:
        email: The email as it was read before the claim (its stored status is unchanged).
        generation: The claim's turn; outcome writes set ``last_turn`` to it.
        owner: The worker holding it.
        interrupted: The attempt to record when the previous holder's lease expired mid-send
            (the provider may have accepted the email already), else None.
    """

    email: Email
    generation: int
    owner: str
    interrupted: Attempt | None = None

    @property
    def email_id(self) -> str:
        """The claimed email's id."""
        return str(self.email.id)


@dataclass(frozen=True)
class Held:
    """Another worker's live claim holds the email until ``until``."""

    until: datetime
    owner: str = ""


def is_claimable(email: Email, now: datetime) -> bool:
    """Whether a worker may take the email now, as far as its stored status tells.

    QUEUED, RETRYING, and SCHEDULED whose ``send_at`` has passed; a live claim of another
    worker is found when the claim's turn is taken.
    """
    if email.status not in CLAIMABLE:
        return False
    return email.status != Status.SCHEDULED or not is_scheduled(email.send_at, now)


def load_claimable(email_id: str) -> Email | None:
    """Read an email for delivery; None when it does not exist, is final or is not due yet.

    Raises:
        StorageUnavailable: MongoDB is unreachable.
    """
    email = find_email(email_id)
    if email is None or not is_claimable(email, utcnow()):
        return None
    return email


def claim(
    email: Email, *, owner: str, lease_seconds: float, provider: str = "", as_read: bool = True
) -> Claim | Held | None:
    """Take an email (as read by :func:`load_claimable`) for one delivery attempt, exclusively.

    Args:
        email: The email as read.
        owner: The worker's id, kept on the turn.
        lease_seconds: How long the claim holds the email.
        provider: The provider the attempt will use (kept on the turn, shown if the worker dies).
        as_read: False for an email not read from the store but carried in its message
            (``core.store.carried``): only its very next turn is taken, so that a claim
            proves the email unchanged since it was stored; anything else is None (read it).

    Returns:
        The claim; :class:`Held` when another worker's live claim holds the email; None when
        the email moved meanwhile, another writer is changing it, or it was never accepted
        (a void first turn: it is cancelled here).

    Raises:
        StorageUnavailable: MongoDB is unreachable.
    """
    now = utcnow()
    taken = acquire_turn(
        email,
        TurnPurpose.CLAIM,
        owner=owner,
        expires_at=now + timedelta(seconds=lease_seconds),
        provider=provider,
        only_next=not as_read,
    )
    if isinstance(taken, TurnBlocked):
        if taken.reason == "held" and taken.until is not None:
            return Held(taken.until)
        if taken.reason == "void":
            cancel_void(str(email.id), generation=int(email.last_turn or 0) + 1)
        return None
    interrupted = None
    if taken.interrupted is not None:
        previous = taken.interrupted
        interrupted = Attempt(
            provider=previous.provider or "",
            started_at=previous.created_at,
            duration_ms=(now - previous.created_at).total_seconds() * 1000,
            outcome=Outcome.INTERRUPTED,
            error=(
                f"worker {previous.owner} lost its lease while sending; the provider may have "
                "accepted the email; the next attempt reuses the Message-ID"
            ),
            worker=previous.owner or "",
        )
    return Claim(email, taken.generation, owner, interrupted)


def _write_outcome(
    held: Claim, sets: dict[str, Any], attempt: Attempt | None, *, unset: tuple[str, ...] = ()
) -> bool:
    """One raw update (stored field names), fenced by the claim's generation.

    Raw pymongo rather than a mongoengine queryset: this runs once per delivery, and building
    the queryset cost about as much CPU as the write itself in the delivery benchmark.
    """
    attempts = [a for a in (held.interrupted, attempt) if a is not None]
    update: dict[str, Any] = {
        "$set": {"claim_generation": held.generation, "updated_at": utcnow(), **sets}
    }
    if unset:
        update["$unset"] = dict.fromkeys(unset, "")
    if attempts:
        update["$push"] = {"attempts": {"$each": [a.to_mongo().to_dict() for a in attempts]}}
    if attempt is not None:
        update["$inc"] = {"attempt_count": 1}
        if attempt.provider:
            update["$inc"][f"provider_attempts.{attempt.provider}"] = 1
    fence = {"_id": parse_email_id(held.email_id), "claim_generation": {"$lt": held.generation}}
    with map_mongo_errors():
        result = Email._get_collection().update_one(fence, update)
    return bool(result.matched_count > 0)


def record_sent(held: Claim, attempt: Attempt, *, provider_message_id: str) -> bool:
    """Mark the email SENT with its attempt. Returns False if a newer claim took it over."""
    return _write_outcome(
        held,
        {
            "status": Status.SENT.value,
            "sent_at": utcnow(),
            "provider": attempt.provider,
            "provider_message_id": provider_message_id,
            "last_error": "",
        },
        attempt,
        unset=("next_attempt_at",),
    )


def record_failed_attempt(
    held: Claim,
    attempt: Attempt | None,
    *,
    status: Status,
    error: str,
    next_attempt_at: datetime | None = None,
) -> bool:
    """Record an unsuccessful attempt and move the email to ``status`` (RETRYING or FAILED).

    Returns:
        False if a newer claim took the email over (nothing written).
    """
    sets: dict[str, Any] = {"status": Status(status).value, "last_error": error}
    if attempt is not None and attempt.provider:
        sets["provider"] = attempt.provider
    if next_attempt_at is not None:
        sets["next_attempt_at"] = next_attempt_at
    return _write_outcome(held, sets, attempt)


def fail_unclaimed(email_id: str, error: str) -> Email | None:
    """Mark an email FAILED (its retries ran out) unless it is final or a live claim holds it.

    Returns:
        The email after the update, or None when nothing was changed.
    """

    def failable(email: Email, _now: datetime) -> bool:
        return email.status not in FINAL_STATUSES

    turn = take_turn(
        email_id,
        purpose=TurnPurpose.FAIL,
        allowed=failable,
        updates=lambda _e, _n: failed_updates(error),
    )
    return turn.email if turn is not None else None
