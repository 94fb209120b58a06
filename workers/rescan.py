"""The rescan: find pending emails that stopped moving and enqueue them again, in batches.

Pure logic over injected dependencies (the queries of :mod:`workers.store.pending`, an ``enqueue``
callable, expiring enqueue marks, the clock, a lock keep-alive), so unit tests run it against an
in-memory store. The scheduler (:mod:`workers.scheduler`) wires it to MongoDB, Redis and the lock.

An email is enqueued only if this scan can mark it (:class:`workers.marks.EnqueueMarks`): not
when a scan enqueued it less than a buffer time ago, nor while that message may still wait in the
queue's backlog. A second scan right after the first, from another scheduler, enqueues nothing
twice, and scans never grow a backlog they cannot see past. The scan never rewrites an email to
mark it: the worker's claim decides what happens to it.

A RETRYING email whose retry budget is spent is not enqueued again: its dead-letter message was
lost, so the rescan marks it FAILED with a reason and keeps a dead-letter record, as the
``dead_letter`` actor would have.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

from core.errors import QueueUnavailable
from core.events_out import publish_safely
from core.store.documents import Status, utcnow
from workers.store import dead_letters, pending
from workers.store.pending import PENDING_STATUSES, PendingEmail

log = logging.getLogger(__name__)


#: Statuses whose email may have a message waiting on the delivery queue.
QUEUE_DEPENDENT = frozenset({Status.QUEUED, Status.RETRYING, Status.SCHEDULED})


#: The API stores an email before it enqueues it, and hosts' clocks differ a little: an email
#: counts as "before the queue's head" only this much before the head's enqueue time.
QUEUE_SLACK = timedelta(seconds=5)


class Marks(Protocol):
    """Expiring "enqueued by a scan" marks (see :class:`workers.marks.EnqueueMarks`)."""

    def take(self, email_ids: list[str], *, now: datetime, not_after: datetime) -> list[bool]:
        """Mark the emails not marked after ``not_after``; return which ones this call marked."""

    def release(self, email_id: str) -> None:
        """Drop the mark of an email that could not be enqueued."""


class Action(StrEnum):
    """What the rescan does with one stale email."""

    REQUEUE = "requeue"
    FAIL = "fail"


def decide(email: PendingEmail, *, max_retries: int) -> Action:
    """Choose what to do with a stale email.

    Args:
        email: The stale email.
        max_retries: The retry budget (``settings.retry.max_retries``).

    Returns:
        FAIL for a RETRYING email whose failed attempts exceed the budget (the delivery code
        gives up at the same count); REQUEUE otherwise.
    """
    if email.status == Status.RETRYING and email.failed_attempts > max_retries:
        return Action.FAIL
    return Action.REQUEUE


def exhausted_reason(email: PendingEmail) -> str:
    """The ``last_error`` of an email failed by the rescan."""
    return (
        f"retries exhausted after {email.failed_attempts} failed attempts and no retry was "
        f"pending (failed by the rescan); last error: {email.last_error or 'unknown'}"
    )


@dataclass
class RescanResult:
    """What one rescan found and did.

    Attributes:
        found: Stale emails per status.
        requeued: Emails enqueued again, per status.
        failed: Email ids marked FAILED (retry budget spent).
        skipped: Stale emails a scan enqueued less than a buffer time ago or whose message
            may still wait in the queue (or that moved before they could be failed).
        aborted: Why the scan stopped early ("" when it walked everything).
        lock_busy: Another scheduler held the lock: nothing was scanned.
    """

    found: Counter[str] = field(default_factory=Counter)
    requeued: Counter[str] = field(default_factory=Counter)
    failed: list[str] = field(default_factory=list)
    skipped: int = 0
    aborted: str = ""
    lock_busy: bool = False

    def as_dict(self) -> dict[str, Any]:
        """Return a JSON-friendly summary."""
        return {
            "found": dict(self.found),
            "requeued": dict(self.requeued),
            "failed": len(self.failed),
            "skipped": self.skipped,
            "aborted": self.aborted,
            "lock_busy": self.lock_busy,
        }

    def merged(self, other: RescanResult) -> RescanResult:
        """Return the sum of two scans' results (the minute job runs two)."""
        return RescanResult(
            found=self.found + other.found,
            requeued=self.requeued + other.requeued,
            failed=self.failed + other.failed,
            skipped=self.skipped + other.skipped,
            aborted=self.aborted or other.aborted,
            lock_busy=self.lock_busy or other.lock_busy,
        )

    def summary(self, job: str = "rescan") -> str:
        """One log line, naming the ``job``."""
        if self.lock_busy:
            return f"{job} skipped: another scheduler holds the lock"

        def counts(counter: Counter[str]) -> str:
            return ", ".join(f"{k} {v}" for k, v in sorted(counter.items())) or "none"

        text = (
            f"{job} found {sum(self.found.values())} stale ({counts(self.found)}); "
            f"re-enqueued {sum(self.requeued.values())} ({counts(self.requeued)}); "
            f"failed {len(self.failed)} with spent retries; {self.skipped} enqueued recently"
        )
        if self.aborted:
            text += f"; stopped early: {self.aborted}"
        return text


