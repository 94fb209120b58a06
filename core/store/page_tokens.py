"""ListEmails' page tokens: opaque, and bound to the filters they were made with.

A token is the last listed email's ``_id`` and a short hash of the filters
(:meth:`core.store.listing.EmailFilter.digest`), base64url: used with other filters, or
altered, it is refused as INVALID_ARGUMENT naming ``page_token``.
"""

from __future__ import annotations

import base64
import binascii
from typing import Protocol

from bson import ObjectId

from core.errors import FieldViolation, InvalidArgument

_OID_BYTES = 12


class Filters(Protocol):
    """What a token binds: the filters' hash (:class:`core.store.listing.EmailFilter` has it)."""

    def digest(self) -> bytes:
        """A short hash of the filters, equal for equal filters."""
        ...


def _bad_token(description: str) -> InvalidArgument:
    return InvalidArgument([FieldViolation("page_token", description)])


def encode_page_token(last_id: ObjectId, email_filter: Filters) -> str:
    """The opaque token of the page after ``last_id``: its id and the filter's hash, base64url."""
    raw = last_id.binary + email_filter.digest()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_page_token(token: str, email_filter: Filters) -> ObjectId:
    """Return the cursor of a page token made for ``email_filter``.

    Raises:
        InvalidArgument: The token is malformed, or was made for other filters (``page_token``).
    """
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError) as exc:
        raise _bad_token("not a page token of this service") from exc
    digest = email_filter.digest()
    if len(raw) != _OID_BYTES + len(digest):
        raise _bad_token("not a page token of this service")
    if raw[_OID_BYTES:] != digest:
        raise _bad_token("made for other filters: pass the same filters as the first page")
    return ObjectId(raw[:_OID_BYTES])
