"""A bounded, in-process backlog of work retried in a background thread until it succeeds.

The API keeps two: enqueues that failed while Redis was down (the email is stored; delivering it
must not wait for the 30-minute rescan), and voids of emails whose insert the store could not
confirm in time. Both are also covered, more slowly, by the scheduler's scans when the process
dies with work left: the backlog makes the common case fast, not the rare case possible.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

from core.errors import MailroomError

log = logging.getLogger(__name__)

T = TypeVar("T")


class RetryBacklog(Generic[T]):
    """Retries ``action(item)`` for each added item until it stops raising.

    Args:
        name: Names the thread and the log lines.
        action: Does the work for one item; raises :class:`MailroomError` to be retried.
        retry_seconds: Pause after a failed round.
        max_items: Items beyond this are dropped with an error log (the scans still find them).
    """

    def __init__(
        self,
        name: str,
        action: Callable[[T], object],
        *,
        retry_seconds: float = 1.0,
        max_items: int = 100_000,
    ) -> None:
        self.name = name
        self._action = action
        self._retry_seconds = retry_seconds
        self._max_items = max_items
        self._items: OrderedDict[T, None] = OrderedDict()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def add(self, item: T) -> None:
        """Queue ``item``; the thread tries it at once and then until it succeeds."""
        with self._lock:
            if len(self._items) >= self._max_items:
                log.error("%s backlog full (%d): dropping %r", self.name, self._max_items, item)
                return
            self._items[item] = None
        self._wake.set()

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def close(self, timeout: float = 2.0) -> None:
        """Stop the thread after one last round (items left are logged)."""
        self._stopped.set()
        self._wake.set()
        self._thread.join(timeout)
        left = len(self)
        if left:
            log.warning("%s: %d item(s) left for the scheduler's scans", self.name, left)

    def _round(self) -> bool:
        """Try every item once, oldest first; return whether all succeeded."""
        with self._lock:
            items = list(self._items)
        for item in items:
            try:
                self._action(item)
            except MailroomError as exc:
                log.info("%s: %r not done yet: %s", self.name, item, exc.message)
                return False
            except Exception:
                log.exception("%s: %r failed", self.name, item)
                return False
            with self._lock:
                self._items.pop(item, None)
        return True

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            while len(self) and not self._round():
                if self._stopped.wait(self._retry_seconds):
                    self._round()
                    return
            if self._stopped.is_set():
                return
