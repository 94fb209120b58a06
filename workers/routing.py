"""Choosing a provider for an attempt and sending through it.

The seam between the delivery logic and the providers: :class:`Router` decides which provider
takes an attempt (:mod:`workers.strategy` over the shared circuit breakers of
:mod:`workers.breakers`) and sends through it. The delivery actor only sees :meth:`Router.choose`,
:meth:`Router.send` and :meth:`Router.take_out_of_rotation`.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace

import redis

from core.settings import DEFAULTS, Settings
from core.store.documents import Email
from workers.breaker_state import STATE_CLOSED, MemoryState, RedisState, connect_redis
from workers.breakers import BreakerBoard, BreakerStatus
from workers.mta.base import OutgoingEmail, Provider, SendResult
from workers.strategy import ProviderHealth, Strategy

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Choice:
    """The provider for the next attempt, or how long to wait when none can take it.

    Attributes:
        provider: The provider's name, or None when every provider is unavailable.
        retry_in: Seconds until a provider may be available again (when ``provider`` is None).
    """

    provider: str | None
    retry_in: float = 0.0


def health_of(status: BreakerStatus) -> ProviderHealth:
    """Reduce a breaker's shared status to what the strategy decides on."""
    return ProviderHealth(
        state=status.state,
        seconds_to_half_open=status.seconds_to_half_open,
        probing=status.probing,
        seconds_out_of_rotation=status.seconds_out_of_rotation,
    )


class Router:
    """Ranks providers with a :class:`Strategy` and sends through their circuit breakers.

    Safe to share between a worker process's threads: the probe slot a thread takes in
    :meth:`choose` is remembered per thread and used by that thread's next :meth:`send`.

    Args:
        providers: Enabled providers by name.
        order: ``Settings.provider_order`` (entries may be ``"a|b"`` priority groups).
        weights: ``Settings.provider_weights``.
        breakers: The providers' breakers; by default in-memory ones (this process only).
        per_provider_attempts: Attempts of one email through one provider before moving on.
        out_of_rotation_seconds: How long a provider that refused our credentials is skipped;
            then one email tries it again (``mailroom-admin providers reset`` is faster).
        rng: Source of the weighted draw (tests pass a seeded one).
    """

    def __init__(
        self,
        providers: dict[str, Provider],
        order: list[str],
        *,
        weights: Mapping[str, float] | None = None,
        breakers: BreakerBoard | None = None,
        per_provider_attempts: int = DEFAULTS.retry.per_provider_attempts,
        out_of_rotation_seconds: float = DEFAULTS.breaker.out_of_rotation_seconds,
        rng: random.Random | None = None,
    ) -> None:
        self.providers = providers
        self.strategy = Strategy.build(
            order, providers, weights=weights, per_provider_attempts=per_provider_attempts
        )
        unlisted = sorted(set(providers) - set(self.strategy.providers))
        if unlisted:
            log.warning("providers enabled but not in provider_order, never used: %s", unlisted)
        self.breakers = breakers or BreakerBoard(providers, MemoryState())
        self.out_of_rotation_seconds = out_of_rotation_seconds
        self._rng = rng or random.Random()
        self._local = threading.local()

    def _probes(self) -> dict[str, str]:
        probes: dict[str, str] | None = getattr(self._local, "probes", None)
        if probes is None:
            probes = self._local.probes = {}
        return probes

    def release_unused_probes(self) -> None:
        """Free probe slots this thread took but never sent through (an attempt cut short)."""
        probes = self._probes()
        for name, token in list(probes.items()):
            self.breakers.shared.release_probe(name, token)
            del probes[name]

    def choose(self, email: Email) -> Choice:
        """Pick the provider for the next attempt of ``email``.

        Args:
            email: The claimed email (its ``provider`` and ``provider_attempts``).

        Returns:
            The provider (holding its probe slot when its breaker is not closed), or None with
            the seconds until the earliest provider may be usable.
        """
        self.release_unused_probes()
        health = {name: health_of(status) for name, status in self.breakers.statuses().items()}
        attempts = {str(k): int(v) for k, v in dict(email.provider_attempts or {}).items()}
        ranked = self.strategy.rank(
            health, previous=email.provider or "", attempts=attempts, rng=self._rng
        )
        for name in ranked:
            if health[name].state == STATE_CLOSED:
                return Choice(name)
            token = f"{os.getpid()}:{threading.get_ident()}:{uuid.uuid4().hex}"
            if self.breakers[name].try_probe(token):
                self._probes()[name] = token
                log.info("email %s probes provider %s", email.id, name)
                return Choice(name)
            # Another worker took the probe (or the breaker just changed): try the next one.
            health[name] = replace(health[name], probing=True)
        return Choice(None, retry_in=self.strategy.wait_seconds(health))

    def send(self, provider: str, email: OutgoingEmail) -> SendResult:
        """Send ``email`` through ``provider``, counting the outcome on its breaker.

        Raises:
            DeliveryError: The provider's classified failure, unchanged.
        """
        token = self._probes().pop(provider, None)
        with self.breakers[provider].guard(probe_token=token):
            return self.providers[provider].send(email)

    def take_out_of_rotation(self, provider: str, reason: str) -> None:
        """Stop choosing ``provider`` in every worker for a while (its credentials were refused)."""
        log.error(
            "provider %s taken out of rotation for %.0fs: %s",
            provider,
            self.out_of_rotation_seconds,
            reason,
        )
        self.breakers.shared.take_out(provider, reason, self.out_of_rotation_seconds)


def build_router(
    providers: dict[str, Provider], settings: Settings, *, client: redis.Redis | None = None
) -> Router:
    """Build a worker process's router: breakers shared through Redis, strategy from settings.

    Args:
        providers: The enabled providers (``workers.mta.registry.build_providers``).
        settings: Provider order and weights, breaker thresholds, retry budget.
        client: A Redis client (not decoding responses); by default one on ``settings.redis_url``.
    """
    shared = RedisState(client if client is not None else connect_redis(settings))
    return Router(
        providers,
        settings.provider_order,
        weights=settings.provider_weights,
        breakers=BreakerBoard.from_settings(providers, settings, shared),
        per_provider_attempts=settings.retry.per_provider_attempts,
        out_of_rotation_seconds=settings.breaker.out_of_rotation_seconds,
    )
