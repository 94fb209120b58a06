"""The router's one-round-trip read of every breaker agrees with reading each alone (real Redis)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime

import pybreaker
import pytest
import redis

from devtools.services import ManagedProcess
from workers.breaker_state import RedisState, pybreaker_key
from workers.breakers import BreakerBoard, BreakerStatus

NAMES = ["smtp", "sendgrid", "mailgun", "postmark"]


@pytest.fixture
def board(redis_server: ManagedProcess) -> Iterator[BreakerBoard]:
    client = redis.Redis.from_url(redis_server.url)
    client.flushdb()
    yield BreakerBoard(NAMES, RedisState(client), fail_max=3, reset_timeout=60)
    client.flushdb()
    client.close()


def _one_by_one(board: BreakerBoard, now: datetime) -> dict[str, BreakerStatus]:
    return {name: board[name].status(now) for name in board.names}


def _without_ttl(statuses: dict[str, BreakerStatus]) -> dict[str, BreakerStatus]:
    """The statuses with the mark's remaining time left out (it runs down between two reads)."""
    return {name: replace(s, seconds_out_of_rotation=0.0) for name, s in statuses.items()}


def test_every_state_reads_the_same_in_one_round_trip(board: BreakerBoard) -> None:
    shared = board.shared
    assert isinstance(shared, RedisState)
    now = datetime.now(UTC).replace(microsecond=0)
    board["sendgrid"].breaker.open()  # open, opened_at now
    board["mailgun"].breaker.half_open()
    assert shared.acquire_probe("mailgun", "token", 30)
    shared.take_out("postmark", "bad API key", 120)
    board["smtp"].storage.increment_counter()

    batched = board.statuses(now)

    alone = _one_by_one(board, now)
    assert _without_ttl(batched) == _without_ttl(alone)
    assert 100 < batched["postmark"].seconds_out_of_rotation <= 120
    assert (batched["sendgrid"].state, batched["mailgun"].probing) == ("open", True)
    assert batched["postmark"].out_of_rotation == "bad API key"
    assert batched["smtp"].fail_counter == 1


def test_missing_keys_are_recreated_as_pybreaker_does(
    board: BreakerBoard, redis_server: ManagedProcess
) -> None:
    client = redis.Redis.from_url(redis_server.url)
    client.delete(pybreaker_key("smtp", "state"))
    assert board.statuses()["smtp"].state == "closed"
    assert client.get(pybreaker_key("smtp", "state")) == b"closed"


def test_the_key_layout_is_pybreakers(redis_server: ManagedProcess) -> None:
    client = redis.Redis.from_url(redis_server.url)
    storage = pybreaker.CircuitRedisStorage("closed", client, namespace="mailroom:breaker:x")
    assert storage._namespace("fail_counter") == pybreaker_key("x", "fail_counter")


def _commands(client: redis.Redis) -> int:
    return int(client.info("stats")["total_commands_processed"])


def test_a_delivery_through_a_clean_breaker_writes_nothing_to_redis(
    redis_server: ManagedProcess,
) -> None:
    """Choosing reads every breaker; the success of a send chosen from a clean reading adds no
    command; after a counted failure the success resets the counter (real Redis)."""
    from workers.mta.base import SendResult, TransientError
    from workers.routing import Router

    client = redis.Redis.from_url(redis_server.url)
    client.flushdb()
    board = BreakerBoard(["smtp"], RedisState(client), fail_max=3, reset_timeout=60)
    outcomes: list[Exception | None] = []

    class Provider:
        def send(self, email: object) -> SendResult:
            error = outcomes.pop(0)
            if error is not None:
                raise error
            return SendResult("id")

    router = Router({"smtp": Provider()}, ["smtp"], breakers=board)  # type: ignore[dict-item]
    from core.store.documents import Email

    try:
        before = _commands(client)
        router.choose(Email())
        choosing = _commands(client) - before - 1  # the INFO itself counts once
        before = _commands(client)
        router.choose(Email())
        outcomes.append(None)
        router.send("smtp", None)  # type: ignore[arg-type]
        assert _commands(client) - before - 1 == choosing

        outcomes.append(TransientError("HTTP 500"))
        router.choose(Email())
        with pytest.raises(TransientError):
            router.send("smtp", None)  # type: ignore[arg-type]
        assert board["smtp"].status().fail_counter == 1
        before = _commands(client)
        router.choose(Email())
        outcomes.append(None)
        router.send("smtp", None)  # type: ignore[arg-type]
        assert _commands(client) - before - 1 > choosing
        assert board["smtp"].status().fail_counter == 0
    finally:
        client.flushdb()
        client.close()
