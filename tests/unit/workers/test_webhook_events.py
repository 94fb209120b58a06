"""Mailroom's own events: email.sent, email.failed (rejected or dead letter) where they happen."""

from __future__ import annotations

import json

import pytest

from core.store import repository, turns
from core.store import webhook_outbox as outbox
from core.store import webhooks as store
from helpers import create_email
from workers.delivery import dead_letter, deliver
from workers.mta.base import PermanentError, SendResult
from workers.routing import Router
from workers.store import claims


class Provider:
    def __init__(self, outcome: object) -> None:
        self.name = "smtp"
        self.outcome = outcome

    def send(self, email: object) -> SendResult:
        if isinstance(self.outcome, Exception):
            raise self.outcome
        return self.outcome  # type: ignore[return-value]


@pytest.fixture
def subscribed(fake_store, webhook_queue):
    store.create_subscription("https://receiver.example/hook")
    return webhook_queue


def new_email_id() -> str:
    email = create_email(
        repository.NewEmail(
            to=["a@example.com"], subject="s", text="t", from_address="f@example.com"
        ),
        message_id_domain="test",
    )
    return str(email.id)


def events(email_id: str) -> list[tuple[str, dict]]:
    found = outbox.list_deliveries(email_id=email_id)
    return [(d.event_type, json.loads(d.payload)["data"]) for d in found]


def test_a_sent_email_publishes_email_sent(subscribed, settings) -> None:
    email_id = new_email_id()
    router = Router({"smtp": Provider(SendResult("q-1", "250 ok"))}, ["smtp"])
    deliver(email_id, settings=settings, router=router)
    assert events(email_id) == [
        ("email.sent", {"email_id": email_id, "provider": "smtp", "provider_message_id": "q-1"})
    ]
    assert len(subscribed.enqueued) == 1


def test_a_rejected_email_publishes_email_failed(subscribed, settings) -> None:
    email_id = new_email_id()
    router = Router({"smtp": Provider(PermanentError("550 no such user"))}, ["smtp"])
    deliver(email_id, settings=settings, router=router)
    ((kind, data),) = events(email_id)
    assert kind == "email.failed" and data["dead_letter"] is False
    assert "550 no such user" in data["reason"]


def test_a_dead_letter_publishes_email_failed_once(subscribed, settings) -> None:
    email_id = new_email_id()
    dead_letter({"args": [email_id]}, retries=3, max_retries=3)
    # A retry of the dead_letter actor after the record was written publishes nothing new.
    dead_letter({"args": [email_id]}, retries=3, max_retries=3)
    ((kind, data),) = events(email_id)
    assert kind == "email.failed" and data["dead_letter"] is True


def test_a_dead_letter_retry_after_failed_was_written_still_publishes(subscribed) -> None:
    email_id = new_email_id()
    claims.fail_unclaimed(email_id, "retries exhausted after 4 attempts; last error: x")
    dead_letter({"args": [email_id]}, retries=3, max_retries=3)
    assert [kind for kind, _ in events(email_id)] == ["email.failed"]


def test_no_subscriber_no_delivery(fake_store, settings, webhook_queue) -> None:
    queue = webhook_queue
    email_id = new_email_id()
    turns.cancel_email(email_id)
    router = Router({"smtp": Provider(SendResult("q-1", "250 ok"))}, ["smtp"])
    deliver(new_email_id(), settings=settings, router=router)
    assert outbox.list_deliveries() == [] and queue.enqueued == []
