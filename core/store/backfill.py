"""Backfill: ListEmails' time buckets for emails stored before ``list_buckets`` existed.

On FerretDB a ListEmails page walks the emails' time buckets (:mod:`core.store.listing`); an email
without them is found only when a walk runs out of buckets, so on a busy store it is missing from
its filters' pages. The backfill gives each such email the buckets of its id's time
(:func:`core.store.repository.list_buckets`), as the API stores them today.

It is idempotent and batched: it reads the emails still without buckets (``list_buckets`` null
or missing), their ``_id`` and generation only, through one cursor of ``batch_size`` documents a
round trip (FerretDB cannot push a null filter down, so one pass over the collection is the
cheapest read), and fills them batch by batch. Each fill is the email's next turn
(:func:`core.store.turn_taking.acquire_turn`) and a write fenced by it, like the retention
purge: FerretDB 1.24 rewrites the whole document on an update, so a write without a turn could
undo a worker's concurrent outcome. An email another writer holds is skipped; a later run fills
it. ``mailroom-admin backfill list-buckets`` runs it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from bson import ObjectId

from core.store.documents import Email
from core.store.mapping import map_mongo_errors
from core.store.repository import list_buckets
from core.store.turn_taking import TurnBlocked, TurnPurpose, acquire_turn

#: Emails read per round trip, and filled between two reads.
DEFAULT_BATCH_SIZE = 500

_MISSING = {"list_buckets": None}


@dataclass
class BackfillResult:
    """What one run did.

    Attributes:
        filled: Emails given their buckets.
        skipped: Emails another writer held or changed meanwhile (a later run fills them).
    """

    filled: int = 0
    skipped: int = 0


def missing_batches(batch_size: int = DEFAULT_BATCH_SIZE) -> Iterator[list[tuple[ObjectId, int]]]:
    """Yield ``(id, last_turn)`` of the emails without buckets, ``batch_size`` at a time.

    Raises:
        StorageUnavailable: MongoDB is unreachable.
    """
    projection = {"_id": 1, "claim_generation": 1}
    with map_mongo_errors():
        cursor = Email._get_collection().find(_MISSING, projection, batch_size=batch_size)
        batch: list[tuple[ObjectId, int]] = []
        for row in cursor:
            batch.append((row["_id"], int(row.get("claim_generation") or 0)))
            if len(batch) == batch_size:
                yield batch
                batch = []
        if batch:
            yield batch


def fill_email(email_id: ObjectId, last_turn: int) -> bool:
    """Give one email its buckets as its next turn; False when another writer holds it.

    Raises:
        StorageUnavailable: MongoDB is unreachable.
        StorageOutcomeUnknown: The write may or may not have landed (a later run sees).
    """
    taken = acquire_turn(Email(id=email_id, last_turn=last_turn), TurnPurpose.BACKFILL)
    if isinstance(taken, TurnBlocked):
        return False
    fence = {"_id": email_id, "claim_generation": {"$lt": taken.generation}}
    changes = {"list_buckets": list_buckets(email_id), "claim_generation": taken.generation}
    with map_mongo_errors():
        result = Email._get_collection().update_one(fence, {"$set": changes})
    return bool(result.matched_count)


def backfill_list_buckets(*, batch_size: int = DEFAULT_BATCH_SIZE) -> BackfillResult:
    """Give every email stored without ``list_buckets`` its buckets (see the module's notes).

    Args:
        batch_size: Emails read per round trip.

    Raises:
        StorageUnavailable: MongoDB is unreachable.
    """
    result = BackfillResult()
    for batch in missing_batches(batch_size):
        for email_id, last_turn in batch:
            if fill_email(email_id, last_turn):
                result.filled += 1
            else:
                result.skipped += 1
    return result
