"""The typed results of the Mailroom client: :class:`Email`, :class:`Attempt` and their enums.

They are plain frozen dataclasses converted from the protobuf messages, so callers never handle
protobuf types. Timestamps are timezone-aware UTC datetimes; fields the server left empty are
``None``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime, timedelta

__all__ = ["Attempt", "AttemptOutcome", "Email", "EmailStatus"]


class EmailStatus(enum.Enum):
    """Where an email is on its way to the recipients.

    The values are those of ``mailroom.v1.EmailStatus``. A status this version of the SDK does
    not know is reported as :attr:`UNSPECIFIED`.
    """

    UNSPECIFIED = 0
    #: Accepted, waiting for its ``send_at`` time.
    SCHEDULED = 1
    #: Accepted, waiting for a worker.
    QUEUED = 2
    #: A worker holds the email and is handing it to a provider.
    SENDING = 3
    #: The last attempt failed transiently; another attempt is due.
    RETRYING = 4
    #: A provider accepted the email. Final.
    SENT = 5
    #: The email cannot be delivered; see ``Email.last_error``. Final.
    FAILED = 6
    #: Cancelled before any worker claimed it. Final.
    CANCELLED = 7

    @property
    def is_final(self) -> bool:
        """Whether the email will not change status any more (SENT, FAILED or CANCELLED)."""
        return self in _FINAL

    @classmethod
    def from_proto(cls, value: int) -> EmailStatus:
        """Return the status for a ``mailroom.v1.EmailStatus`` number.

        Args:
            value: The protobuf enum number.

        Returns:
            The matching status, or :attr:`UNSPECIFIED` for a number this SDK does not know
            (a newer server).
        """
        try:
            return cls(value)
        except ValueError:
            return cls.UNSPECIFIED


_FINAL = frozenset({EmailStatus.SENT, EmailStatus.FAILED, EmailStatus.CANCELLED})


class AttemptOutcome(enum.Enum):
    """How one delivery attempt ended.

    The values are those of ``mailroom.v1.AttemptOutcome``. An outcome this version of the SDK
    does not know is reported as :attr:`UNSPECIFIED`.
    """

    UNSPECIFIED = 0
    #: The provider accepted the email.
    DELIVERED = 1
    #: Timeout, connection error or server error: retried.
    TRANSIENT = 2
    #: The email itself was rejected: not retried.
    PERMANENT = 3
    #: The provider asked to slow down: retried after its delay.
    THROTTLED = 4
    #: The provider refused the credentials: another provider is tried.
    MISCONFIGURED = 5
    #: No provider could take the email (every circuit breaker open).
    NO_PROVIDER = 6
    #: The worker stopped while the provider had the email; it may have been accepted.
    INTERRUPTED = 7

    @classmethod
    def from_proto(cls, value: int) -> AttemptOutcome:
        """Return the outcome for a ``mailroom.v1.AttemptOutcome`` number.

        Args:
            value: The protobuf enum number.

        Returns:
            The matching outcome, or :attr:`UNSPECIFIED` for a number this SDK does not know.
        """
        try:
            return cls(value)
        except ValueError:
            return cls.UNSPECIFIED


@dataclass(frozen=True)
class Attempt:
    """One try to hand an email to a provider.

    Attributes:
        provider: The provider tried, e.g. ``"smtp"``.
        outcome: How the attempt ended.
        start_time: When the attempt started (UTC), if recorded.
        duration: How long it took, if recorded.
        error: Why it failed, if it did.
        response: The provider's reply, e.g. the SMTP server's final response.
        worker: The worker that made the attempt.
    """

    provider: str
    outcome: AttemptOutcome
    start_time: datetime | None = None
    duration: timedelta | None = None
    error: str | None = None
    response: str | None = None
    worker: str | None = None


@dataclass(frozen=True)
class Email:
    """An accepted email and its delivery state.

    Attributes:
        id: The id the server gave the email.
        status: Where the email is on its way.
        to: The recipients.
        cc: The carbon-copy recipients.
        bcc: The blind-copy recipients.
        title: The subject line.
        content: The plain-text body.
        html: The HTML alternative of the body, if any.
        from_address: The sender (the server's default if the request named none).
        reply_to: The Reply-To address, if any.
        message_id: The RFC 5322 Message-ID, the same on every attempt.
        create_time: When the server accepted the email (UTC).
        update_time: When the email last changed (UTC).
        send_at: When the email is scheduled to be sent (UTC), if it was scheduled.
        sent_time: When a provider accepted the email (UTC), once it has.
        provider: The provider that accepted the email, once one has.
        provider_message_id: That provider's id for the email.
        last_error: Why the email failed, or why its last attempt failed.
        attempts: Every delivery attempt, oldest first.
    """

    id: str
    status: EmailStatus
    to: list[str]
    cc: list[str]
    bcc: list[str]
    title: str
    content: str
    html: str | None = None
    from_address: str | None = None
    reply_to: str | None = None
    message_id: str | None = None
    create_time: datetime | None = None
    update_time: datetime | None = None
    send_at: datetime | None = None
    sent_time: datetime | None = None
    provider: str | None = None
    provider_message_id: str | None = None
    last_error: str | None = None
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def is_final(self) -> bool:
        """Whether the email will not change status any more (SENT, FAILED or CANCELLED)."""
        return self.status.is_final
