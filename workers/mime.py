"""Building the standards-conformant MIME message of an email (stdlib ``email``)."""

from __future__ import annotations

from datetime import UTC
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime

from core.store.documents import Email
from workers.mta.base import OutgoingEmail


def build_mime(email: Email) -> bytes:
    """Render the email as RFC 5322 bytes with CRLF line ends.

    Plain text, with an HTML alternative when there is one. Bcc is never in the headers (the
    envelope carries it). The Message-ID is derived from the email id, the same on every attempt,
    so receiving servers can drop a duplicate.
    """
    msg = EmailMessage(policy=SMTP)
    msg["From"] = email.from_address
    msg["To"] = ", ".join(email.to)
    if email.cc:
        msg["Cc"] = ", ".join(email.cc)
    if email.reply_to:
        msg["Reply-To"] = email.reply_to
    msg["Subject"] = email.subject
    msg["Message-ID"] = email.message_id
    msg["Date"] = format_datetime(email.created_at.replace(tzinfo=UTC))
    msg["X-Mailroom-Id"] = str(email.id)
    msg.set_content(email.text or "", subtype="plain", charset="utf-8")
    if email.html:
        msg.add_alternative(email.html, subtype="html", charset="utf-8")
    return msg.as_bytes()


def build_outgoing(email: Email) -> OutgoingEmail:
    """Return what providers need to send the email, the MIME included."""
    return OutgoingEmail(
        email_id=str(email.id),
        message_id=email.message_id,
        from_address=email.from_address,
        to=tuple(email.to),
        cc=tuple(email.cc),
        bcc=tuple(email.bcc),
        subject=email.subject,
        text=email.text or "",
        html=email.html or "",
        reply_to=email.reply_to or "",
        mime=build_mime(email),
    )
