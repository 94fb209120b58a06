"""The pauses between the polls of ``wait_for_delivery``."""

from __future__ import annotations

from collections.abc import Iterator

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
