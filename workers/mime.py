"""Building the standards-conformant MIME message of an email (stdlib ``email``).

The tree, from the simplest email up (each level only when needed)::

    multipart/mixed                      when there are ordinary attachments
      multipart/alternative              when there is HTML
        text/plain
        multipart/related                when inline parts (content_id) go with the HTML
          text/html
          image/png  (inline, Content-ID)
      application/pdf  (attachment)

Inline parts of an email without HTML have nothing to be shown in: they go into the mixed part,
still ``inline`` with their Content-ID.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from datetime import UTC
from email.headerregistry import BaseHeader, HeaderRegistry
from email.message import EmailMessage, MIMEPart
from email.policy import SMTP, SMTPUTF8, EmailPolicy
from email.utils import format_datetime

from core.addresses import (
    MAX_HEADER_LINE_CHARS,
    address_header,
    encode_header_text,
    needs_smtputf8,
)
from core.store.documents import Email
from workers.mta.base import OutgoingAttachment, OutgoingEmail


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


def _plain_ascii(value: str) -> bool:
    """Whether a header value can go as it is: printable ASCII that no reader would decode."""
    return value.isascii() and value.isprintable() and "=?" not in value and value == value.strip()


def extra_header_value(name: str, value: str) -> str:
    """The raw value of a client's extra header, folded to lines of at most 998 characters.

    Printable ASCII goes as it is (structured headers such as ``List-Unsubscribe`` must not be
    encoded), folded at its spaces when ``Name: value`` would be too long. Anything else, and
    ASCII that cannot be folded short enough, becomes RFC 2047 encoded words, which read back
    exactly.

    Args:
        name: The header name (``[A-Za-z0-9-]``, at most 76 characters).
        value: The validated value: header-safe, stripped, at most 998 characters.

    Returns:
        The value for ``Message.set_raw``, with CRLF-space folds.
    """
    if not _plain_ascii(value):
        return encode_header_text(value)
    width = len(name) + 2  # "Name: "
    if width + len(value) <= MAX_HEADER_LINE_CHARS:
        return value
    lines: list[str] = []
    line = ""
    # Fold before a space: unfolding (removing the CRLF) gives the value back.
    for word in value.split(" "):
        candidate = f"{line} {word}" if line or lines else word
        if width + len(candidate) <= MAX_HEADER_LINE_CHARS:
            line = candidate
            continue
        if not line:
            return encode_header_text(value)
        lines.append(line)
        line, width = f" {word}", 0
        if len(line) > MAX_HEADER_LINE_CHARS:
            return encode_header_text(value)
    lines.append(line)
    return "\r\n".join(lines)


def _attachment_part(attachment: OutgoingAttachment, policy: EmailPolicy) -> EmailMessage:
    """One file as a base64 MIME part: an attachment, or inline with its Content-ID."""
    # An EmailMessage rather than a MIMEPart only for the typeshed stubs of attach(); the two
    # differ in set_content (MIME-Version), which is not used here.
    part = EmailMessage(policy)
    # Validation guarantees a bare, non-composite type/subtype (base64 is allowed for it).
    part.set_raw("Content-Type", attachment.content_type)
    part.set_raw("Content-Transfer-Encoding", "base64")
    # add_header writes a non-ASCII filename as RFC 2231 (filename*=utf-8''…), and the policy
    # splits a long one into filename*0*, filename*1*… continuations.
    disposition = "inline" if attachment.content_id else "attachment"
    part.add_header("Content-Disposition", disposition, filename=attachment.filename)
    if attachment.content_id:
        part.set_raw("Content-ID", f"<{attachment.content_id}>")
    # encodebytes: 76-character lines; the generator writes them with CRLF.
    part.set_payload(base64.encodebytes(attachment.content).decode("ascii"))
    return part


def _attach(message: EmailMessage, attachments: Iterable[OutgoingAttachment]) -> None:
    """Put the files into the body of ``message`` (see the module docstring for the tree)."""
    files = list(attachments)
    policy = message.policy
    assert isinstance(policy, EmailPolicy)
    if message.is_multipart():  # multipart/alternative: there is HTML
        inline = [a for a in files if a.content_id]
        if inline:
            parts = message.get_payload()
            assert isinstance(parts, list)
            html = parts[-1]
            assert isinstance(html, MIMEPart)
            html.make_related()
            for attachment in inline:
                html.attach(_attachment_part(attachment, policy))
            files = [a for a in files if not a.content_id]
    if files:
        message.make_mixed()
        for attachment in files:
            message.attach(_attachment_part(attachment, policy))


def build_mime(email: Email, attachments: tuple[OutgoingAttachment, ...] | None = None) -> bytes:
    """Render the email as RFC 5322 bytes with CRLF line ends.

    Plain text, with an HTML alternative when there is one, and the attachments (see the module
    docstring for the tree). Bcc is never in the headers (the envelope carries it). The
    Message-ID is derived from the email id, the same on every attempt, so receiving servers can
    drop a duplicate. Headers are 7-bit (RFC 2047 encoded words, RFC 2231 file names) unless an
    address has a non-ASCII local part, which only SMTPUTF8 can carry: then they are UTF-8 (the
    SMTP provider sends with SMTPUTF8 exactly then). The client's extra headers follow the
    service's own.

    Args:
        email: The stored email.
        attachments: Its attachments, when the caller has them already (see
            :func:`outgoing_attachments`).
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
    for name, value in (email.headers or {}).items():
        msg.set_raw(name, extra_header_value(name, value))
    msg.set_content(email.text or "", subtype="plain", charset="utf-8")
    if email.html:
        msg.add_alternative(email.html, subtype="html", charset="utf-8")
    if email.attachments:
        _attach(msg, outgoing_attachments(email) if attachments is None else attachments)
    return msg.as_bytes()


def outgoing_attachments(email: Email) -> tuple[OutgoingAttachment, ...]:
    """The email's stored attachments, as providers take them."""
    return tuple(
        OutgoingAttachment(
            filename=a.filename,
            content_type=a.content_type,
            content=bytes(a.content or b""),
            content_id=a.content_id or "",
        )
        for a in email.attachments
    )


def build_outgoing(email: Email) -> OutgoingEmail:
    """Return what providers need to send the email, the MIME included."""
    attachments = outgoing_attachments(email)
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
        mime=build_mime(email, attachments),
        attachments=attachments,
        headers=tuple((email.headers or {}).items()),
        tags=tuple(email.tags or ()),
        metadata=tuple((email.metadata or {}).items()),
    )
