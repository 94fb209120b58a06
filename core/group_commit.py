"""Group commit: single writes of concurrent callers carried out together, one round trip a group.

An API process answers SendEmail on several request threads, and each used to insert its email
with an ``insert_one`` of its own. On FerretDB (on PostgreSQL) most of an insert's cost is per
command and per transaction, not per document: an unordered ``insert_many`` of 4 emails cost
0.57 ms of FerretDB and PostgreSQL CPU per email against 1.07 ms for ``insert_one`` (8 threads,
same minute, a scratch probe). :class:`GroupCommit` lets the callers that arrive while a write
is in flight share the next one, without any timer:

* a caller finding no write in flight writes its own item at once (the *leader*);
* callers arriving meanwhile queue up; when the write ends, the leader wakes the oldest of them
  to lead the next write, with everything queued by then (up to ``max_items`` and
  ``max_bytes``), and hands each finished caller its own result.

So a lone caller pays nothing (no waiting for company), and under load each write carries the
callers that queued during the previous one. Each caller's result is its own: the write
function answers per item, and an error of the whole write is raised in every caller of it.
"""

from __future__ import annotations

import copy
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class NotTaken(Exception):
    """The caller's wait ran out before any write took its item: the item was not written."""


class TakenNoAnswer(Exception):
    """The caller's wait ran out while a write holding its item was in flight: it may land."""


@dataclass(eq=False)
class _Entry(Generic[T, R]):
    item: T
    size: int
    wake: threading.Event = field(default_factory=threading.Event)
    lead: bool = False
    taken: bool = False
    done: bool = False
    outcome: object = None


class GroupCommit(Generic[T, R]):
    """Concurrent callers' items written together by ``write``, one call per group.

    Args:
        write: Writes a group of items; returns one outcome per item, in order (a result, or
            an exception to raise in that item's caller). An exception it raises is raised in
            every caller of the group.
        max_items: The most items in one write.
        max_bytes: The most bytes (the callers' ``size``) in one write; an item larger than it
            is written alone.
    """

    def __init__(
        self,
        write: Callable[[list[T]], Sequence[R | BaseException]],
        *,
        max_items: int = 16,
        max_bytes: int = 4 * 1024 * 1024,
    ) -> None:
        self._write = write
        self._max_items = max_items
        self._max_bytes = max_bytes
        self._lock = threading.Lock()
        self._queue: deque[_Entry[T, R]] = deque()
        self._busy = False

    def submit(self, item: T, *, size: int = 0, timeout: float) -> R:
        """Write ``item`` with whatever else is queued; return its result.

        Args:
            item: The item.
            size: Its size in bytes, for ``max_bytes``.
            timeout: How long to wait for another caller's write to take and finish the item;
                a caller chosen to lead after it does not write (:class:`NotTaken`). The write
                runs in the leading caller's thread: the write function bounds it (it may carry
                the group's deadlines in its items).

        Raises:
            NotTaken: The wait ran out before a write took the item (it was not written).
            TakenNoAnswer: The wait ran out while a write with the item was in flight.
            BaseException: The item's error, or the whole write's.
        """
        entry: _Entry[T, R] = _Entry(item, size)
        with self._lock:
            self._queue.append(entry)
            if not self._busy:
                self._busy = entry.lead = True
        if not entry.lead:
            self._await(entry, time.monotonic() + timeout)
        if entry.lead and not entry.done:
            self._lead()
        if isinstance(entry.outcome, BaseException):
            # A fresh copy per caller: one exception object raised in several threads at once
            # would share (and overwrite) its traceback.
            fresh = _fresh(entry.outcome)
            if fresh is entry.outcome:
                raise fresh
            raise fresh from entry.outcome
        return entry.outcome  # type: ignore[return-value]

    def _await(self, entry: _Entry[T, R], deadline: float) -> None:
        """Wait until the entry is done or chosen to lead; give up at the deadline."""
        entry.wake.wait(max(deadline - time.monotonic(), 0))
        with self._lock:
            if entry.done:
                return
            if entry.lead:
                if time.monotonic() < deadline:
                    return
                # Chosen after its time ran out: a write bounded by a spent deadline would fail
                # every item of the group. Its item stays unwritten; the next caller leads.
                self._queue.popleft()  # this entry: the leader is always the oldest
                self._pass_lead()
                raise NotTaken("the item's time ran out before it could be written")
            if not entry.taken:
                self._queue.remove(entry)
                raise NotTaken("no write took the item in time")
            raise TakenNoAnswer("the write holding the item did not answer in time")

    def _pass_lead(self) -> None:
        """Wake the oldest queued caller to lead the next write (the lock is held)."""
        if self._queue:
            self._queue[0].lead = True
            self._queue[0].wake.set()
        else:
            self._busy = False

    def _lead(self) -> None:
        """Write the oldest queued items (this caller's first), then pass the lead on."""
        with self._lock:
            group = [self._queue.popleft()]
            group[0].taken = True
            size = group[0].size
            while self._queue and len(group) < self._max_items:
                following = self._queue[0]
                if size + following.size > self._max_bytes:
                    break
                size += following.size
                group.append(self._queue.popleft())
                following.taken = True
        try:
            outcomes: Sequence[object] = self._write([e.item for e in group])
            if len(outcomes) != len(group):
                raise RuntimeError(f"{len(outcomes)} outcomes for {len(group)} items")
        except BaseException as exc:  # every caller of the write raises it
            outcomes = [exc] * len(group)
        finally:
            with self._lock:
                self._pass_lead()
        for entry, outcome in zip(group, outcomes, strict=True):
            entry.outcome = outcome
            entry.done = True
            entry.wake.set()


def _fresh(exc: BaseException) -> BaseException:
    """A copy of ``exc`` to raise in one caller (the original when it cannot be copied)."""
    try:
        return copy.copy(exc)
    except Exception:  # an exception whose constructor does not take its own args
        return exc
