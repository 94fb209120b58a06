"""The suppression list: addresses Mailroom never sends to, whichever provider would send.

One document per address, keyed by the address itself (``_id``: its addr-spec, lowercased, the
form of ``Email.recipients``), so that adding is one insert whose duplicate fails atomically on
MongoDB and FerretDB alike (no unique secondary index, no find-and-modify), and checking the
recipients of an email is one ``_id $in`` query on the primary key.

FerretDB 1.24 pushes ``_id`` equality down to PostgreSQL but not ``$in`` (nor ``$or``): there an
``$in`` reads and decodes the whole list (measured: 1.1 to 1.6 s with 20,000 entries, against 2
to 4 ms for one equality). So on FerretDB each distinct address is one equality query, several
at once on a small shared thread pool when a batch has many.

Reasons are plain strings (:data:`REASONS`); provider events add ``hard_bounce`` and
``complaint`` with their provider and event id, an operator ``manual``.
"""

from __future__ import annotations

import base64
import binascii
import contextvars
import json
import threading
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from mongoengine import DateTimeField, Document, StringField
from mongoengine.queryset.visitor import Q
from pymongo.collection import Collection

from core.errors import DuplicateKey, FieldViolation, InvalidArgument
from core.store.documents import utcnow
from core.store.listing import store_sorts_in_memory
from core.store.mapping import map_mongo_errors
from core.store.repository import recipient_key
from core.store.suppression_changes import changed

HARD_BOUNCE = "hard_bounce"
COMPLAINT = "complaint"
MANUAL = "manual"
UNSUBSCRIBE = "unsubscribe"
#: Why an address may be suppressed.
REASONS = (HARD_BOUNCE, COMPLAINT, MANUAL, UNSUBSCRIBE)
#: FerretDB: more distinct addresses than this are looked up on the pool, that many at a time.
_SEQUENTIAL_LOOKUPS = 4
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


class Suppression(Document):  # type: ignore[misc]
    """One suppressed address."""

    meta: dict[str, Any] = {
        "collection": "suppressions",
        # Indexes are created once at start-up (ensure_indexes), never lazily on a request.
        "auto_create_index": False,
        "indexes": [
            # The list, newest first, whole or by reason (an index is walked either way).
            {"fields": ["created_at", "address"]},
            {"fields": ["reason", "created_at", "address"]},
        ],
    }

    #: The addr-spec, lowercased (:func:`suppression_key`).
    address = StringField(primary_key=True)
    reason = StringField(required=True, choices=REASONS)
    #: The provider whose event added the address; None when added by hand.
    provider = StringField()
    #: The id of that provider event.
    event_id = StringField()
    created_at = DateTimeField(required=True)


def suppression_key(address: str) -> str:
    """The stored form of an address (``Name <A@x.com>`` or ``A@x.com``): ``a@x.com``."""
    return recipient_key(address)


def suppress(
    address: str, reason: str, *, provider: str | None = None, event_id: str | None = None
) -> bool:
    """Add an address to the list; adding it again changes nothing (the first entry stays).

    Args:
        address: The address (a display name is allowed; the addr-spec is kept, lowercased).
        reason: One of :data:`REASONS`.
        provider: The provider whose event suppressed it, if any.
        event_id: That event's id, if any.

    Returns:
        True when the address was added by this call, False when it was already suppressed.

    Raises:
        ValueError: The address is empty or the reason unknown.
        StorageUnavailable: MongoDB is unreachable (StorageOutcomeUnknown: it may be added).
    """
    key = suppression_key(address)
    if not key:
        raise ValueError("an empty address cannot be suppressed")
    if reason not in REASONS:
        raise ValueError(f"unknown suppression reason {reason!r}")
    entry = Suppression(
        address=key, reason=reason, provider=provider, event_id=event_id, created_at=utcnow()
    )
    try:
        with map_mongo_errors():
            entry.save(force_insert=True, validate=False)
    except DuplicateKey:
        # Noted again: the first call may have died between its insert and its note.
        changed(Suppression._get_collection(), key, reason)
        return False
    changed(Suppression._get_collection(), key, reason)
    return True


def suppressed_among(addresses: Iterable[str]) -> dict[str, str]:
    """Which of ``addresses`` are suppressed, with one query on the primary key.

    Args:
        addresses: Addresses as the caller holds them (``Name <a@b>`` or ``a@b``).

    Returns:
        Each suppressed address, exactly as given, mapped to its reason; the others are absent.

    Raises:
        StorageUnavailable: MongoDB is unreachable.
    """
    by_key: dict[str, list[str]] = {}
    for address in addresses:
        by_key.setdefault(suppression_key(address), []).append(address)
    by_key.pop("", None)
    if not by_key:
        return {}
    # The raw collection, not a queryset: this runs on every send (the GIL's time counts).
    collection = Suppression._get_collection()
    with map_mongo_errors():
        if store_sorts_in_memory():  # FerretDB: see the module's notes
            rows = _rows_by_equality(collection, list(by_key))
        else:
            rows = list(collection.find({"_id": {"$in": list(by_key)}}, {"reason": 1}))
    return {given: row["reason"] for row in rows for given in by_key.get(row["_id"], [])}