def rescan(
    *,
    enqueue: Callable[[str], None],
    marks: Marks,
    now: datetime,
    buffer: timedelta,
    batch_size: int,
    max_retries: int,
    statuses: Iterable[Status] = PENDING_STATUSES,
    keep_alive: Callable[[], bool] = lambda: True,
    waiting_since: datetime | None = None,
    requeue_spacing: timedelta | None = None,
) -> RescanResult:
    """Enqueue again every pending email that has not moved for ``buffer``.

    Args:
        enqueue: Puts one ``deliver(email_id)`` message on the queue; raises
            :class:`QueueUnavailable` when it cannot.
        marks: Per-email marks of the last enqueue by a scan: an email a scan enqueued less
            than ``buffer`` ago, or whose message may still wait in the backlog, is skipped.
        now: The scan's time (naive UTC, like the documents).
        buffer: How long an email must have been still to count as stale.
        batch_size: Emails per query.
        max_retries: The retry budget: RETRYING emails past it are failed, not enqueued.
        statuses: The statuses to walk (the frequent scan of due scheduled emails walks only
            SCHEDULED with a zero buffer).
        keep_alive: Called after each batch; returning False stops the scan (the lock was
            lost: another scanner may be running).
        waiting_since: When the oldest message still waiting on the delivery queue was
            enqueued (None: the queue is empty). A QUEUED, RETRYING or SCHEDULED email that
            became due after it may simply be waiting its turn behind a backlog: enqueueing it
            again would only grow the backlog, so it is not stale yet, whatever the buffer.
        requeue_spacing: The least time between two enqueues of one email by scans (default
            ``buffer``; the minute scan of due emails uses the full rescan's buffer).

    Returns:
        What was found and done. A scan stopped early (queue unavailable, lock lost) says why
        in ``aborted``; what it did not reach is found by the next one.

    Raises:
        StorageUnavailable: MongoDB is unreachable.
        redis.RedisError: The marks could not be taken.
    """
    result = RescanResult()
    # A message this scan's predecessors enqueued may still wait in the backlog, whatever status.
    not_after = now - (buffer if requeue_spacing is None else requeue_spacing)
    if waiting_since is not None:
        not_after = min(not_after, waiting_since - QUEUE_SLACK)
    for status in statuses:
        cutoff = now - buffer
        if waiting_since is not None and status in QUEUE_DEPENDENT:
            cutoff = min(cutoff, waiting_since - QUEUE_SLACK)
        for batch in pending.stale_batches(status, now=now, cutoff=cutoff, batch_size=batch_size):
            result.found[status.value] += len(batch)
            requeue = []
            for email in batch:
                if decide(email, max_retries=max_retries) == Action.FAIL:
                    _fail(email, result)
                else:
                    requeue.append(email)
            taken = marks.take([email.id for email in requeue], now=now, not_after=not_after)
            result.skipped += taken.count(False)
            mine = [email for email, took in zip(requeue, taken, strict=True) if took]
            if not _enqueue_all(mine, result, enqueue, marks):
                return result
            if not keep_alive():
                result.aborted = "lost the rescan lock"
                return result
    return result


def _fail(email: PendingEmail, result: RescanResult) -> None:
    reason = exhausted_reason(email)
    if not pending.fail_stale(email, reason=reason):
        result.skipped += 1
        return
    result.failed.append(email.id)
    dead_letters.save_dead_letter(
        email.id, reason=reason, retries=email.failed_attempts, message={}
    )
    log.error("email %s FAILED by the rescan: %s", email.id, reason)
    publish_safely(
        email.id, "email.failed", {"reason": reason, "dead_letter": True}, occurred_at=utcnow()
    )


def _enqueue_all(
    emails: list[PendingEmail],
    result: RescanResult,
    enqueue: Callable[[str], None],
    marks: Marks,
) -> bool:
    """Enqueue the marked emails; on a queue outage drop the marks left and return False."""
    for index, email in enumerate(emails):
        try:
            enqueue(email.id)
        except QueueUnavailable as exc:
            for left in emails[index:]:
                marks.release(left.id)
            result.aborted = f"queue unavailable: {exc.message}"
            log.warning("rescan stopped, email %s not enqueued: %s", email.id, exc.message)
            return False
        result.requeued[email.status.value] += 1
        log.info(
            "email %s re-enqueued (%s since %s)", email.id, email.status.value, email.updated_at
        )
    return True
