"""Claims and outcomes: how a worker takes an email, and what it writes after each attempt.

A claim is a turn (:func:`server.store.repository.take_turn`) that leases the email to one
worker; every later write is conditional on the lease token, so a worker that lost its lease
writes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from server.errors import NotFound
from server.store.documents import FINAL_STATUSES, Attempt, Email, Status, utcnow
from server.store.repository import failed_updates, map_mongo_errors, parse_email_id, take_turn


@dataclass(frozen=True)
class Claim:
    """A worker's hold on an email.

    Attributes:
        email: The email as it is after the claim (SENDING).
        token: The lease token; every later update is conditional on it.
        interrupted: The previous holder's lease expired during a send: the provider may have
            accepted the email already.
        previous_owner: Who held the expired lease.
    """

    email: Email
    token: str
    interrupted: bool
    previous_owner: str


def is_claimable(email: Email, now: datetime) -> bool:
    """Whether a worker may take the email now.

    QUEUED, RETRYING, SCHEDULED whose ``send_at`` has passed, and SENDING whose lease expired
    (its worker died).
    """
    if email.status in (Status.QUEUED, Status.RETRYING):
        return True
    if email.status == Status.SCHEDULED:
        return email.send_at is None or email.send_at <= now
    if email.status == Status.SENDING:
        return email.lease_expires_at is None or email.lease_expires_at < now
    return False


def claim_email(email_id: str, *, token: str, owner: str, lease_seconds: float) -> Claim | None:
    """Take an email for delivery, exclusively (see :func:`take_turn`).

    Returns:
        The claim, or None when the email is final, held by a live lease, not due yet, or
        another worker claimed it first.
    """

    def lease(before: Email, now: datetime) -> dict[str, Any]:
        changes: dict[str, Any] = {
            "set__status": Status.SENDING,
            "set__lease_token": token,
            "set__lease_owner": owner,
            "set__lease_expires_at": now + timedelta(seconds=lease_seconds),
        }
        if before.status == Status.SENDING:
            # The one window where a duplicate is possible: record it for operators.
            changes["push__attempts"] = Attempt(
                provider=before.provider or "",
                started_at=before.updated_at,
                duration_ms=(now - before.updated_at).total_seconds() * 1000,
                outcome="INTERRUPTED",
                error=(
                    f"worker {before.lease_owner} lost its lease while sending; the provider "
                    "may have accepted the email; the next attempt reuses the Message-ID"
                ),
                worker=before.lease_owner or "",
            )
        return changes

    try:
        turn = take_turn(
            email_id,
            purpose="claim",
            allowed=is_claimable,
            updates=lease,
            owner=owner,
            # A claimer that died right after its turn is a worker that died holding a lease.
            takeover=timedelta(seconds=lease_seconds),
        )
    except NotFound:
        return None
    if turn is None:
        return None
    interrupted = turn.before.status == Status.SENDING
    return Claim(turn.email, token, interrupted, turn.before.lease_owner or "")


def set_attempt_provider(email_id: str, token: str, provider: str) -> None:
    """Note which provider the current attempt uses (shown if the worker dies mid-send)."""
    with map_mongo_errors():
        Email.objects(id=parse_email_id(email_id), lease_token=token).update_one(
            set__provider=provider, set__updated_at=utcnow()
        )


def _attempt_updates(attempt: Attempt) -> dict[str, Any]:
    updates: dict[str, Any] = {"push__attempts": attempt, "inc__attempt_count": 1}
    if attempt.provider:
        updates[f"inc__provider_attempts__{attempt.provider}"] = 1
    return updates


def record_sent(email_id: str, token: str, attempt: Attempt, *, provider_message_id: str) -> bool:
    """Mark the email SENT with its attempt. Returns False if the lease was lost."""
    now = utcnow()
    with map_mongo_errors():
        updated = Email.objects(id=parse_email_id(email_id), lease_token=token).update_one(
            set__status=Status.SENT,
            set__sent_at=now,
            set__updated_at=now,
            set__provider=attempt.provider,
            set__provider_message_id=provider_message_id,
            set__last_error="",
            unset__lease_token=True,
            unset__lease_expires_at=True,
            **_attempt_updates(attempt),
        )
    return bool(updated)


def record_failed_attempt(
    email_id: str,
    token: str,
    attempt: Attempt | None,
    *,
    status: Status,
    error: str,
    next_attempt_at: datetime | None = None,
) -> bool:
    """Record an unsuccessful attempt and move the email to ``status`` (RETRYING or FAILED).

    Returns:
        False if the lease was lost to another worker (nothing written).
    """
    now = utcnow()
    updates: dict[str, Any] = {
        "set__status": status,
        "set__updated_at": now,
        "set__last_error": error,
        "unset__lease_token": True,
        "unset__lease_expires_at": True,
    }
    if next_attempt_at is not None:
        updates["set__next_attempt_at"] = next_attempt_at
    if attempt is not None:
        updates.update(_attempt_updates(attempt))
    with map_mongo_errors():
        updated = Email.objects(id=parse_email_id(email_id), lease_token=token).update_one(
            **updates
        )
    return bool(updated)


def fail_unclaimed(email_id: str, error: str) -> Email | None:
    """Mark an email FAILED (its retries ran out) unless it is final or a live lease holds it.

    Returns:
        The email after the update, or None when nothing was changed.
    """

    def failable(email: Email, now: datetime) -> bool:
        if email.status in FINAL_STATUSES:
            return False
        live = email.status == Status.SENDING and (email.lease_expires_at or now) > now
        return not live

    turn = take_turn(
        email_id, purpose="fail", allowed=failable, updates=lambda _e, _n: failed_updates(error)
    )
    return turn.email if turn is not None else None
