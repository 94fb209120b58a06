"""ListEmails in the store: the filter query, the newest-first page and its opaque token.

A page is one query, ``filter AND _id < cursor``, sorted by ``_id`` descending (ObjectIds grow
with time, so this is newest first) and limited to ``page_size + 1``: the extra email only says
whether there is a next page. There is no offset, so a deep page costs what the first one does,
and emails accepted while a client pages sort before its cursor: it sees every email that
existed when it started exactly once.

Each filter is served by a compound index ``{field, _id}`` (see ``Email.meta``) on MongoDB; on
FerretDB/PostgreSQL by the GIN indexes the devtools trigger puts on the filtered fields.

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
queries.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from bson import ObjectId
from pymongo.errors import OperationFailure

from core.store import sending
from core.store.documents import Email, Status
from core.store.mapping import map_mongo_errors
from core.store.page_tokens import decode_page_token as decode_page_token
from core.store.page_tokens import encode_page_token as encode_page_token
from core.store.repository import LIST_BUCKET_SPANS, list_bucket, metadata_pair, recipient_key

#: The fields a BASIC page leaves out, so the store does not even send them.
BASIC_EXCLUDED = ("text", "html", "headers", "attachments.content")
#: Bytes of the filter hash in a page token: enough to tell filters apart, short in a URL.
FILTER_HASH_BYTES = 8
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
#: The statuses a live claim changes: SENDING, and the stored ones it hides.
_HELD_STATUSES = {str(Status.SENDING), *sending.CLAIMABLE_STATUSES}
# Whether the store sorts in memory (FerretDB), by database name; asked once per process.
_sorts_in_memory: dict[str, bool] = {}


@dataclass(frozen=True)
class EmailFilter:
    """What a ListEmails request keeps; empty fields keep everything."""

    statuses: tuple[str, ...] = ()
    recipient: str = ""
    tag: str = ""
    metadata: tuple[tuple[str, str], ...] = ()
    provider: str = ""
    created_after: datetime | None = None
    created_before: datetime | None = None
    idempotency_key: str = ""

    @classmethod
    def of(
        cls,
        *,
        statuses: Iterable[str] = (),
        recipient: str = "",
        tag: str = "",
        metadata: dict[str, str] | None = None,
        provider: str = "",
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        idempotency_key: str = "",
    ) -> EmailFilter:
        """Return a filter in canonical form (sorted, deduplicated), so equal filters hash alike."""
        return cls(
            statuses=tuple(sorted(set(statuses))),
            recipient=recipient_key(recipient) if recipient else "",
            tag=tag,
            metadata=tuple(sorted((metadata or {}).items())),
            provider=provider,
            created_after=created_after,
            created_before=created_before,
            idempotency_key=idempotency_key,
        )

    def query(self) -> dict[str, Any]:
        """The MongoDB filter document (without the page cursor)."""
        query: dict[str, Any] = {}
        if self.statuses:
            query["status"] = (
                self.statuses[0] if len(self.statuses) == 1 else {"$in": list(self.statuses)}
            )
        if self.recipient:
            query["recipients"] = self.recipient
        if self.tag:
            query["tags"] = self.tag
        if self.metadata:
            pairs = [metadata_pair(k, v) for k, v in self.metadata]
            # One pair as plain equality: FerretDB pushes that down to PostgreSQL, not $all.
            query["metadata_pairs"] = pairs[0] if len(pairs) == 1 else {"$all": pairs}
        if self.provider:
            query["provider"] = self.provider
        created: dict[str, datetime] = {}
        if self.created_after is not None:
            created["$gte"] = self.created_after
        if self.created_before is not None:
            created["$lt"] = self.created_before
        if created:
            query["created_at"] = created
        if self.idempotency_key:
            query["idempotency_key"] = self.idempotency_key
        return query

    def digest(self) -> bytes:
        """A short hash of the filter, carried in page tokens to refuse a token of another one."""
        canonical = json.dumps(
            {
                "statuses": self.statuses,
                "recipient": self.recipient,
                "tag": self.tag,
                "metadata": self.metadata,
                "provider": self.provider,
                "created_after": self.created_after.isoformat() if self.created_after else "",
                "created_before": self.created_before.isoformat() if self.created_before else "",
                "idempotency_key": self.idempotency_key,
            },
            sort_keys=True,
        )
        return hashlib.sha256(canonical.encode()).digest()[:FILTER_HASH_BYTES]


@dataclass
class Page:
    """One page of emails, newest first, and the token of the next one ("" on the last)."""

    emails: list[Email] = field(default_factory=list)
    next_page_token: str = ""


def store_sorts_in_memory() -> bool:
    """Whether the store is FerretDB, which sorts a query's every match in memory."""
    db = Email._get_db()
    if db.name not in _sorts_in_memory:
        try:
            info = db.command("buildInfo")
        except (OperationFailure, NotImplementedError):
            # A store that cannot tell (mongomock in the unit tests) is taken for MongoDB.
            info = {}
        # FerretDB's buildInfo has ferretdbVersion and ferretdbFeatures; MongoDB's has neither.
        _sorts_in_memory[db.name] = any(key.startswith("ferretdb") for key in info)
    return _sorts_in_memory[db.name]


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


