"""Group commit: callers arriving during a write share the next one, each with its own answer."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from core.errors import DuplicateKey, StorageOutcomeUnknown
from core.group_commit import GroupCommit, NotTaken, TakenNoAnswer
from helpers import wait_until


class Store:
    """A write function whose first write waits until the test opens the gate."""

    def __init__(self, answer: Callable[[str], object] = lambda item: f"ok:{item}") -> None:
        self.writes: list[list[str]] = []
        self.gate = threading.Event()
        self.gated = True
        self.answer = answer
        self.fail_with: BaseException | None = None

    def write(self, items: list[str]) -> list[object]:
        self.writes.append(list(items))
        if self.gated:
            self.gated = False
            assert self.gate.wait(10), "the test never opened the gate"
        if self.fail_with is not None:
            raise self.fail_with
        return [self.answer(item) for item in items]


def submit_in_threads(
    group: GroupCommit[str, object],
    items: list[str],
    *,
    timeout: float = 10.0,
    in_order: bool = False,
) -> tuple[dict[str, object], list[threading.Thread]]:
    """Submit each item from a thread of its own; results (or errors) land in the dict.

    With ``in_order``, each thread is started once the one before it is queued (a write is in
    flight), so the queue holds the items in their order.
    """
    results: dict[str, object] = {}

    def run(item: str) -> None:
        try:
            results[item] = group.submit(item, size=len(item), timeout=timeout)
        except BaseException as exc:
            results[item] = exc

    threads = [threading.Thread(target=run, args=(item,)) for item in items]
    for thread in threads:
        before = queued(group)
        thread.start()
        if in_order:
            wait_until(lambda n=before: queued(group) > n, timeout=10, message="queued")
    return results, threads


def queued(group: GroupCommit[str, object]) -> int:
    return len(group._queue)


def hold_first_write(store: Store, group: GroupCommit[str, object], others: list[str]):
    """Start a first caller, hold its write, queue ``others`` behind it; return their results."""
    first, first_threads = submit_in_threads(group, ["first"])
    wait_until(lambda: store.writes == [["first"]], timeout=10, message="the first write began")
    results, threads = submit_in_threads(group, others, in_order=True)
    return first, results, first_threads + threads


def test_a_lone_caller_writes_at_once_and_alone():
    store = Store()
    store.gated = False
    group: GroupCommit[str, object] = GroupCommit(store.write)
    assert group.submit("a", timeout=1) == "ok:a"
    assert group.submit("b", timeout=1) == "ok:b"
    assert store.writes == [["a"], ["b"]]


def test_callers_arriving_during_a_write_share_the_next_one_each_with_its_own_answer():
    store = Store()
    group: GroupCommit[str, object] = GroupCommit(store.write, max_items=16)
    others = [f"e{i}" for i in range(6)]
    first, results, threads = hold_first_write(store, group, others)
    store.gate.set()
    for thread in threads:
        thread.join(10)
    assert store.writes == [["first"], others]
    assert first == {"first": "ok:first"}
    assert results == {item: f"ok:{item}" for item in others}


def test_a_group_is_capped_by_items_and_by_bytes():
    store = Store()
    group: GroupCommit[str, object] = GroupCommit(store.write, max_items=3, max_bytes=10)
    others = ["aaaa", "bbbb", "c", "dddddddddddd", "e", "f", "g", "h"]
    _, results, threads = hold_first_write(store, group, others)
    store.gate.set()
    for thread in threads:
        thread.join(10)
    # Up to 3 items and 10 bytes each; the 12-byte item goes alone.
    assert store.writes[1:] == [["aaaa", "bbbb", "c"], ["dddddddddddd"], ["e", "f", "g"], ["h"]]
    assert results == {item: f"ok:{item}" for item in others}


def test_an_item_error_is_raised_in_its_own_caller_only():
    store = Store(lambda item: DuplicateKey("duplicate key") if item == "dup" else f"ok:{item}")
    group: GroupCommit[str, object] = GroupCommit(store.write)
    _, results, threads = hold_first_write(store, group, ["a", "dup", "b"])
    store.gate.set()
    for thread in threads:
        thread.join(10)
    assert store.writes[1] == ["a", "dup", "b"]
    assert results["a"] == "ok:a" and results["b"] == "ok:b"
    assert isinstance(results["dup"], DuplicateKey)


def test_a_failed_write_is_raised_in_each_of_its_callers_and_the_next_group_still_runs():
    store = Store()
    group: GroupCommit[str, object] = GroupCommit(store.write)
    store.fail_with = StorageOutcomeUnknown("storage did not answer in time (NetworkTimeout)")
    first, results, threads = hold_first_write(store, group, ["a", "b"])
    store.gate.set()
    for thread in threads:
        thread.join(10)
    errors = [first["first"], results["a"], results["b"]]
    assert all(isinstance(e, StorageOutcomeUnknown) for e in errors)
    assert len({id(e) for e in errors}) == 3, "each caller raises an exception of its own"
    assert errors[1].message == "storage did not answer in time (NetworkTimeout)"
    store.fail_with = None
    assert group.submit("later", timeout=1) == "ok:later"
    assert store.writes[-1] == ["later"]


def test_a_caller_whose_wait_runs_out_while_queued_is_never_written():
    store = Store()
    group: GroupCommit[str, object] = GroupCommit(store.write)
    first, first_threads = submit_in_threads(group, ["first"])
    wait_until(lambda: store.writes == [["first"]], timeout=10, message="the first write began")
    with pytest.raises(NotTaken):
        group.submit("late", timeout=0.05)
    store.gate.set()
    first_threads[0].join(10)
    assert first == {"first": "ok:first"}
    assert group.submit("after", timeout=1) == "ok:after"
    assert ["late"] not in store.writes and all("late" not in w for w in store.writes)


def test_a_caller_whose_wait_runs_out_while_its_write_is_in_flight_is_told_it_may_land():
    store = Store()
    group: GroupCommit[str, object] = GroupCommit(store.write)
    _, first_threads = submit_in_threads(group, ["first"])
    wait_until(lambda: store.writes == [["first"]], timeout=10, message="the first write began")
    second_write = threading.Event()
    release = threading.Event()
    store.answer = lambda item: item

    def slow_second(items: list[str]) -> list[object]:
        store.writes.append(list(items))
        second_write.set()
        release.wait(10)
        return list(items)

    # The leader waits long; the rider gives up after 3 s, by when the leader's write (held
    # below until the rider has answered) has long taken it, even on a loaded machine.
    results, threads = submit_in_threads(group, ["leader"], timeout=30.0, in_order=True)
    rider, rider_threads = submit_in_threads(group, ["rider"], timeout=3.0, in_order=True)
    group._write = lambda items: store.write(items) if items == ["first"] else slow_second(items)
    store.gate.set()
    first_threads[0].join(10)
    assert second_write.wait(10)
    rider_threads[0].join(10)  # the rider gives up while the leader's write holds it
    assert isinstance(rider["rider"], TakenNoAnswer)
    release.set()
    threads[0].join(10)
    assert results["leader"] == "leader"


def test_a_caller_chosen_to_lead_after_its_time_ran_out_does_not_write(monkeypatch):
    """Its write would be bound by a spent deadline: it gives up, the next caller leads."""
    import core.group_commit

    clock = [1000.0]
    monkeypatch.setattr(core.group_commit.time, "monotonic", lambda: clock[0])
    store = Store()
    group: GroupCommit[str, object] = GroupCommit(store.write)
    _, first_threads = submit_in_threads(group, ["first"])
    wait_until(lambda: store.writes == [["first"]], timeout=10, message="the first write began")
    late, late_threads = submit_in_threads(group, ["late"], timeout=5.0, in_order=True)
    on_time, on_time_threads = submit_in_threads(group, ["on time"], timeout=60.0, in_order=True)
    clock[0] += 10  # the late caller's 5 s are spent, the other's 60 s are not
    store.gate.set()
    for thread in first_threads + late_threads + on_time_threads:
        thread.join(10)
    assert isinstance(late["late"], NotTaken)
    assert on_time == {"on time": "ok:on time"}
    # One write each: the late caller's item was never written, the other wrote alone.
    assert store.writes == [["first"], ["on time"]]
