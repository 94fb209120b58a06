"""What providers reported about an email after sending it: events and per-recipient statuses.

Shown in :attr:`mailroom.Email.events` and :attr:`mailroom.Email.recipient_statuses`. The server
rolls them up into the email's status: ``DELIVERED``, ``BOUNCED`` or ``COMPLAINED`` after
``SENT``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import UTC, datetime

from mailroom.v1 import mail_pb2

__all__ = ["EmailEvent", "EmailEventType", "RecipientState", "RecipientSummary"]


class EmailEventType(enum.Enum):
    """A provider event, normalized across providers (``mailroom.v1.EmailEventType``).

    A type this version of the SDK does not know is reported as :attr:`UNSPECIFIED`.
    """

    UNSPECIFIED = 0
    #: The receiving server accepted the recipient's copy.
    DELIVERED = 1
    #: Delivery was delayed; the provider keeps trying.
    DEFERRED = 2
    #: The copy bounced; see :attr:`EmailEvent.bounce_type`.
    BOUNCED = 3
    #: The recipient reported the email as spam.
    COMPLAINED = 4
    OPENED = 5
    CLICKED = 6
    UNSUBSCRIBED = 7
    #: The provider refused to send the copy.
    REJECTED = 8

    @classmethod
    def from_proto(cls, value: int) -> EmailEventType:
        """Return the type for a protobuf enum number (:attr:`UNSPECIFIED` when unknown)."""
        try:
            return cls(value)
        except ValueError:
            return cls.UNSPECIFIED


class RecipientState(enum.Enum):
    """Where one recipient's copy ended (``mailroom.v1.RecipientStatus``).

    The strongest of its events: COMPLAINED > BOUNCED = REJECTED > DELIVERED > DEFERRED > SENT.
    """

    UNSPECIFIED = 0
    SENT = 1
    #: Deferred or soft-bounced: the provider may still deliver it.
    DEFERRED = 2
    DELIVERED = 3
    #: Hard-bounced.
    BOUNCED = 4
    REJECTED = 5
    COMPLAINED = 6

    @classmethod
    def from_proto(cls, value: int) -> RecipientState:
        """Return the state for a protobuf enum number (:attr:`UNSPECIFIED` when unknown)."""
        try:
            return cls(value)
        except ValueError:
            return cls.UNSPECIFIED


@dataclass(frozen=True)
class EmailEvent:
    """One provider event about one recipient of an email.

    Attributes:
        id: The event's key: ``<provider>:<the provider's event id>``, or a hash.
        type: What happened.
        provider: The provider that reported it (``smtp`` for a DSN).
        recipient: The recipient it is about.
        time: When it happened (UTC).
        bounce_type: ``hard`` or ``soft`` for a bounce.
        diagnostic_code: The SMTP status or diagnostic, e.g. ``5.1.1``.
        description: The provider's explanation.
        url: The link of a click.
    """

    id: str
    type: EmailEventType
    provider: str
    recipient: str
    time: datetime | None = None
    bounce_type: str | None = None
    diagnostic_code: str | None = None
    description: str | None = None
    url: str | None = None


@dataclass(frozen=True)
class RecipientSummary:
    """Where one recipient's copy ended, from the provider events about it.

    Attributes:
        address: The recipient.
        status: Its summary state.
        update_time: When the event that set it happened (UTC).
        diagnostic_code: That event's diagnostic, if any.
    """

    address: str
    status: RecipientState
    update_time: datetime | None = None
    diagnostic_code: str | None = None


def _time(message: mail_pb2.EmailEvent | mail_pb2.RecipientSummary, name: str) -> datetime | None:
    if not message.HasField(name):
        return None
    stamp = getattr(message, name)
    return stamp.ToDatetime(tzinfo=UTC)  # type: ignore[no-any-return]


def event_from_proto(message: mail_pb2.EmailEvent) -> EmailEvent:
    """Convert a ``mailroom.v1.EmailEvent``."""
    return EmailEvent(
        id=message.id,
        type=EmailEventType.from_proto(message.type),
        provider=message.provider,
        recipient=message.recipient,
        time=_time(message, "time"),
        bounce_type=message.bounce_type or None,
        diagnostic_code=message.diagnostic_code or None,
        description=message.description or None,
        url=message.url or None,
    )


def summary_from_proto(message: mail_pb2.RecipientSummary) -> RecipientSummary:
    """Convert a ``mailroom.v1.RecipientSummary``."""
    return RecipientSummary(
        address=message.address,
        status=RecipientState.from_proto(message.status),
        update_time=_time(message, "update_time"),
        diagnostic_code=message.diagnostic_code or None,
    )
