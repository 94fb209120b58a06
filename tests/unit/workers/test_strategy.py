"""The provider strategy: (breaker states, previous attempt, attempts per provider) → provider."""

import random
import threading
import time
from collections import Counter

import pytest

from core.settings import DEFAULTS
from core.store.documents import Email
from workers.breaker_state import MemoryState
from workers.breakers import BreakerBoard
from workers.mta.base import SendResult, TransientError
from workers.routing import Router
from workers.strategy import ProviderHealth, Strategy, parse_groups

OPEN = ProviderHealth(state="open", seconds_to_half_open=30.0)
DUE = ProviderHealth(state="open", seconds_to_half_open=0.0)
HALF_OPEN = ProviderHealth(state="half-open")
PROBING = ProviderHealth(state="half-open", probing=True)
DUE_PROBING = ProviderHealth(state="open", probing=True)
OUT = ProviderHealth(seconds_out_of_rotation=300.0)

STRATEGY = Strategy.build(["a", "b", "c"], ["a", "b", "c"], per_provider_attempts=3)

# (health of a, b, c — missing means closed), previous provider, attempts per provider → chosen
CASES = [
    ({}, "", {}, "a"),
    ({"a": OPEN}, "", {}, "b"),
    ({"a": OPEN, "b": OPEN}, "", {}, "c"),
    ({"a": DUE}, "", {}, "a"),  # due to half-open: this email probes
    ({"a": HALF_OPEN}, "", {}, "a"),  # half-open, probe slot free
    ({"a": PROBING}, "", {}, "b"),  # another email is probing a
    ({"a": DUE_PROBING}, "", {}, "b"),
    ({"a": OUT}, "", {}, "b"),  # credentials refused: out of rotation
    # A retry stays with its provider while its budget lasts, even when a better one is healthy.
    ({}, "b", {"b": 1}, "b"),
    ({}, "b", {"a": 3, "b": 2}, "b"),
    ({}, "c", {"c": 2}, "c"),
    # ... and moves on once the budget is spent: to the best provider with budget left.
    ({}, "b", {"b": 3}, "a"),
    ({}, "a", {"a": 3}, "b"),
    ({"b": OPEN}, "a", {"a": 3}, "c"),
    ({}, "a", {"a": 3, "b": 3}, "c"),
    # ... or at once when its breaker opened or it left the rotation.
    ({"a": OPEN}, "a", {"a": 1}, "b"),
    ({"a": PROBING}, "a", {"a": 1}, "b"),
    ({"b": OUT}, "b", {"b": 1}, "a"),
    ({"a": HALF_OPEN}, "a", {"a": 1}, "a"),  # its breaker is due: the retry is the probe
    # Every budget spent: the fewest attempts, then priority.
    ({}, "c", {"a": 3, "b": 3, "c": 3}, "a"),
    ({}, "a", {"a": 5, "b": 3, "c": 4}, "b"),
    ({"b": OPEN}, "a", {"a": 5, "b": 3, "c": 4}, "c"),
    # A previous provider that is no longer configured is ignored.
    ({}, "ses", {"ses": 1}, "a"),
]


@pytest.mark.parametrize(("health", "previous", "attempts", "chosen"), CASES)
def test_strategy_table(health, previous, attempts, chosen):
    ranked = STRATEGY.rank(health, previous=previous, attempts=attempts, rng=random.Random(1))
    assert ranked[0] == chosen


@pytest.mark.parametrize(
    ("health", "wait"),
    [
        ({"a": OPEN, "b": ProviderHealth("open", 12.0), "c": ProviderHealth("open", 45.0)}, 12.0),
        ({"a": OPEN, "b": PROBING, "c": OPEN}, 5.0),  # a probe in flight: look again soon
        ({"a": OUT, "b": ProviderHealth(seconds_out_of_rotation=40.0), "c": OPEN}, 30.0),
        ({"a": OUT, "b": OUT, "c": OUT}, 300.0),
    ],
)
def test_no_usable_provider_waits_for_the_earliest(health, wait):
    assert STRATEGY.rank(health) == []
    assert STRATEGY.wait_seconds(health) == pytest.approx(wait)


def test_parse_groups():
    assert parse_groups(["sendgrid|mailgun", " smtp ", "mailgun", "", "ses| |postmark"]) == [
        ["sendgrid", "mailgun"],
        ["smtp"],
        ["ses", "postmark"],
    ]


def test_build_keeps_enabled_providers_in_order_and_groups():
    strategy = Strategy.build(["ses|sendgrid", "mailgun", "smtp"], ["smtp", "sendgrid"])
    assert strategy.groups == (("sendgrid",), ("smtp",))
    # An order naming no enabled provider: every enabled one, each its own priority.
    assert Strategy.build(["ses"], ["smtp", "postmark"]).groups == (("smtp",), ("postmark",))


