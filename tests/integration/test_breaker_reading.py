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


def _succeed(board: BreakerBoard, name: str) -> None:
    with board[name].guard():
        pass


def test_a_success_clears_the_failures_of_a_closed_breaker_only(
    board: BreakerBoard, redis_server: ManagedProcess
) -> None:
    """One script does what pybreaker's storage does in two steps (read the state, reset)."""
    for _ in range(2):
        board["smtp"].storage.increment_counter()
        board["sendgrid"].storage.increment_counter()
    board["sendgrid"].breaker.open()
    board["mailgun"].breaker.half_open()
    board["mailgun"].storage.increment_counter()

    for name in ("smtp", "sendgrid", "mailgun"):
        _succeed(board, name)

    statuses = board.statuses()
    assert (statuses["smtp"].state, statuses["smtp"].fail_counter) == ("closed", 0)
    # A send that began before the breaker opened proves nothing: only the probe decides.
    assert (statuses["sendgrid"].state, statuses["sendgrid"].fail_counter) == ("open", 2)
    assert (statuses["mailgun"].state, statuses["mailgun"].fail_counter) == ("half-open", 1)

    client = redis.Redis.from_url(redis_server.url)
    client.delete(pybreaker_key("postmark", "state"))  # missing: closed, as pybreaker has it
    client.set(pybreaker_key("postmark", "fail_counter"), 2)
    _succeed(board, "postmark")
    assert client.get(pybreaker_key("postmark", "fail_counter")) == b"0"
    client.close()


def test_a_success_without_redis_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    """Like pybreaker's storage: the send's result stands, the count is left as it is."""
    unreachable = RedisState(redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5))
    unreachable.clear_failures("smtp")
    assert "failure count not reset" in caplog.text
