"""The API's in-memory suppression list (mongomock): what it answers, and when it stops."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from bson import ObjectId

from core.store import suppression_changes
from core.store.documents import utcnow
from core.store.repository import NewEmail
from core.store.suppressions import Suppression, suppress, suppression_collection, unsuppress
from server import suppression_snapshot
from server.suppression_check import find_suppressed
from server.suppression_snapshot import SuppressionSnapshot


def new_email(**lists: list[str]) -> NewEmail:
    return NewEmail(subject="s", text="t", from_address="f@example.org", **lists)


class Clock:
    """Monotonic seconds the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def snapshot(fake_store: None, clock: Clock) -> Iterator[SuppressionSnapshot]:
    """A loaded snapshot (no thread: the tests poll by hand), installed for SendEmail."""
    Suppression.drop_collection()
    suppression_collection().database[suppression_changes.COLLECTION].drop()
    snap = SuppressionSnapshot(poll_seconds=1.0, reload_seconds=600.0, clock=clock)
    snap.load()
    suppression_snapshot.install(snap)
    yield snap
    suppression_snapshot.install(None)
    snap.stop()


def _behind_our_back(address: str, reason: str) -> None:
    """An entry written by another process: its insert and its note, no listener here."""
    suppression_collection().insert_one({"_id": address, "reason": reason, "created_at": 0})
    suppression_collection().database[suppression_changes.COLLECTION].insert_one(
        {"address": address}
    )


def test_an_address_suppressed_in_this_process_is_dropped_at_once(
    snapshot: SuppressionSnapshot,
) -> None:
    suppress("Gone <Gone@Example.com>", "manual")
    assert snapshot.suppressed_among(["kept@example.com", "gone@example.com"]) == {
        "gone@example.com": "manual"
    }


def test_an_address_suppressed_by_another_process_applies_at_the_next_poll(
    snapshot: SuppressionSnapshot,
) -> None:
    _behind_our_back("far@example.com", "complaint")
    assert snapshot.suppressed_among(["far@example.com"]) == {}  # not polled yet
    assert snapshot.poll() == 1
    assert snapshot.suppressed_among(["far@example.com"]) == {"far@example.com": "complaint"}
    assert snapshot.poll() == 0  # a note is applied once


def test_a_removal_anywhere_is_never_late(snapshot: SuppressionSnapshot) -> None:
    suppress("gone@example.com", "manual")
    # Deleted behind Mailroom's back, no note: the snapshot still holds it, the store does not.
    Suppression.objects(address="gone@example.com").delete()
    assert snapshot.suppressed_among(["gone@example.com"]) == {}
    suppress("back@example.com", "manual")
    assert unsuppress("back@example.com")
    assert snapshot.suppressed_among(["back@example.com"]) == {}


def test_a_send_to_unsuppressed_recipients_reads_nothing(
    snapshot: SuppressionSnapshot, monkeypatch: pytest.MonkeyPatch
) -> None:
    suppress("gone@example.com", "manual")
    reads: list[Any] = []
    monkeypatch.setattr(
        "server.suppression_snapshot.suppressed_among", lambda keys: reads.append(keys) or {}
    )
    assert find_suppressed([new_email(to=["a@example.com"], cc=["b@example.com"])]) == {}
    assert reads == []
    find_suppressed([new_email(to=["a@example.com", "gone@example.com"])])
    assert reads == [["gone@example.com"]]


