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
from datetime import datetime, timedelta
from typing import NoReturn

import dramatiq

from core.errors import StorageUnavailable
from core.events_out import publish_safely
from core.settings import Settings
from core.store import carried, repository
from core.store.documents import Attempt, Email, Outcome, Status, utcnow
from workers.mime import build_outgoing
from workers.mta.base import DeliveryError, PermanentError, ThrottledError
from workers.routing import Choice, Router
from workers.store import claims, dead_letters
from workers.store.pending import spent_retries
from workers.suppression_gate import SUPPRESSION, without_suppressed

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


def deliver(
    email_id: str, *, settings: Settings, router: Router, stored: str | None = None
) -> Status | None:
    """Deliver one email (the body of the ``deliver`` actor).

    A first attempt that succeeds costs two round trips to the store when the message carries
    the email as stored (take the claim, write SENT), three when the email must be read first.

    Args:
        email_id: The email to deliver.
        settings: Lease length and retry budget.
        router: Chooses a provider and sends.
        stored: The email as the API inserted it (``core.store.carried``), if the message
            carries it.

    Returns:
        The status the email ended this attempt in, or None when the message was dropped (the
        email is final, not due yet, or another writer has it).

    Raises:
        RetryDelivery: The attempt failed transiently, or another worker's live claim holds the
            email; Dramatiq retries the message.
    """
    taken = _claim_carried(email_id, stored, settings, router) if stored else None
    if taken is None:
        taken = _claim_read(email_id, settings, router)
        if taken is None:
            return None
    email, held, choice = taken
    owner = held.owner
    try:
        _give_up_if_overdue(held, settings)
        if choice.provider is None:
            _wait_for_a_provider(held, choice.retry_in)
        provider = choice.provider
        outgoing = without_suppressed(email, build_outgoing(email), settings, utcnow())
    except RetryDelivery:
        router.release_unused_probes()
        raise
    except PermanentError as exc:  # suppressed since it was accepted: nothing was sent
        router.release_unused_probes()
        now = time.monotonic()
        return _record_failure(held, SUPPRESSION, exc, utcnow(), now, settings, router)
    except Exception as exc:
        router.release_unused_probes()
        # Nothing was handed to a provider yet: free the email at once for the retry, rather
        # than leave it held until the lease runs out.
        _release(held, f"internal error before sending: {type(exc).__name__}: {exc}")
        raise
    started_at = utcnow()
    start = time.monotonic()
    try:
        result = router.send(provider, outgoing)
    except DeliveryError as exc:
        return _record_failure(held, provider, exc, started_at, start, settings, router)

    attempt = Attempt(
        provider=provider,
        started_at=started_at,
        duration_ms=(time.monotonic() - start) * 1000,
        outcome=Outcome.DELIVERED,
        response=result.response,
        worker=owner,
    )
    if not claims.record_sent(held, attempt, provider_message_id=result.provider_message_id):
        log.error(
            "email %s: sent, but a newer claim took it over before SENT was recorded", email_id
        )
    else:
        publish_safely(
            email_id,
            "email.sent",
            {"provider": provider, "provider_message_id": result.provider_message_id},
            occurred_at=utcnow(),
        )
    log.info("email %s: sent through %s (%s)", email_id, provider, result.provider_message_id)
    return Status.SENT


def _claim_carried(
    email_id: str, stored: str, settings: Settings, router: Router
) -> tuple[Email, claims.Claim, Choice] | None:
    """Claim the email from the copy its message carries; None to read it instead.

    The claim takes the email's first turn or nothing: taken, it proves the email unchanged
    since it was stored (``core.store.carried``). Otherwise (cancelled, voided, claimed
    before; or the copy is too old), the caller reads the email and claims it as always.
    """
    email = carried.unpack(stored, email_id, utcnow())
    if email is None or not claims.is_claimable(email, utcnow()):
        return None
    choice, held = _choose_and_claim(email, settings, router, as_read=False)
    if not isinstance(held, claims.Claim):
        router.release_unused_probes()
        return None
    return email, held, choice


def _choose_and_claim(
    email: Email, settings: Settings, router: Router, *, as_read: bool
) -> tuple[Choice, claims.Claim | claims.Held | None]:
    """Choose the provider, then take the claim (see :func:`workers.store.claims.claim`)."""
    # Chosen before the claim, so a worker that dies mid-send leaves the provider on its claim.
    choice = router.choose(email)
    held = claims.claim(
        email,
        owner=worker_id(),
        lease_seconds=settings.lease_seconds,
        provider=choice.provider or "",
        as_read=as_read,
    )
    return choice, held


