"""Where circuit-breaker state lives: Redis for every worker process, or memory for one.

Per provider: pybreaker's storage (state, failure counter, opened-at), the half-open probe slot
and the out-of-rotation mark. :class:`RedisState` shares them through Redis, so when one process
opens a breaker every process stops using that provider; :class:`MemoryState` keeps them in this
process (unit tests).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

import pybreaker
import redis

from core.errors import QueueUnavailable
from core.redis_errors import map_redis_errors
from core.settings import Settings

log = logging.getLogger(__name__)

# A breaker's states, as pybreaker names them. This module is their one home: the breakers, the
# strategy, the router and mailroom-admin compare against these.
STATE_CLOSED = pybreaker.STATE_CLOSED
STATE_OPEN = pybreaker.STATE_OPEN
STATE_HALF_OPEN = pybreaker.STATE_HALF_OPEN

KEY_PREFIX = "mailroom:breaker"


def breaker_namespace(name: str) -> str:
    """Return the Redis namespace of provider ``name``'s breaker (pybreaker adds its own keys)."""
    return f"{KEY_PREFIX}:{name}"


def connect_redis(settings: Settings) -> redis.Redis:
    """Return a Redis client for breaker state.

    pybreaker's Redis storage decodes bytes itself, so the client must not decode responses.
    """
    return redis.Redis.from_url(
        settings.redis_url,
        socket_timeout=settings.redis_timeout_seconds,
        socket_connect_timeout=settings.redis_timeout_seconds,
        health_check_interval=30,
    )


class SharedState(Protocol):
    """Where breakers, probe slots and out-of-rotation marks live: Redis, or this process."""

    def storage(self, name: str) -> pybreaker.CircuitBreakerStorage:
        """Return the pybreaker storage of provider ``name``'s breaker."""
        ...

    def acquire_probe(self, name: str, token: str, ttl_seconds: float) -> bool:
        """Take provider ``name``'s probe slot for ``token``; False when another holds it."""
        ...

    def release_probe(self, name: str, token: str | None = None) -> None:
        """Free the probe slot if ``token`` holds it (any holder when ``token`` is None)."""
        ...

    def probing(self, name: str) -> bool:
        """Return whether a probe of provider ``name`` is in flight."""
        ...

    def take_out(self, name: str, reason: str, seconds: float) -> None:
        """Keep provider ``name`` out of rotation for ``seconds``."""
        ...

    def out_of_rotation(self, name: str) -> tuple[str, float] | None:
        """Return (reason, seconds left) while provider ``name`` is out of rotation, else None."""
        ...

    def restore(self, name: str) -> None:
        """Put provider ``name`` back into rotation."""
        ...

    def clear_failures(self, name: str) -> None:
        """Reset the failure count of provider ``name``'s breaker if it is closed."""
        ...


