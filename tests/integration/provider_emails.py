"""The outgoing emails the provider tests send: a plain one and a rich one (files, tags, ...)."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from email.message import EmailMessage
from typing import Any

from bson import ObjectId

from core.store.documents import Email
from core.store.repository import NewAttachment, NewEmail, new_email_document
from workers.mime import build_outgoing
from workers.mta.base import (
    OutgoingEmail,
)


def make_email(message_id: str = "<e1.x7@mailroom.local>", **changes: Any) -> OutgoingEmail:
    base = OutgoingEmail(
        email_id="e1",
        message_id=message_id,
        from_address="Mailroom <noreply@example.com>",
        to=("Ann Example <ann@example.com>", "bob@example.com"),
        cc=("Carol <carol@example.com>",),
        bcc=("dave@example.com",),
        subject="Your receipt",
        text="Thanks for your order.",
        html="<p>Thanks for your <b>order</b>.</p>",
        reply_to="Support <support@example.com>",
        mime=b"",
    )
    base = replace(base, **changes)
    msg = EmailMessage()
    msg["From"] = base.from_address
    msg["To"] = ", ".join(base.to)
    if base.cc:
        msg["Cc"] = ", ".join(base.cc)
    if base.reply_to:
        msg["Reply-To"] = base.reply_to
    msg["Subject"] = base.subject
    msg["Message-ID"] = base.message_id
    msg.set_content(base.text)
    if base.html:
        msg.add_alternative(base.html, subtype="html")
    return replace(base, mime=msg.as_bytes())


EMAIL = make_email()

# Two files, one of them an inline image the HTML shows; an extra header, tags and metadata.
REPORT_PDF = b"%PDF-1.4\n" + bytes(range(256)) * 8
LOGO_PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\xff" * 64
REPORT_NAME = "Rechnung März.pdf"
RICH = build_outgoing(
    Email._from_son(
        new_email_document(
            NewEmail(
                from_address="Mailroom <noreply@example.com>",
                to=["Ann Example <ann@example.com>"],
                subject="Your invoice",
                text="Your invoice is attached.",
                html='<p><img src="cid:logo@mailroom"> Your invoice is attached.</p>',
                attachments=[
                    NewAttachment(REPORT_NAME, "application/pdf", REPORT_PDF),
                    NewAttachment("logo.png", "image/png", LOGO_PNG, content_id="logo@mailroom"),
                ],
                headers={"List-Unsubscribe": "<https://example.com/u/1>"},
                tags=["invoice", "shop", "eu", "vip"],
                metadata={"order_id": "1234", "note": "paid by card"},
            ),
            message_id_domain="mailroom.local",
            email_id=ObjectId(),
            now=datetime(2026, 1, 1),
        )
    )
)
