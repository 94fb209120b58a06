"""ListEmails in the store: the filter query, the newest-first page and its opaque token.

A page is one query, ``filter AND _id < cursor``, sorted by ``_id`` descending (ObjectIds grow
with time, so this is newest first) and limited to ``page_size + 1``: the extra email only says
whether there is a next page. There is no offset, so a deep page costs what the first one does,
and emails accepted while a client pages sort before its cursor: it sees every email that
existed when it started exactly once.

Each filter is served by a compound index ``{field, _id}`` (see ``Email.meta``) on MongoDB; on
FerretDB/PostgreSQL by the GIN indexes the devtools trigger puts on the filtered fields.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from bson import ObjectId

from core.errors import FieldViolation, InvalidArgument
from core.store.documents import Email
from core.store.mapping import map_mongo_errors
from core.store.repository import metadata_pair, recipient_key

#: The fields a BASIC page leaves out, so the store does not even send them.
BASIC_EXCLUDED = ("text", "html", "headers", "attachments.content")
#: Bytes of the filter hash in a page token: enough to tell filters apart, short in a URL.
_FILTER_HASH_BYTES = 8
_OID_BYTES = 12


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
        return hashlib.sha256(canonical.encode()).digest()[:_FILTER_HASH_BYTES]


@dataclass
class Page:
    """One page of emails, newest first, and the token of the next one ("" on the last)."""

    emails: list[Email] = field(default_factory=list)
    next_page_token: str = ""


def _bad_token(description: str) -> InvalidArgument:
    return InvalidArgument([FieldViolation("page_token", description)])


def encode_page_token(last_id: ObjectId, email_filter: EmailFilter) -> str:
    """The opaque token of the page after ``last_id``: its id and the filter's hash, base64url."""
    raw = last_id.binary + email_filter.digest()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_page_token(token: str, email_filter: EmailFilter) -> ObjectId:
    """Return the cursor of a page token made for ``email_filter``.

    Raises:
        InvalidArgument: The token is malformed, or was made for other filters (``page_token``).
    """
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError) as exc:
        raise _bad_token("not a page token of this service") from exc
    if len(raw) != _OID_BYTES + _FILTER_HASH_BYTES:
        raise _bad_token("not a page token of this service")
    if raw[_OID_BYTES:] != email_filter.digest():
        raise _bad_token("made for other filters: pass the same filters as the first page")
    return ObjectId(raw[:_OID_BYTES])


def list_page(
    email_filter: EmailFilter, *, page_size: int, page_token: str = "", full: bool = True
) -> Page:
    """Return one page of the emails ``email_filter`` keeps, newest first.

    Args:
        email_filter: The filters.
        page_size: At most this many emails (at least 1).
        page_token: The previous page's ``next_page_token``; empty for the first page.
        full: False leaves out the bodies, the attachments' contents and the headers
            (:data:`BASIC_EXCLUDED`) in the store's answer itself.

    Raises:
        InvalidArgument: A malformed token, or one made for other filters (``page_token``).
        StorageUnavailable: MongoDB is unreachable.
    """
    query = email_filter.query()
    if page_token:
        query["_id"] = {"$lt": decode_page_token(page_token, email_filter)}
    projection = None if full else dict.fromkeys(BASIC_EXCLUDED, 0)
    with map_mongo_errors():
        cursor = (
            Email._get_collection().find(query, projection).sort("_id", -1).limit(page_size + 1)
        )
        documents = list(cursor)
    emails = [Email._from_son(doc) for doc in documents[:page_size]]
    token = ""
    if len(documents) > page_size:
        token = encode_page_token(documents[page_size - 1]["_id"], email_filter)
    return Page(emails, token)
