"""Conversions between the SDK's Python types and the ``mailroom.v1`` protobuf messages."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta

from google.protobuf import timestamp_pb2

from mailroom.email_events import event_from_proto, summary_from_proto
from mailroom.errors import error_from_status
from mailroom.models import (
    Attempt,
    AttemptOutcome,
    BatchResponse,
    BatchResult,
    Email,
    EmailFilters,
    EmailPage,
    EmailStatus,
)
from mailroom.outgoing import Attachment, OutgoingEmail
from mailroom.suppressions import DroppedRecipient
from mailroom.v1 import mail_pb2

#: The page size ``list_emails`` asks for unless told otherwise (the server's default too).
DEFAULT_PAGE_SIZE = 50


def new_idempotency_key() -> str:
    """Return a fresh idempotency key: a random UUID."""
    return str(uuid.uuid4())


def get_email_request(email_id: str) -> mail_pb2.GetEmailRequest:
    """The GetEmail request for one email."""
    return mail_pb2.GetEmailRequest(id=email_id)


def cancel_email_request(email_id: str) -> mail_pb2.CancelEmailRequest:
    """The CancelEmail request for one email."""
    return mail_pb2.CancelEmailRequest(id=email_id)


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
    attachments: Iterable[Attachment] = (),
    headers: Mapping[str, str] | None = None,
    tags: str | Iterable[str] = (),
    metadata: Mapping[str, str] | None = None,
) -> mail_pb2.SendEmailRequest:
    """Build a ``SendEmailRequest``; see ``MailroomClient.send_email`` for the arguments.

    Raises:
        ValueError: ``send_at`` is a naive datetime, or ``idempotency_key`` is empty.
        TypeError: An item of ``attachments`` is not an :class:`Attachment`.
    """
    if idempotency_key is None:
        idempotency_key = new_idempotency_key()
    elif not idempotency_key:
        raise ValueError("idempotency_key must not be empty; pass None to generate one")
    request = mail_pb2.SendEmailRequest(
        to=_strings(to),
        cc=_strings(cc),
        bcc=_strings(bcc),
        title=title,
        content=content,
        html=html or "",
        from_address=from_ or "",
        reply_to=reply_to or "",
        idempotency_key=idempotency_key,
        attachments=[attachment_to_proto(a) for a in attachments],
        headers=dict(headers or {}),
        tags=_strings(tags),
        metadata=dict(metadata or {}),
    )
    if send_at is not None:
        request.send_at.CopyFrom(timestamp_from_datetime(send_at))
    return request


def send_request_from(email: OutgoingEmail) -> mail_pb2.SendEmailRequest:
    """Build the ``SendEmailRequest`` of one email of a batch (with a fresh key if it has none).

    Raises:
        TypeError: ``email`` is not an :class:`OutgoingEmail`.
        ValueError: As :func:`build_send_request`.
    """
    if not isinstance(email, OutgoingEmail):
        raise TypeError(f"batch items must be OutgoingEmail, not {type(email).__name__}")
    return build_send_request(
        email.to,
        email.title,
        email.content,
        cc=email.cc,
        bcc=email.bcc,
        html=email.html,
        from_=email.from_,
        reply_to=email.reply_to,
        send_at=email.send_at,
        idempotency_key=email.idempotency_key,
        attachments=email.attachments,
        headers=email.headers,
        tags=email.tags,
        metadata=email.metadata,
    )


def build_batch_request(emails: Iterable[OutgoingEmail]) -> mail_pb2.SendEmailBatchRequest:
    """Build a ``SendEmailBatchRequest``, each email with its own idempotency key.

    The keys are generated once, here: gRPC's retries resend this very request, so a retried
    batch repeats every key and the server answers each with the email it already accepted.

    Raises:
        TypeError: An item is not an :class:`OutgoingEmail`.
        ValueError: An item has a naive ``send_at`` or an empty ``idempotency_key``.
    """
    requests = []
    for index, email in enumerate(emails):
        try:
            requests.append(send_request_from(email))
        except (TypeError, ValueError) as err:
            # Name the item, as the server names its violations (emails[i].field).
            raise type(err)(f"emails[{index}]: {err}") from err
    return mail_pb2.SendEmailBatchRequest(emails=requests)


def batch_response_from_proto(message: mail_pb2.SendEmailBatchResponse) -> BatchResponse:
    """Convert a ``SendEmailBatchResponse`` into a :class:`BatchResponse`."""
    results = [
        BatchResult(
            index=index,
            id=result.id or None,
            error=error_from_status(result.error) if result.HasField("error") else None,
            dropped_recipients=[DroppedRecipient.from_proto(d) for d in result.dropped_recipients],
        )
        for index, result in enumerate(message.results)
    ]
    return BatchResponse(
        results=results,
        accepted_count=message.accepted_count,
        refused_count=message.refused_count,
    )


_FILTERS = frozenset(EmailFilters.__annotations__)


def build_list_request(
    filters: EmailFilters,
    *,
    page_size: int = DEFAULT_PAGE_SIZE,
    page_token: str | None = None,
    full: bool = False,
) -> mail_pb2.ListEmailsRequest:
    """Build a ``ListEmailsRequest``; see ``MailroomClient.list_emails`` for the arguments.

    Raises:
        TypeError: ``filters`` has a key that is not a filter (a misspelt keyword argument).
        ValueError: ``created_after`` or ``created_before`` is a naive datetime.
    """
    unknown = sorted(set(filters) - _FILTERS)
    if unknown:
        raise TypeError(f"unknown filter(s): {', '.join(unknown)}; known: {sorted(_FILTERS)}")
    request = mail_pb2.ListEmailsRequest(
        status=_status_names(filters.get("status")),
        recipient=filters.get("recipient") or "",
        tag=filters.get("tag") or "",
        metadata=dict(filters.get("metadata") or {}),
        provider=filters.get("provider") or "",
        idempotency_key=filters.get("idempotency_key") or "",
        page_size=page_size,
        page_token=page_token or "",
        view=mail_pb2.EMAIL_VIEW_FULL if full else mail_pb2.EMAIL_VIEW_BASIC,
    )
    created_after = filters.get("created_after")
    if created_after is not None:
        request.created_after.CopyFrom(timestamp_from_datetime(created_after, "created_after"))
    created_before = filters.get("created_before")
    if created_before is not None:
        request.created_before.CopyFrom(timestamp_from_datetime(created_before, "created_before"))
    return request


def _status_names(status: EmailStatus | Iterable[EmailStatus] | None) -> list[str]:
    """Return the ``mailroom.v1.EmailStatus`` names of the ``status`` filter (one or several).

    Raises:
        TypeError: A status is not an :class:`EmailStatus` (e.g. the string ``"SENT"``).
    """
    if status is None:
        return []
    statuses = [status] if isinstance(status, EmailStatus | str) else list(status)
    for item in statuses:
        if not isinstance(item, EmailStatus):
            raise TypeError(
                f"status must be EmailStatus members, e.g. EmailStatus.SENT; got {item!r}"
            )
    return [mail_pb2.EmailStatus.Name(item.value) for item in statuses]


def page_from_proto(message: mail_pb2.ListEmailsResponse) -> EmailPage:
    """Convert a ``ListEmailsResponse`` into an :class:`EmailPage`."""
    return EmailPage(
        emails=[email_from_proto(e) for e in message.emails],
        next_page_token=message.next_page_token or None,
    )


def _strings(value: str | Iterable[str]) -> list[str]:
    """Return a list of strings; a lone string is one item, not a list of characters."""
    if isinstance(value, str):
        return [value]
    return list(value)


def timestamp_from_datetime(value: datetime, field: str = "send_at") -> timestamp_pb2.Timestamp:
    """Convert a timezone-aware datetime into a protobuf Timestamp.

    Args:
        value: The datetime.
        field: The argument it came from, named in the error.

    Raises:
        ValueError: ``value`` is naive: its instant would be a guess.
    """
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(
            f"{field} must be timezone-aware, e.g. datetime.now(timezone.utc) + timedelta(hours=1)"
        )
    timestamp = timestamp_pb2.Timestamp()
    timestamp.FromDatetime(value.astimezone(UTC))
    return timestamp


def attachment_to_proto(attachment: Attachment) -> mail_pb2.Attachment:
    """Convert an :class:`Attachment` into a ``mailroom.v1.Attachment`` (``size`` is output only).

    Raises:
        TypeError: ``attachment`` is not an :class:`Attachment`.
    """
    if not isinstance(attachment, Attachment):
        raise TypeError(
            f"attachments must be mailroom.Attachment, not {type(attachment).__name__}; "
            "use Attachment.from_path(path) or Attachment(filename, content)"
        )
    return mail_pb2.Attachment(
        filename=attachment.filename,
        content_type=attachment.content_type,
        content=attachment.content,
        content_id=attachment.content_id,
    )


def attachment_from_proto(message: mail_pb2.Attachment) -> Attachment:
    """Convert a ``mailroom.v1.Attachment`` into an :class:`Attachment`."""
    return Attachment(
        filename=message.filename,
        content=message.content,
        content_type=message.content_type,
        content_id=message.content_id,
        # The server always sets size; an older one did not, so fall back to the content's.
        size=message.size or len(message.content),
    )


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
        attachments=[attachment_from_proto(a) for a in message.attachments],
        headers=dict(message.headers),
        tags=list(message.tags),
        metadata=dict(message.metadata),
        purge_time=_datetime(message, "purge_time"),
        events=[event_from_proto(e) for e in message.events],
        recipient_statuses=[summary_from_proto(r) for r in message.recipient_statuses],
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
