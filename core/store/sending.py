"""SENDING in ListEmails: the emails a worker's live claim holds right now.

A worker's claim is a turn (:func:`core.store.turn_taking.acquire_turn`) with a lease, and the
email document is written only with the outcome: the stored status of an email being sent stays
QUEUED, RETRYING or SCHEDULED (due). The claim cannot write SENDING into the email without a
second write: FerretDB 1.24 updates by rewriting the whole document, so only a writer holding
the email's turn may write it, and the turn's insert is the claim's one round trip.

So ListEmails maps SENDING to the claim's own condition, the one GetEmail shows: an email is
being sent while a claim turn of a generation above its ``last_turn`` (its outcome not written)
has a lease that has not expired, and its stored status is claimable. A claim's turn carries the
minutes its lease covers (``list_buckets``, see :func:`core.store.turn_taking.lease_keys`), so
one equality finds the claims whose lease covers this minute (GIN-indexed on FerretDB, indexed
on MongoDB); the finished ones among them are told apart by their email's ``last_turn``.

* ``status=SENDING`` lists the claimable emails that a live claim holds (MongoDB: one ``$in``
  query per claimable status on the ``{status, _id}`` index; FerretDB: each claimed email by
  ``_id``).
* ``status=QUEUED`` (RETRYING, SCHEDULED) leaves those out: they are SENDING now.
* Every listed email shows SENDING (and the claim's provider) while held, as GetEmail does.

What it costs: one read of the claims whose lease covers this minute, the finished ones
included (the claims taken within about ``MAILROOM_LEASE_SECONDS`` + a minute: at 5 emails/s
and the default lease, about 900 small documents), and for a status filter naming SENDING or a
claimable status, their emails (on FerretDB one ``_id`` read each). A page with no claimable
email, or a filter on final statuses only, reads no claim at all.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bson import ObjectId

from core.store.documents import Email, EmailTurn, Status, utcnow
from core.store.repository import CLAIMABLE
from core.store.turn_taking import TurnPurpose, lease_key

#: The stored statuses of an email that may be being sent.
CLAIMABLE_STATUSES: tuple[str, ...] = tuple(sorted(str(s) for s in CLAIMABLE))


@dataclass(frozen=True)
class LiveClaim:
    """A claim whose lease has not expired.

    Attributes:
        generation: Its turn's generation: the email is being sent while its ``last_turn`` is
            below it.
        provider: The provider the claim sends through.
    """

    generation: int
    provider: str


def live_claims(now: datetime | None = None) -> dict[str, LiveClaim]:
    """The claims whose lease has not expired, by email id (the newest claim of each).

    Raises:
        pymongo.errors.PyMongoError: The caller maps it (``map_mongo_errors``).
    """
    now = now or utcnow()
    projection = {"email_id": 1, "purpose": 1, "expires_at": 1, "provider": 1}
    claims: dict[str, LiveClaim] = {}
    for row in EmailTurn._get_collection().find({"list_buckets": lease_key(now)}, projection):
        expires_at = row.get("expires_at")
        if row.get("purpose") != TurnPurpose.CLAIM or expires_at is None or expires_at <= now:
            continue
        generation = int(str(row["_id"]).rsplit(":", 1)[1])
        held = claims.get(row["email_id"])
        if held is None or held.generation < generation:
            claims[row["email_id"]] = LiveClaim(generation, row.get("provider") or "")
    return claims


def held_by(document: dict[str, Any], claims: dict[str, LiveClaim]) -> LiveClaim | None:
    """The live claim sending a stored email document now, if any."""
    claim = claims.get(str(document["_id"]))
    if claim is None or document.get("status") not in CLAIMABLE_STATUSES:
        return None
    if int(document.get("claim_generation") or 0) >= claim.generation:
        return None  # its outcome is written: the lease outlives the send
    return claim


def sending_documents(
    query: dict[str, Any],
    projection: dict[str, int] | None,
    claims: dict[str, LiveClaim],
    cursor: ObjectId | None,
    *,
    one_by_one: bool,
) -> list[dict[str, Any]]:
    """The emails matching ``query`` (no status in it) that a live claim holds, newest first.

    Args:
        query: The ListEmails filter without its status.
        projection: The page's projection.
        claims: :func:`live_claims`.
        cursor: Only ids below it (the page token's), if any.
        one_by_one: Read each claimed email by its ``_id`` (FerretDB, which pushes no ``$in``
            down: one query per claim, each from the ``_id`` index) instead of one ``$in`` query
            per claimable status (MongoDB's ``{status, _id}`` index).
    """
    ids = [ObjectId(i) for i in claims if ObjectId.is_valid(i)]
    ids = [i for i in ids if cursor is None or i < cursor]
    collection = Email._get_collection()
    found: list[dict[str, Any]] = []
    if one_by_one:
        for oid in ids:
            document = collection.find_one({**query, "_id": oid}, projection)
            if document is not None:
                found.append(document)
    elif ids:
        for status in CLAIMABLE_STATUSES:
            found += collection.find({**query, "status": status, "_id": {"$in": ids}}, projection)
    held = [doc for doc in found if held_by(doc, claims) is not None]
    return sorted(held, key=lambda doc: doc["_id"], reverse=True)


def show_sending(documents: Iterable[dict[str, Any]], claims: dict[str, LiveClaim]) -> None:
    """Show the held ones among ``documents`` as GetEmail does: SENDING, the claim's provider."""
    for document in documents:
        claim = held_by(document, claims)
        if claim is not None:
            document["status"] = str(Status.SENDING)
            document["provider"] = claim.provider or document.get("provider", "")
