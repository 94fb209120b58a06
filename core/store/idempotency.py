"""Idempotency keys: a key binds to the first email sent with it, for a day by default.

Keys live in their own collection keyed by ``_id`` (FerretDB has no TTL or sparse indexes); a
periodic job purges the expired ones.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from core.errors import AlreadyExists, DuplicateKey, StorageUnavailable
from core.store.documents import IdempotencyKey, utcnow
from core.store.mapping import map_mongo_errors


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
            raise AlreadyExists(
                f"idempotency key {key!r} was already used with a different request"
            )
        return str(existing.email_id)
    raise StorageUnavailable(f"could not reserve idempotency key {key!r}")


def purge_idempotency_keys(now: datetime | None = None) -> int:
    """Delete expired idempotency keys; return how many."""
    with map_mongo_errors():
        return int(IdempotencyKey.objects(expires_at__lte=now or utcnow()).delete())
