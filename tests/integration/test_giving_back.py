"""A worker's broken Redis consumer gives back the messages it had fetched but not handled.

Real Redis. Dramatiq's own consumer forgets them (they stay in the worker's acks set until the
worker process dies); these tests fail with ``RedisBroker`` in place of the recovering one.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import dramatiq
import pytest
import redis
from dramatiq.errors import ConnectionClosed

from devtools.services import ManagedProcess
from workers.redis_broker import RecoveringRedisBroker

QUEUE = "giveback"


@pytest.fixture
def broker(redis_server: ManagedProcess) -> Iterator[RecoveringRedisBroker]:
    """A recovering broker on the session's Redis, with a ``note`` actor on the test queue."""
    redis.Redis.from_url(redis_server.url).flushdb()
    broker = RecoveringRedisBroker(url=redis_server.url, middleware=[])

    @dramatiq.actor(broker=broker, queue_name=QUEUE, actor_name="note")
    def note(n: int) -> None:
        """Stands in for any actor."""

    broker.notes = note  # type: ignore[attr-defined]
    yield broker
    broker.close()


def _waiting(redis_server: ManagedProcess, queue: str) -> int:
    return int(redis.Redis.from_url(redis_server.url).llen(f"dramatiq:{queue}"))


def _fetched(broker: RecoveringRedisBroker, count: int) -> tuple[Any, Any]:
    """Send ``count`` notes and start a consumer that fetches them all and hands out one."""
    for n in range(count):
        broker.notes.send(n)  # type: ignore[attr-defined]
    consumer = broker.consume(QUEUE, prefetch=count, timeout=100)
    first = next(consumer)
    assert first is not None
    return consumer, first


def test_a_closed_consumer_gives_back_the_messages_it_fetched_but_did_not_hand_out(
    broker: RecoveringRedisBroker, redis_server: ManagedProcess
) -> None:
    consumer, first = _fetched(broker, 5)
    assert _waiting(redis_server, QUEUE) == 0

    consumer.close()  # what Dramatiq's consumer thread does after a connection error

    assert _waiting(redis_server, QUEUE) == 4
    again = broker.consume(QUEUE, prefetch=10, timeout=100)
    seen = sorted(next(again).args[0] for _ in range(4))  # type: ignore[union-attr]
    assert seen == sorted(set(range(5)) - {first.args[0]})
    again.close()


def test_messages_held_while_redis_was_down_go_back_once_it_answers(
    broker: RecoveringRedisBroker, redis_server: ManagedProcess
) -> None:
    consumer, _ = _fetched(broker, 3)

    redis_server.stop()
    try:
        consumer.close()  # cannot reach Redis: keeps the two ids
        with pytest.raises(ConnectionClosed):
            broker.consume(QUEUE, prefetch=3, timeout=100)
    finally:
        redis_server.start()

    broker.consume(QUEUE, prefetch=3, timeout=100)  # gives them back before consuming

    assert _waiting(redis_server, QUEUE) == 2


def test_a_delay_queue_consumer_gives_back_the_messages_waiting_for_their_eta(
    broker: RecoveringRedisBroker, redis_server: ManagedProcess
) -> None:
    delayed = dramatiq.common.dq_name(QUEUE)
    for n in range(2):
        broker.notes.send_with_options(args=(n,), delay=60_000)  # type: ignore[attr-defined]
    consumer = broker.consume(delayed, prefetch=10, timeout=100)
    taken = [next(consumer), next(consumer)]  # the consumer thread holds both until their ETA
    assert all(message is not None for message in taken)
    assert _waiting(redis_server, delayed) == 0

    consumer.close()

    assert _waiting(redis_server, delayed) == 2


def test_a_delayed_message_requeued_while_redis_is_down_goes_back_once_it_answers(
    broker: RecoveringRedisBroker, redis_server: ManagedProcess
) -> None:
    delayed = dramatiq.common.dq_name(QUEUE)
    broker.notes.send_with_options(args=(1,), delay=60_000)  # type: ignore[attr-defined]
    consumer = broker.consume(delayed, prefetch=10, timeout=100)
    held = next(consumer)
    assert held is not None

    redis_server.stop()
    try:
        # What Dramatiq's consumer thread does with its delayed messages when it closes; a
        # Redis error escaping here ended that thread for good.
        consumer.requeue([held])
    finally:
        redis_server.start()

    broker.consume(delayed, prefetch=10, timeout=100)
    assert _waiting(redis_server, delayed) == 1


def test_ids_stay_for_the_next_consumer_whatever_error_the_give_back_meets(
    broker: RecoveringRedisBroker, redis_server: ManagedProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    consumer, _ = _fetched(broker, 3)

    def read_only(*_args: object) -> None:
        raise redis.ReadOnlyError("You can't write against a read only replica.")

    monkeypatch.setattr(broker, "do_requeue", read_only)
    consumer.close()  # after a failover to a replica, say: logged, nothing lost
    monkeypatch.undo()
    assert _waiting(redis_server, QUEUE) == 0

    broker.consume(QUEUE, prefetch=3, timeout=100)
    assert _waiting(redis_server, QUEUE) == 2
