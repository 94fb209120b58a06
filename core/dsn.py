"""SMTP bounces: RFC 3464 delivery status notifications, normalized into provider events.

A DSN is a ``multipart/report; report-type=delivery-status`` message: a human-readable part, a
``message/delivery-status`` part (one block of per-message fields, then one block per
recipient: ``Final-Recipient``, ``Action``, ``Status``, ``Diagnostic-Code``…) and the original
message or its headers (``message/rfc822`` or ``text/rfc822-headers``), whose ``Message-ID`` is
ours: that is how the email is found. ``Action: failed`` with a 5.x.x status is a hard bounce,
with 4.x.x a soft one; ``delayed`` is DEFERRED; ``delivered``/``relayed``/``expanded`` are
DELIVERED. Parsed with the standard library's ``email`` package.
"""

from __future__ import annotations

from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import Message
from email.parser import HeaderParser
from email.utils import parsedate_to_datetime

from core.store.events import EventType, ProviderEvent


class NotADsn(ValueError):
    """The message is not a delivery status notification."""


def _when(*values: str | None) -> datetime:
    for value in values:
        if not value:
            continue
        try:
            moment = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            continue
        moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
        utc = moment.astimezone(UTC)
        return utc.replace(microsecond=utc.microsecond // 1000 * 1000, tzinfo=None)
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000, tzinfo=None)


def _typed_value(value: str | None) -> str:
    """The value of an RFC 3464 ``type; value`` field (``rfc822; a@b`` -> ``a@b``)."""
    if not value:
        return ""
    kind, sep, rest = str(value).partition(";")
    return rest.strip() if sep else kind.strip()


def _original_message_id(report: Message) -> str:
    for part in report.walk():
        kind = part.get_content_type()
        if kind == "message/rfc822":
            payload = part.get_payload()
            first = payload[0] if isinstance(payload, list) and payload else None
            if isinstance(first, Message) and first.get("Message-ID"):
                return str(first["Message-ID"]).strip()
        elif kind == "text/rfc822-headers":
            raw = part.get_payload(decode=True)
            text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
            headers = HeaderParser().parsestr(text)
            if headers.get("Message-ID"):
                return str(headers["Message-ID"]).strip()
    return ""


def _status_blocks(report: Message) -> list[Message]:
    for part in report.walk():
        if part.get_content_type() == "message/delivery-status":
            payload = part.get_payload()
            if isinstance(payload, list):
                return [block for block in payload if isinstance(block, Message)]
    raise NotADsn("no message/delivery-status part (not an RFC 3464 report)")


def _recipient_event(
    block: Message, per_message: Message, dsn: Message, original_id: str
) -> ProviderEvent | None:
    recipient = _typed_value(block.get("Final-Recipient") or block.get("Original-Recipient"))
    action = str(block.get("Action", "")).strip().lower()
    status = str(block.get("Status", "")).strip()
    # Kept whole ("smtp; 550 5.1.1 …"), as SES reports it; the status is the code.
    diagnostic = str(block.get("Diagnostic-Code", "")).strip()
    if action == "failed":
        kind, bounce = EventType.BOUNCED, "hard" if status.startswith("5") else "soft"
    elif action == "delayed":
        kind, bounce = EventType.DEFERRED, ""
    elif action in ("delivered", "relayed", "expanded"):
        kind, bounce = EventType.DELIVERED, ""
    elif not recipient:
        return None
    else:
        kind, bounce = EventType.UNKNOWN, ""
    dsn_id = str(dsn.get("Message-ID", "")).strip()
    return ProviderEvent(
        provider="smtp",
        type=kind,
        raw_type=f"dsn:{action}",
        recipient=recipient,
        occurred_at=_when(
            block.get("Last-Attempt-Date"), per_message.get("Arrival-Date"), dsn.get("Date")
        ),
        event_id=f"{dsn_id}:{recipient}" if dsn_id else "",
        message_id=original_id,
        bounce_type=bounce,
        diagnostic_code=status,
        description=diagnostic,
        raw={
            "dsn_message_id": dsn_id,
            "reporting_mta": _typed_value(per_message.get("Reporting-MTA")),
            "fields": {str(k): str(v) for k, v in block.items()},
        },
    )


def parse_dsn(data: bytes) -> list[ProviderEvent]:
    """The events of one DSN, one per recipient block.

    Raises:
        NotADsn: The message has no delivery-status part.
    """
    dsn = message_from_bytes(data, policy=policy.compat32)
    blocks = _status_blocks(dsn)
    if not blocks:
        raise NotADsn("the delivery-status part is empty")
    per_message, recipients = blocks[0], blocks[1:]
    original_id = _original_message_id(dsn)
    events = [_recipient_event(b, per_message, dsn, original_id) for b in recipients]
    return [e for e in events if e is not None]
