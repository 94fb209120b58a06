"""A Redis lock with an expiry and an owner token, so one rescan runs at a time across schedulers.

This is redis-py's own :class:`redis.lock.Lock`: ``SET name token NX PX`` to take it, and Lua
scripts that extend or delete the key only while it still holds our token. A holder that dies
leaves the lock to expire; a holder that overran the expiry cannot release (or extend) the lock
someone else took meanwhile. The token names the holder (host, pid, random part), so
``redis-cli GET <name>`` tells an operator who runs the scan.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import redis
from redis.exceptions import LockError

log = logging.getLogger(__name__)


def owner_token() -> str:
    """Return a token naming this process and unique to one acquisition."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex}"


class HeldLock:
    """A lock this process holds; keep it alive with :meth:`extend` during long work.

    Args:
        lock: The acquired redis-py lock.
        token: Its owner token.
    """

    def __init__(self, lock: redis.lock.Lock, token: str) -> None:
        self._lock = lock
        self.token = token
        self.name = str(lock.name)

    def extend(self) -> bool:
        """Reset the expiry to the full timeout.

        Returns:
            False when the lock is no longer ours (it expired and someone else may hold it):
            the caller should stop the guarded work.
        """
        try:
            self._lock.reacquire()
        except LockError:
            log.warning("lock %s expired and is no longer ours", self.name)
            return False
        return True

    def owned(self) -> bool:
        """Return whether the lock still holds our token."""
        return bool(self._lock.owned())


@contextmanager
def hold(client: redis.Redis, name: str, *, ttl_seconds: float) -> Iterator[HeldLock | None]:
    """Try to take the lock ``name`` without waiting; release it on exit if still ours.

    Args:
        client: A Redis client (``decode_responses`` either way).
        name: The lock's key.
        ttl_seconds: The lock expires this long after it was taken or last extended, so a
            holder that dies does not block the next one forever.

    Yields:
        The held lock, or None when another owner holds it.

    Raises:
        redis.RedisError: Redis could not be reached to take the lock.
    """
    lock = client.lock(name, timeout=ttl_seconds, blocking=False)
    token = owner_token()
    taken = lock.acquire(blocking=False, token=token) or (
        _drop_unreleased(client, name) and lock.acquire(blocking=False, token=token)
    )
    if not taken:
        holder = client.get(name)
        log.info("lock %s is held by %r; not taking it", name, holder)
        yield None
        return
    held = HeldLock(lock, token)
    try:
        yield held
    finally:
        try:
            lock.release()
        except LockError:
            # Our expiry passed and another owner may hold it now: theirs to release.
            log.warning("lock %s expired before release; left to its current owner", name)
        except redis.RedisError as exc:
            # Redis was down as the work ended. Its append-only file may bring the key back
            # with the rest of its lifetime (up to lock_seconds): this process drops it itself
            # at its next try instead of skipping every scan until then.
            _unreleased[name] = token
            log.warning("could not release lock %s: %s", name, exc)


#: Tokens of locks this process finished with but could not release (Redis was down).
_unreleased: dict[str, str] = {}


def _drop_unreleased(client: redis.Redis, name: str) -> bool:
    """Delete lock ``name`` if it still holds a token this process failed to release.

    Returns:
        Whether it was deleted (the caller may take the lock now).
    """
    token = _unreleased.get(name)
    if token is None:
        return False
    stale = client.lock(name)
    stale.local.token = token.encode()
    try:
        stale.release()  # compare-and-delete: only while the key still holds that token
    except LockError:
        _unreleased.pop(name, None)  # expired, or another owner's now
        return False
    _unreleased.pop(name, None)
    log.info("lock %s: dropped the one this process could not release during an outage", name)
    return True