def _claim_read(
    email_id: str, settings: Settings, router: Router
) -> tuple[Email, claims.Claim, Choice] | None:
    """Read the email and claim it; None when the message is to be dropped.

    Raises:
        RetryDelivery: Another worker's live claim holds the email.
    """
    email = claims.load_claimable(email_id)
    if email is None:
        log.info("email %s: not claimable (final, or not due yet); dropped", email_id)
        return None
    choice, held = _choose_and_claim(email, settings, router, as_read=True)
    if isinstance(held, claims.Held):
        router.release_unused_probes()
        # Dropping it would leave a crashed holder's email to the rescan; if the holder is
        # alive, the retry finds the email final and is dropped then.
        delay = int((held.until - utcnow()).total_seconds() * 1000) + 1_000
        log.info("email %s: held by a live claim; retry in %d ms", email_id, delay)
        raise RetryDelivery("held by a live claim", delay=max(delay, 1_000), exhausted=False)
    if held is None:
        router.release_unused_probes()
        log.info("email %s: another writer has it (or it was never accepted); dropped", email_id)
        return None
    if held.interrupted is not None:
        log.warning(
            "email %s: previous holder %s lost its lease mid-send; resending with Message-ID %s",
            email_id,
            held.interrupted.worker,
            email.message_id,
        )
    return email, held, choice


def _release(held: claims.Claim, error: str) -> None:
    """Put a claimed email back to RETRYING without an attempt (nothing was sent)."""
    try:
        claims.record_failed_attempt(
            held, None, status=Status.RETRYING, error=error, next_attempt_at=utcnow()
        )
    except StorageUnavailable:
        log.warning("email %s: could not release the claim; it will expire", held.email_id)


def _give_up_if_overdue(held: claims.Claim, settings: Settings) -> None:
    """Send an email that has waited longer than ``retry.max_pending_hours`` to the dead letters.

    Waits for a provider (every breaker open, credentials refused) do not spend the retry
    budget, so without this cap an email could wait forever.

    Raises:
        RetryDelivery: Exhausted, when the email is overdue.
    """
    email = held.email
    since = max(email.created_at, email.send_at or email.created_at)
    waited = utcnow() - since
    if waited <= timedelta(hours=settings.retry.max_pending_hours):
        return
    error = (
        f"gave up after {waited.total_seconds() / 3600:.1f} h: {email.last_error or 'no provider'}"
    )
    claims.record_failed_attempt(held, None, status=Status.RETRYING, error=error)
    raise RetryDelivery(error, delay=0, exhausted=True)


def _wait_for_a_provider(held: claims.Claim, retry_in: float) -> NoReturn:
    """Retry when a provider may be back, without spending the email's retry budget.

    Raises:
        RetryDelivery: Always.
    """
    delay = max(int(retry_in * 1000), 1_000)
    attempts = held.email.attempts
    # One NO_PROVIDER entry per stretch of waiting, so a long outage does not grow the history.
    attempt = None
    if not attempts or attempts[-1].outcome != Outcome.NO_PROVIDER:
        attempt = Attempt(
            started_at=utcnow(),
            outcome=Outcome.NO_PROVIDER,
            error="no provider available (circuit breakers open or credentials refused)",
            worker=held.owner,
        )
    claims.record_failed_attempt(
        held,
        attempt,
        status=Status.RETRYING,
        error="no provider available (every circuit breaker is open)",
        next_attempt_at=utcnow() + timedelta(milliseconds=delay),
    )
    raise RetryDelivery("no provider available", delay=delay, exhausted=False)


def _record_failure(
    held: claims.Claim,
    provider: str,
    exc: DeliveryError,
    started_at: datetime,
    start: float,
    settings: Settings,
    router: Router,
) -> Status:
    email_id = held.email_id
    error = f"{provider}: {exc.message}"
    # The error's class says what it means; a subclass behaves like its parent.
    outcome = exc.outcome
    attempt = Attempt(
        provider=provider,
        started_at=started_at,
        duration_ms=(time.monotonic() - start) * 1000,
        outcome=outcome,
        error=exc.message,
        response=exc.response,
        worker=held.owner,
    )
    if outcome == Outcome.PERMANENT:
        if claims.record_failed_attempt(held, attempt, status=Status.FAILED, error=error):
            publish_safely(
                email_id,
                "email.failed",
                {"provider": provider, "reason": error, "dead_letter": False},
                occurred_at=utcnow(),
            )
        log.warning("email %s: permanently rejected: %s", email_id, error)
        return Status.FAILED

    if outcome == Outcome.MISCONFIGURED:
        router.take_out_of_rotation(provider, exc.message)
        delay = MISCONFIGURED_RETRY_MS
        exhausted = False
    else:
        outcomes = [a.outcome for a in held.email.attempts]
        failures = spent_retries(outcomes, int(held.email.attempt_count or 0)) + 1
        exhausted = failures > settings.retry.max_retries
        delay = backoff_ms(failures, settings)
        if isinstance(exc, ThrottledError) and exc.retry_after is not None:
            delay = max(delay, int(exc.retry_after * 1000))
    next_at = utcnow() + timedelta(milliseconds=delay)
    claims.record_failed_attempt(
        held,
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
            _publish_dead(email_id, current.last_error)
            return None
        log.info("dead letter for email %s ignored: final, or a live attempt holds it", email_id)
        return None
    dead_letters.save_dead_letter(email_id, reason=reason, retries=retries, message=message)
    log.error("email %s FAILED: %s", email_id, reason)
    _publish_dead(email_id, reason)
    return Status.FAILED


def _publish_dead(email_id: str, reason: str) -> None:
    """The ``email.failed`` webhook event of a dead-lettered email (stored once however often)."""
    publish_safely(
        email_id, "email.failed", {"reason": reason, "dead_letter": True}, occurred_at=utcnow()
    )
