"""Send-time suppression (mongomock): addresses suppressed after an email was accepted."""

from __future__ import annotations

from typing import Any

import pytest

from core.settings import Settings
from core.store import repository
from core.store.documents import Email, Status
from core.store.suppressions import Suppression, suppress
from helpers import create_email
from workers import suppression_gate
from workers.delivery import deliver
from workers.mta.base import SendResult
from workers.routing import Router


class Provider:
    def __init__(self) -> None:
        self.sent: list[Any] = []

    def send(self, email: Any) -> SendResult:
        self.sent.append(email)
        return SendResult("id-1", "250 ok")


def new_email(**fields: Any) -> Email:
    base = {"to": ["a@example.com"], "subject": "Hi", "text": "b", "from_address": "f@example.com"}
    return create_email(repository.NewEmail(**{**base, **fields}), message_id_domain="test")


@pytest.fixture
def store(fake_store: None) -> None:
    Suppression.drop_collection()


def run(email: Email, settings: Settings, provider: Provider) -> Status | None:
    return deliver(str(email.id), settings=settings, router=Router({"smtp": provider}, ["smtp"]))


def test_a_recipient_suppressed_since_is_left_out(store: None, settings: Settings) -> None:
    settings.suppression_recheck_seconds = 0
    email = new_email(to=["a@example.com", "B@example.com"], cc=["c@example.com"])
    suppress("b@example.com", "hard_bounce")
    suppress("c@example.com", "complaint")
    provider = Provider()
    assert run(email, settings, provider) == Status.SENT
    [sent] = provider.sent
    assert (sent.to, sent.cc, sent.bcc) == (("a@example.com",), (), ())
    assert "B@example.com" in sent.mime.decode()  # the headers stay as accepted


@pytest.mark.parametrize(
    ("policy", "to", "cc"),
    [
        ("drop", ["gone@example.com"], ["c@example.com"]),
        ("refuse", ["ok@example.com", "gone@example.com"], []),
    ],
)
def test_the_policy_fails_the_email_without_sending(
    store: None, settings: Settings, policy: str, to: list[str], cc: list[str]
) -> None:
    settings.suppression_recheck_seconds = 0
    settings.suppression_policy = policy  # type: ignore[assignment]
    email = new_email(to=to, cc=cc)
    suppress("gone@example.com", "hard_bounce")
    provider = Provider()
    assert run(email, settings, provider) == Status.FAILED
    assert provider.sent == []
    stored = repository.get_email(str(email.id))
    assert stored.status == Status.FAILED
    [attempt] = stored.attempts
    assert (attempt.provider, attempt.outcome) == ("suppression", "PERMANENT")
    assert "gone@example.com (hard_bounce)" in attempt.error


def test_a_fresh_email_is_not_read_again(
    store: None, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_read(addresses: Any) -> dict[str, str]:
        raise AssertionError("the accept-time check covers a fresh email")

    monkeypatch.setattr(suppression_gate, "suppressed_among", no_read)
    provider = Provider()
    assert run(new_email(), settings, provider) == Status.SENT
    assert settings.suppression_recheck_seconds == 60
