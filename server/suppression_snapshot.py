"""The suppression list in each API process's memory, so accepting an email reads no list entry.

Looking each recipient up cost one store round trip apiece on the accept path (FerretDB serves
``_id`` equalities only, not ``$in``): three of the four round trips of a three-recipient send,
and 29 % of the API's CPU in a profile of the accept benchmark. The snapshot answers instead:

* It loads the whole list at start (until then, and whenever it is not current, SendEmail looks
  the recipients up in the store as before), then polls the list's change notes
  (``core/store/suppression_changes.py``) every ``MAILROOM_SUPPRESSION_SNAPSHOT_POLL_SECONDS``
  and re-reads the addresses they name. Changes made in this process apply at once. A change
  made in another process (a second API process, ``mailroom-admin``) applies here within about
  one poll.
* A recipient the snapshot holds is confirmed in the store before it is dropped or refused, so a
  removal is never late and an entry deleted behind Mailroom's back drops nothing. Only an
  addition can be late, by about a poll.
* It reloads the whole list every ``MAILROOM_SUPPRESSION_SNAPSHOT_RELOAD_SECONDS``, which also
  brings in an entry added behind Mailroom's back or whose note was lost.
* Each poll reads the notes made since shortly before its last successful read began, so an
  outage or a slow poll skips none; after a gap long enough for notes to be pruned it reloads.
  Note ids carry their writer's clock: the processes' clocks must agree within ``OVERLAP``
  (30 s; NTP does far better), or a lagging writer's additions wait for the next full reload.
* A change made in this process while a read of the store is under way is not undone by that
  read's (older) answer.
* It is current while its last successful poll is recent (three polls, at least 5 s); when the
  store stops answering it stops being used, and SendEmail's lookups fail as they did before.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta

from bson import ObjectId

from core.errors import StorageUnavailable
from core.store.documents import utcnow
from core.store.suppression_changes import KEEP, OVERLAP, notes_since, on_change, prune_notes
from core.store.suppressions import (
    all_suppressed,
    suppressed_among,
    suppression_collection,
    suppression_key,
)

log = logging.getLogger(__name__)

_PRUNE_EVERY = 60.0
_installed: SuppressionSnapshot | None = None


class SuppressionSnapshot:
    """The list in memory, kept current by a background thread (see the module).

    Args:
        poll_seconds: Seconds between reads of the change notes.
        reload_seconds: Seconds between full reloads of the list.
        clock: Monotonic seconds (tests pass their own).
    """

    def __init__(
        self,
        *,
        poll_seconds: float,
        reload_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._poll_seconds = poll_seconds
        self._reload_seconds = reload_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: dict[str, str] = {}
        self._applied: set[ObjectId] = set()
        # Changes made in this process, numbered, so a read that began before one ignores it.
        self._local_seq = 0
        self._local_changes: dict[str, int] = {}
        # Wall time (naive UTC) when the last successful load or poll began.
        self._read_from: datetime | None = None
        self._loaded = False
        self._last_ok = float("-inf")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._unregister = on_change(self._apply_local)

    # -- answering -----------------------------------------------------------------------------

    def current(self) -> bool:
        """Whether the snapshot is loaded and its last poll recent enough to answer from."""
        fresh_for = max(3 * self._poll_seconds, 5.0)
        return self._loaded and self._clock() - self._last_ok <= fresh_for

    def suppressed_among(self, addresses: Iterable[str]) -> dict[str, str]:
        """Which of ``addresses`` are suppressed, answered as the store's lookup answers.

        Only the addresses the snapshot holds are looked up (confirmed) in the store; when it
        holds none of them, nothing is read.

        Raises:
            StorageUnavailable: A confirming lookup failed.
        """
        given = list(addresses)
        with self._lock:
            held = [a for a in given if suppression_key(a) in self._entries]
        if not held:
            return {}
        return suppressed_among(held)

    # -- keeping current -----------------------------------------------------------------------

    def load(self) -> None:
        """Read the whole list (and, next poll, every note made since shortly before)."""
        started, wall = self._clock(), utcnow()
        with self._lock:
            begun = self._local_seq
        entries = all_suppressed()
        with self._lock:
            for key in self._changed_since(begun):
                if key in self._entries:
                    entries[key] = self._entries[key]
                else:
                    entries.pop(key, None)
            self._entries = entries
            self._applied.clear()  # the next poll re-reads every note since shortly before
            self._read_done(begun, wall, started)
            self._loaded = True
        log.info("suppression snapshot loaded: %d addresses", len(entries))

    def poll(self) -> int:
        """Apply the change notes not applied yet; return how many addresses were re-read.

        When the last successful read is so old that notes since then may be pruned, reloads the
        whole list instead (and returns 0).
        """
        started, wall = self._clock(), utcnow()
        if self._read_from is None or wall - self._read_from > KEEP - OVERLAP:
            self.load()
            return 0
        with self._lock:
            begun = self._local_seq
        collection = suppression_collection()
        since = min(self._read_from, wall) - OVERLAP
        notes = [
            (note, key) for note, key in notes_since(collection, since) if note not in self._applied
        ]
        keys = sorted({key for _, key in notes})
        now = suppressed_among(keys) if keys else {}
        with self._lock:
            changed_here = self._changed_since(begun)
            for key in keys:
                if key in changed_here:
                    continue  # this process changed it after the read began: that is newer
                if key in now:
                    self._entries[key] = now[key]
                else:
                    self._entries.pop(key, None)
            self._applied.update(note for note, _ in notes)
            horizon = since - timedelta(seconds=1)
            self._applied = {
                n for n in self._applied if n.generation_time.replace(tzinfo=None) >= horizon
            }
            self._read_done(begun, wall, started)
        return len(keys)

    def _changed_since(self, begun: int) -> set[str]:
        """The keys this process changed after local change number ``begun`` (lock held)."""
        return {key for key, seq in self._local_changes.items() if seq > begun}

    def _read_done(self, begun: int, wall: datetime, started: float) -> None:
        """Record a successful read that began at ``wall`` after local change ``begun``."""
        # A read that began after a local change saw it in the store: no need to remember it.
        self._local_changes = {k: n for k, n in self._local_changes.items() if n > begun}
        self._read_from = wall
        self._last_ok = started

    def _apply_local(self, key: str, reason: str | None) -> None:
        with self._lock:
            self._local_seq += 1
            self._local_changes[key] = self._local_seq
            if reason is None:
                self._entries.pop(key, None)
            else:
                self._entries.setdefault(key, reason)

    # -- the thread ----------------------------------------------------------------------------

    def start(self) -> SuppressionSnapshot:
        """Start the background thread (it loads first); return self."""
        self._thread = threading.Thread(target=self._run, name="suppression-snapshot", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the thread and stop hearing this process's changes."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._unregister()

    def _run(self) -> None:
        next_load = next_prune = self._clock()
        failing = False
        while not self._stop.is_set():
            now = self._clock()
            try:
                if now >= next_load or not self._loaded:
                    self.load()
                    next_load = now + self._reload_seconds
                self.poll()
                if now >= next_prune:
                    prune_notes(suppression_collection(), utcnow() - KEEP)
                    next_prune = now + _PRUNE_EVERY
                if failing:
                    log.info("suppression snapshot current again")
                failing = False
            except StorageUnavailable as exc:
                if not failing:
                    log.warning("suppression snapshot cannot read the store: %s", exc)
                failing = True
            except Exception:
                log.exception("suppression snapshot: unexpected error")
                failing = True
            self._stop.wait(self._poll_seconds)


def install(snapshot: SuppressionSnapshot | None) -> None:
    """Make ``snapshot`` the one SendEmail answers from in this process (None: none)."""
    global _installed
    _installed = snapshot


def installed() -> SuppressionSnapshot | None:
    """The snapshot of this process, if one is installed."""
    return _installed
