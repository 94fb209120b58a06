"""Validation of SendEmail requests: every violation names its field.

Addresses are checked with the email-validator library, syntax only (no DNS lookups).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import formataddr, parseaddr

from email_validator import EmailNotValidError, validate_email

from core.errors import FieldViolation, InvalidArgument
from core.settings import Settings
from core.store.repository import NewEmail
from mailroom.v1 import mail_pb2

_CRLF = ("\r", "\n")
MAX_IDEMPOTENCY_KEY_LENGTH = 255


def _check_address(value: str, field: str, violations: list[FieldViolation]) -> str:
    """Validate ``Name <addr>`` or ``addr``; return it normalised, or "" after a violation."""
    if any(c in value for c in _CRLF):
        violations.append(FieldViolation(field, "must not contain CR or LF"))
        return ""
    if not value.strip():
        violations.append(FieldViolation(field, "must not be empty"))
        return ""
    name, address = parseaddr(value)
    if not address or ("<" in value and ">" not in value):
        violations.append(FieldViolation(field, f"{value!r} is not a valid email address"))
        return ""
    try:
        checked = validate_email(address, check_deliverability=False)
    except EmailNotValidError as exc:
        violations.append(FieldViolation(field, f"{value!r} is not a valid email address: {exc}"))
        return ""
    return formataddr((name, checked.normalized)) if name else checked.normalized


def _to_naive_utc(ts: datetime) -> datetime:
    return ts.astimezone(UTC).replace(tzinfo=None) if ts.tzinfo else ts


def validate_send_request(
    request: mail_pb2.SendEmailRequest,
    settings: Settings,
    *,
    idempotency_key: str = "",
    now: datetime | None = None,
) -> NewEmail:
    """Check a SendEmail request and return the email to store.

    Args:
        request: The request as received.
        settings: Limits and the default sender.
        idempotency_key: The key from the request or the ``idempotency-key`` metadata.
        now: The current time (naive UTC), for tests.

    Returns:
        The validated email.

    Raises:
        InvalidArgument: With one violation per offending field.
    """
    violations: list[FieldViolation] = []
    recipients: dict[str, list[str]] = {}
    for name in ("to", "cc", "bcc"):
        values = list(getattr(request, name))
        recipients[name] = [
            _check_address(value, f"{name}[{i}]", violations) for i, value in enumerate(values)
        ]
    if not request.to:
        violations.append(FieldViolation("to", "at least one recipient is required"))
    total = sum(len(v) for v in recipients.values())
    if total > settings.max_recipients:
        # Name the list that crossed the limit, counting to, then cc, then bcc.
        running, culprit = 0, "to"
        for name in ("to", "cc", "bcc"):
            running += len(recipients[name])
            if running > settings.max_recipients:
                culprit = name
                break
        violations.append(
            FieldViolation(
                culprit, f"{total} recipients in to, cc and bcc; at most {settings.max_recipients}"
            )
        )

    title = request.title
    if any(c in title for c in _CRLF):
        violations.append(FieldViolation("title", "must not contain CR or LF"))
    elif not title.strip():
        violations.append(FieldViolation("title", "must not be empty"))
    if not request.content.strip() and not request.html.strip():
        violations.append(FieldViolation("content", "content or html must not be empty"))

    from_address = settings.default_from
    if request.from_address:
        from_address = _check_address(request.from_address, "from", violations)
    reply_to = ""
    if request.reply_to:
        reply_to = _check_address(request.reply_to, "reply_to", violations)

    size = request.ByteSize()
    if size > settings.max_email_bytes:
        violations.append(
            FieldViolation(
                "html" if len(request.html) > len(request.content) else "content",
                f"the email is {size} bytes; at most {settings.max_email_bytes} bytes are accepted",
            )
        )

    key = idempotency_key or request.idempotency_key
    if len(key) > MAX_IDEMPOTENCY_KEY_LENGTH or any(c in key for c in _CRLF):
        violations.append(
            FieldViolation(
                "idempotency_key", f"at most {MAX_IDEMPOTENCY_KEY_LENGTH} characters, no CR or LF"
            )
        )

    send_at: datetime | None = None
    if request.HasField("send_at"):
        current = now or _to_naive_utc(datetime.now(UTC))
        try:
            send_at = _to_naive_utc(request.send_at.ToDatetime(tzinfo=UTC))
        except (ValueError, OverflowError) as exc:
            violations.append(FieldViolation("send_at", f"not a valid timestamp: {exc}"))
            send_at = None
        if send_at is not None and send_at - current > timedelta(days=settings.max_schedule_days):
            violations.append(
                FieldViolation(
                    "send_at", f"must be at most {settings.max_schedule_days} days ahead"
                )
            )

    if violations:
        raise InvalidArgument(violations)
    return NewEmail(
        to=recipients["to"],
        cc=recipients["cc"],
        bcc=recipients["bcc"],
        subject=title,
        text=request.content,
        html=request.html,
        from_address=from_address,
        reply_to=reply_to,
        send_at=send_at,
        idempotency_key=key,
    )
