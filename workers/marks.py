"""Per-email "enqueued by a scan" marks in Redis, so two scans never enqueue one email twice."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import redis

log = logging.getLogger(__name__)


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
