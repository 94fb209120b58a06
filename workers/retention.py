"""The retention job: purge the content of final emails older than ``retention_days``.

Run hourly by ``mailroom-scheduler`` (``settings.rescan.retention_cron``), once by
``mailroom-scheduler --once retention`` or ``mailroom-admin retention run [--days N]``. What a purge
removes and keeps, and why it cannot race a replay: :mod:`core.store.retention`. A Redis lock
lets one run at a time across schedulers; a run is idempotent (purged emails are not read
again), so a run cut short by an outage is finished by the next.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import redis

from core.redis_errors import map_redis_errors
from core.settings import Settings
from core.store.documents import utcnow
from core.store.retention import candidate_batches, purge_email
from workers.locks import hold

log = logging.getLogger("workers.retention")

RETENTION_LOCK = "mailroom:lock:retention"


@dataclass(frozen=True)
class RetentionResult:
    """What one run of the retention job did.

    Attributes:
        cutoff: Final emails last changed before it were purged.
        purged: Emails purged by this run.
        skipped: Emails another writer held or changed meanwhile (the next run looks again).
        lock_busy: Another run held the lock: nothing was done.
        aborted: The lock was lost midway (it expired): the run stopped early.
    """

    cutoff: datetime | None = None
    purged: int = 0
    skipped: int = 0
    lock_busy: bool = False
    aborted: bool = False

    def as_dict(self) -> dict[str, Any]:
        """The result as JSON-friendly values (``mailroom-scheduler --once retention``)."""
        return {
            "cutoff": self.cutoff.isoformat() + "Z" if self.cutoff else None,
            "purged": self.purged,
            "skipped": self.skipped,
            "lock_busy": self.lock_busy,
            "aborted": self.aborted,
        }

    def summary(self) -> str:
        """One log line."""
        if self.lock_busy:
            return "retention: another run holds the lock; nothing done"
        cutoff = self.cutoff.isoformat() + "Z" if self.cutoff else "?"
        text = (
            f"retention: purged {self.purged} final emails last changed before {cutoff}"
            f" ({self.skipped} skipped, being changed)"
        )
        return text + ("; stopped early: the lock was lost" if self.aborted else "")


def purge_old_emails(
    *,
    cutoff: datetime,
    batch_size: int,
    now: datetime | None = None,
    keep_alive: Callable[[], bool] | None = None,
) -> RetentionResult:
    """Purge every final email last changed before ``cutoff``, ``batch_size`` at a time.

    Args:
        cutoff: The retention cutoff (now minus ``retention_days``).
        batch_size: Emails read per query.
        now: The purge time written to ``purged_at`` (default: now).
        keep_alive: Called between batches; False stops the run (the lock is no longer ours).

    Raises:
        StorageUnavailable: MongoDB is unreachable (what was purged stays purged).
        StorageOutcomeUnknown: A write's outcome is unknown (the next run sees).
    """
    purged = skipped = 0
    stamp = now or utcnow()
    for batch in candidate_batches(cutoff=cutoff, batch_size=batch_size):
        for candidate in batch:
            if purge_email(candidate, now=stamp):
                purged += 1
            else:
                skipped += 1
        if keep_alive is not None and not keep_alive():
            return RetentionResult(cutoff=cutoff, purged=purged, skipped=skipped, aborted=True)
    return RetentionResult(cutoff=cutoff, purged=purged, skipped=skipped)


def run_retention(
    settings: Settings,
    client: redis.Redis,
    *,
    days: float | None = None,
    now: datetime | None = None,
) -> RetentionResult:
    """Run the retention job under its Redis lock, and log what it did.

    Args:
        settings: ``retention_days``, the batch size and lock expiry of ``settings.rescan``.
        client: Redis, for the lock.
        days: Purge emails older than this many days instead of ``settings.retention_days``.
        now: The run's time (default: now).

    Raises:
        ValueError: ``days`` is not positive.
        QueueUnavailable: Redis is unreachable (for the lock).
        StorageUnavailable: MongoDB is unreachable.
    """
    retention_days = settings.retention_days if days is None else days
    if not retention_days > 0:
        raise ValueError(f"retention days must be positive, not {retention_days}")
    start = now or utcnow()
    cutoff = start - timedelta(days=retention_days)
    with (
        map_redis_errors(),
        hold(client, RETENTION_LOCK, ttl_seconds=settings.rescan.lock_seconds) as lock,
    ):
        if lock is None:
            result = RetentionResult(cutoff=cutoff, lock_busy=True)
        else:
            result = purge_old_emails(
                cutoff=cutoff,
                batch_size=settings.rescan.batch_size,
                now=start,
                keep_alive=lock.extend,
            )
    log.log(logging.WARNING if result.aborted else logging.INFO, result.summary())
    return result
