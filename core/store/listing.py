"""ListEmails in the store: the filter query, the newest-first page and its opaque token.

A page is one query, ``filter AND _id < cursor``, sorted by ``_id`` descending (ObjectIds grow
with time, so this is newest first) and limited to ``page_size + 1``: the extra email only says
whether there is a next page. There is no offset, so a deep page costs what the first one does,
and emails accepted while a client pages sort before its cursor: it sees every email that
existed when it started exactly once.

Each filter is served by a compound index ``{field, _id}`` (see ``Email.meta``) on MongoDB; on
FerretDB/PostgreSQL by the GIN indexes the devtools trigger puts on the filtered fields.

FerretDB 1.24 pushes equality filters down to PostgreSQL but never the sort nor the limit, so
there a page walks the emails' time buckets instead (:mod:`core.store.bucket_walk`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from bson import ObjectId

from core.store import sending
from core.store.backend import ferretdb_version
from core.store.bucket_walk import walk_buckets
from core.store.documents import Email, Status
from core.store.mapping import map_mongo_errors
from core.store.page_tokens import decode_page_token as decode_page_token
from core.store.page_tokens import encode_page_token as encode_page_token
from core.store.repository import metadata_pair, recipient_key
from core.store.views import DocumentView

#: The fields a BASIC page leaves out, so the store does not even send them.
BASIC_EXCLUDED = ("text", "html", "headers", "attachments.content")
#: The lookup keys no page shows (each a list FerretDB encodes and mongoengine converts).
LOOKUP_KEYS = ("recipients", "metadata_pairs", "list_buckets")
#: Bytes of the filter hash in a page token: enough to tell filters apart, short in a URL.
FILTER_HASH_BYTES = 8
#: The statuses a live claim changes: SENDING, and the stored ones it hides.
_HELD_STATUSES = {str(Status.SENDING), *sending.CLAIMABLE_STATUSES}


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

    emails: list[DocumentView] = field(default_factory=list)
    next_page_token: str = ""


def store_sorts_in_memory() -> bool:
    """Whether the store is FerretDB, which sorts a query's every match in memory."""
    return bool(ferretdb_version(Email._get_db()))


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
        return walk_buckets(
            query,
            projection,
            want,
            cursor,
            key=email_filter.digest(),
            created_before=email_filter.created_before,
        )
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
            (:data:`BASIC_EXCLUDED`) in the store's answer itself (the lookup keys are always
            left out).
        bucketed: Walk the time buckets (see the module's notes); None: on FerretDB only.

    Raises:
        InvalidArgument: A malformed token, or one made for other filters (``page_token``).
        StorageUnavailable: MongoDB is unreachable.
    """
    cursor = decode_page_token(page_token, email_filter) if page_token else None
    projection = dict.fromkeys(LOOKUP_KEYS if full else LOOKUP_KEYS + BASIC_EXCLUDED, 0)
    # SENDING is no stored status: it is a live claim on a claimable email (core.store.sending).
    stored = tuple(s for s in email_filter.statuses if s != Status.SENDING)
    query = replace(email_filter, statuses=stored).query()
    want = page_size + 1
    with map_mongo_errors():
        claims = sending.live_claims() if _HELD_STATUSES & set(email_filter.statuses) else None
        held: list[dict[str, Any]] = []
        if claims:
            unfiltered = replace(email_filter, statuses=()).query()
            one_by_one = store_sorts_in_memory() if bucketed is None else bucketed
            held = sending.sending_documents(
                unfiltered, projection, claims, cursor, one_by_one=one_by_one
            )
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
    emails = [DocumentView(doc, Email) for doc in shown]
    token = ""
    if len(documents) > page_size:
        token = encode_page_token(documents[page_size - 1]["_id"], email_filter)
    return Page(emails, token)
