"""One circuit breaker per provider, its state shared by every worker process through Redis.

Each provider gets a pybreaker :class:`~pybreaker.CircuitBreaker` whose storage is a
:class:`~pybreaker.CircuitRedisStorage` under ``mailroom:breaker:{name}``: when one process opens a
breaker, every process stops using that provider, and ``mailroom-admin providers`` reads the same
keys.

Sends do not go through ``CircuitBreaker.call()``: it holds a process-wide lock for the whole call,
which would serialize every delivery through one provider. :meth:`ProviderBreaker.guard` wraps a
send instead, and drives pybreaker's storage and transitions itself (``open()``, ``half_open()``,
``close()``, which notify the listeners), so three outcomes are possible rather than pybreaker's
two:

* ``TransientError`` (timeout, connection error, 5xx) is a **failure**: it increments the shared
  failure counter; at ``fail_max`` consecutive failures the breaker opens.
* Success resets the failure counter; a successful half-open probe closes the breaker.
* Everything else is **neutral**: neither a failure nor a success. pybreaker's ``exclude`` would
  count these as successes and reset the failure counter, which is wrong for both:

  - ``PermanentError``: the verdict is about the email (a rejected recipient), not the provider's
    health; a provider that fails most sends with 5xx must still open even when some bad emails
    are rejected in between. It does not close a half-open breaker either.
  - ``ThrottledError`` (429): the provider is alive but asks us to slow down; it never opens the
    breaker (the email waits for its Retry-After), and it does not erase the 5xx failures counted
    before it.
  - ``MisconfiguredError`` (401/403): the router takes the provider out of rotation instead
    (:meth:`~workers.breaker_state.SharedState.take_out`), shared through Redis for
    ``out_of_rotation_seconds``.

Half-open probes are limited to one at a time across all processes (pybreaker's half-open state
lets every concurrent call through): the first email to find a breaker due takes a probe slot
(``SET NX`` with a TTL, so a probe whose worker died frees itself), moves the breaker to half-open
and sends; other emails go to other providers meanwhile.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pybreaker

from core.settings import DEFAULTS, Settings
from workers.breaker_state import (
    STATE_CLOSED,
    STATE_HALF_OPEN,
    STATE_OPEN,
    Reading,
    RedisState,
    SharedState,
)
from workers.mta.base import TransientError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BreakerStatus:
    """A provider's breaker as every process sees it.

    Attributes:
        name: The provider.
        state: ``closed``, ``open`` or ``half-open``.
        fail_counter: Consecutive transient failures counted.
        fail_max: Failures that open the breaker.
        reset_timeout: Seconds an open breaker waits before a probe.
        opened_at: When it last opened (None while closed).
        seconds_to_half_open: While open, seconds until a probe is allowed (0 when due).
        probing: A half-open probe is in flight.
        out_of_rotation: Why the provider is out of rotation ("" when in rotation).
        seconds_out_of_rotation: How long it stays out.
    """

    name: str
    state: str
    fail_counter: int
    fail_max: int
    reset_timeout: float
    opened_at: datetime | None = None
    seconds_to_half_open: float = 0.0
    probing: bool = False
    out_of_rotation: str = ""
    seconds_out_of_rotation: float = 0.0


class TransitionLog(pybreaker.CircuitBreakerListener):
    """Logs every breaker transition made by this process, with the shared failure count."""

    def state_change(
        self,
        cb: pybreaker.CircuitBreaker,
        old_state: pybreaker.CircuitBreakerState | None,
        new_state: pybreaker.CircuitBreakerState,
    ) -> None:
        """Log the new state (``old_state`` is this process's cached view and may be stale)."""
        if new_state.name == STATE_OPEN:
            log.warning(
                "provider %s: circuit breaker OPEN after %d consecutive failures; a probe in %.0fs",
                cb.name,
                cb.fail_counter,
                cb.reset_timeout,
            )
        elif new_state.name == STATE_HALF_OPEN:
            log.warning("provider %s: circuit breaker HALF-OPEN; one email probes", cb.name)
        else:
            log.warning("provider %s: circuit breaker CLOSED; the provider is back", cb.name)


class ProviderBreaker:
    """A provider's pybreaker breaker, driven so that concurrent sends run concurrently.

    Args:
        name: The provider.
        shared: Where the state lives.
        fail_max: Consecutive transient failures that open the breaker.
        reset_timeout: Seconds an open breaker waits before allowing a probe.
        probe_ttl: Seconds a probe slot is held at most (longer than any send).
        listeners: Extra pybreaker listeners (transitions are always logged).
    """

    def __init__(
        self,
        name: str,
        shared: SharedState,
        *,
        fail_max: int,
        reset_timeout: float,
        probe_ttl: float,
        listeners: Sequence[pybreaker.CircuitBreakerListener] = (),
    ) -> None:
        self.name = name
        self.shared = shared
        self.storage = shared.storage(name)
        self.probe_ttl = probe_ttl
        self.breaker = pybreaker.CircuitBreaker(
            fail_max=fail_max,
            reset_timeout=reset_timeout,
            state_storage=self.storage,
            listeners=[TransitionLog(), *listeners],
            name=name,
            throw_new_error_on_trip=False,
        )

    def status(self, now: datetime | None = None, reading: Reading | None = None) -> BreakerStatus:
        """Read the shared state: what the strategy and ``mailroom-admin providers`` show.

        Args:
            now: The current time (tests).
            reading: The state already read (:meth:`RedisState.read`); read here when None.
        """
        now = now or datetime.now(UTC)
        if reading is None or reading.state is None:
            state = self.storage.state
            opened_at = self.storage.opened_at if state != STATE_CLOSED else None
            counter = self.storage.counter
            out = self.shared.out_of_rotation(self.name)
            probing = state != STATE_CLOSED and self.shared.probing(self.name)
        else:
            state = reading.state
            opened_at = reading.opened_at if state != STATE_CLOSED else None
            counter, out = reading.fail_counter, reading.out_of_rotation
            probing = state != STATE_CLOSED and reading.probing
        to_half_open = 0.0
        if state == STATE_OPEN and opened_at is not None:
            due = opened_at + timedelta(seconds=self.breaker.reset_timeout)
            to_half_open = max(0.0, (due - now).total_seconds())
        return BreakerStatus(
            name=self.name,
            state=state,
            fail_counter=counter,
            fail_max=self.breaker.fail_max,
            reset_timeout=self.breaker.reset_timeout,
            opened_at=opened_at,
            seconds_to_half_open=to_half_open,
            probing=probing,
            out_of_rotation=out[0] if out else "",
            seconds_out_of_rotation=out[1] if out else 0.0,
        )

    def try_probe(self, token: str, now: datetime | None = None) -> bool:
        """Take the probe slot of an open breaker that is due, or of a half-open one.

        On success the breaker is half-open and the caller's next send is the probe.

        Args:
            token: Identifies the holder (released by :meth:`guard`).
            now: The current time (tests).

        Returns:
            False when the breaker is open and not due, or another process is probing.
        """
        status = self.status(now)
        if status.state == STATE_CLOSED:
            return False
        if status.state == STATE_OPEN and status.seconds_to_half_open > 0:
            return False
        if not self.shared.acquire_probe(self.name, token, self.probe_ttl):
            return False
        if self.storage.state == STATE_OPEN:
            self.breaker.half_open()
        return True

    @contextmanager
    def guard(self, probe_token: str | None = None) -> Iterator[None]:
        """Count the outcome of the send in the block (see the module docstring).

        Unlike ``CircuitBreaker.call()``, holds no lock while the block runs.

        Args:
            probe_token: The probe slot this send holds (from :meth:`try_probe`), if any.

        Yields:
            Nothing; the block's exceptions propagate unchanged.
        """
        try:
            yield
        except TransientError as exc:
            self._on_failure(exc, probe=probe_token is not None)
            raise
        else:
            self._on_success(probe=probe_token is not None)
        finally:
            if probe_token is not None:
                self.shared.release_probe(self.name, probe_token)

    def _on_failure(self, exc: BaseException, *, probe: bool) -> None:
        self.storage.increment_counter()
        for listener in self.breaker.listeners:
            listener.failure(self.breaker, exc)
        if probe:
            # The trial call failed: open again for another reset timeout.
            self.breaker.open()
        elif self.storage.state == STATE_CLOSED and self.storage.counter >= self.breaker.fail_max:
            self.breaker.open()
        # Already open or half-open (another worker's probe decides): counted, nothing more.

    def _on_success(self, *, probe: bool) -> None:
        for listener in self.breaker.listeners:
            listener.success(self.breaker)
        if probe:
            self.breaker.close()
        else:
            # Only if closed: one atomic step where pybreaker's storage takes two round trips.
            self.shared.clear_failures(self.name)
        # A send that started before the breaker opened proves nothing; the probe decides.

    def reset(self) -> None:
        """Close the breaker, free its probe slot and put the provider back into rotation."""
        self.shared.restore(self.name)
        self.shared.release_probe(self.name)
        self.breaker.close()


class BreakerBoard:
    """The breakers of every enabled provider, by name.

    Args:
        names: The providers.
        shared: Where the state lives (:class:`~workers.breaker_state.RedisState` in workers).
        fail_max: Consecutive transient failures that open a breaker.
        reset_timeout: Seconds before an open breaker allows a probe.
        probe_ttl: Longest a probe slot is held (a lease, as :meth:`from_settings` sets it).
    """

    def __init__(
        self,
        names: Iterable[str],
        shared: SharedState,
        *,
        fail_max: int = DEFAULTS.breaker.fail_max,
        reset_timeout: float = DEFAULTS.breaker.reset_timeout_seconds,
        probe_ttl: float = DEFAULTS.lease_seconds,
    ) -> None:
        self.shared = shared
        self._breakers = {
            name: ProviderBreaker(
                name, shared, fail_max=fail_max, reset_timeout=reset_timeout, probe_ttl=probe_ttl
            )
            for name in names
        }

    @classmethod
    def from_settings(
        cls, names: Iterable[str], settings: Settings, shared: SharedState
    ) -> BreakerBoard:
        """Build the breakers with ``settings.breaker``; a probe lasts at most one lease."""
        return cls(
            names,
            shared,
            fail_max=settings.breaker.fail_max,
            reset_timeout=settings.breaker.reset_timeout_seconds,
            # A send outliving its lease is cut off by the actor's time limit anyway.
            probe_ttl=settings.lease_seconds,
        )

    def __getitem__(self, name: str) -> ProviderBreaker:
        return self._breakers[name]

    def __contains__(self, name: object) -> bool:
        return name in self._breakers

    @property
    def names(self) -> list[str]:
        """The providers, in the order given."""
        return list(self._breakers)

    def statuses(self, now: datetime | None = None) -> dict[str, BreakerStatus]:
        """Read every breaker's shared state (from Redis: one round trip for all)."""
        readings = self.shared.read(self.names) if isinstance(self.shared, RedisState) else None
        return {
            name: breaker.status(now, (readings or {}).get(name))
            for name, breaker in self._breakers.items()
        }
