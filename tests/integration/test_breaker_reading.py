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