class MemoryState:
    """Breaker state in this process only (unit tests, or running without Redis)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._storages: dict[str, pybreaker.CircuitMemoryStorage] = {}
        self._probes: dict[str, tuple[str, float]] = {}
        self._out: dict[str, tuple[str, float]] = {}

    def storage(self, name: str) -> pybreaker.CircuitBreakerStorage:
        """Return (creating once) the in-memory storage of ``name``."""
        with self._lock:
            if name not in self._storages:
                self._storages[name] = pybreaker.CircuitMemoryStorage(STATE_CLOSED)
            return self._storages[name]

    def acquire_probe(self, name: str, token: str, ttl_seconds: float) -> bool:
        """Take the probe slot unless a live one is held."""
        now = time.monotonic()
        with self._lock:
            held = self._probes.get(name)
            if held is not None and held[1] > now:
                return False
            self._probes[name] = (token, now + ttl_seconds)
            return True

    def release_probe(self, name: str, token: str | None = None) -> None:
        """Free the probe slot held by ``token`` (or by anyone)."""
        with self._lock:
            held = self._probes.get(name)
            if held is not None and (token is None or held[0] == token):
                del self._probes[name]

    def probing(self, name: str) -> bool:
        """Return whether a live probe slot is held."""
        with self._lock:
            held = self._probes.get(name)
            return held is not None and held[1] > time.monotonic()

    def take_out(self, name: str, reason: str, seconds: float) -> None:
        """Mark ``name`` out of rotation until ``seconds`` from now."""
        with self._lock:
            self._out[name] = (reason, time.monotonic() + seconds)

    def out_of_rotation(self, name: str) -> tuple[str, float] | None:
        """Return the reason and seconds left, or None."""
        with self._lock:
            mark = self._out.get(name)
        if mark is None:
            return None
        left = mark[1] - time.monotonic()
        return (mark[0], left) if left > 0 else None

    def restore(self, name: str) -> None:
        """Forget the out-of-rotation mark."""
        with self._lock:
            self._out.pop(name, None)

    def clear_failures(self, name: str) -> None:
        """Reset the failure count if the breaker is closed."""
        storage = self.storage(name)
        with self._lock:
            if storage.state == STATE_CLOSED:
                storage.reset_counter()


# Compare-and-delete: only the probe's holder frees the slot (a slow probe whose slot expired
# and was taken by another worker must not free the new holder's).
_RELEASE_IF_HOLDER = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""

# A success's reset of a closed breaker's failure count, in one round trip (pybreaker's storage
# takes two: read the state, write the count). A missing state is closed: pybreaker falls back
# to closed and re-creates its keys with a zero count. The count is written only if not zero.
_CLEAR_FAILURES_IF_CLOSED = """
local state = redis.call('get', KEYS[1])
if state and state ~= ARGV[1] then return 0 end
if redis.call('get', KEYS[2]) ~= '0' then redis.call('set', KEYS[2], 0) end
return 1
"""


@dataclass(frozen=True)
class Reading:
    """One provider's shared breaker state, read in one go (see :meth:`RedisState.read`).

    ``state`` is None when pybreaker's keys are missing (the breaker then re-creates them).
    """

    state: str | None
    fail_counter: int
    opened_at: datetime | None
    out_of_rotation: tuple[str, float] | None
    probing: bool


def pybreaker_key(name: str, what: str) -> str:
    """The key pybreaker's Redis storage uses for ``what`` (``state``, ``fail_counter``...)."""
    return f"{breaker_namespace(name)}:pybreaker:{what}"


