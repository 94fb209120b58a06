"""The suppression list's change notes: which addresses changed, for in-process snapshots.

Each API process keeps the list in memory (``server/suppression_snapshot.py``) so that accepting
an email costs no lookup per recipient. Every change made through Mailroom (an API call, a
provider event, ``mailroom-admin``) writes a note ``{_id: ObjectId(), address}`` *after* the
change itself, so a process that reads a note and then the address reads the new state; the
snapshots read the notes of the last :data:`OVERLAP` every poll (a note's id is made before its
insert lands, so a slow insert may appear behind newer ones) and skip the ones they applied.

Changes made in the same process reach its snapshot at once, through :func:`on_change`.
Notes older than :data:`KEEP` are pruned by the snapshots.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from bson import ObjectId
from pymongo.collection import Collection

from core.store.mapping import map_mongo_errors

log = logging.getLogger(__name__)

COLLECTION = "suppression_changes"
#: How far back each poll reads: a note whose insert took longer than this to land is missed
#: (the snapshot's periodic full reload still brings its change in).
OVERLAP = timedelta(seconds=30)
#: Notes older than this are deleted.
KEEP = timedelta(minutes=10)

Listener = Callable[[str, str | None], None]
_listeners: list[Listener] = []


def on_change(listener: Listener) -> Callable[[], None]:
    """Call ``listener(address_key, reason_or_None)`` after each change made in this process.

    Returns:
        A function that unregisters it.
    """
    _listeners.append(listener)
    return lambda: _listeners.remove(listener)


def changed(collection: Collection[Any], key: str, reason: str | None) -> None:
    """Record that ``key`` is now suppressed for ``reason`` (None: no longer suppressed).

    Called by the list's writers after their write: tells this process's listeners, then writes
    the note for the other processes.

    Args:
        collection: The suppression list's collection (the notes live beside it).
        key: The address as stored (lowercased addr-spec).
        reason: Its reason now, or None when it was removed.

    Raises:
        StorageUnavailable: The note could not be written; the caller's change is made, and the
            other processes see it at their next full reload or when the change is retried.
    """
    for listener in list(_listeners):
        try:
            listener(key, reason)
        except Exception:  # a listener's bug must not fail the change already made
            log.exception("suppression change listener failed")
    with map_mongo_errors():
        collection.database[COLLECTION].insert_one({"_id": ObjectId(), "address": key})


def notes_since(collection: Collection[Any], since: datetime) -> list[tuple[ObjectId, str]]:
    """The notes made at or after ``since`` (naive UTC), as (note id, address key)."""
    notes = collection.database[COLLECTION]
    with map_mongo_errors():
        rows = list(notes.find({"_id": {"$gte": ObjectId.from_datetime(since)}}))
    return [(row["_id"], row["address"]) for row in rows]


def prune_notes(collection: Collection[Any], before: datetime) -> int:
    """Delete the notes made before ``before`` (naive UTC); return how many."""
    notes = collection.database[COLLECTION]
    with map_mongo_errors():
        deleted: int = notes.delete_many(
            {"_id": {"$lt": ObjectId.from_datetime(before)}}
        ).deleted_count
    return deleted
