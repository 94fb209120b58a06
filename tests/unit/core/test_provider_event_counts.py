"""The cluster-wide provider event counts hash, on an in-memory stand-in for Redis."""

import pytest

from core.errors import QueueUnavailable
from core.provider_event_counts import KEY, SharedCounts, field, parse


def test_fields_join_the_kind_and_labels_and_parse_back() -> None:
    received = field("received", "sendgrid", "BOUNCED", "stored")
    assert received == "received\x1fsendgrid\x1fBOUNCED\x1fstored"
    series = parse({received.encode(): b"3", b"signature_failures\x1fses": b"2"})
    assert series["received"] == {("sendgrid", "BOUNCED", "stored"): 3}
    assert series["signature_failures"] == {("ses",): 2}
    assert series["unmatched"] == {}


def test_unknown_kinds_and_shapes_are_refused_or_skipped() -> None:
    with pytest.raises(ValueError, match="kind"):
        field("received", "sendgrid")
    with pytest.raises(ValueError, match="kind"):
        field("nope", "x")
    series = parse({b"nope\x1fx": b"1", b"unmatched": b"1", b"unmatched\x1fses": b"many"})
    assert series == {"received": {}, "signature_failures": {}, "unmatched": {}}


def test_increments_go_in_one_round_trip_and_add_up(fake_redis) -> None:
    shared = SharedCounts(fake_redis)
    shared.add({field("unmatched", "ses"): 2, field("signature_failures", "ses"): 1})
    assert fake_redis.round_trips == 1
    shared.add({field("unmatched", "ses"): 1})
    assert fake_redis.hashes[KEY][b"unmatched\x1fses"] == b"3"
    shared.add({})
    assert fake_redis.round_trips == 2
    assert shared.read()["unmatched"] == {("ses",): 3}


def test_redis_errors_are_mapped(fake_redis) -> None:
    fake_redis.down = True
    shared = SharedCounts(fake_redis)
    with pytest.raises(QueueUnavailable, match="metrics store unavailable: ConnectionError"):
        shared.add({field("unmatched", "ses"): 1})
    with pytest.raises(QueueUnavailable, match="metrics store unavailable"):
        shared.read()
