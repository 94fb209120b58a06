"""Taking a turn: the one atomic step behind every exclusive change of an email.

A turn is the insert of ``<email id>:<generation>`` into ``email_turns``; a duplicate ``_id``
fails atomically on MongoDB and FerretDB alike, where find-and-modify is not atomic (FerretDB
1.24). This module takes turns (skipping those whose writers are gone) and reads them;
:mod:`core.store.turns` builds the state changes on them (cancel, fail, void, accept), and
``workers.store.claims`` a worker's claim.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from core.errors import DuplicateKey
from core.store.documents import Email, EmailTurn, utcnow
from core.store.mapping import map_mongo_errors
from core.store.repository import find_email

log = logging.getLogger(__name__)


class TurnPurpose(StrEnum):
    """Why a turn was taken; kept on the :class:`EmailTurn`."""

    CLAIM = "claim"
    CANCEL = "cancel"
    FAIL = "fail"
    REPLAY = "replay"
    #: The API could not confirm the email's insert and answered that it was not accepted.
    VOID = "void"
    #: An idempotent retry took over an email whose first request got no confirmed answer.
    ACCEPT = "accept"
    #: The retention job removed an old final email's content (core.store.retention).
    PURGE = "purge"
    #: The backfill gave an email stored before them ListEmails' time buckets.
    BACKFILL = "backfill"


@dataclass(frozen=True)
class TurnTaken:
    """A turn this writer holds.

    Attributes:
        generation: Its generation; the writer's update sets ``last_turn`` to it.
        interrupted: An expired claim skipped on the way: a worker died (or stalled past its
            lease) mid-send, so the provider may have accepted the email already.
    """

    generation: int
    interrupted: EmailTurn | None = None


@dataclass(frozen=True)
class TurnBlocked:
    """Why a writer could not take a turn.

    Attributes:
        reason: ``held`` (a worker's live claim), ``void`` (the email was never accepted),
            ``busy`` (another writer is between its turn and its write) or ``moved`` (the
            email changed since it was read).
        until: When the live claim expires (``held``).
    """

    reason: str
    until: datetime | None = None


#: A claim's lease is found by the minutes it covers (see :func:`lease_keys`).
LEASE_KEY_SECONDS = 60


def lease_key(at: datetime) -> str:
    """The lookup key of the minute holding ``at`` (a naive UTC datetime, as stored)."""
    return f"lease:{int(at.replace(tzinfo=UTC).timestamp()) // LEASE_KEY_SECONDS}"


def lease_keys(start: datetime, end: datetime) -> list[str]:
    """The keys of every minute from ``start`` to ``end``, both included.

    Stored on a claim's turn as ``list_buckets`` (the field FerretDB's GIN indexes cover on
    every collection), so ListEmails finds the claims whose lease covers the current minute
    with one equality (``core.store.sending``).
    """
    first = int(start.replace(tzinfo=UTC).timestamp()) // LEASE_KEY_SECONDS
    last = int(end.replace(tzinfo=UTC).timestamp()) // LEASE_KEY_SECONDS
    return [f"lease:{minute}" for minute in range(first, last + 1)]


def insert_turn(
    email_id: str,
    generation: int,
    purpose: TurnPurpose,
    *,
    owner: str = "",
    expires_at: datetime | None = None,
    provider: str = "",
) -> bool:
    """Insert turn ``generation`` of the email; False when another writer has it already.

    Raises:
        StorageUnavailable: MongoDB is unreachable.
    """
    doc: dict[str, Any] = {
        "_id": f"{email_id}:{generation}",
        "email_id": email_id,
        "purpose": str(purpose),
        "owner": owner,
        "created_at": utcnow(),
    }
    if expires_at is not None:
        doc["expires_at"] = expires_at
        doc["list_buckets"] = lease_keys(doc["created_at"], expires_at)
    if provider:
        doc["provider"] = provider
    try:
        with map_mongo_errors():
            EmailTurn._get_collection().insert_one(doc)
    except DuplicateKey:
        return False
    return True


def read_turn(email_id: str, generation: int) -> EmailTurn | None:
    """Return turn ``generation`` of the email, if it was taken.

    Raises:
        StorageUnavailable: MongoDB is unreachable.
    """
    with map_mongo_errors():
        return EmailTurn.objects(key=f"{email_id}:{generation}").first()  # type: ignore[no-any-return]


def is_live(turn: EmailTurn, now: datetime) -> bool:
    """Whether a claim's lease still holds at ``now``."""
    return turn.expires_at is not None and turn.expires_at > now


#: A turn whose writer died between taking it and writing its change blocks that generation for
#: everyone; once it is this old (and the email still shows the generation before it), the next
#: writer skips it. Far longer than the one write that follows a turn. A claim's turn carries its
#: own expiry (the lease) instead.
TURN_TAKEOVER = timedelta(seconds=60)
_MAX_SKIPPED_TURNS = 3


def acquire_turn(
    email: Email,
    purpose: TurnPurpose,
    *,
    owner: str = "",
    expires_at: datetime | None = None,
    provider: str = "",
    only_next: bool = False,
) -> TurnTaken | TurnBlocked:
    """Take the next turn of an email as read, skipping turns whose writers are gone.

    One insert: exactly one concurrent writer gets each generation, on MongoDB and FerretDB
    alike. A taken turn is skipped when it is an ``accept`` (it writes nothing), an expired
    claim, or another writer's turn older than :data:`TURN_TAKEOVER`, and in both latter cases
    only while the email still shows the generation read.

    Args:
        email: The email as the writer read it.
        purpose: Why.
        owner: Who (a worker id).
        expires_at: A claim's lease: until then the turn blocks every other writer.
        provider: The provider a claim sends through (shown if its worker dies).
        only_next: Take exactly the turn after the one read, or nothing (``moved``): for a
            writer that must know the email is unchanged since it was read, without reading
            anything more.

    Raises:
        StorageUnavailable: MongoDB is unreachable.
    """
    email_id = str(email.id)
    read_generation = int(email.last_turn or 0)
    generation = read_generation + 1
    interrupted: EmailTurn | None = None
    for _ in range(_MAX_SKIPPED_TURNS):
        taken = insert_turn(
            email_id, generation, purpose, owner=owner, expires_at=expires_at, provider=provider
        )
        if taken:
            return TurnTaken(generation, interrupted)
        if only_next:
            return TurnBlocked("moved")
        turn = read_turn(email_id, generation)
        if turn is None:  # purged in between: try the same generation again
            continue
        now = utcnow()
        if turn.purpose == TurnPurpose.ACCEPT:
            generation += 1
            continue
        if turn.purpose == TurnPurpose.VOID:
            return TurnBlocked("void")
        if turn.purpose == TurnPurpose.CLAIM and is_live(turn, now):
            return TurnBlocked("held", until=turn.expires_at)
        if turn.purpose != TurnPurpose.CLAIM and now - turn.created_at < TURN_TAKEOVER:
            return TurnBlocked("busy")
        # Its writer died (or outlived its lease): skip the turn if it never wrote its change.
        current = find_email(email_id)
        if current is None or int(current.last_turn or 0) != read_generation:
            return TurnBlocked("moved")
        log.warning(
            "email %s: turn %d (%s by %s) was never written; skipping it",
            email_id,
            generation,
            turn.purpose,
            turn.owner,
        )
        if turn.purpose == TurnPurpose.CLAIM:
            interrupted = turn
        generation += 1
    return TurnBlocked("busy")
