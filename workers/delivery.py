"""Delivering one email: claim it, pick a provider, send, record the outcome.

Pure logic with no Dramatiq decorators, so it runs the same under a real worker and in tests. A
failed attempt that should be tried again raises :class:`RetryDelivery`, a ``dramatiq.Retry``
carrying the delay and whether the retry budget is spent.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
import uuid
from datetime import datetime, timedelta
from typing import NoReturn

import dramatiq

from server.errors import NotFound, StorageUnavailable
from server.settings import Settings
from server.store import claims, dead_letters, repository
from server.store.documents import Attempt, Email, Outcome, Status, utcnow
from workers.mime import build_outgoing
from workers.mta.base import (
    DeliveryError,
    MisconfiguredError,
    PermanentError,
    ThrottledError,
)
from workers.routing import Router

log = logging.getLogger(__name__)

# A provider refusing our credentials is not the email's fault: move on to the next one quickly.
MISCONFIGURED_RETRY_MS = 1_000


class RetryDelivery(dramatiq.Retry):
    """Try the email again after ``delay`` ms; ``exhausted`` when the retry budget is spent."""

    def __init__(self, message: str, *, delay: int, exhausted: bool) -> None:
        super().__init__(message, delay=delay)
        self.exhausted = exhausted


def worker_id() -> str:
    """Name this worker thread in leases and history: host, process and thread."""
    return f"{socket.gethostname()}:{os.getpid()}:{threading.current_thread().name}"


def backoff_ms(attempt: int, settings: Settings) -> int:
    """Exponential backoff with full jitter for the ``attempt``-th retry (1-based)."""
    ceiling = min(
        settings.retry.max_backoff_ms, settings.retry.min_backoff_ms * 2 ** max(attempt - 1, 0)
    )
    # Half fixed, half random: the delay still grows, and retries of many emails spread out.
    return int(ceiling / 2 + random.uniform(0, ceiling / 2))


def _failed_attempts(email: Email) -> int:
    """Attempts that count against the retry budget (not interruptions or waits).

    Only the last ``attempt_count`` recorded attempts count: a dead-letter replay resets
    ``attempt_count`` to give the email a fresh budget while its history stays. INTERRUPTED
    entries are pushed by claims without counting, so they are skipped when walking back.
    """
    counted = {Outcome.TRANSIENT, Outcome.THROTTLED}
    recorded = [a for a in email.attempts if a.outcome != Outcome.INTERRUPTED]
    recent = recorded[max(len(recorded) - int(email.attempt_count or 0), 0) :]
    return sum(1 for a in recent if a.outcome in counted)


def deliver(email_id: str, *, settings: Settings, router: Router) -> Status | None:
    """Deliver one email (the body of the ``deliver`` actor).

    Args:
        email_id: The email to deliver.
        settings: Lease length and retry budget.
        router: Chooses a provider and sends.

    Returns:
        The status the email ended this attempt in, or None when the message was dropped (the
        email is final, not due yet, or held by another worker's live lease).

    Raises:
        RetryDelivery: The attempt failed transiently; Dramatiq retries the message.
    """
    token = uuid.uuid4().hex
    owner = worker_id()
    claim = claims.claim_email(
        email_id, token=token, owner=owner, lease_seconds=settings.lease_seconds
    )
    if claim is None:
        _retry_if_leased(email_id)
        log.info("email %s: not claimable (final, or not due yet); dropped", email_id)
        return None
    email = claim.email
    if claim.interrupted:
        log.warning(
            "email %s: previous holder %s lost its lease mid-send; resending with Message-ID %s",
            email_id,
            claim.previous_owner,
            email.message_id,
        )

    try:
        _give_up_if_overdue(email, token, settings)
        choice = router.choose(email)
        if choice.provider is None:
            _wait_for_a_provider(email, token, owner, choice.retry_in)
        provider = choice.provider
        claims.set_attempt_provider(email_id, token, provider)
        outgoing = build_outgoing(email)
    except RetryDelivery:
        raise
    except Exception as exc:
        # Nothing was handed to a provider yet: free the email at once for the retry, rather
        # than leave it SENDING until the lease runs out.
        _release(email_id, token, f"internal error before sending: {type(exc).__name__}: {exc}")
        raise
    started_at = utcnow()
    start = time.monotonic()
    try:
        result = router.send(provider, outgoing)
    except DeliveryError as exc:
        return _record_failure(
            email, token, owner, provider, exc, started_at, start, settings, router
        )

    attempt = Attempt(
        provider=provider,
        started_at=started_at,
        duration_ms=(time.monotonic() - start) * 1000,
        outcome=Outcome.DELIVERED,
        response=result.response,
        worker=owner,
    )
    if not claims.record_sent(
        email_id, token, attempt, provider_message_id=result.provider_message_id
    ):
        log.error("email %s: sent, but the lease was lost before SENT was recorded", email_id)
    log.info("email %s: sent through %s (%s)", email_id, provider, result.provider_message_id)
    return Status.SENT


def _retry_if_leased(email_id: str) -> None:
    """Retry a message that met another worker's live lease once that lease has run out.

    Dropping it would leave a crashed holder's email to the rescan (up to an hour); if the
    holder is alive, the retry finds the email final and is dropped then.

    Raises:
        RetryDelivery: The email is SENDING under a live lease (not counted against retries).
    """
    try:
        email = repository.get_email(email_id)
    except NotFound:
        return
    now = utcnow()
    if email.status == Status.SENDING and email.lease_expires_at and email.lease_expires_at > now:
        delay = int((email.lease_expires_at - now).total_seconds() * 1000) + 1_000
        log.info("email %s: held by %s; retry in %d ms", email_id, email.lease_owner, delay)
        raise RetryDelivery("held by a live lease", delay=delay, exhausted=False)


def _release(email_id: str, token: str, error: str) -> None:
    """Put a claimed email back to RETRYING without an attempt (nothing was sent)."""
    try:
        claims.record_failed_attempt(
            email_id, token, None, status=Status.RETRYING, error=error, next_attempt_at=utcnow()
        )
    except StorageUnavailable:
        log.warning("email %s: could not release the claim; the lease will expire", email_id)


def _give_up_if_overdue(email: Email, token: str, settings: Settings) -> None:
    """Send an email that has waited longer than ``retry.max_pending_hours`` to the dead letters.

    Waits for a provider (every breaker open, credentials refused) do not spend the retry
    budget, so without this cap an email could wait forever.

    Raises:
        RetryDelivery: Exhausted, when the email is overdue.
    """
    since = max(email.created_at, email.send_at or email.created_at)
    waited = utcnow() - since
    if waited <= timedelta(hours=settings.retry.max_pending_hours):
        return
    error = (
        f"gave up after {waited.total_seconds() / 3600:.1f} h: {email.last_error or 'no provider'}"
    )
    claims.record_failed_attempt(str(email.id), token, None, status=Status.RETRYING, error=error)
    raise RetryDelivery(error, delay=0, exhausted=True)


def _wait_for_a_provider(email: Email, token: str, owner: str, retry_in: float) -> NoReturn:
    """Retry when a provider may be back, without spending the email's retry budget.

    Raises:
        RetryDelivery: Always.
    """
    delay = max(int(retry_in * 1000), 1_000)
    attempts = email.attempts
    # One NO_PROVIDER entry per stretch of waiting, so a long outage does not grow the history.
    attempt = None
    if not attempts or attempts[-1].outcome != Outcome.NO_PROVIDER:
        attempt = Attempt(
            started_at=utcnow(),
            outcome=Outcome.NO_PROVIDER,
            error="no provider available (circuit breakers open or credentials refused)",
            worker=owner,
        )
    claims.record_failed_attempt(
        str(email.id),
        token,
        attempt,
        status=Status.RETRYING,
        error="no provider available (every circuit breaker is open)",
        next_attempt_at=utcnow() + timedelta(milliseconds=delay),
    )
    raise RetryDelivery("no provider available", delay=delay, exhausted=False)


def _record_failure(
    email: Email,
    token: str,
    owner: str,
    provider: str,
    exc: DeliveryError,
    started_at: datetime,
    start: float,
    settings: Settings,
    router: Router,
) -> Status:
    email_id = str(email.id)
    error = f"{provider}: {exc.message}"
    outcome = {
        PermanentError: Outcome.PERMANENT,
        ThrottledError: Outcome.THROTTLED,
        MisconfiguredError: Outcome.MISCONFIGURED,
    }.get(type(exc), Outcome.TRANSIENT)
    attempt = Attempt(
        provider=provider,
        started_at=started_at,
        duration_ms=(time.monotonic() - start) * 1000,
        outcome=outcome,
        error=exc.message,
        response=exc.response,
        worker=owner,
    )
    if isinstance(exc, PermanentError):
        claims.record_failed_attempt(email_id, token, attempt, status=Status.FAILED, error=error)
        log.warning("email %s: permanently rejected: %s", email_id, error)
        return Status.FAILED

    if isinstance(exc, MisconfiguredError):
        router.take_out_of_rotation(provider, exc.message)
        delay = MISCONFIGURED_RETRY_MS
        exhausted = False
    else:
        failures = _failed_attempts(email) + 1
        exhausted = failures > settings.retry.max_retries
        delay = backoff_ms(failures, settings)
        if isinstance(exc, ThrottledError) and exc.retry_after is not None:
            delay = max(delay, int(exc.retry_after * 1000))
    next_at = utcnow() + timedelta(milliseconds=delay)
    claims.record_failed_attempt(
        email_id,
        token,
        attempt,
        status=Status.RETRYING,
        error=error,
        next_attempt_at=None if exhausted else next_at,
    )
    log.warning(
        "email %s: attempt through %s failed (%s): %s; %s",
        email_id,
        provider,
        outcome,
        exc.message,
        "retries exhausted" if exhausted else f"retry in {delay} ms",
    )
    raise RetryDelivery(error, delay=delay, exhausted=exhausted)


def dead_letter(message: dict[str, object], retries: int, max_retries: int) -> Status | None:
    """Mark the email of an exhausted delivery message FAILED and keep a dead-letter record.

    Args:
        message: The failed Dramatiq message, as ``Message.asdict()``.
        retries: How many retries it had.
        max_retries: Its retry budget.

    Returns:
        FAILED, or None when the email was already final.
    """
    args = message.get("args") or ()
    email_id = str(args[0]) if isinstance(args, list | tuple) and args else ""
    if not email_id:
        log.error("dead letter without an email id: %r", message)
        return None
    email = repository.get_email(email_id)
    reason = (
        f"retries exhausted after {len(email.attempts)} attempts; last error: {email.last_error}"
    )
    failed = claims.fail_unclaimed(email_id, reason)
    if failed is None:
        current = repository.get_email(email_id)
        if current.status == Status.FAILED and not dead_letters.has_dead_letter(email_id):
            # A retry of this actor after FAILED was written but the record was not.
            dead_letters.save_dead_letter(
                email_id, reason=current.last_error, retries=retries, message=message
            )
            return None
        log.info("dead letter for email %s ignored: final, or a live attempt holds it", email_id)
        return None
    dead_letters.save_dead_letter(email_id, reason=reason, retries=retries, message=message)
    log.error("email %s FAILED: %s", email_id, reason)
    return Status.FAILED
