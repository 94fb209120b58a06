"""Provider circuit breakers on pybreaker's in-memory storage (the Redis storage: integration)."""

import logging
import threading
from datetime import UTC, datetime, timedelta

import pytest

from workers.breaker_state import MemoryState
from workers.breakers import ProviderBreaker
from workers.mta.base import MisconfiguredError, PermanentError, ThrottledError, TransientError


def make(fail_max=3, reset_timeout=30.0, state=None):
    return ProviderBreaker(
        "a", state or MemoryState(), fail_max=fail_max, reset_timeout=reset_timeout, probe_ttl=60
    )


def fail(breaker, exc, token=None):
    with pytest.raises(type(exc)), breaker.guard(token):
        raise exc


def succeed(breaker, token=None):
    with breaker.guard(token):
        pass


def make_due(breaker):
    """Pretend the breaker opened longer ago than its reset timeout."""
    breaker.storage.opened_at = datetime.now(UTC) - timedelta(
        seconds=breaker.breaker.reset_timeout + 1
    )


def test_transient_failures_open_the_breaker_at_the_threshold():
    breaker = make(fail_max=3)
    for expected in (1, 2):
        fail(breaker, TransientError("500"))
        assert breaker.status().state == "closed"
        assert breaker.status().fail_counter == expected
    fail(breaker, TransientError("500"))
    status = breaker.status()
    assert status.state == "open"
    assert status.fail_counter == 3
    assert 29 <= status.seconds_to_half_open <= 30


def test_success_resets_the_failure_count():
    breaker = make(fail_max=3)
    fail(breaker, TransientError("500"))
    fail(breaker, TransientError("500"))
    succeed(breaker)
    fail(breaker, TransientError("500"))
    fail(breaker, TransientError("500"))
    assert breaker.status().state == "closed"


@pytest.mark.parametrize(
    "neutral",
    [
        PermanentError("550 no such user"),
        ThrottledError("429", retry_after=5),
        MisconfiguredError("401"),
    ],
)
def test_other_outcomes_neither_count_nor_reset(neutral):
    breaker = make(fail_max=3)
    fail(breaker, TransientError("500"))
    fail(breaker, TransientError("500"))
    for _ in range(5):
        fail(breaker, neutral)
    assert breaker.status().fail_counter == 2
    assert breaker.status().state == "closed"
    # The failures before them still count: one more opens the breaker.
    fail(breaker, TransientError("500"))
    assert breaker.status().state == "open"


def test_throttling_alone_never_opens_the_breaker():
    breaker = make(fail_max=2)
    for _ in range(10):
        fail(breaker, ThrottledError("429", retry_after=1))
    assert breaker.status().state == "closed"
    assert breaker.status().fail_counter == 0


def test_open_breaker_allows_no_probe_before_its_reset_timeout():
    breaker = make(fail_max=1)
    fail(breaker, TransientError("500"))
    assert not breaker.try_probe("t1")
    assert breaker.status().state == "open"


def test_successful_probe_closes_the_breaker_and_only_one_probe_at_a_time():
    breaker = make(fail_max=1)
    fail(breaker, TransientError("500"))
    make_due(breaker)
    assert breaker.status().seconds_to_half_open == 0
    assert breaker.try_probe("t1")
    assert breaker.status().state == "half-open"
    assert breaker.status().probing
    assert not breaker.try_probe("t2")
    succeed(breaker, "t1")
    status = breaker.status()
    assert (status.state, status.fail_counter, status.probing) == ("closed", 0, False)


def test_failed_probe_opens_the_breaker_again_for_a_full_timeout():
    breaker = make(fail_max=1)
    fail(breaker, TransientError("500"))
    make_due(breaker)
    assert breaker.try_probe("t1")
    fail(breaker, TransientError("500 again"), "t1")
    status = breaker.status()
    assert status.state == "open"
    assert 29 <= status.seconds_to_half_open <= 30
    assert not status.probing


def test_neutral_probe_frees_the_slot_for_another_email():
    breaker = make(fail_max=1)
    fail(breaker, TransientError("500"))
    make_due(breaker)
    assert breaker.try_probe("t1")
    fail(breaker, PermanentError("550 bad recipient"), "t1")
    assert breaker.status().state == "half-open"
    assert breaker.try_probe("t2")
    succeed(breaker, "t2")
    assert breaker.status().state == "closed"


def test_concurrent_sends_through_one_breaker_overlap_and_still_open_it():
    breaker = make(fail_max=4)
    # Four sends that each wait for all four to be inside the breaker at once: serialized sends
    # would never all arrive, and the barrier would break.
    barrier = threading.Barrier(4, timeout=5)
    errors = []

    def send():
        try:
            with breaker.guard():
                barrier.wait()
                raise TransientError("503")
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=send) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [type(e) for e in errors] == [TransientError] * 4
    assert breaker.status().state == "open"


def test_breakers_sharing_a_state_see_each_other():
    shared = MemoryState()
    one, other = make(fail_max=2, state=shared), make(fail_max=2, state=shared)
    fail(one, TransientError("500"))
    fail(other, TransientError("500"))
    assert one.status().state == other.status().state == "open"


def test_transitions_are_logged(caplog):
    caplog.set_level(logging.WARNING, logger="workers.breakers")
    breaker = make(fail_max=1)
    fail(breaker, TransientError("500"))
    make_due(breaker)
    breaker.try_probe("t1")
    succeed(breaker, "t1")
    messages = [r.getMessage() for r in caplog.records]
    assert any("a: circuit breaker OPEN after 1 consecutive failures" in m for m in messages)
    assert any("a: circuit breaker HALF-OPEN" in m for m in messages)
    assert any("a: circuit breaker CLOSED" in m for m in messages)


def test_out_of_rotation_is_shown_and_reset_restores():
    state = MemoryState()
    breaker = make(fail_max=1, state=state)
    fail(breaker, TransientError("500"))
    state.take_out("a", "401 bad key", 120)
    status = breaker.status()
    assert status.out_of_rotation == "401 bad key"
    assert 119 <= status.seconds_out_of_rotation <= 120
    breaker.reset()
    status = breaker.status()
    assert (status.state, status.fail_counter, status.out_of_rotation) == ("closed", 0, "")
