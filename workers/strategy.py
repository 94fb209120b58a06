"""Which provider takes the next attempt of an email: priority groups, weights, retry budgets.

Pure decisions over a snapshot of every provider's health; no I/O. :class:`workers.routing.Router`
takes the snapshot (from the shared circuit breakers) and acts on the ranking.

Priority groups
    ``Settings.provider_order`` lists providers from the highest priority down. An entry naming
    several providers separated by ``|`` is one priority group: ``["sendgrid|mailgun", "smtp"]``
    means SendGrid and Mailgun first, at the same priority, then SMTP.
    ``Settings.provider_weights`` (``{"sendgrid": 3, "mailgun": 1}``) splits first attempts among
    the healthy members of a group (missing weights count 1; a weight of 0 takes no share and is
    used only when the group's other members cannot take the email). Weights only matter within
    a group; across groups priority decides.

Rules, in order
    1. Only *usable* providers are candidates: in rotation, and with a closed breaker, or a
       half-open (or open and due) breaker whose single probe slot is free.
    2. A retry stays with the provider of the previous attempt (``email.provider``) while it is
       usable and its own budget (``per_provider_attempts`` attempts for this email) is not spent.
    3. Otherwise: the highest-priority group with a usable provider whose budget for this email
       is not spent, weighted within the group.
    4. When every usable provider has spent its budget (e.g. only one provider is configured),
       the one with the fewest attempts for this email, by priority: Dramatiq's retry budget, not
       this one, bounds the total.
    5. No usable provider: wait until the earliest one may be: its breaker is due to half-open,
       its probe finishes, or it comes back into rotation.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from core.settings import DEFAULTS
from workers.breaker_state import STATE_CLOSED, STATE_OPEN

# How long to wait for another worker's half-open probe to finish before looking again.
PROBE_WAIT_SECONDS = 5.0
# Nothing to wait for (no provider at all): look again after this long.
IDLE_WAIT_SECONDS = 60.0


@dataclass(frozen=True)
class ProviderHealth:
    """A provider's health at decision time.

    Attributes:
        state: Its breaker: ``closed``, ``open`` or ``half-open``.
        seconds_to_half_open: While open, seconds until a probe is allowed (0 when due).
        probing: Another send is probing the half-open breaker.
        seconds_out_of_rotation: Seconds the provider stays out of rotation (0: in rotation).
    """

    state: str = STATE_CLOSED
    seconds_to_half_open: float = 0.0
    probing: bool = False
    seconds_out_of_rotation: float = 0.0

    @property
    def usable(self) -> bool:
        """Whether it can take an email now (as a probe when the breaker is not closed)."""
        if self.seconds_out_of_rotation > 0:
            return False
        if self.state == STATE_CLOSED:
            return True
        if self.state == STATE_OPEN and self.seconds_to_half_open > 0:
            return False
        return not self.probing

    def wait_seconds(self, probe_wait: float) -> float:
        """Seconds until it may be usable again (0 when usable now)."""
        breaker = 0.0
        if self.state == STATE_OPEN and self.seconds_to_half_open > 0:
            breaker = self.seconds_to_half_open
        elif self.state != STATE_CLOSED and self.probing:
            breaker = probe_wait
        return max(breaker, self.seconds_out_of_rotation)


CLOSED = ProviderHealth()


def parse_groups(order: Iterable[str]) -> list[list[str]]:
    """Split ``provider_order`` entries into priority groups.

    Args:
        order: Entries such as ``"sendgrid"`` or ``"sendgrid|mailgun"``.

    Returns:
        The groups, highest priority first; blank names and repeats (after their first
        appearance) are dropped.
    """
    seen: set[str] = set()
    groups: list[list[str]] = []
    for entry in order:
        group = []
        for raw in entry.split("|"):
            name = raw.strip()
            if name and name not in seen:
                seen.add(name)
                group.append(name)
        if group:
            groups.append(group)
    return groups


@dataclass(frozen=True)
class Strategy:
    """Ranks providers for one attempt (see the module docstring).

    Attributes:
        groups: Priority groups of provider names, highest first.
        weights: Traffic shares within a group (missing: 1).
        per_provider_attempts: Attempts of one email through one provider before a retry moves on.
        probe_wait: Seconds to wait for a probe in flight.
    """

    groups: tuple[tuple[str, ...], ...]
    weights: Mapping[str, float] = field(default_factory=dict)
    per_provider_attempts: int = DEFAULTS.retry.per_provider_attempts
    probe_wait: float = PROBE_WAIT_SECONDS

    @classmethod
    def build(
        cls,
        order: Iterable[str],
        enabled: Iterable[str],
        *,
        weights: Mapping[str, float] | None = None,
        per_provider_attempts: int = DEFAULTS.retry.per_provider_attempts,
        probe_wait: float = PROBE_WAIT_SECONDS,
    ) -> Strategy:
        """Keep the enabled providers of ``order``, in its groups.

        When ``order`` names none of the enabled providers, each enabled provider becomes its own
        group, in the given order (a provider missing from a non-empty order is never used: an
        operator who lists providers means only those).

        Args:
            order: ``Settings.provider_order``.
            enabled: Names of the providers that were built.
            weights: ``Settings.provider_weights``.
            per_provider_attempts: See the class attributes.
            probe_wait: See the class attributes.
        """
        available = list(enabled)
        groups = [
            tuple(name for name in group if name in available) for group in parse_groups(order)
        ]
        kept = tuple(group for group in groups if group)
        if not kept:
            kept = tuple((name,) for name in available)
        return cls(
            groups=kept,
            weights=dict(weights or {}),
            per_provider_attempts=max(1, per_provider_attempts),
            probe_wait=probe_wait,
        )

    @property
    def providers(self) -> list[str]:
        """Every provider, by priority."""
        return [name for group in self.groups for name in group]

    def _priority(self, name: str) -> int:
        for index, group in enumerate(self.groups):
            if name in group:
                return index
        return len(self.groups)

    def _weighted(self, names: list[str], rng: random.Random) -> list[str]:
        """Order ``names`` by a weighted random draw (Efraimidis-Spirakis keys u^(1/w))."""

        def key(name: str) -> float:
            weight = float(self.weights.get(name, 1.0))
            return rng.random() ** (1.0 / weight) if weight > 0 else -1.0

        return sorted(names, key=key, reverse=True)

    def rank(
        self,
        health: Mapping[str, ProviderHealth],
        *,
        previous: str = "",
        attempts: Mapping[str, int] | None = None,
        rng: random.Random | None = None,
    ) -> list[str]:
        """Return the usable providers for the next attempt, best first.

        Args:
            health: Each provider's health (missing: closed and in rotation).
            previous: The provider of the email's previous attempt ("" for a first attempt).
            attempts: The email's attempts per provider (``Email.provider_attempts``).
            rng: Source of the weighted draw.

        Returns:
            The candidates; empty when none is usable (see :meth:`wait_seconds`).
        """
        rng = rng or random.Random()
        attempts = attempts or {}

        def budget_left(name: str) -> bool:
            return int(attempts.get(name, 0)) < self.per_provider_attempts

        def usable(name: str) -> bool:
            return health.get(name, CLOSED).usable

        ranked: list[str] = []
        if previous and previous in self.providers and usable(previous) and budget_left(previous):
            ranked.append(previous)
        for group in self.groups:
            fresh = [n for n in group if usable(n) and budget_left(n) and n not in ranked]
            ranked += self._weighted(fresh, rng)
        spent = [n for n in self.providers if usable(n) and n not in ranked]
        ranked += sorted(spent, key=lambda n: (int(attempts.get(n, 0)), self._priority(n)))
        return ranked

    def wait_seconds(self, health: Mapping[str, ProviderHealth]) -> float:
        """Seconds until the earliest provider may be usable again."""
        waits = [health.get(n, CLOSED).wait_seconds(self.probe_wait) for n in self.providers]
        return min(waits) if waits else IDLE_WAIT_SECONDS
