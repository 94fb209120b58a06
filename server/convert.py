"""Converting stored documents to protobuf messages."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from core.store.documents import Attempt, Email, EmailEvent, RecipientStatus, StoredAttachment
from core.store.views import DocumentView
from mailroom.v1 import mail_pb2


def _timestamp(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    ts = Timestamp()
    ts.FromDatetime(value.replace(tzinfo=UTC) if value.tzinfo is None else value)
    return ts


def attempt_to_proto(attempt: Attempt | DocumentView) -> mail_pb2.Attempt:
    """Convert one stored attempt."""
    duration = Duration()
    duration.FromMilliseconds(int(attempt.duration_ms or 0))
    return mail_pb2.Attempt(
        provider=attempt.provider or "",
        start_time=_timestamp(attempt.started_at),
        duration=duration,
        outcome=mail_pb2.AttemptOutcome.Value(f"ATTEMPT_OUTCOME_{attempt.outcome}"),  # type: ignore[arg-type]
        error=attempt.error or "",
        response=attempt.response or "",
        worker=attempt.worker or "",
    )


def attachment_to_proto(
    attachment: StoredAttachment | DocumentView, *, full: bool = True
) -> mail_pb2.Attachment:
    """Convert one stored attachment; its content only when ``full``."""
    content = bytes(attachment.content or b"") if full else b""
    return mail_pb2.Attachment(
        filename=attachment.filename or "",
        content_type=attachment.content_type or "",
        content=content,
        content_id=attachment.content_id or "",
        size=int(attachment.size or 0),
    )


def event_to_proto(event: EmailEvent | DocumentView) -> mail_pb2.EmailEvent:
    """Convert one provider event of an email."""
    return mail_pb2.EmailEvent(
        id=event.key or "",
        type=mail_pb2.EmailEventType.Value(f"EMAIL_EVENT_TYPE_{event.type}"),  # type: ignore[arg-type]
        provider=event.provider or "",
        recipient=event.recipient or "",
        time=_timestamp(event.occurred_at),
        bounce_type=event.bounce_type or "",
        diagnostic_code=event.diagnostic_code or "",
        description=event.description or "",
        url=event.url or "",
    )


def recipient_to_proto(summary: RecipientStatus | DocumentView) -> mail_pb2.RecipientSummary:
    """Convert one recipient's summary status."""
    return mail_pb2.RecipientSummary(
        address=summary.address or "",
        status=mail_pb2.RecipientStatus.Value(f"RECIPIENT_STATUS_{summary.status}"),  # type: ignore[arg-type]
        update_time=_timestamp(summary.updated_at),
        diagnostic_code=summary.diagnostic_code or "",
    )


def email_to_proto(email: Email | DocumentView, *, full: bool = True) -> mail_pb2.Email:
    """Convert a stored email, with its attempts.

    Args:
        email: The stored email, or a view of its raw document (ListEmails' pages).
        full: Everything (GetEmail, ListEmails' FULL view). When False (the BASIC view) the
            bodies, the attachments' contents and the headers are left out; the title, the
            attachments' names, types, content ids and sizes, the tags and the metadata are kept.

    Returns:
        The API's Email message.
    """
    return mail_pb2.Email(
        id=str(email.id),
        status=mail_pb2.EmailStatus.Value(f"EMAIL_STATUS_{email.status}"),  # type: ignore[arg-type]
        to=list(email.to),
        cc=list(email.cc),
        bcc=list(email.bcc),
        title=email.subject or "",
        content=(email.text or "") if full else "",
        html=(email.html or "") if full else "",
        from_address=email.from_address or "",
        reply_to=email.reply_to or "",
        message_id=email.message_id or "",
        create_time=_timestamp(email.created_at),
        update_time=_timestamp(email.updated_at),
        send_at=_timestamp(email.send_at),
        sent_time=_timestamp(email.sent_at),
        provider=email.provider or "",
        provider_message_id=email.provider_message_id or "",
        last_error=email.last_error or "",
        attempts=[attempt_to_proto(a) for a in email.attempts],
        attachments=[attachment_to_proto(a, full=full) for a in email.attachments],
        headers={str(k): str(v) for k, v in (email.headers or {}).items()} if full else {},
        tags=list(email.tags or []),
        metadata={str(k): str(v) for k, v in (email.metadata or {}).items()},
        purge_time=_timestamp(email.purged_at),
        events=[event_to_proto(e) for e in email.events or []],
        recipient_statuses=[recipient_to_proto(r) for r in email.recipient_statuses or []],
    )