def test_weights_split_first_attempts_within_a_priority_group():
    strategy = Strategy.build(["a|b", "c"], ["a", "b", "c"], weights={"a": 3, "b": 1})
    rng = random.Random(42)
    picks = Counter(strategy.rank({}, rng=rng)[0] for _ in range(4000))
    assert set(picks) == {"a", "b"}  # c has a lower priority
    assert picks["a"] / 4000 == pytest.approx(0.75, abs=0.03)


def test_weights_only_among_healthy_members():
    strategy = Strategy.build(["a|b", "c"], ["a", "b", "c"], weights={"a": 3, "b": 1})
    rng = random.Random(7)
    assert {strategy.rank({"a": OPEN}, rng=rng)[0] for _ in range(50)} == {"b"}
    assert strategy.rank({"a": OPEN, "b": OPEN}, rng=rng)[0] == "c"


def test_zero_weight_is_used_only_as_a_fallback_within_its_group():
    strategy = Strategy.build(["a|b"], ["a", "b"], weights={"b": 0})
    rng = random.Random(3)
    assert {strategy.rank({}, rng=rng)[0] for _ in range(200)} == {"a"}
    assert strategy.rank({"a": OPEN}, rng=rng) == ["b"]


def test_retry_is_sticky_inside_a_weighted_group():
    strategy = Strategy.build(["a|b"], ["a", "b"], weights={"a": 100, "b": 1})
    rng = random.Random(5)
    assert {strategy.rank({}, previous="b", attempts={"b": 1}, rng=rng)[0] for _ in range(50)} == {
        "b"
    }


# --- the Router acting on the ranking with real (in-memory) breakers --------------------------


class Fake:
    def __init__(self, name, fail=False):
        self.name = name
        self.fail = fail
        self.calls = 0

    def send(self, email):
        self.calls += 1
        if self.fail:
            raise TransientError(f"{self.name}: HTTP 500")
        return SendResult(f"{self.name}-id")


def email(provider="", attempts=None):
    return Email(provider=provider, provider_attempts=attempts or {})


def test_router_moves_first_attempts_to_b_once_a_breaker_opens():
    a, b = Fake("a", fail=True), Fake("b")
    router = Router(
        {"a": a, "b": b}, ["a", "b"], breakers=BreakerBoard(["a", "b"], MemoryState(), fail_max=3)
    )
    for _ in range(3):
        assert router.choose(email()).provider == "a"
        with pytest.raises(TransientError):
            router.send("a", None)
    choice = router.choose(email())
    assert choice.provider == "b"
    assert router.send("b", None).provider_message_id == "b-id"


def test_router_every_breaker_open_waits_for_the_earliest_half_open():
    board = BreakerBoard(["a", "b"], MemoryState(), fail_max=1, reset_timeout=30)
    router = Router({"a": Fake("a", True), "b": Fake("b", True)}, ["a", "b"], breakers=board)
    started = time.monotonic()
    for name in ("a", "b"):
        with pytest.raises(TransientError):
            router.send(name, None)
    choice = router.choose(email())
    elapsed = time.monotonic() - started
    assert choice.provider is None
    # The 30 s reset timeout of the first breaker to open, less the time that passed here
    # (opened_at is kept to the microsecond).
    assert 30 - elapsed - 0.001 <= choice.retry_in <= 30


def test_router_gives_the_half_open_probe_to_one_email_only():
    state = MemoryState()
    board = BreakerBoard(["a", "b"], state, fail_max=1, reset_timeout=0)
    a, b = Fake("a", fail=True), Fake("b")
    router = Router({"a": a, "b": b}, ["a", "b"], breakers=board)
    with pytest.raises(TransientError):
        router.send("a", None)
    assert board["a"].status().state == "open"  # and due at once (reset_timeout=0)

    results = {}

    def choose_in_thread(key):
        results[key] = router.choose(email()).provider

    # The probe slot is per thread: the first thread probes a, the second is sent to b.
    first = threading.Thread(target=choose_in_thread, args=("first",))
    first.start()
    first.join()
    second = threading.Thread(target=choose_in_thread, args=("second",))
    second.start()
    second.join()
    assert results == {"first": "a", "second": "b"}
    assert board["a"].status().state == "half-open"


def test_keyword_defaults_are_the_settings_defaults():
    board = BreakerBoard(["a"], MemoryState())
    assert board["a"].breaker.fail_max == DEFAULTS.breaker.fail_max
    assert board["a"].breaker.reset_timeout == DEFAULTS.breaker.reset_timeout_seconds
    assert board["a"].probe_ttl == DEFAULTS.lease_seconds
    router = Router({}, [])
    assert router.out_of_rotation_seconds == DEFAULTS.breaker.out_of_rotation_seconds
    assert router.strategy.per_provider_attempts == DEFAULTS.retry.per_provider_attempts
    assert Strategy(groups=()).per_provider_attempts == DEFAULTS.retry.per_provider_attempts
