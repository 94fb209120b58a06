"""The carried email reaches a message's first attempt only (Dramatiq's StubBroker)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker

from core.queue import CARRIED_OPTION
from workers.broker import CarriedEmail


@pytest.fixture
def broker() -> Iterator[tuple[StubBroker, CarriedEmail]]:
    stub = StubBroker()
    carried = CarriedEmail()
    stub.add_middleware(carried)
    previous = dramatiq.get_broker()
    dramatiq.set_broker(stub)
    yield stub, carried
    dramatiq.set_broker(previous)
    stub.close()


def run(stub: StubBroker) -> None:
    worker = dramatiq.Worker(stub, worker_threads=1, worker_timeout=50)
    worker.start()
    try:
        for queue in stub.get_declared_queues():
            stub.join(queue, fail_fast=False)
        worker.join()
    finally:
        worker.stop()


def enqueue(stub: StubBroker, actor_name: str, email_id: str, stored: str | None) -> None:
    options = {CARRIED_OPTION: stored} if stored is not None else {}
    stub.enqueue(
        dramatiq.Message(
            queue_name="mail", actor_name=actor_name, args=(email_id,), kwargs={}, options=options
        )
    )


def test_the_first_attempt_gets_the_copy_and_a_retry_does_not(broker):
    stub, carried = broker
    seen: list[tuple[str, str | None]] = []

    @dramatiq.actor(queue_name="mail", max_retries=1, min_backoff=1, max_backoff=1)
    def deliver(email_id: str) -> None:
        seen.append((email_id, carried.take()))
        if len(seen) == 1:
            raise dramatiq.Retry("transient", delay=1)

    enqueue(stub, "deliver", "e1", "COPY-1")
    run(stub)
    assert seen == [("e1", "COPY-1"), ("e1", None)]


def test_a_dead_letter_holds_no_copy(broker):
    stub, _ = broker
    letters: list[dict[str, object]] = []

    @dramatiq.actor(queue_name="dead")
    def dead_letter(message: dict[str, object], info: dict[str, int]) -> None:
        letters.append(message)

    @dramatiq.actor(
        queue_name="mail",
        max_retries=0,
        on_retry_exhausted="dead_letter",
    )
    def deliver(email_id: str) -> None:
        raise RuntimeError("always")

    enqueue(stub, "deliver", "e2", "SECRET-CONTENT")
    run(stub)
    assert len(letters) == 1
    assert letters[0]["args"] == ["e2"]
    assert "SECRET-CONTENT" not in json.dumps(letters[0])
