"""``mailroom-admin webhooks …`` against mongomock: create, list, delete, deliveries, replay."""

from __future__ import annotations

import io
import json

import pytest

from admin.cli import build_parser
from core import events_out
from core.settings import Settings
from core.store import webhook_outbox as outbox
from core.store import webhooks as store
from core.store.documents import utcnow


def run(settings: Settings, *argv: str) -> tuple[int, str]:
    args = build_parser().parse_args(["webhooks", *argv])
    out = io.StringIO()
    return int(args.run(args, settings, out)), out.getvalue()


@pytest.fixture
def queue(fake_store, webhook_queue):
    return webhook_queue


def test_create_list_delete(settings, queue) -> None:
    status, text = run(
        settings, "create", "https://x.example/hook", "--event", "email.sent", "--json"
    )
    assert status == 0
    created = json.loads(text)
    assert created["secret"].startswith("whsec_") and created["event_types"] == ["email.sent"]
    status, text = run(settings, "list")
    assert status == 0 and created["id"] in text and "whsec_" not in text
    assert run(settings, "delete", created["id"]) == (0, f"{created['id']}: deleted\n")
    assert run(settings, "delete", created["id"])[0] == 1


def test_create_names_the_bad_field(settings, queue) -> None:
    status, text = run(settings, "create", "ftp://x", "--event", "email.nope")
    assert status == 2
    assert text.startswith("url: ") and "event_types[0]: unknown event type" in text


def test_dead_deliveries_are_listed_and_replayed(settings, queue) -> None:
    store.create_subscription("https://x.example/hook")
    events_out.publish("e1", "email.sent", {}, occurred_at=utcnow())
    (delivery,) = outbox.list_deliveries()
    attempt = store.WebhookAttempt(at=utcnow(), status_code=500, error="HTTP 500")
    outbox.record_attempt(delivery, attempt, state=store.DeliveryState.DEAD, next_attempt_at=None)
    status, text = run(settings, "deliveries", "list", "--state", "dead", "--json")
    (row,) = json.loads(text)
    assert row["id"] == delivery.key and row["history"][0]["status_code"] == 500
    queue.enqueued.clear()
    assert run(settings, "deliveries", "replay", "--all-dead") == (0, f"{delivery.key}: replayed\n")
    assert queue.enqueued == [delivery.key]
    status, text = run(settings, "deliveries", "replay", delivery.key)
    assert status == 1 and "not dead" in text
