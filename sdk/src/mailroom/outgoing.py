"""What the Mailroom client sends: :class:`Attachment` and :class:`OutgoingEmail`.

An :class:`Attachment` also comes back in :attr:`mailroom.Email.attachments`.
"""

from __future__ import annotations

import mimetypes
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

__all__ = ["Attachment", "OutgoingEmail"]

# The MIME types of files that mimetypes reports as an encoding of another type (``.tar.gz``
# is a gzip file, whatever the archive inside).
_ENCODING_TYPES = {
    "gzip": "application/gzip",
    "bzip2": "application/x-bzip2",
    "xz": "application/x-xz",
    "br": "application/x-brotli",
    "compress": "application/x-compress",
}
_UNKNOWN_TYPE = "application/octet-stream"


@dataclass(frozen=True)
class Attachment:
    """A file sent with an email, or one of an email's files as the server reports it.

    Build one from bytes (``Attachment("report.csv", data, content_type="text/csv")``) or from a
    file (:meth:`from_path`). The server refuses names with a blocked extension (``.exe``,
    ``.js``, ...) and emails whose bodies and attachments together exceed its size limit
    (10 MiB by default).

    Attributes:
        filename: The file name shown to the recipient, e.g. ``invoice.pdf``.
        content: The file's bytes. Empty in emails listed without ``full=True`` and in emails
            whose contents the retention job purged; ``size`` is still the file's size.
        content_type: The MIME type, e.g. ``application/pdf``; empty lets the server guess it
            from the file name.
        content_id: Set to show the attachment inline: an HTML body refers to it as
            ``cid:<content_id>``.
        size: The size of the file in bytes; computed from ``content`` when omitted.
    """

    filename: str
    content: bytes = field(repr=False)
    content_type: str = ""
    content_id: str = ""
    size: int = -1

    def __post_init__(self) -> None:
        """Check the content is bytes and fill in the size.

        Raises:
            TypeError: ``content`` is a ``str`` (encode it first: the encoding is yours to
                choose) or not bytes-like.
        """
        content: object = self.content
        if isinstance(content, str):
            raise TypeError("Attachment content must be bytes; encode the text first")
        if not isinstance(content, bytes | bytearray | memoryview):
            raise TypeError(f"Attachment content must be bytes, not {type(content).__name__}")
        # Frozen: the fields are set through object.__setattr__, as dataclasses do.
        object.__setattr__(self, "content", bytes(content))
        if self.size < 0:
            object.__setattr__(self, "size", len(self.content))

    @classmethod
    def from_path(
        cls,
        path: str | os.PathLike[str],
        *,
        content_type: str | None = None,
        content_id: str | None = None,
        filename: str | None = None,
    ) -> Attachment:
        """Read a file into an attachment.

        Args:
            path: The file to read.
            content_type: The MIME type; guessed from the file name with :mod:`mimetypes`
                when omitted (``application/octet-stream`` when it cannot be guessed).
            content_id: The id an HTML body refers to as ``cid:<content_id>``, for an inline
                attachment.
            filename: The name shown to the recipient; the file's own name when omitted.

        Returns:
            The attachment, with the file's bytes.

        Raises:
            OSError: The file cannot be read.
        """
        file = Path(path)
        name = file.name if filename is None else filename
        if content_type is None:
            content_type = _guess_type(name) or _guess_type(file.name) or _UNKNOWN_TYPE
        return cls(
            filename=name,
            content=file.read_bytes(),
            content_type=content_type,
            content_id=content_id or "",
        )


def _guess_type(name: str) -> str | None:
    """Return the MIME type of a file name, or ``None`` when mimetypes does not know it."""
    guessed, encoding = mimetypes.guess_type(name, strict=False)
    if encoding is not None:
        return _ENCODING_TYPES.get(encoding, _UNKNOWN_TYPE)
    return guessed


@dataclass(frozen=True)
class OutgoingEmail:
    """One email to send in a batch: the arguments of ``send_email``, as a value.

    Example:
        >>> OutgoingEmail("alice@example.com", "Welcome", "Hi Alice!", tags=["welcome"])

    Attributes:
        to: The recipients; a single address may be given as a string.
        title: The subject line.
        content: The plain-text body.
        cc: Carbon-copy recipients.
        bcc: Blind-copy recipients, never shown in the headers.
        html: An HTML alternative of the body.
        from_: The sender; the server's default when omitted.
        reply_to: The Reply-To address.
        send_at: When to send; it must be timezone-aware. Omitted or past means now.
        idempotency_key: The key that makes the email idempotent; a fresh one is generated
            for each ``send_email_batch`` call when omitted.
        attachments: The files to attach.
        headers: Extra headers, e.g. ``{"X-Campaign": "spring"}``; the server refuses the
            headers it writes itself (From, Subject, Content-*, ...).
        tags: Up to 10 tags, each ``[a-z0-9_-]{1,64}``; a single tag may be given as a string.
        metadata: Up to 20 key/value pairs, each at most 256 characters.
    """

    to: str | Sequence[str]
    title: str
    content: str
    cc: str | Sequence[str] = ()
    bcc: str | Sequence[str] = ()
    html: str | None = None
    from_: str | None = None
    reply_to: str | None = None
    send_at: datetime | None = None
    idempotency_key: str | None = None
    attachments: Sequence[Attachment] = ()
    headers: Mapping[str, str] = field(default_factory=dict)
    tags: str | Sequence[str] = ()
    metadata: Mapping[str, str] = field(default_factory=dict)
