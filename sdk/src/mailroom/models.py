"""The typed results of the Mailroom client: emails, attempts, pages and batch outcomes.

:class:`Email`, :class:`Attempt`, their enums, :class:`EmailPage` and :class:`BatchResponse` are
plain frozen dataclasses converted from the protobuf messages, so callers never handle protobuf
types. Timestamps are timezone-aware UTC datetimes; fields the server left empty are
``None``. What the client sends (:class:`~mailroom.Attachment`,
:class:`~mailroom.OutgoingEmail`) lives in :mod:`mailroom.outgoing`.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, TypedDict, overload

from mailroom.email_events import EmailEvent, RecipientSummary
from mailroom.outgoing import Attachment

if TYPE_CHECKING:
    from mailroom.errors import MailroomError
    from mailroom.suppressions import DroppedRecipient

__all__ = [
    "Attempt",
    "AttemptOutcome",
    "BatchResponse",
    "BatchResult",
    "Email",
    "EmailFilters",
    "EmailPage",
    "EmailStatus",
]


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
    #: After SENT, from the providers' events: a recipient's copy was delivered, none bounced
    #: or complained.
    DELIVERED = 8
    #: After SENT: a recipient's copy hard-bounced or was rejected by the provider.
    BOUNCED = 9
    #: After SENT: a recipient reported the email as spam.
    COMPLAINED = 10

    @property
    def is_final(self) -> bool:
        """Whether the sending is over: SENT, FAILED, CANCELLED, or an outcome after SENT.

        A SENT email may still become DELIVERED, BOUNCED or COMPLAINED from provider events.
        """
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


# SENT is final for the sending; provider events may still turn it into one of the last three.
_FINAL = frozenset(
    {
        EmailStatus.SENT,
        EmailStatus.FAILED,
        EmailStatus.CANCELLED,
        EmailStatus.DELIVERED,
        EmailStatus.BOUNCED,
        EmailStatus.COMPLAINED,
    }
)


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
        attachments: The attached files. Their ``content`` is empty in emails listed without
            ``full=True`` and once purged; ``size`` is always set.
        headers: The extra headers the email was sent with (empty in listed emails without
            ``full=True``).
        tags: The email's tags.
        metadata: The email's key/value metadata.
        purge_time: When the retention job removed the bodies, attachments' contents and
            headers of this final email (UTC); ``None`` while they are kept.
        events: What the providers reported after sending (delivered, bounced…), oldest first.
        recipient_statuses: Each recipient's state from those events.
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
    attachments: list[Attachment] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)
    purge_time: datetime | None = None
    events: list[EmailEvent] = field(default_factory=list)
    recipient_statuses: list[RecipientSummary] = field(default_factory=list)

    @property
    def is_final(self) -> bool:
        """Whether the sending is over (see :attr:`EmailStatus.is_final`)."""
        return self.status.is_final


@dataclass(frozen=True)
class BatchResult:
    """What became of one email of a batch: its id, or the error that refused it.

    Attributes:
        index: The email's position in the batch.
        id: The accepted email's id; ``None`` when the email was refused.
        error: Why the email was refused, e.g. :class:`mailroom.InvalidArgument` whose
            ``violations`` are named ``emails[<index>].<field>``, or
            :class:`mailroom.AlreadyExists` for an idempotency key used for another email;
            ``None`` when it was accepted.
        dropped_recipients: The accepted email's recipients the server left out because their
            address is suppressed.
    """

    index: int
    id: str | None = None
    error: MailroomError | None = None
    dropped_recipients: list[DroppedRecipient] = field(default_factory=list)

    @property
    def accepted(self) -> bool:
        """Whether the server accepted the email (it has an id)."""
        return self.error is None and self.id is not None


@dataclass(frozen=True)
class BatchResponse(Sequence[BatchResult]):
    """The outcome of ``send_email_batch``: one :class:`BatchResult` per email, in order.

    It is a sequence: ``response[0].id``, ``for result in response: ...``, ``len(response)``.

    Attributes:
        results: One result per email, in the batch's order.
        accepted_count: How many emails the server accepted.
        refused_count: How many it refused.
    """

    results: list[BatchResult]
    accepted_count: int
    refused_count: int

    @property
    def accepted(self) -> list[BatchResult]:
        """The results of the accepted emails, in order."""
        return [r for r in self.results if r.accepted]

    @property
    def refused(self) -> list[BatchResult]:
        """The results of the refused emails, in order."""
        return [r for r in self.results if not r.accepted]

    def __len__(self) -> int:
        """Return the number of emails in the batch."""
        return len(self.results)

    def __iter__(self) -> Iterator[BatchResult]:
        """Iterate over the results in the batch's order."""
        return iter(self.results)

    @overload
    def __getitem__(self, index: int) -> BatchResult: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[BatchResult]: ...

    def __getitem__(self, index: int | slice) -> BatchResult | Sequence[BatchResult]:
        """Return the result of the email at ``index`` (or a list of them for a slice)."""
        return self.results[index]


@dataclass(frozen=True)
class EmailPage:
    """One page of ``list_emails_page``: emails, newest first, and the token of the next page.

    Attributes:
        emails: The emails of this page.
        next_page_token: Pass it as ``page_token`` to get the next page; ``None`` on the last.
    """

    emails: list[Email]
    next_page_token: str | None = None

    def __iter__(self) -> Iterator[Email]:
        """Iterate over the emails of this page."""
        return iter(self.emails)


class EmailFilters(TypedDict, total=False):
    """The filters of ``list_emails`` and ``list_emails_page``, given as keyword arguments.

    An email is listed when it matches every filter given; ``None`` is the same as omitting one.

    Attributes:
        status: Only emails in this status, or in one of these statuses.
        recipient: Only emails with this exact address among to, cc or bcc.
        tag: Only emails with this tag.
        metadata: Only emails whose metadata has all of these key/value pairs.
        provider: Only emails sent through this provider, e.g. ``"smtp"``.
        created_after: Only emails created at or after this time (timezone-aware).
        created_before: Only emails created before this time (timezone-aware).
        idempotency_key: Only the email accepted with this idempotency key.
    """

    status: EmailStatus | Iterable[EmailStatus] | None
    recipient: str | None
    tag: str | None
    metadata: Mapping[str, str] | None
    provider: str | None
    created_after: datetime | None
    created_before: datetime | None
    idempotency_key: str | None
