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
from datetime import timedelta

import dramatiq

from server.settings import Settings
from server.store import repository
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
    claim = repository.claim_email(
        email_id, token=token, owner=owner, lease_seconds=settings.lease_seconds
    )
    if claim is None:
        log.info(
            "email %s: not claimable (final, not due, or held by a live lease); dropped", email_id
        )
        return None
    email = claim.email
    if claim.interrupted:
        log.warning(
            "email %s: previous holder %s lost its lease mid-send; resending with Message-ID %s",
            email_id,
            claim.previous_owner,
            email.message_id,
        )

    choice = router.choose(email)
    if choice.provider is None:
        delay = max(int(choice.retry_in * 1000), 1_000)
        repository.record_failed_attempt(
            email_id,
            token,
            Attempt(
                started_at=utcnow(),
                outcome=Outcome.NO_PROVIDER,
                error=f"no provider available; next try in {delay / 1000:.1f}s",
                worker=owner,
            ),
            status=Status.RETRYING,
            error="no provider available (every circuit breaker is open)",
            next_attempt_at=utcnow() + timedelta(milliseconds=delay),
        )
        # Not the email's fault: this wait does not spend its retry budget.
        raise RetryDelivery("no provider available", delay=delay, exhausted=False)

    provider = choice.provider
    repository.set_attempt_provider(email_id, token, provider)
    outgoing = build_outgoing(email)
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
    if not repository.record_sent(
        email_id, token, attempt, provider_message_id=result.provider_message_id
    ):
        log.error("email %s: sent, but the lease was lost before SENT was recorded", email_id)
    log.info("email %s: sent through %s (%s)", email_id, provider, result.provider_message_id)
    return Status.SENT


def _record_failure(
    email: Email,
    token: str,
    owner: str,
    provider: str,
    exc: DeliveryError,
    started_at: object,
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
        repository.record_failed_attempt(
            email_id, token, attempt, status=Status.FAILED, error=error
        )
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
    repository.record_failed_attempt(
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
    failed = repository.fail_unclaimed(email_id, reason)
    if failed is None:
        log.info("dead letter for email %s ignored: final, or a live attempt holds it", email_id)
        return None
    repository.save_dead_letter(email_id, reason=reason, retries=retries, message=message)
    log.error("email %s FAILED: %s", email_id, reason)
    return Status.FAILED
