"""Idempotency keys: a key binds to the first email sent with it, for a day by default.

Keys live in their own collection keyed by ``_id`` (FerretDB has no TTL or sparse indexes); a
periodic job purges the expired ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from core.errors import (
    AlreadyExists,
    DuplicateKey,
    MailroomError,
    StorageOutcomeUnknown,
    StorageUnavailable,
)
from core.store.documents import IdempotencyKey, utcnow
from core.store.mapping import map_mongo_errors
from core.store.repository import insert_new


def reserve_idempotency_key(
    key: str, fingerprint: str, email_id: str, *, ttl: timedelta
) -> str | None:
    """Bind ``key`` to ``email_id`` unless it is already bound.

    Args:
        key: The client's idempotency key.
        fingerprint: A hash of the request payload.
        email_id: The id the new email will get.
        ttl: How long the key is honoured.

    Returns:
        None when the key is new (the caller creates the email), else the first email's id.

    Raises:
        AlreadyExists: The key was used with a different payload.
    """
    now = utcnow()
    for _ in range(3):
        try:
            with map_mongo_errors():
                IdempotencyKey(
                    key=key,
                    fingerprint=fingerprint,
                    email_id=email_id,
                    created_at=now,
                    expires_at=now + ttl,
                ).save(force_insert=True, validate=False)
            return None
        except DuplicateKey:
            pass
        with map_mongo_errors():
            existing = IdempotencyKey.objects(key=key).first()
            if existing is not None and existing.expires_at <= now:
                # An expired key is free again; delete it only if it is still the expired one.
                IdempotencyKey.objects(key=key, expires_at__lte=now).delete()
                continue
        if existing is None:
            continue
        if existing.fingerprint != fingerprint:
            raise _reused(key)
        return str(existing.email_id)
    raise StorageUnavailable(f"could not reserve idempotency key {key!r}")


def reserve_idempotency_keys(
    entries: Sequence[tuple[str, str, str]], *, ttl: timedelta
) -> list[str | MailroomError | None]:
    """:func:`reserve_idempotency_key` for many keys: one bulk insert, one read of the taken.

    A key that is taken but expired, or refused by the bulk write, goes the one-key way.

    Args:
        entries: ``(key, fingerprint, email_id)`` of each email. A key may come twice (two
            concurrent calls with one key): one binds it, the other is answered as its retry.
        ttl: How long the keys are honoured.

    Returns:
        For each entry what :func:`reserve_idempotency_key` returns, or the error it raises
        (:class:`AlreadyExists`, or a storage error for that key alone).

    Raises:
        StorageOutcomeUnknown: The bulk insert's outcome is unknown: any key may be bound.
        StorageUnavailable: MongoDB is unreachable; no key was bound.
    """
    now = utcnow()
    docs = [
        IdempotencyKey(
            key=key,
            fingerprint=fingerprint,
            email_id=email_id,
            created_at=now,
            expires_at=now + ttl,
        )
        .to_mongo()
        .to_dict()
        for key, fingerprint, email_id in entries
    ]
    outcome = insert_new(IdempotencyKey._get_collection(), docs)
    results: list[str | MailroomError | None] = [None] * len(entries)
    existing: dict[str, IdempotencyKey] = {}
    if outcome.existing:
        try:
            with map_mongo_errors():
                taken = [entries[index][0] for index in outcome.existing]
                existing = {k.key: k for k in IdempotencyKey.objects(key__in=taken)}
        except StorageUnavailable as exc:
            # The other keys are bound. A taken key names an earlier request's email, which may
            # be this caller's own first try: unknown, so a retry with the key decides (503).
            for index in outcome.existing:
                results[index] = StorageOutcomeUnknown(
                    f"the idempotency key's first request could not be read: {exc.message}"
                )
            for index in outcome.refused:
                results[index] = _bind_one(entries[index], ttl)
            return results
    for index in outcome.existing | outcome.refused:
        key, fingerprint, _ = entries[index]
        first = existing.get(key)
        if first is not None and first.expires_at > now:
            if first.fingerprint != fingerprint:
                results[index] = _reused(key)
            else:
                results[index] = str(first.email_id)
            continue
        results[index] = _bind_one(entries[index], ttl)
    return results


def _bind_one(entry: tuple[str, str, str], ttl: timedelta) -> str | MailroomError | None:
    """:func:`reserve_idempotency_key` for one entry, its error returned rather than raised."""
    key, fingerprint, email_id = entry
    try:
        return reserve_idempotency_key(key, fingerprint, email_id, ttl=ttl)
    except MailroomError as exc:
        return exc


def _reused(key: str) -> AlreadyExists:
    return AlreadyExists(f"idempotency key {key!r} was already used with a different request")


def purge_idempotency_keys(now: datetime | None = None) -> int:
    """Delete expired idempotency keys; return how many."""
    with map_mongo_errors():
        return int(IdempotencyKey.objects(expires_at__lte=now or utcnow()).delete())