def _rows_by_equality(collection: Collection[Any], keys: list[str]) -> list[dict[str, Any]]:
    """The entries of ``keys``, one ``_id`` equality query each (FerretDB pushes those down)."""

    def one(key: str) -> dict[str, Any] | None:
        # No projection: FerretDB answers a whole (small) entry faster than a projected one.
        row: dict[str, Any] | None = collection.find_one({"_id": key})
        return row

    if len(keys) <= _SEQUENTIAL_LOOKUPS:
        found = [one(key) for key in keys]
    else:
        # Each on a copy of this thread's context: pymongo.timeout (the accept budget) lives in
        # a context variable.
        pool = _lookup_pool()
        futures = [pool.submit(contextvars.copy_context().run, one, key) for key in keys]
        found = [future.result() for future in futures]
    return [row for row in found if row is not None]


def _lookup_pool() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="suppressions")
        return _pool


def get_suppression(address: str) -> Suppression | None:
    """The entry of an address, or None when it is not suppressed."""
    with map_mongo_errors():
        entry: Suppression | None = Suppression.objects(address=suppression_key(address)).first()
    return entry


def unsuppress(address: str) -> bool:
    """Remove an address from the list.

    Returns:
        True when it was suppressed (and is no longer), False when it was not.
    """
    key = suppression_key(address)
    with map_mongo_errors():
        deleted: int = Suppression.objects(address=key).delete()
    changed(Suppression._get_collection(), key, None)
    return deleted > 0


def all_suppressed() -> dict[str, str]:
    """The whole list: each address key and its reason (a snapshot's full load).

    Raises:
        StorageUnavailable: MongoDB is unreachable.
    """
    with map_mongo_errors():
        rows = Suppression._get_collection().find({}, {"reason": 1})
        return {row["_id"]: row["reason"] for row in rows}


def suppression_collection() -> Collection[Any]:
    """The list's raw collection (its change notes live beside it)."""
    collection: Collection[Any] = Suppression._get_collection()
    return collection


def _token(entry: Suppression, reason: str | None) -> str:
    millis = int(entry.created_at.replace(tzinfo=UTC).timestamp() * 1000)
    raw = json.dumps({"t": millis, "a": entry.address, "r": reason or ""}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _cursor(page_token: str, reason: str | None) -> tuple[datetime, str]:
    refused = InvalidArgument([FieldViolation("page_token", "not a token of this list")])
    try:
        padded = page_token + "=" * (-len(page_token) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode()))
        millis, address, bound = int(data["t"]), str(data["a"]), str(data["r"])
        at = datetime.fromtimestamp(millis / 1000, UTC).replace(tzinfo=None)
    except (ValueError, TypeError, KeyError, binascii.Error, OverflowError, OSError):
        raise refused from None
    if bound != (reason or ""):
        raise InvalidArgument(
            [FieldViolation("page_token", "made with another reason filter: start over")]
        )
    return at, address


def list_suppressions(
    *, reason: str | None = None, page_size: int = 50, page_token: str = ""
) -> tuple[list[Suppression], str]:
    """One page of the list, newest first (ties by address, descending).

    A page is one query ``created_at, address < cursor`` limited to ``page_size + 1`` (the extra
    entry only says whether there is a next page): no offset, so entries added while a client
    pages never shift its pages. MongoDB walks an index; FerretDB 1.24 sorts every matching entry
    in memory for each page (1.3 to 1.5 s with 20,000 entries on the shared test machine).

    Args:
        reason: Only entries with this reason; all when None.
        page_size: Entries per page (at least 1).
        page_token: The token of the previous page; empty for the first.

    Returns:
        The entries and the next page's token ("" on the last page).

    Raises:
        InvalidArgument: The token is malformed or was made with another reason filter.
        StorageUnavailable: MongoDB is unreachable.
    """
    query = Q(reason=reason) if reason else Q()
    if page_token:
        at, address = _cursor(page_token, reason)
        query &= Q(created_at__lt=at) | Q(created_at=at, address__lt=address)
    with map_mongo_errors():
        entries = list(
            Suppression.objects(query).order_by("-created_at", "-address").limit(page_size + 1)
        )
    if len(entries) <= page_size:
        return entries, ""
    page = entries[:page_size]
    return page, _token(page[-1], reason)
