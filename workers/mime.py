"""Building the standards-conformant MIME message of an email (stdlib ``email``)."""

from __future__ import annotations

from datetime import UTC
from email.headerregistry import BaseHeader, HeaderRegistry
from email.message import EmailMessage
from email.policy import SMTP, SMTPUTF8
from email.utils import format_datetime

from core.addresses import address_header, encode_header_text, needs_smtputf8
from core.store.documents import Email
from workers.mta.base import OutgoingEmail


class _CachedHeaderRegistry(HeaderRegistry):
    """The stdlib's header factory, minus a new class per header set.

    ``HeaderRegistry.__getitem__`` builds a class with ``type()`` each time a header is set: in
    the worker's profile that was about a quarter of the GIL time spent building a message.
    """

    def __init__(self) -> None:
        super().__init__()
        self._classes: dict[str, type[BaseHeader]] = {}

    def __getitem__(self, name: str) -> type[BaseHeader]:
        key = name.lower()
        cls = self._classes.get(key)
        if cls is None:
            cls = self._classes[key] = super().__getitem__(name)
        return cls


# Lines up to RFC 5322's 998 (an address alone may be 254): the headers below are folded by
# core.addresses, whose encoded words read back exactly; the email package's folder would
# refold them. Made once: a policy and its header classes are immutable.
_POLICY = SMTP.clone(max_line_length=998, header_factory=_CachedHeaderRegistry())
_POLICY_UTF8 = SMTPUTF8.clone(max_line_length=998, header_factory=_CachedHeaderRegistry())


def build_mime(email: Email) -> bytes:
    """Render the email as RFC 5322 bytes with CRLF line ends.

    Plain text, with an HTML alternative when there is one. Bcc is never in the headers (the
    envelope carries it). The Message-ID is derived from the email id, the same on every attempt,
    so receiving servers can drop a duplicate. Headers are 7-bit (RFC 2047 encoded words)
    unless an address has a non-ASCII local part, which only SMTPUTF8 can carry: then they are
    UTF-8 (the SMTP provider sends with SMTPUTF8 exactly then).
    """
    addresses = [email.from_address, email.reply_to or "", *email.to, *email.cc]
    smtputf8 = any(needs_smtputf8(a) for a in addresses if a)
    msg = EmailMessage(policy=_POLICY_UTF8 if smtputf8 else _POLICY)
    msg.set_raw("From", address_header([email.from_address]))
    msg.set_raw("To", address_header(email.to))
    if email.cc:
        msg.set_raw("Cc", address_header(email.cc))
    if email.reply_to:
        msg.set_raw("Reply-To", address_header([email.reply_to]))
    msg.set_raw("Subject", encode_header_text(email.subject))
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
