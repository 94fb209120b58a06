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
from datetime import UTC, datetime

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
    if not lock.acquire(blocking=False, token=token):
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
            # It will expire on its own.
            log.warning("could not release lock %s: %s", name, exc)


# Take each mark that is missing or stamped at most ARGV[2]: stamp ARGV[1], expire in ARGV[3] ms.
_TAKE_MARKS = """
local taken = {}
for i, key in ipairs(KEYS) do
    local stamp = redis.call('GET', key)
    if (not stamp) or tonumber(stamp) <= tonumber(ARGV[2]) then
        redis.call('SET', key, ARGV[1], 'PX', ARGV[3])
        taken[i] = 1
    else
        taken[i] = 0
    end
end
return taken
"""


def _millis(when: datetime) -> int:
    return int(when.replace(tzinfo=UTC).timestamp() * 1000)


class EnqueueMarks:
    """Per-email marks "a scan enqueued this email at time R", so it is not enqueued again early.

    A marked email is taken again only once its mark is older than the caller's ``not_after``
    (the rescan passes: a buffer time ago, and before the delivery queue's oldest waiting
    message, so a message it enqueued that still waits in a backlog is not doubled). Checked
    and stamped by one Lua script per batch: atomic in Redis, so two scans cannot both take an
    email; and the email document is never rewritten by a scan (conditional updates are not
    atomic on FerretDB, where a scan's write could undo a worker's).

    Args:
        client: A Redis client.
        ttl_seconds: How long a mark is kept at all (far longer than any buffer).
        prefix: Key prefix of the marks.
    """

    def __init__(
        self,
        client: redis.Redis,
        *,
        ttl_seconds: float = 7 * 24 * 3600.0,
        prefix: str = "mailroom:rescan:enqueued:",
    ) -> None:
        self._client = client
        self._ttl_ms = max(int(ttl_seconds * 1000), 1000)
        self._prefix = prefix
        self._take = client.register_script(_TAKE_MARKS)

    def take(self, email_ids: list[str], *, now: datetime, not_after: datetime) -> list[bool]:
        """Stamp ``now`` on each email not marked after ``not_after``; return which ones.

        Args:
            email_ids: The emails to mark.
            now: The stamp (naive UTC).
            not_after: An email marked after this stays as it is (naive UTC).

        Raises:
            redis.RedisError: Redis could not be reached.
        """
        if not email_ids:
            return []
        keys = [self._prefix + email_id for email_id in email_ids]
        replies = self._take(keys=keys, args=[_millis(now), _millis(not_after), self._ttl_ms])
        return [bool(int(reply)) for reply in replies]

    def release(self, email_id: str) -> None:
        """Drop the mark of an email that could not be enqueued (best effort)."""
        try:
            self._client.delete(self._prefix + email_id)
        except redis.RedisError as exc:
            log.warning("could not drop the rescan mark of %s: %s", email_id, exc)
