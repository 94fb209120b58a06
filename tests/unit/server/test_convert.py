"""email_to_proto: the full email (GetEmail) and the BASIC view (ListEmails)."""

from __future__ import annotations

from datetime import UTC, datetime

from bson import ObjectId

from core.store.documents import Email
from core.store.repository import NewAttachment, NewEmail, new_email_document
from mailroom.v1 import mail_pb2
from server.convert import email_to_proto

NOW = datetime(2026, 12, 2, 12, 0)


def stored(**overrides) -> Email:
    fields = {
        "to": ["a@example.com"],
        "subject": "Your invoice",
        "text": "Hello",
        "html": "<p>Hello <img src='cid:logo'></p>",
        "from_address": "shop@example.com",
        "attachments": [
            NewAttachment("invoice.pdf", "application/pdf", b"%PDF\x00\xff"),
            NewAttachment("logo.png", "image/png", b"\x89PNG", "logo"),
        ],
        "headers": {"X-Campaign": "spring", "List-Unsubscribe": "<https://x/u>"},
        "tags": ["invoice", "b2b"],
        "metadata": {"order_id": "A-7", "user": "42"},
    }
    fields.update(overrides)
    document = new_email_document(
        NewEmail(**fields), message_id_domain="mailroom.test", email_id=ObjectId(), now=NOW
    )
    return Email._from_son(document)  # type: ignore[no-any-return]


def test_the_full_email_has_everything():
    email = email_to_proto(stored())
    assert email.title == "Your invoice"
    assert email.content == "Hello"
    assert email.html.startswith("<p>")
    assert list(email.attachments) == [
        mail_pb2.Attachment(
            filename="invoice.pdf",
            content_type="application/pdf",
            content=b"%PDF\x00\xff",
            size=6,
        ),
        mail_pb2.Attachment(
            filename="logo.png",
            content_type="image/png",
            content=b"\x89PNG",
            content_id="logo",
            size=4,
        ),
    ]
    assert dict(email.headers) == {"X-Campaign": "spring", "List-Unsubscribe": "<https://x/u>"}
    assert list(email.tags) == ["invoice", "b2b"]
    assert dict(email.metadata) == {"order_id": "A-7", "user": "42"}
    assert not email.HasField("purge_time")


def test_the_basic_view_leaves_out_bodies_contents_and_headers():
    email = email_to_proto(stored(), full=False)
    assert email.title == "Your invoice"
    assert email.content == "" and email.html == ""
    assert [
        (a.filename, a.content_type, a.content_id, a.size, a.content) for a in email.attachments
    ] == [
        ("invoice.pdf", "application/pdf", "", 6, b""),
        ("logo.png", "image/png", "logo", 4, b""),
    ]
    assert not email.headers
    assert list(email.tags) == ["invoice", "b2b"]
    assert dict(email.metadata) == {"order_id": "A-7", "user": "42"}
    assert list(email.to) == ["a@example.com"]


def test_a_purged_email_keeps_sizes_and_shows_its_purge_time():
    email = stored()
    purged = datetime(2027, 1, 2, 3, 4, 5)
    email.purged_at = purged
    email.text = email.html = ""
    email.headers = {}
    for attachment in email.attachments:
        attachment.content = None
    message = email_to_proto(email)
    assert message.purge_time.ToDatetime(tzinfo=UTC) == purged.replace(tzinfo=UTC)
    assert [(a.filename, a.size, a.content) for a in message.attachments] == [
        ("invoice.pdf", 6, b""),
        ("logo.png", 4, b""),
    ]


def test_an_email_stored_before_these_fields_converts():
    document = new_email_document(
        NewEmail(to=["a@example.com"], subject="s", text="t", from_address="f@example.com"),
        message_id_domain="mailroom.test",
        email_id=ObjectId(),
        now=NOW,
    )
    for key in ("attachments", "headers", "tags", "metadata", "recipients", "metadata_pairs"):
        del document[key]
    email = email_to_proto(Email._from_son(document))
    assert not email.attachments and not email.headers and not email.tags and not email.metadata
