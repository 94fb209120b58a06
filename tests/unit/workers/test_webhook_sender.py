"""The webhook sender: signing, attempts, backoff, dead letters, order per email, the sweep."""

from __future__ import annotations

import contextlib
from datetime import timedelta

import httpx
import pytest

from core import events_out
from core.settings import Settings
from core.store import webhook_outbox as outbox
from core.store import webhooks as store
from core.store.documents import utcnow
from mailroom import verify_webhook
from workers import webhooks


class FakeQueue:
    def __init__(self) -> None:
        self.enqueued: list[tuple[str, int | None]] = []

    def enqueue(self, delivery_id: str, *, delay_ms: int | None = None) -> None:
        self.enqueued.append((delivery_id, delay_ms))


class Receiver:
    def __init__(self) -> None:
        self.status = 204
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.status == 0:
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(self.status, text="ok")


@pytest.fixture
def hook_settings() -> Settings:
    return Settings(
        _env_file=None,
        webhooks={"max_attempts": 3, "min_backoff_ms": 2000, "max_backoff_ms": 5000},
    )


@pytest.fixture
def rig(fake_store, monkeypatch, hook_settings):
    queue = FakeQueue()
    monkeypatch.setattr(events_out, "_queue", queue)
    monkeypatch.setattr(webhooks, "hold", lambda *a, **k: contextlib.nullcontext(object()))
    receiver = Receiver()
    sender = webhooks.WebhookSender(
        hook_settings,
        queue,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        httpx.Client(transport=httpx.MockTransport(receiver)),
    )
    sub = store.create_subscription("https://receiver.example/hook")
    return sender, receiver, queue, sub


def test_backoff_doubles_to_its_cap(hook_settings) -> None:
    assert [webhooks.backoff_ms(n, hook_settings) for n in (1, 2, 3, 4)] == [2000, 4000, 5000, 5000]
    defaults = Settings(_env_file=None)
    total = sum(webhooks.backoff_ms(n, defaults) for n in range(1, defaults.webhooks.max_attempts))
    assert 20 * 3600 < total / 1000 < 30 * 3600  # about a day


def test_a_delivery_is_signed_and_verifiable(rig) -> None:
    sender, receiver, queue, sub = rig
    events_out.publish("e1", "email.sent", {"provider": "smtp"}, occurred_at=utcnow())
    ((delivery_id, _),) = queue.enqueued
    assert sender.deliver(delivery_id).kind == "delivered"
    (request,) = receiver.requests
    event = verify_webhook(request.content, dict(request.headers), sub.secret)
    assert event["type"] == "email.sent" and event["data"]["email_id"] == "e1"
    assert request.headers["webhook-id"] == event["id"]
    stored = outbox.get_delivery(delivery_id)
    assert stored.state == "delivered" and stored.attempts[0].status_code == 204


def test_failures_back_off_then_die(rig) -> None:
    sender, receiver, queue, _ = rig
    receiver.status = 503
    events_out.publish("e1", "email.sent", {}, occurred_at=utcnow())
    delivery_id = queue.enqueued.pop()[0]
    assert sender.deliver(delivery_id).kind == "retry"
    assert queue.enqueued.pop() == (delivery_id, 2000)
    # Not due yet: an early duplicate message sends nothing.
    assert sender.deliver(delivery_id).kind == "not_due"
    outbox.set_due(delivery_id, utcnow())
    receiver.status = 0
    assert sender.deliver(delivery_id).kind == "retry"
    outbox.set_due(delivery_id, utcnow())
    assert sender.deliver(delivery_id).kind == "dead"
    stored = outbox.get_delivery(delivery_id)
    assert stored.state == "dead"
    assert [a.status_code for a in stored.attempts] == [503, 0, 0]
    assert "ConnectError" in stored.last_error


def test_a_later_event_waits_for_the_earlier_one(rig) -> None:
    sender, receiver, queue, _ = rig
    events_out.publish("e1", "email.sent", {}, occurred_at=utcnow())
    events_out.publish("e1", "email.delivered", {}, occurred_at=utcnow())
    (first, _), (second, _) = queue.enqueued
    queue.enqueued.clear()
    assert sender.deliver(second).kind == "waiting"
    assert receiver.requests == []
    assert sender.deliver(first).kind == "delivered"
    # Finishing the first enqueues the one waiting behind it.
    assert queue.enqueued == [(second, None)]
    assert sender.deliver(second).kind == "delivered"
    assert [r.headers["webhook-id"] for r in receiver.requests] == [
        events_out.event_id_for("e1", "email.sent"),
        events_out.event_id_for("e1", "email.delivered"),
    ]


def test_a_deleted_webhook_gets_nothing(rig) -> None:
    sender, receiver, queue, sub = rig
    events_out.publish("e1", "email.sent", {}, occurred_at=utcnow())
    store.delete_subscription(str(sub.id))
    assert sender.deliver(queue.enqueued[0][0]).kind == "done"
    assert receiver.requests == []


def test_the_sweep_enqueues_overdue_deliveries_again(rig, hook_settings) -> None:
    _, _, queue, _ = rig
    events_out.publish("e1", "email.sent", {}, occurred_at=utcnow())
    queue.enqueued.clear()  # the message was lost
    later = utcnow() + timedelta(seconds=hook_settings.webhooks.sweep_grace_seconds + 1)
    assert webhooks.sweep(queue, hook_settings, now=later) == {"swept": 1, "enqueued": 1}
    # Swept: due again from now, so the next sweep within the grace time leaves it.
    assert webhooks.sweep(queue, hook_settings, now=later) == {"swept": 0, "enqueued": 0}


def test_worker_and_sdk_sign_alike() -> None:
    from mailroom import sign_webhook

    secret = store.new_secret()
    assert webhooks.sign(secret, "evt_1", 1700000000, "{}") == sign_webhook(
        secret, "evt_1", 1700000000, "{}"
    )


def test_a_busy_chain_sends_its_message_back(rig, monkeypatch) -> None:
    sender, receiver, queue, _ = rig
    events_out.publish("e1", "email.sent", {}, occurred_at=utcnow())
    delivery_id = queue.enqueued.pop()[0]
    monkeypatch.setattr(webhooks, "hold", lambda *a, **k: contextlib.nullcontext(None))
    assert sender.deliver(delivery_id).kind == "busy"
    assert queue.enqueued == [(delivery_id, webhooks.BUSY_RETRY_MS)]
    assert receiver.requests == []


def test_finished_deliveries_are_purged_after_keep_days(rig, hook_settings) -> None:
    sender, _, queue, _ = rig
    events_out.publish("e1", "email.sent", {}, occurred_at=utcnow())
    events_out.publish("e2", "email.sent", {}, occurred_at=utcnow())
    delivered = queue.enqueued[0][0]
    assert sender.deliver(delivered).kind == "delivered"
    keep = timedelta(days=hook_settings.webhooks.keep_days)
    assert webhooks.purge(hook_settings) == 0
    assert webhooks.purge(hook_settings, now=utcnow() + keep + timedelta(seconds=1)) == 1
    # The pending one stays, however old.
    assert [d.email_id for d in outbox.list_deliveries()] == ["e2"]
