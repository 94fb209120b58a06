"""The one translation of Redis and Dramatiq broker errors: :func:`map_redis_errors`.

Every caller that talks to Redis (the API's queue, the scheduler, the breaker state, the admin
CLI) goes through it and handles :class:`~core.errors.QueueUnavailable` only.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import dramatiq
import redis
from redis.exceptions import ChildDeadlockedError, IncorrectPolicyType, RedisClusterException

from core.errors import QueueUnavailable

#: What redis-py and Dramatiq's broker raise. redis-py's errors mostly derive from RedisError;
#: a few (cluster clients, a pool used across a fork, policies) derive from Exception only.
#: OSError: a socket error redis-py did not wrap.
REDIS_ERRORS: tuple[type[Exception], ...] = (
    redis.RedisError,
    RedisClusterException,
    ChildDeadlockedError,
    IncorrectPolicyType,
    dramatiq.DramatiqError,
    OSError,
)


@contextmanager
def map_redis_errors(what: str = "queue unavailable") -> Iterator[None]:
    """Translate Redis and Dramatiq broker errors into :class:`QueueUnavailable`.

    Args:
        what: The start of the error's message (``"<what>: <error class>: <error>"``).

    Yields:
        Nothing; exceptions raised in the block are translated.

    Raises:
        QueueUnavailable: Redis (or the broker) failed; the original is its ``__cause__``.
    """
    try:
        yield
    except REDIS_ERRORS as exc:
        raise QueueUnavailable(f"{what}: {type(exc).__name__}: {exc}") from exc
