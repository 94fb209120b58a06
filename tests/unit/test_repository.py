"""The accept path's hand-built email document matches the mongoengine schema."""

from __future__ import annotations

from datetime import timedelta

import pytest
from bson import ObjectId

from server.store import repository
from server.store.documents import Email, Status, utcnow

FULL = repository.NewEmail(
    to=["a@example.com", "b@example.com"],
    cc=["c@example.com"],
    bcc=["d@example.com"],
    subject="Subject",
    text="Body",
    html="<p>Body</p>",
    from_address="Shop <shop@example.com>",
    reply_to="help@example.com",
    idempotency_key="order-1",
)
MINIMAL = repository.NewEmail(
    to=["a@example.com"], subject="s", text="t", from_address="f@example.com"
)


@pytest.mark.parametrize("send_in", [None, timedelta(hours=1), -timedelta(hours=1)])
@pytest.mark.parametrize("new", [FULL, MINIMAL], ids=["full", "minimal"])
def test_new_email_document_is_what_the_mongoengine_document_stores(
    new: repository.NewEmail, send_in: timedelta | None
) -> None:
    now = utcnow()
    oid = ObjectId()
    send_at = now + send_in if send_in is not None else None
    new = repository.NewEmail(**{**new.__dict__, "send_at": send_at})
    scheduled = send_in is not None and send_in > timedelta(0)
    expected = Email(
        id=oid,
        status=Status.SCHEDULED if scheduled else Status.QUEUED,
        to=new.to,
        cc=new.cc,
        bcc=new.bcc,
        subject=new.subject,
        text=new.text,
        html=new.html,
        from_address=new.from_address,
        reply_to=new.reply_to,
        message_id=f"<{oid}@mail.test>",
        idempotency_key=new.idempotency_key or None,
        created_at=now,
        updated_at=now,
        send_at=send_at,
    )
    expected.validate()

    document = repository.new_email_document(
        new, message_id_domain="mail.test", email_id=oid, now=now
    )

    assert document == expected.to_mongo().to_dict()
    Email._from_son(document).validate()


def test_ensure_email_stores_once_and_answers_the_stored_email_on_a_repeat(store) -> None:
    oid = ObjectId()
    later = utcnow() + timedelta(hours=2)
    new = repository.NewEmail(**{**FULL.__dict__, "send_at": later})

    first = repository.ensure_email(new, message_id_domain="mail.test", email_id=oid)
    again = repository.ensure_email(new, message_id_domain="mail.test", email_id=oid)

    assert first == repository.Accepted(str(oid), Status.SCHEDULED, later, created=True)
    assert again == repository.Accepted(str(oid), Status.SCHEDULED, later, created=False)
    stored = Email.objects.get(id=oid)
    assert (stored.to, stored.bcc, stored.message_id) == (FULL.to, FULL.bcc, f"<{oid}@mail.test>")
    assert Email.objects.count() == 1
