"""The pauses between the polls of ``wait_for_delivery``, and its time budget."""

from __future__ import annotations

import time
from collections.abc import Iterator

from mailroom.errors import DeliveryTimeout
from mailroom.models import Email

#: The first and the longest pause between two polls, in seconds, and the growth between them.
POLL_INITIAL = 0.2
POLL_MAX = 2.0
POLL_MULTIPLIER = 1.5


def poll_delays(
    initial: float = POLL_INITIAL, maximum: float = POLL_MAX, multiplier: float = POLL_MULTIPLIER
) -> Iterator[float]:
    """Yield the pauses between polls, growing from ``initial`` to ``maximum``, endlessly."""
    delay = initial
    while True:
        yield delay
        delay = min(maximum, delay * multiplier)


class DeliveryWait:
    """The time budget of one ``wait_for_delivery``, shared by the sync and asyncio clients.

    Args:
        email_id: The email waited for.
        timeout: How long to wait in all, in seconds.
        call_timeout: The client's deadline of one call, in seconds.
    """

    def __init__(self, email_id: str, timeout: float, call_timeout: float) -> None:
        self.email_id = email_id
        self.timeout = timeout
        self.call_timeout = call_timeout
        self.deadline = time.monotonic() + timeout
        #: The email as last seen, for the DeliveryTimeout.
        self.email: Email | None = None
        #: Whether the last poll's deadline was cut to the time left to wait.
        self.capped = False

    def poll_timeout(self) -> float:
        """The deadline of the next poll: the client's, or less when less time is left.

        Raises:
            mailroom.DeliveryTimeout: No time is left.
        """
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise self.timed_out()
        self.capped = remaining < self.call_timeout
        return min(self.call_timeout, remaining)

    def timed_out(self) -> DeliveryTimeout:
        """The error for a wait that ran out of time."""
        return DeliveryTimeout(self.email_id, self.timeout, self.email)

    def pause(self, delay: float) -> float:
        """How long to pause before the next poll: ``delay``, or less when less time is left."""
        return max(0.0, min(delay, self.deadline - time.monotonic()))
