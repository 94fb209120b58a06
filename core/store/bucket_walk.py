"""FerretDB's ListEmails page: a walk over the emails' time buckets, newest first.

FerretDB 1.24 pushes equality filters down to PostgreSQL but never the sort nor the limit: it
fetches every match, sorts them in Go, then cuts the page (0.5 ms or more per matching email
on the shared machine: tens of seconds for a page of 100,000 emails). So there a page walks the
emails' time buckets (``list_buckets``: hour to 28 days of the id's time) newest first, each
query ``filter AND bucket`` (an equality FerretDB pushes down), until the page is full. After a
28-day bucket with no match, or MAX_BUCKET_QUERIES, the rest is one query without a bucket (a
filter that sparse has few matches). Emails stored before the buckets existed have none until
``core.store.backfill`` gives them theirs.

A query costs a fixed part (about a by-``_id`` read) plus every match of its bucket, which FerretDB
decodes before it cuts the limit: a walk wants few queries, each with about the emails the page
still needs. The next bucket is the longest expected to hold at most ``_BUCKET_FILL`` times the
emails still needed, at the matches per second seen so far, and spanning at most ``_BUCKET_GROWTH``
times the time scanned (a quiet hour does not send a busy filter to a month at once). A first page
starts with the current hour: a filter matching one email in ten then took four queries where one
matching all took two (``status=FAILED`` was the slowest page of the benchmark). So each API
process remembers the matches per second the last page of each filter saw (:data:`_DENSITY_KEPT`
filters), and the next page of that filter, first or deep, picks every bucket from it: the one
adding the most time below the walk while FerretDB decodes at most ``_KNOWN_FILL`` times the emails
still needed (it decodes the whole bucket, the part above the walk's position too): about two
queries. (Reading a page's planned buckets at once on a thread pool was tried: on two busy
cores it was no faster.)
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Any

from bson import ObjectId

from core.store.documents import Email
from core.store.repository import LIST_BUCKET_SPANS, list_bucket

#: Bucket queries of one page before the rest is read with one query.
MAX_BUCKET_QUERIES = 12
#: A bucket is chosen to hold at most this many times the emails the page still needs.
_BUCKET_FILL = 4
#: The same, at a filter's remembered density (a better estimate than one page's first bucket).
_KNOWN_FILL = 2
#: A bucket covers at most this many times the time already scanned (without a remembered
#: density).
_BUCKET_GROWTH = 8
#: Filters whose density (matches per second of id time) an API process remembers.
_DENSITY_KEPT = 1024
_densities: OrderedDict[bytes, float] = OrderedDict()
_densities_lock = threading.Lock()
#: Ids made by another API process whose clock is ahead: the first bucket starts this late.
_CLOCK_SLACK_SECONDS = 300


def _oid_of_second(second: int) -> ObjectId:
    """The smallest ObjectId of Unix second ``second``: ids below it are older."""
    return ObjectId.from_datetime(datetime.fromtimestamp(second, UTC))


def _below(bound: ObjectId, cursor: ObjectId | None) -> dict[str, ObjectId]:
    return {"$lt": min(bound, cursor) if cursor is not None else bound}


def _span(
    found: int, scanned: int, needed: int, upper: int, now: int, density: float | None
) -> int:
    """The span of the next bucket below ``upper`` (see the module's notes).

    Args:
        found: Matches so far.
        scanned: Seconds scanned so far.
        needed: Matches the page still needs.
        upper: The walk's position (a Unix second: every match at or above it is read).
        now: The current Unix second (no email is newer).
        density: The filter's remembered matches per second, if any.
    """
    if density is None:
        # The longest expected to hold at most a few pages' worth, growing at most
        # _BUCKET_GROWTH times the time scanned.
        longest = max(LIST_BUCKET_SPANS[0], _BUCKET_GROWTH * scanned)
        fitting = [
            span
            for span in LIST_BUCKET_SPANS
            if span <= longest and found * span <= _BUCKET_FILL * needed * scanned
        ]
        return fitting[-1] if fitting else LIST_BUCKET_SPANS[0]
    # FerretDB decodes every match of the bucket, the part above ``upper`` (read already)
    # included: the bucket that adds the most below ``upper`` for what it costs.
    chosen, gained = LIST_BUCKET_SPANS[0], -1
    for span in LIST_BUCKET_SPANS:
        lower = (upper - 1) // span * span
        fetched = density * (min(lower + span, now) - lower)
        if fetched <= _KNOWN_FILL * needed and upper - lower > gained:
            chosen, gained = span, upper - lower
    return chosen


def remembered_density(key: bytes) -> float | None:
    """The matches per second the last walked page of a filter (by its digest) saw here."""
    with _densities_lock:
        return _densities.get(key)


def _remember_density(key: bytes, density: float) -> None:
    with _densities_lock:
        _densities[key] = density
        _densities.move_to_end(key)
        while len(_densities) > _DENSITY_KEPT:
            _densities.popitem(last=False)


def walk_buckets(
    query: dict[str, Any],
    projection: dict[str, int] | None,
    want: int,
    cursor: ObjectId | None,
    *,
    key: bytes,
    created_before: datetime | None,
) -> list[dict[str, Any]]:
    """Up to ``want`` documents matching ``query`` below ``cursor``, newest first, by bucket.

    Args:
        query: The filter (without ``_id`` and ``list_buckets``).
        projection: What to leave out.
        want: How many documents.
        cursor: Only ids below it, if any.
        key: The filter's digest, under which its density is remembered.
        created_before: The filter's ``created_before``: the walk starts there.
    """
    collection = Email._get_collection()
    now = int(time.time())
    start = (
        int(cursor.generation_time.timestamp()) + 1
        if cursor is not None
        else now + _CLOCK_SLACK_SECONDS
    )
    if created_before is not None:
        # An id is made before its email is stored (a successor keeps the voided id's time), so
        # an email created before T has an id older than T, give or take the API clocks.
        before = int(created_before.replace(tzinfo=UTC).timestamp())
        start = min(start, before + _CLOCK_SLACK_SECONDS)
    density = remembered_density(key)
    upper = start  # every matching id of a second >= upper is already in rows (or above cursor)
    rows: list[dict[str, Any]] = []
    scanned = 0
    for _ in range(MAX_BUCKET_QUERIES):
        needed = want - len(rows)
        span = _span(len(rows), scanned, needed, upper, now, density)
        bucket = {
            **query,
            "list_buckets": list_bucket(span, upper - 1),
            "_id": _below(_oid_of_second(upper), cursor),
        }
        found = list(collection.find(bucket, projection).sort("_id", -1).limit(needed))
        rows += found
        if len(rows) >= want:
            # The page ends at its oldest row: its density is the rows over the time they span.
            oldest = int(rows[-1]["_id"].generation_time.timestamp())
            _remember_density(key, len(rows) / max(1, start - oldest))
            return rows
        lower = (upper - 1) // span * span
        scanned += upper - lower
        upper = lower
        if span == LIST_BUCKET_SPANS[-1] and not found:
            break
    _remember_density(key, len(rows) / max(1, scanned))
    # The rest: everything below the buckets walked, and what they cannot hold, emails stored
    # without buckets (before the backfill) among them.
    rest = {
        **query,
        "$or": [
            {"_id": _below(_oid_of_second(upper), cursor)},
            {"_id": _below(_oid_of_second(start), cursor), "list_buckets": None},
        ],
    }
    rows += list(collection.find(rest, projection).sort("_id", -1).limit(want))
    rows.sort(key=lambda row: row["_id"], reverse=True)
    return rows[:want]
