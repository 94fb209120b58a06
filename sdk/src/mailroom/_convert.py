"""Conversions between the SDK's Python types and the ``mailroom.v1`` protobuf messages."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from google.protobuf import timestamp_pb2

from mailroom.models import Attempt, AttemptOutcome, Email, EmailStatus
from mailroom.v1 import mail_pb2


def new_idempotency_key() -> str:
    """Return a fresh idempotency key: a random UUID."""
    return str(uuid.uuid4())


def build_send_request(
    to: str | Iterable[str],
    title: str,
    content: str,
    *,
    cc: str | Iterable[str] = (),
    bcc: str | Iterable[str] = (),
    html: str | None = None,
    from_: str | None = None,
    reply_to: str | None = None,
    send_at: datetime | None = None,
    idempotency_key: str | None = None,
) -> mail_pb2.SendEmailRequest:
    """Build a ``SendEmailRequest``; see ``MailroomClient.send_email`` for the arguments.

    Raises:
        ValueError: ``send_at`` is a naive datetime, or ``idempotency_key`` is empty.
    """
    if idempotency_key is None:
        idempotency_key = new_idempotency_key()
    elif not idempotency_key:
        raise ValueError("idempotency_key must not be empty; pass None to generate one")
    request = mail_pb2.SendEmailRequest(
        to=_addresses(to),
        cc=_addresses(cc),
        bcc=_addresses(bcc),
        title=title,
        content=content,
        html=html or "",
        from_address=from_ or "",
        reply_to=reply_to or "",
        idempotency_key=idempotency_key,
    )
    if send_at is not None:
        request.send_at.CopyFrom(timestamp_from_datetime(send_at))
    return request


def _addresses(value: str | Iterable[str]) -> list[str]:
    """Return a list of addresses; a lone string is one address, not a list of characters."""
    if isinstance(value, str):
        return [value]
    return list(value)


def timestamp_from_datetime(value: datetime) -> timestamp_pb2.Timestamp:
    """Convert a timezone-aware datetime into a protobuf Timestamp.

    Raises:
        ValueError: ``value`` is naive: its instant would be a guess.
    """
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(
            "send_at must be timezone-aware, e.g. datetime.now(timezone.utc) + timedelta(hours=1)"
        )
    timestamp = timestamp_pb2.Timestamp()
    timestamp.FromDatetime(value.astimezone(UTC))
    return timestamp


def email_from_proto(message: mail_pb2.Email) -> Email:
    """Convert a ``mailroom.v1.Email`` message into an :class:`Email`."""
    return Email(
        id=message.id,
        status=EmailStatus.from_proto(message.status),
        to=list(message.to),
        cc=list(message.cc),
        bcc=list(message.bcc),
        title=message.title,
        content=message.content,
        html=message.html or None,
        from_address=message.from_address or None,
        reply_to=message.reply_to or None,
        message_id=message.message_id or None,
        create_time=_datetime(message, "create_time"),
        update_time=_datetime(message, "update_time"),
        send_at=_datetime(message, "send_at"),
        sent_time=_datetime(message, "sent_time"),
        provider=message.provider or None,
        provider_message_id=message.provider_message_id or None,
        last_error=message.last_error or None,
        attempts=[attempt_from_proto(a) for a in message.attempts],
    )


def attempt_from_proto(message: mail_pb2.Attempt) -> Attempt:
    """Convert a ``mailroom.v1.Attempt`` message into an :class:`Attempt`."""
    duration: timedelta | None = None
    if message.HasField("duration"):
        duration = message.duration.ToTimedelta()
    return Attempt(
        provider=message.provider,
        outcome=AttemptOutcome.from_proto(message.outcome),
        start_time=_datetime(message, "start_time"),
        duration=duration,
        error=message.error or None,
        response=message.response or None,
        worker=message.worker or None,
    )


def _datetime(
    message: mail_pb2.Email | mail_pb2.Attempt,
    field: str,
) -> datetime | None:
    """Return a Timestamp field as an aware UTC datetime, or ``None`` when it is unset."""
    if not message.HasField(field):
        return None
    timestamp: timestamp_pb2.Timestamp = getattr(message, field)
    return timestamp.ToDatetime(tzinfo=UTC)
