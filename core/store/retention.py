"""Retention: old final emails lose their bodies, attachment contents and headers.

An email is purged when it is final (SENT, FAILED, CANCELLED) and its last change
(``updated_at``, which every write sets, the SENT outcome included) is older than the cutoff.
The purge sets ``text`` and ``html`` to ``""``, ``headers`` to ``{}``, drops every attachment's
``content`` (its filename, content type, content id and size stay) and sets ``purged_at``. The
subject, addresses, tags, metadata, status, error and attempts stay: what was sent, to whom, and
how it went remain answerable.

Each purge is an exclusive change of the email: it takes the email's next turn
(:func:`core.store.turns.acquire_turn`) and writes fenced by it, like a cancel or a replay. A
dead-letter replay (FAILED back to QUEUED) therefore either goes first (the email is no longer
final and is left alone) or finds the email purged and refuses it; a purge never lets a replay
send an empty body. An email another writer holds is skipped, for the next run.

Each final status is walked by ``_id`` in batches (``{status: S, purged_at: null, _id: {$gt:
last, $lt: bound}}``), which the ``(status, purged_at, _id)`` index serves: the walk reads the
emails still to purge, not the ones purged before. The ``_id`` bound is the cutoff: an email's id
is made before it is stored, so an email last changed before the cutoff has an id before it too.
A batch reads no content (the projection leaves it out), so memory stays bounded by the batch.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from bson import ObjectId

from core.store import turns
from core.store.documents import FINAL_STATUSES, Email, Status
from core.store.mapping import map_mongo_errors

#: The final statuses in the order the walk takes them.
PURGEABLE_STATUSES: tuple[Status, ...] = tuple(sorted(FINAL_STATUSES))

#: The attachment fields a purge keeps.
KEPT_ATTACHMENT_FIELDS = ("filename", "content_type", "content_id", "size")

_PROJECTION: dict[str, int] = {
    "status": 1,
    "updated_at": 1,
    "claim_generation": 1,
    **{f"attachments.{name}": 1 for name in KEPT_ATTACHMENT_FIELDS},
}


@dataclass(frozen=True)
class PurgeCandidate:
    """A final email old enough to purge, as read (without its content).

    Attributes:
        id: The email's ``_id``.
        status: Its status when read.
        last_turn: Its ``last_turn`` (stored ``claim_generation``) when read.
        attachments: Its attachments without their content.
    """

    id: ObjectId
    status: Status
    last_turn: int
    attachments: list[dict[str, Any]]


def candidate_filter(status: Status, cutoff: datetime) -> dict[str, Any]:
    """The raw query of the emails in ``status`` to purge at ``cutoff`` (see the module doc).

    Raises:
        ValueError: ``status`` is not final.
    """
    if status not in FINAL_STATUSES:
        raise ValueError(f"{status} is not a final status")
    # ObjectIds count whole seconds: the bound takes all of cutoff's second.
    bound = ObjectId.from_datetime(cutoff + timedelta(seconds=1))
    return {
        "status": str(status),
        "purged_at": None,
        "_id": {"$lt": bound},
        "updated_at": {"$lt": cutoff},
    }


def _candidate(raw: dict[str, Any]) -> PurgeCandidate:
    attachments = [
        {name: item[name] for name in KEPT_ATTACHMENT_FIELDS if name in item}
        for item in raw.get("attachments") or []
    ]
    return PurgeCandidate(
        id=raw["_id"],
        status=Status(raw["status"]),
        last_turn=int(raw.get("claim_generation") or 0),
        attachments=attachments,
    )


def candidate_batches(*, cutoff: datetime, batch_size: int) -> Iterator[list[PurgeCandidate]]:
    """Walk the final emails last changed before ``cutoff`` and not purged, by ``_id``.

    Each batch is one query starting after the last ``_id`` of the previous one (per status), so
    emails purged meanwhile do not shift the walk and no cursor stays open between batches.

    Args:
        cutoff: Emails last changed before it are purged.
        batch_size: At most this many emails per batch (and in memory).

    Raises:
        StorageUnavailable: MongoDB is unreachable.
    """
    collection = Email._get_collection()
    for status in PURGEABLE_STATUSES:
        base = candidate_filter(status, cutoff)
        last: ObjectId | None = None
        while True:
            query = base if last is None else {**base, "_id": {**base["_id"], "$gt": last}}
            with map_mongo_errors():
                rows = list(collection.find(query, _PROJECTION).sort("_id", 1).limit(batch_size))
            if not rows:
                break
            yield [_candidate(row) for row in rows]
            if len(rows) < batch_size:
                break
            last = rows[-1]["_id"]


def purge_email(candidate: PurgeCandidate, *, now: datetime) -> bool:
    """Remove the bodies, attachment contents and headers of one email, as its next turn.

    Args:
        candidate: The email as read by :func:`candidate_batches`.
        now: The purge time (``purged_at``).

    Returns:
        True when it was purged; False when another writer holds or changed it since it was
        read (a replay, say): it is left alone, and the next run looks at it again.

    Raises:
        StorageUnavailable: MongoDB is unreachable.
        StorageOutcomeUnknown: The write may or may not have landed (the next run sees).
    """
    taken = turns.acquire_turn(
        Email(id=candidate.id, last_turn=candidate.last_turn), turns.TurnPurpose.PURGE
    )
    if isinstance(taken, turns.TurnBlocked):
        return False
    fence = {
        "_id": candidate.id,
        "claim_generation": {"$lt": taken.generation},
        "status": {"$in": [str(s) for s in FINAL_STATUSES]},
    }
    changes = {
        "text": "",
        "html": "",
        "headers": {},
        "attachments": candidate.attachments,
        "purged_at": now,
        "claim_generation": taken.generation,
    }
    with map_mongo_errors():
        result = Email._get_collection().update_one(fence, {"$set": changes})
    return bool(result.matched_count)
