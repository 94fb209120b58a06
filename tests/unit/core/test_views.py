"""A raw document read through DocumentView shows what the mongoengine document shows."""

from __future__ import annotations

from datetime import datetime

import pytest
from bson import ObjectId

from core.store import repository
from core.store.documents import Attempt, Email, EmailEvent, RecipientStatus, utcnow
from core.store.views import DocumentView
from server.convert import email_to_proto


def raw_email() -> dict:
    new = repository.NewEmail(
        to=["a@example.com"],
        cc=["c@example.com"],
        subject="Seen",
        text="text",
        html="<p>html</p>",
        from_address="shop@example.com",
        tags=["t"],
        metadata={"plan": "pro"},
        headers={"X-Campaign": "spring"},
        attachments=[repository.NewAttachment("a.pdf", "application/pdf", b"%PDF-1.7")],
    )
    doc = repository.new_email_document(
        new, message_id_domain="mailroom.test", email_id=ObjectId(), now=utcnow()
    )
    email = Email._from_son(doc)
    now = datetime(2026, 12, 2, 12, 0, 0)
    email.status = "BOUNCED"
    email.sent_at = now
    email.provider = "smtp"
    email.last_turn = 3
    email.attempts = [
        Attempt(provider="smtp", started_at=now, duration_ms=12.5, outcome="DELIVERED")
    ]
    email.events = [EmailEvent(key="k", type="BOUNCED", recipient="a@example.com", occurred_at=now)]
    email.recipient_statuses = [
        RecipientStatus(address="a@example.com", status="BOUNCED", updated_at=now)
    ]
    return dict(email.to_mongo())


@pytest.mark.parametrize("full", [True, False])
def test_a_view_converts_like_the_document(full: bool) -> None:
    raw = raw_email()

    assert email_to_proto(DocumentView(raw, Email), full=full) == email_to_proto(
        Email._from_son(raw), full=full
    )


def test_renamed_missing_and_unknown_fields() -> None:
    raw = raw_email()
    del raw["cc"], raw["provider"]
    view = DocumentView(raw, Email)

    assert view.id == raw["_id"]
    assert view.last_turn == raw["claim_generation"] == 3
    assert view.cc == [] and view.provider == ""  # the document's defaults
    assert view.attempts[0].duration_ms == 12.5
    with pytest.raises(AttributeError):
        _ = view.no_such_field
