"""The webhook outbox: subscriptions, idempotent storing, chains in order, replay."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta

import pytest

from core import events_out
from core.errors import NotFound
from core.store import webhook_outbox as outbox
from core.store import webhooks as store
from core.store.documents import utcnow


def test_secret_is_standard_webhooks_format() -> None:
    secret = store.new_secret()
    assert secret.startswith("whsec_")
    import base64

    assert len(base64.b64decode(secret[len("whsec_") :])) == 24


def test_final_outcomes_rule() -> None:
    assert store.is_final_event("email.sent", {})
    assert store.is_final_event("email.bounced", {"bounce_type": "hard"})
    assert not store.is_final_event("email.bounced", {"bounce_type": "soft"})
    assert not store.is_final_event("email.deferred", {})
    assert not store.is_final_event("email.opened", {})


def test_publish_stores_one_delivery_per_wanting_subscription(fake_store, webhook_queue) -> None:
    every = store.create_subscription("https://a.example/hook")
    sent_only = store.create_subscription("https://b.example/hook", ["email.sent"])
    final = store.create_subscription("https://c.example/hook", final_outcomes_only=True)
    when = datetime(2026, 12, 2, 12, 0, 0)

    events_out.publish("e1", "email.deferred", {"reason": "greylisted"}, occurred_at=when)
    events_out.publish("e1", "email.sent", {"provider": "smtp"}, occurred_at=when)

    deliveries = outbox.list_deliveries(limit=10)
    by_sub: dict[str, list[str]] = {}
    for d in deliveries:
        by_sub.setdefault(d.subscription_id, []).append(d.event_type)
    assert sorted(by_sub[str(every.id)]) == ["email.deferred", "email.sent"]
    assert by_sub[str(sent_only.id)] == ["email.sent"]
    assert by_sub[str(final.id)] == ["email.sent"]
    assert len(webhook_queue.enqueued) == 4
    body = json.loads(deliveries[0].payload)
    assert body["type"] == "email.sent"
    assert body["data"] == {"email_id": "e1", "provider": "smtp"}
    assert body["timestamp"] == "2026-12-02T12:00:00.000Z"


def test_publishing_an_event_twice_stores_it_once(fake_store, webhook_queue) -> None:
    store.create_subscription("https://a.example/hook")
    for _ in range(2):
        events_out.publish("e1", "email.sent", {}, occurred_at=utcnow())
    assert len(outbox.list_deliveries()) == 1
    assert len(webhook_queue.enqueued) == 1


def test_unknown_event_type_is_refused(fake_store, webhook_queue) -> None:
    with pytest.raises(ValueError):
        events_out.publish("e1", "email.exploded", {}, occurred_at=utcnow())


def test_chain_order_and_replay(fake_store, webhook_queue) -> None:
    sub = store.create_subscription("https://a.example/hook")
    events_out.publish("e1", "email.sent", {}, occurred_at=utcnow())
    events_out.publish("e1", "email.delivered", {}, occurred_at=utcnow(), event_id="evt_d")
    first, second = sorted(outbox.list_deliveries(), key=lambda d: d.seq)
    assert outbox.earlier_pending(second).key == first.key
    assert outbox.earlier_pending(first) is None
    assert outbox.next_in_chain(first).key == second.key

    attempt = store.WebhookAttempt(at=utcnow(), status_code=500, error="HTTP 500")
    outbox.record_attempt(first, attempt, state=store.DeliveryState.DEAD, next_attempt_at=None)
    assert outbox.earlier_pending(second) is None
    dead = outbox.list_deliveries(state="dead")
    assert [d.key for d in dead] == [first.key]
    assert dead[0].attempts[0].status_code == 500

    replayed = outbox.replay(first.key)
    assert replayed is not None and replayed.state == "pending"
    assert replayed.attempt_count == 0
    assert outbox.replay(first.key) is None
    assert outbox.overdue(utcnow() + timedelta(seconds=1), 10)
    assert str(sub.id) == first.subscription_id


def test_delete_subscription_kills_its_pending_deliveries(fake_store, webhook_queue) -> None:
    sub = store.create_subscription("https://a.example/hook")
    events_out.publish("e1", "email.sent", {}, occurred_at=utcnow())
    assert store.delete_subscription(str(sub.id))
    assert not store.delete_subscription(str(sub.id))
    (delivery,) = outbox.list_deliveries()
    assert delivery.state == "dead" and delivery.last_error == "webhook deleted"
    with pytest.raises(NotFound):
        store.get_subscription(str(sub.id))
    with pytest.raises(NotFound):
        store.get_subscription("not-an-id")


def test_oldest_pending(fake_store, webhook_queue) -> None:
    assert outbox.oldest_pending_created_at() is None
    store.create_subscription("https://a.example/hook")
    events_out.publish("e1", "email.sent", {}, occurred_at=utcnow())
    assert outbox.oldest_pending_created_at() is not None


def test_publish_safely_tries_again_then_gives_up(fake_store, webhook_queue, monkeypatch) -> None:
    from core.errors import StorageUnavailable

    calls: list[str] = []

    def flaky(*args, **kwargs) -> None:
        calls.append("x")
        if len(calls) < 3:
            raise StorageUnavailable("down")

    monkeypatch.setattr(events_out, "publish", flaky)
    assert events_out.publish_safely("e1", "email.sent", {}, occurred_at=utcnow(), pause_seconds=0)
    assert len(calls) == 3
    calls.clear()
    assert not events_out.publish_safely(
        "e1", "email.sent", {}, occurred_at=utcnow(), retries=1, pause_seconds=0
    )
    calls.clear()


# -- the subscription list each process keeps -------------------------------------------------


@pytest.fixture
def cached_subscriptions():
    """Subscriptions read at most every 0.3 s, as an entry point configures it."""
    store.cache_subscriptions(0.3)
    yield 0.3
    store.cache_subscriptions(0.0)


def _reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    reads: list[int] = []
    real = store.list_subscriptions

    def counted() -> list[store.WebhookSubscription]:
        reads.append(1)
        return real()

    monkeypatch.setattr(store, "list_subscriptions", counted)
    return reads


def test_events_read_the_subscriptions_once_per_max_age(
    fake_store, webhook_queue, cached_subscriptions, monkeypatch
) -> None:
    store.create_subscription("https://a.example/hook")
    reads = _reads(monkeypatch)
    for n in range(20):
        events_out.publish(f"e{n}", "email.sent", {}, occurred_at=utcnow())
    assert len(reads) < 20  # one per 0.3 s however slow the machine; 20 without the copy
    assert len(webhook_queue.enqueued) == 20


def test_an_event_after_create_returns_reaches_a_subscription_made_elsewhere(
    fake_store, webhook_queue, cached_subscriptions
) -> None:
    # This process's copy is fresh, and holds no subscription...
    events_out.publish("e0", "email.sent", {}, occurred_at=utcnow())
    assert webhook_queue.enqueued == []
    # ...when another process creates one: stored directly, then the wait create() does.
    other = store.WebhookSubscription(
        url="https://b.example/hook", secret=store.new_secret(), created_at=utcnow()
    )
    other.save(force_insert=True)
    time.sleep(cached_subscriptions)  # what create_subscription waits in that process
    events_out.publish("e1", "email.sent", {}, occurred_at=utcnow())
    assert [d.subscription_id for d in outbox.list_deliveries()] == [str(other.id)]


def test_create_returns_only_once_every_copy_made_before_it_is_too_old(
    fake_store, cached_subscriptions
) -> None:
    started = time.monotonic()
    store.create_subscription("https://a.example/hook")
    assert time.monotonic() - started >= cached_subscriptions


def test_a_deleted_subscription_gets_no_more_deliveries_from_this_process(
    fake_store, webhook_queue, cached_subscriptions
) -> None:
    sub = store.create_subscription("https://a.example/hook")
    events_out.publish("e0", "email.sent", {}, occurred_at=utcnow())
    assert store.delete_subscription(str(sub.id))
    events_out.publish("e1", "email.sent", {}, occurred_at=utcnow())
    assert [d.email_id for d in outbox.list_deliveries()] == ["e0"]