def test_a_snapshot_whose_polls_fail_is_not_used(
    snapshot: SuppressionSnapshot, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert snapshot.current()
    clock.now += 6  # three polls of a second, and at least 5 s, without a successful one
    assert not snapshot.current()
    _behind_our_back("far@example.com", "hard_bounce")
    # Not current: SendEmail looks the recipients up in the store, and sees the new entry.
    assert find_suppressed([new_email(to=["far@example.com"])]) == {
        "far@example.com": "hard_bounce"
    }
    snapshot.poll()
    assert snapshot.current()


def _note_at(when: datetime, address: str, reason: str) -> None:
    """An entry another process wrote at ``when`` (its note's id carries that time)."""
    suppression_collection().insert_one({"_id": address, "reason": reason, "created_at": 0})
    note_id = ObjectId(ObjectId.from_datetime(when).binary[:4] + ObjectId().binary[4:])
    suppression_collection().database[suppression_changes.COLLECTION].insert_one(
        {"_id": note_id, "address": address}
    )


def test_an_addition_made_during_an_outage_longer_than_the_overlap_is_applied(
    snapshot: SuppressionSnapshot, monkeypatch: pytest.MonkeyPatch
) -> None:
    wall = utcnow()
    monkeypatch.setattr(suppression_snapshot, "utcnow", lambda: wall)
    snapshot.poll()  # the last successful read before the store stops answering this process
    _note_at(wall + timedelta(seconds=5), "during@example.com", "complaint")

    # 45 s later (no poll succeeded meanwhile) the note is older than one overlap.
    wall += suppression_changes.OVERLAP + timedelta(seconds=15)
    assert snapshot.poll() == 1
    assert snapshot.suppressed_among(["during@example.com"]) == {"during@example.com": "complaint"}


def test_after_a_gap_longer_than_notes_are_kept_the_list_is_reloaded(
    snapshot: SuppressionSnapshot, monkeypatch: pytest.MonkeyPatch
) -> None:
    wall = utcnow()
    monkeypatch.setattr(suppression_snapshot, "utcnow", lambda: wall)
    snapshot.poll()
    # Added while this process could not read, and its note already pruned.
    suppression_collection().insert_one({"_id": "pruned@example.com", "reason": "manual"})
    wall += suppression_changes.KEEP
    snapshot.poll()
    assert snapshot.suppressed_among(["pruned@example.com"]) == {"pruned@example.com": "manual"}


def test_a_poll_does_not_undo_a_change_made_here_while_it_read(
    snapshot: SuppressionSnapshot, monkeypatch: pytest.MonkeyPatch
) -> None:
    _behind_our_back("racy@example.com", "manual")
    unsuppress("racy@example.com")  # the notes name it; now it is not suppressed
    real_lookup = suppression_snapshot.suppressed_among

    def read_then_suppress_here(keys: list[str]) -> dict[str, str]:
        answer = real_lookup(keys)  # the store says: not suppressed
        monkeypatch.setattr(suppression_snapshot, "suppressed_among", real_lookup)
        suppress("racy@example.com", "hard_bounce")  # this process, right after that read
        return answer

    monkeypatch.setattr(suppression_snapshot, "suppressed_among", read_then_suppress_here)
    snapshot.poll()
    assert snapshot.suppressed_among(["racy@example.com"]) == {"racy@example.com": "hard_bounce"}


def test_a_full_reload_brings_in_an_entry_whose_note_was_lost(
    snapshot: SuppressionSnapshot,
) -> None:
    suppression_collection().insert_one({"_id": "lost@example.com", "reason": "manual"})
    snapshot.poll()
    assert snapshot.suppressed_among(["lost@example.com"]) == {}
    snapshot.load()
    assert snapshot.suppressed_among(["lost@example.com"]) == {"lost@example.com": "manual"}


def test_old_notes_are_pruned(snapshot: SuppressionSnapshot) -> None:
    suppress("a@example.com", "manual")
    notes = suppression_collection().database[suppression_changes.COLLECTION]
    assert notes.count_documents({}) == 1
    assert suppression_changes.prune_notes(suppression_collection(), utcnow() - timedelta(1)) == 0
    assert suppression_changes.prune_notes(suppression_collection(), utcnow() + timedelta(1)) == 1


def test_without_a_snapshot_every_send_looks_up(fake_store: None) -> None:
    Suppression.drop_collection()
    suppression_snapshot.install(None)
    _behind_our_back("far@example.com", "manual")
    assert find_suppressed([new_email(to=["far@example.com"])]) == {"far@example.com": "manual"}
