"""Choosing a provider for an attempt and sending through it.

The seam between the delivery logic and the providers: :class:`Router` decides which provider
takes an attempt (priority order, circuit breakers, per-provider retry budgets) and sends through
it. The delivery actor only sees :meth:`Router.choose` and :meth:`Router.send`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from server.store.documents import Email
from workers.mta.base import OutgoingEmail, Provider, SendResult

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


class Router:
    """Providers in priority order; the first one not taken out of rotation wins.

    Args:
        providers: Enabled providers by name.
        order: Provider names in priority order.
    """

    def __init__(self, providers: dict[str, Provider], order: list[str]) -> None:
        self.providers = providers
        self.order = [name for name in order if name in providers] or list(providers)
        self._disabled: set[str] = set()

    def choose(self, email: Email) -> Choice:
        """Pick the provider for the next attempt of ``email``."""
        for name in self.order:
            if name not in self._disabled:
                return Choice(name)
        return Choice(None, retry_in=60.0)

    def send(self, provider: str, email: OutgoingEmail) -> SendResult:
        """Send ``email`` through ``provider``."""
        return self.providers[provider].send(email)

    def take_out_of_rotation(self, provider: str, reason: str) -> None:
        """Stop choosing ``provider`` (its credentials were refused)."""
        log.error("provider %s taken out of rotation: %s", provider, reason)
        self._disabled.add(provider)
