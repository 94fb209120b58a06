"""Cluster-wide provider event counts, kept in one Redis hash.

The API processes add to the hash (one pipelined ``HINCRBY`` round trip per request) next to
their own per-process Prometheus counters; the worker's exposition server reads it at each
scrape (one ``HGETALL``) and shows the totals under the same metric names and labels. A field
is the metric's kind and its label values joined by the unit separator (0x1F), which no
label value carries.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from core.redis_errors import map_redis_errors

KEY = "mailroom:metrics:provider_events"
SEPARATOR = "\x1f"


@dataclass(frozen=True)
class Family:
    """One counter: its Prometheus name, help text and label names."""

    name: str
    documentation: str
    labels: tuple[str, ...]


#: By the kind that starts each hash field.
FAMILIES: dict[str, Family] = {
    "received": Family(
        "mailroom_provider_events_received_total",
        "Provider events received, by provider, normalized type (UNKNOWN: kept raw) and "
        "outcome (stored, duplicate).",
        ("provider", "type", "outcome"),
    ),
    "signature_failures": Family(
        "mailroom_provider_event_signature_failures_total",
        "Provider event requests refused (401): bad or missing signature or credentials.",
        ("provider",),
    ),
    "unmatched": Family(
        "mailroom_provider_events_unmatched_total",
        "Provider events stored that matched no email.",
        ("provider",),
    ),
}


def field(kind: str, *labels: str) -> str:
    """The hash field of one counter's series (``kind`` must be a key of :data:`FAMILIES`)."""
    if kind not in FAMILIES or len(labels) != len(FAMILIES[kind].labels):
        raise ValueError(f"kind: no counter {kind!r} with {len(labels)} labels")
    return SEPARATOR.join((kind, *labels))


def parse(raw: Mapping[bytes | str, bytes | str]) -> dict[str, dict[tuple[str, ...], int]]:
    """The hash's series by kind; fields of unknown kinds or shapes are skipped."""
    series: dict[str, dict[tuple[str, ...], int]] = {kind: {} for kind in FAMILIES}
    for key, value in raw.items():
        text = key.decode() if isinstance(key, bytes) else key
        kind, *labels = text.split(SEPARATOR)
        family = FAMILIES.get(kind)
        if family is None or len(labels) != len(family.labels):
            continue
        try:
            series[kind][tuple(labels)] = int(value)
        except ValueError:
            continue
    return series


class SharedCounts:
    """The counts hash on Redis.

    Args:
        client: A Redis client (see :meth:`from_url`).
    """

    def __init__(self, client: redis.Redis) -> None:
        self._client = client

    @classmethod
    def from_url(cls, redis_url: str, *, timeout_seconds: float) -> SharedCounts:
        """Counts on the Redis at ``redis_url``, with short timeouts and one quick retry.

        Args:
            redis_url: The Redis URL (``MAILROOM_REDIS_URL``).
            timeout_seconds: Connect and socket timeout: counting must not hold up a request.
        """
        client = redis.Redis.from_url(
            redis_url,
            socket_connect_timeout=timeout_seconds,
            socket_timeout=timeout_seconds,
            retry=Retry(NoBackoff(), 1),
        )
        return cls(client)

    def add(self, increments: Mapping[str, int]) -> None:
        """Add ``increments`` (by field) in one round trip; nothing to send when empty.

        Raises:
            QueueUnavailable: Redis could not be reached.
        """
        if not increments:
            return
        with map_redis_errors("metrics store unavailable"):
            pipe = self._client.pipeline(transaction=False)
            for name, amount in increments.items():
                pipe.hincrby(KEY, name, amount)
            pipe.execute()

    def read(self) -> dict[str, dict[tuple[str, ...], int]]:
        """Every series, by kind (see :func:`parse`).

        Raises:
            QueueUnavailable: Redis could not be reached.
        """
        with map_redis_errors("metrics store unavailable"):
            raw = self._client.hgetall(KEY)
        return parse(raw)

    def close(self) -> None:
        """Release the client's connections."""
        self._client.close()