class RedisState:
    """Breaker state shared by every process through Redis.

    Keys, per provider ``name``: pybreaker's under ``mailroom:breaker:{name}:pybreaker:*``,
    ``mailroom:breaker:{name}:probe`` (the probe slot) and
    ``mailroom:breaker:{name}:out-of-rotation`` (the reason, expiring).

    When Redis fails (:func:`~core.redis_errors.map_redis_errors` says so), breakers fall back to
    closed (pybreaker's behaviour) and probes are allowed: without Redis the queue is down too, and
    refusing sends would only add a second outage.

    Args:
        client: A Redis client that does not decode responses.
    """

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._release = client.register_script(_RELEASE_IF_HOLDER)
        self._clear_failures = client.register_script(_CLEAR_FAILURES_IF_CLOSED)

    @staticmethod
    def _key(name: str, what: str) -> str:
        return f"{breaker_namespace(name)}:{what}"

    def storage(self, name: str) -> pybreaker.CircuitBreakerStorage:
        """Return pybreaker's Redis storage in ``name``'s own namespace.

        Raises:
            QueueUnavailable: Redis could not be reached to initialise the state.
        """
        with map_redis_errors():
            return pybreaker.CircuitRedisStorage(
                STATE_CLOSED, self.client, namespace=breaker_namespace(name)
            )

    def acquire_probe(self, name: str, token: str, ttl_seconds: float) -> bool:
        """``SET NX PX``: one probe at a time across every process."""
        try:
            with map_redis_errors():
                return bool(
                    self.client.set(
                        self._key(name, "probe"),
                        token,
                        nx=True,
                        px=max(int(ttl_seconds * 1000), 1),
                    )
                )
        except QueueUnavailable:
            log.warning("provider %s: Redis unavailable, probing without a slot", name)
            return True

    def release_probe(self, name: str, token: str | None = None) -> None:
        """Free the slot if ``token`` holds it (any holder when None)."""
        try:
            with map_redis_errors():
                if token is None:
                    self.client.delete(self._key(name, "probe"))
                else:
                    self._release(keys=[self._key(name, "probe")], args=[token])
        except QueueUnavailable:
            log.warning("provider %s: could not free the probe slot (it expires)", name)

    def probing(self, name: str) -> bool:
        """Return whether the slot is held."""
        try:
            with map_redis_errors():
                return bool(self.client.exists(self._key(name, "probe")))
        except QueueUnavailable:
            return False

    def take_out(self, name: str, reason: str, seconds: float) -> None:
        """Set the expiring out-of-rotation mark."""
        try:
            with map_redis_errors():
                self.client.set(
                    self._key(name, "out-of-rotation"), reason, px=max(int(seconds * 1000), 1)
                )
        except QueueUnavailable:
            log.warning("provider %s: Redis unavailable, out-of-rotation mark not shared", name)

    def out_of_rotation(self, name: str) -> tuple[str, float] | None:
        """Return the mark's reason and its remaining TTL."""
        key = self._key(name, "out-of-rotation")
        try:
            with map_redis_errors():
                pipe = self.client.pipeline(transaction=False)
                pipe.get(key)
                pipe.pttl(key)
                reason, pttl = pipe.execute()
        except QueueUnavailable:
            return None
        if reason is None:
            return None
        left = pttl / 1000 if isinstance(pttl, int) and pttl > 0 else 0.0
        text = reason.decode("utf-8", "replace") if isinstance(reason, bytes) else str(reason)
        return text, left

    def read(self, names: Sequence[str]) -> dict[str, Reading] | None:
        """Every provider's state with one round trip (the router reads it for each email).

        Returns:
            A reading per name; None when Redis could not be reached (read each breaker alone,
            which falls back as pybreaker does).
        """
        pipe = self.client.pipeline(transaction=False)
        for name in names:
            for what in ("state", "fail_counter", "opened_at"):
                pipe.get(pybreaker_key(name, what))
            pipe.get(self._key(name, "out-of-rotation"))
            pipe.pttl(self._key(name, "out-of-rotation"))
            pipe.exists(self._key(name, "probe"))
        try:
            with map_redis_errors():
                values = pipe.execute()
        except QueueUnavailable:
            return None
        readings = {}
        for index, name in enumerate(names):
            state, counter, opened, reason, pttl, probe = values[index * 6 : index * 6 + 6]
            out = None
            if reason is not None:
                left = pttl / 1000 if isinstance(pttl, int) and pttl > 0 else 0.0
                out = (reason.decode("utf-8", "replace"), left)
            readings[name] = Reading(
                state=state.decode("utf-8") if state is not None else None,
                fail_counter=int(counter) if counter else 0,
                opened_at=(datetime(*time.gmtime(int(opened))[:6], tzinfo=UTC) if opened else None),
                out_of_rotation=out,
                probing=bool(probe),
            )
        return readings

    def restore(self, name: str) -> None:
        """Delete the mark.

        Raises:
            QueueUnavailable: Redis could not be reached.
        """
        with map_redis_errors():
            self.client.delete(self._key(name, "out-of-rotation"))

    def clear_failures(self, name: str) -> None:
        """Reset the failure count if the breaker is closed: one script, one round trip.

        Like pybreaker's storage, a Redis failure is logged and the count left as it is.
        """
        keys = [pybreaker_key(name, "state"), pybreaker_key(name, "fail_counter")]
        try:
            with map_redis_errors():
                self._clear_failures(keys=keys, args=[STATE_CLOSED])
        except QueueUnavailable:
            log.warning("provider %s: Redis unavailable, failure count not reset", name)
