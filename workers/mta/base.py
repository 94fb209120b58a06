"""The one Protocol every mail provider implements, and the outcomes a send can have.

Each provider module classifies every outcome of its API in one place (its ``map_*_errors()``
context manager) into the exceptions below; nothing else escapes ``Provider.send``. Each class
carries the :class:`~core.store.documents.Outcome` its attempts are recorded with (as the API's
errors carry their gRPC status), so a subclass is recorded and handled like its parent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Protocol

from core.store.documents import Outcome


@dataclass(frozen=True)
class OutgoingAttachment:
    """A file sent with an email.

    Attributes:
        filename: The file's name as the recipient sees it (validated header-safe).
        content_type: Its ``type/subtype``.
        content: The file's bytes.
        content_id: Set for an inline part the HTML refers to as ``cid:<content_id>`` (no angle
            brackets); "" for an ordinary attachment.
    """

    filename: str
    content_type: str
    content: bytes
    content_id: str = ""

    @property
    def inline(self) -> bool:
        """Whether the part is shown inside the message (it has a Content-ID)."""
        return bool(self.content_id)


@dataclass(frozen=True)
class OutgoingEmail:
    """Everything a provider needs to send one email.

    Attributes:
        email_id: Mailroom's id of the email.
        message_id: The RFC 5322 Message-ID (with angle brackets), the same on every attempt.
        from_address: The sender, possibly with a display name (``Name <a@b.c>``).
        to: Recipients.
        cc: Copies.
        bcc: Blind copies: delivered, never in the headers.
        subject: The subject line.
        text: The plain-text body.
        html: The optional HTML alternative ("" when absent).
        reply_to: The optional Reply-To ("" when absent).
        mime: The complete MIME message (no Bcc header), for providers that take raw mail.
        attachments: Files, ordinary and inline, in the order the client gave them.
        headers: Extra headers, (name, value) pairs; never one the service writes itself.
        tags: Labels (``[a-z0-9_-]``), for the provider's statistics and webhooks.
        metadata: (key, value) pairs the provider hands back in its webhooks.
    """

    email_id: str
    message_id: str
    from_address: str
    to: tuple[str, ...]
    subject: str
    text: str
    mime: bytes
    cc: tuple[str, ...] = ()
    bcc: tuple[str, ...] = ()
    html: str = ""
    reply_to: str = ""
    # Tuples, so the email stays immutable (and hashable) like the rest of its fields.
    attachments: tuple[OutgoingAttachment, ...] = ()
    headers: tuple[tuple[str, str], ...] = ()
    tags: tuple[str, ...] = ()
    metadata: tuple[tuple[str, str], ...] = ()

    @property
    def recipients(self) -> tuple[str, ...]:
        """Every envelope recipient: to, cc and bcc."""
        return self.to + self.cc + self.bcc


@dataclass(frozen=True)
class SendResult:
    """A provider accepted the email.

    Attributes:
        provider_message_id: The provider's id for the message.
        response: The provider's reply, for the history (e.g. the SMTP final response).
    """

    provider_message_id: str
    response: str = ""


class DeliveryError(Exception):
    """A send did not succeed. Subclasses say what to do next (``outcome``)."""

    outcome: ClassVar[Outcome] = Outcome.TRANSIENT

    def __init__(self, message: str, *, response: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.response = response


class PermanentError(DeliveryError):
    """The email itself is bad (e.g. a rejected recipient): FAILED at once, no retry.

    Does not count against the provider's circuit breaker.
    """

    outcome = Outcome.PERMANENT


class TransientError(DeliveryError):
    """Timeout, connection error, 5xx: retry; counts against the provider's breaker."""

    outcome = Outcome.TRANSIENT


class ThrottledError(DeliveryError):
    """The provider asked us to slow down (429): retry after ``retry_after`` seconds.

    Does not open the breaker by itself.
    """

    outcome = Outcome.THROTTLED

    def __init__(
        self, message: str, *, retry_after: float | None = None, response: str = ""
    ) -> None:
        super().__init__(message, response=response)
        self.retry_after = retry_after


class MisconfiguredError(DeliveryError):
    """The provider refused our credentials (401/403): take it out of rotation, try another."""

    outcome = Outcome.MISCONFIGURED


@dataclass
class ProviderInfo:
    """What start-up logs about a provider: whether it is enabled and why not."""

    name: str
    enabled: bool
    reason: str = ""
    extra: dict[str, str] = field(default_factory=dict)


class Provider(Protocol):
    """A mail provider. Implementations are small classes, one module each.

    ``send`` must be safe to call from several threads at once, must honour its timeout, and
    raises only :class:`DeliveryError` subclasses.
    """

    name: str

    def send(self, email: OutgoingEmail) -> SendResult:
        """Hand ``email`` to the provider.

        Args:
            email: The email to send.

        Returns:
            The provider's acceptance.

        Raises:
            DeliveryError: A subclass saying whether to fail, retry, or move on.
        """
        ...