def remembered_density(email_filter: EmailFilter) -> float | None:
    """The matches per second the last walked page of ``email_filter`` saw in this process."""
    with _densities_lock:
        return _densities.get(email_filter.digest())


def _remember_density(email_filter: EmailFilter, density: float) -> None:
    key = email_filter.digest()
    with _densities_lock:
        _densities[key] = density
        _densities.move_to_end(key)
        while len(_densities) > _DENSITY_KEPT:
            _densities.popitem(last=False)


def _walk_buckets(
    query: dict[str, Any],
    projection: dict[str, int] | None,
    want: int,
    cursor: ObjectId | None,
    email_filter: EmailFilter,
) -> list[dict[str, Any]]:
    """Up to ``want`` documents matching ``query`` below ``cursor``, newest first, by bucket."""
    collection = Email._get_collection()
    now = int(time.time())
    start = (
        int(cursor.generation_time.timestamp()) + 1
        if cursor is not None
        else now + _CLOCK_SLACK_SECONDS
    )
    if email_filter.created_before is not None:
        # An id is made before its email is stored (a successor keeps the voided id's time), so
        # an email created before T has an id older than T, give or take the API clocks.
        created_before = email_filter.created_before.replace(tzinfo=UTC)
        start = min(start, int(created_before.timestamp()) + _CLOCK_SLACK_SECONDS)
    density = remembered_density(email_filter)
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
            _remember_density(email_filter, len(rows) / max(1, start - oldest))
            return rows
        lower = (upper - 1) // span * span
        scanned += upper - lower
        upper = lower
        if span == LIST_BUCKET_SPANS[-1] and not found:
            break
    _remember_density(email_filter, len(rows) / max(1, scanned))
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


def _read(
    query: dict[str, Any],
    projection: dict[str, int] | None,
    want: int,
    cursor: ObjectId | None,
    email_filter: EmailFilter,
    bucketed: bool | None,
) -> list[dict[str, Any]]:
    """Up to ``want`` documents matching ``query`` below ``cursor``, newest first."""
    if bucketed is None:
        # An idempotency key matches one email (two with a voided one's successor): one plain
        # query is cheapest even where the store sorts in memory.
        bucketed = not email_filter.idempotency_key and store_sorts_in_memory()
    if bucketed:
        return _walk_buckets(query, projection, want, cursor, email_filter)
    if cursor is not None:
        query = {**query, "_id": {"$lt": cursor}}
    return list(Email._get_collection().find(query, projection).sort("_id", -1).limit(want))


def list_page(
    email_filter: EmailFilter,
    *,
    page_size: int,
    page_token: str = "",
    full: bool = True,
    bucketed: bool | None = None,
) -> Page:
    """Return one page of the emails ``email_filter`` keeps, newest first.

    Args:
        email_filter: The filters.
        page_size: At most this many emails (at least 1).
        page_token: The previous page's ``next_page_token``; empty for the first page.
        full: False leaves out the bodies, the attachments' contents and the headers
            (:data:`BASIC_EXCLUDED`) in the store's answer itself.
        bucketed: Walk the time buckets (see the module's notes); None: on FerretDB only.

    Raises:
        InvalidArgument: A malformed token, or one made for other filters (``page_token``).
        StorageUnavailable: MongoDB is unreachable.
    """
    cursor = decode_page_token(page_token, email_filter) if page_token else None
    projection = None if full else dict.fromkeys(BASIC_EXCLUDED, 0)
    # SENDING is no stored status: it is a live claim on a claimable email (core.store.sending).
    stored = tuple(s for s in email_filter.statuses if s != Status.SENDING)
    query = replace(email_filter, statuses=stored).query()
    want = page_size + 1
    with map_mongo_errors():
        claims = sending.live_claims() if _HELD_STATUSES & set(email_filter.statuses) else None
        held: list[dict[str, Any]] = []
        if claims:
            unfiltered = replace(email_filter, statuses=()).query()
            held = sending.sending_documents(unfiltered, projection, claims, cursor)
        if email_filter.statuses and not stored:
            documents = held[:want]
        else:
            # A held email stored QUEUED is not QUEUED now: read enough to leave them out.
            documents = _read(query, projection, want + len(held), cursor, email_filter, bucketed)
            held_ids = {doc["_id"] for doc in held}
            documents = [doc for doc in documents if doc["_id"] not in held_ids]
            if Status.SENDING in email_filter.statuses:
                documents = sorted(documents + held, key=lambda doc: doc["_id"], reverse=True)
            documents = documents[:want]
        shown = documents[:page_size]
        if claims is None and any(d.get("status") in sending.CLAIMABLE_STATUSES for d in shown):
            claims = sending.live_claims()
        if claims:
            sending.show_sending(shown, claims)
    emails = [Email._from_son(doc) for doc in shown]
    token = ""
    if len(documents) > page_size:
        token = encode_page_token(documents[page_size - 1]["_id"], email_filter)
    return Page(emails, token)
