"""An email carried in its first delivery message, so the worker need not read it back.

The API has the document it just inserted; it puts a copy (BSON, base64) into the ``deliver``
message, and the worker claims the email from that copy instead of reading it: one store round
trip fewer per delivery (a find by ``_id`` costs FerretDB and PostgreSQL more CPU than the
claim's insert).

Why the copy is as good as a read: every change of an email's state takes its next turn first
(:mod:`core.store.turn_taking`), and a copy is of generation 0, the email as inserted. The claim
inserts turn 1; that insert succeeds only if no writer has taken turn 1, i.e. the email is still
exactly as inserted. If anyone has (a cancel, a void, an earlier claim of a retried or
redelivered message), the insert fails and the worker reads the email as it always did. That
holds while turn 1, once taken, still exists: turns are purged after a day
(``workers.scheduler.TURNS_KEPT``), so a copy older than :data:`MAX_AGE` is ignored.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import bson
from bson.errors import BSONError

from core.store.documents import Email

#: Larger emails (attachments, long bodies) are read from the store: the message stays small in
#: Redis, and a large document's read costs little next to its send.
MAX_CARRIED_BYTES = 16 * 1024

#: A copy this old (or this far ahead of the worker's clock) is not trusted; far below the day
#: that turns are kept, so clock skew between hosts cannot matter either.
MAX_AGE = timedelta(minutes=10)


def carry(document: Mapping[str, Any]) -> str | None:
    """The copy of a just-inserted email document for its delivery message.

    Args:
        document: The document as inserted (stored field names, generation 0).

    Returns:
        Its BSON in base64, or None when the document is larger than :data:`MAX_CARRIED_BYTES`
        or not a first-generation document.
    """
    if document.get("claim_generation", 0) != 0:
        return None
    data = bson.encode(document)
    if len(data) > MAX_CARRIED_BYTES:
        return None
    return base64.b64encode(data).decode("ascii")


def unpack(carried: str, email_id: str, now: datetime) -> Email | None:
    """The email of a carried copy, if it may stand in for a read.

    Args:
        carried: What :func:`carry` returned.
        email_id: The message's email id; the copy must be of that email.
        now: The worker's time (naive UTC).

    Returns:
        The email as inserted; None when the copy is malformed, of another email, not of
        generation 0, or older than :data:`MAX_AGE` (read the email instead).
    """
    try:
        raw = bson.decode(base64.b64decode(carried, validate=True))
    except (BSONError, binascii.Error, ValueError, TypeError):
        return None
    created_at = raw.get("created_at")
    if (
        str(raw.get("_id")) != email_id
        or raw.get("claim_generation", 0) != 0
        or not isinstance(created_at, datetime)
        or abs(now - created_at) > MAX_AGE
    ):
        return None
    email: Email = Email._from_son(raw)
    return email
