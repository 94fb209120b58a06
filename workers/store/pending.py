"""Queries of the periodic rescan: find pending emails that stopped moving.

Each status is walked by ``_id`` in batches (``{status: S, _id: {$gt: last}}`` sorted by ``_id``),
which an index on ``(status, _id)`` serves: the cost grows with the number of emails in that
status, not with the size of the collection (most emails are final).

What counts as stale, given ``now`` and ``cutoff = now - buffer``:

* QUEUED, last changed before ``cutoff``: never enqueued (Redis was down) or its message was lost.
* SCHEDULED whose ``send_at`` is before ``cutoff``: its delayed message was lost or dropped.
* RETRYING whose next attempt was due before ``cutoff``: its retry message was lost.

A worker that died mid-send leaves its email QUEUED or RETRYING (a claim writes the email only
with the outcome), so it is found by the same conditions; the worker that takes the message
meets the dead worker's claim and waits for its lease to expire, or takes over.

The rescan only reads emails (the worker's claim decides what happens to them); the one write
here fails a RETRYING email whose retry budget is spent, as an exclusive change (a turn).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from bson import ObjectId
from mongoengine import Q

from core.errors import NotFound
from core.store import turns
from core.store.documents import Email, Outcome, Status
from core.store.mapping import map_mongo_errors

#: The statuses the rescan looks at, in the order it walks them.
PENDING_STATUSES: tuple[Status, ...] = (Status.QUEUED, Status.SCHEDULED, Status.RETRYING)

#: Attempt outcomes that spend the retry budget.
BUDGET_OUTCOMES = frozenset({Outcome.TRANSIENT.value, Outcome.THROTTLED.value})


def spent_retries(outcomes: list[str], attempt_count: int) -> int:
    """Count the attempts that spent the retry budget: the one rule, for delivery and rescan.

    Waits for a provider (NO_PROVIDER) and refusals (PERMANENT, MISCONFIGURED) spend nothing.
    Only the last ``attempt_count`` recorded attempts count (a dead-letter replay resets it to
    give a fresh budget); INTERRUPTED entries are pushed by claims without being counted.

    Args:
        outcomes: The outcomes of the email's attempts, oldest first.
        attempt_count: The email's ``attempt_count``.
    """
    recorded = [o for o in outcomes if o != Outcome.INTERRUPTED.value]
    recent = recorded[max(len(recorded) - attempt_count, 0) :]
    return sum(1 for o in recent if o in BUDGET_OUTCOMES)


_FIELDS = (
    "status",
    "updated_at",
    "send_at",
    "next_attempt_at",
    "last_error",
    "attempt_count",
    "attempts.outcome",
)


@dataclass(frozen=True)
class PendingEmail:
    """What the rescan needs to know about one stale email.

    Attributes:
        id: The email's id.
        status: Its status when it was read.
        updated_at: When it last changed.
        send_at: When it is scheduled for, if it is.
        next_attempt_at: When the next attempt was due (RETRYING).
        failed_attempts: Attempts that spent the retry budget.
        last_error: The last attempt's error.
    """

    id: str
    status: Status
    updated_at: datetime | None
    send_at: datetime | None
    next_attempt_at: datetime | None
    failed_attempts: int
    last_error: str


def stale_filter(status: Status, *, now: datetime, cutoff: datetime) -> Q:
    """Return the condition under which an email in ``status`` is stale (see the module doc).

    Args:
        status: One of :data:`PENDING_STATUSES`.
        now: The scan's time.
        cutoff: ``now`` minus the buffer: emails that moved after it are left alone.

    Raises:
        ValueError: ``status`` is not a pending status.
    """
    if status == Status.QUEUED:
        # An untouched QUEUED email's _id is as old as its updated_at: the _id bound lets the
        # (status, _id) index skip the fresh ones.
        # (ObjectIds count whole seconds: the bound takes all of cutoff's second.)
        first_after = ObjectId.from_datetime(cutoff + timedelta(seconds=1))
        return Q(status=status, id__lt=first_after, updated_at__lte=cutoff)
    if status == Status.SCHEDULED:
        return Q(status=status, send_at__lte=cutoff)
    if status == Status.RETRYING:
        return Q(status=status, updated_at__lte=cutoff) & (
            Q(next_attempt_at=None) | Q(next_attempt_at__lte=cutoff)
        )
    raise ValueError(f"{status} is not a pending status")


def _pending(raw: dict[str, Any]) -> PendingEmail:
    attempts = raw.get("attempts") or []
    return PendingEmail(
        id=str(raw["_id"]),
        status=Status(raw["status"]),
        updated_at=raw.get("updated_at"),
        send_at=raw.get("send_at"),
        next_attempt_at=raw.get("next_attempt_at"),
        failed_attempts=spent_retries(
            [str(a.get("outcome", "")) for a in attempts], int(raw.get("attempt_count") or 0)
        ),
        last_error=str(raw.get("last_error") or ""),
    )


def stale_batches(
    status: Status, *, now: datetime, cutoff: datetime, batch_size: int
) -> Iterator[list[PendingEmail]]:
    """Walk the stale emails of one status by ``_id``, ``batch_size`` at a time.

    Each batch is one query that starts after the last ``_id`` of the previous one, so emails
    taken (or changed) meanwhile do not shift the walk, and no cursor stays open between batches.

    Raises:
        StorageUnavailable: MongoDB is unreachable.
    """
    condition = stale_filter(status, now=now, cutoff=cutoff)
    last: ObjectId | None = None
    while True:
        query = condition if last is None else condition & Q(id__gt=last)
        with map_mongo_errors():
            rows = list(
                Email.objects(query).order_by("id").only(*_FIELDS).limit(batch_size).as_pymongo()
            )
        if not rows:
            return
        yield [_pending(row) for row in rows]
        if len(rows) < batch_size:
            return
        last = rows[-1]["_id"]


def fail_stale(email: PendingEmail, *, reason: str) -> bool:
    """Mark a stale email FAILED with ``reason``, if nothing changed it since it was read.

    An exclusive change (:func:`core.store.turns.take_turn`): a worker claiming the email
    at the same moment either goes first (then the email moved and is left alone) or finds it
    FAILED.

    Returns:
        True when it was failed; False when it moved meanwhile.

    Raises:
        StorageUnavailable: MongoDB is unreachable.
    """

    def unchanged(current: Email, _now: datetime) -> bool:
        return bool(
            current.status == email.status
            and current.updated_at == email.updated_at
            and current.next_attempt_at == email.next_attempt_at
        )

    try:
        turn = turns.take_turn(
            email.id,
            purpose=turns.TurnPurpose.FAIL,
            allowed=unchanged,
            updates=lambda _c, _n: turns.failed_updates(reason),
        )
    except NotFound:
        return False
    return turn is not None
