"""Validation of SendEmail requests: every violation names its field.

The invariant, enforced by ``tests/unit/server/test_validation_properties.py`` (hypothesis):
whatever this module accepts, the MIME builder (``workers/mime.py``) builds, and the parsed
message has the same recipients, subject and bodies. The header rules it relies on are shared
with the builder in :mod:`core.addresses`. Addresses are checked with the email-validator
library, syntax only (no DNS lookups); internationalized domains are kept in their IDNA form
when the local part is ASCII. Attachments, extra headers, tags and metadata are checked in
:mod:`server.validation_fields` (its docstring lists the field paths their violations name).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from core.addresses import AddressError, domain_of, header_unsafe, parse_address
from core.errors import FieldViolation, InvalidArgument, PermissionDenied
from core.settings import Settings
from core.store.repository import NewAttachment, NewEmail
from mailroom.v1 import mail_pb2
from server.validation_fields import (
    check_attachments,
    check_headers,
    check_metadata,
    check_tags,
)

MAX_IDEMPOTENCY_KEY_LENGTH = 255


def _check_address(value: str, field: str, violations: list[FieldViolation]) -> str:
    """Validate ``Name <addr>`` or ``addr``; return it normalised, or "" after a violation."""
    try:
        return str(parse_address(value))
    except AddressError as exc:
        violations.append(FieldViolation(field, str(exc)))
        return ""


def _check_body(value: str, field: str, violations: list[FieldViolation]) -> None:
    if "\x00" in value:
        violations.append(FieldViolation(field, "must not contain NUL"))


def _check_sender(from_address: str, settings: Settings) -> None:
    """Refuse a ``from`` outside ``settings.allowed_from_domains`` (when that list is set)."""
    allowed = {domain_of("@" + d) for d in settings.allowed_from_domains if d.strip()}
    if not allowed:
        return
    domain = domain_of(parse_address(from_address).addr_spec)
    if domain not in allowed:
        raise PermissionDenied(
            f"from: sending from the domain {domain!r} is not allowed on this server"
        )


def _check_size(
    request: mail_pb2.SendEmailRequest, settings: Settings, violations: list[FieldViolation]
) -> None:
    """Bodies (title, content, html: UTF-8) and attachments (decoded) within max_email_bytes.

    Names the larger body when the bodies alone are too large, else ``attachments``.
    """
    limit = settings.max_email_bytes
    bodies = sum(len(text.encode()) for text in (request.title, request.content, request.html))
    size = bodies + sum(len(a.content) for a in request.attachments)
    if size <= limit:
        return
    field = "attachments"
    if bodies > limit:
        field = "html" if len(request.html) > len(request.content) else "content"
    violations.append(
        FieldViolation(field, f"the email is {size} bytes; at most {limit} bytes are accepted")
    )


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

    # Leading and trailing blanks do not survive a header's parse: they are not part of it.
    title = request.title.strip()
    unsafe = header_unsafe(title)
    if unsafe:
        violations.append(FieldViolation("title", unsafe))
    elif not title.strip():
        violations.append(FieldViolation("title", "must not be empty"))
    elif len(title) > settings.max_title_chars:
        violations.append(
            FieldViolation("title", f"{len(title)} characters; at most {settings.max_title_chars}")
        )
    if not request.content.strip() and not request.html.strip():
        violations.append(FieldViolation("content", "content or html must not be empty"))
    _check_body(request.content, "content", violations)
    _check_body(request.html, "html", violations)

    from_address = settings.default_from
    if request.from_address:
        from_address = _check_address(request.from_address, "from", violations)
    reply_to = ""
    if request.reply_to:
        reply_to = _check_address(request.reply_to, "reply_to", violations)

    # Most emails have none of these: skip the calls (the send path is hot).
    attachments: list[NewAttachment] = []
    headers: dict[str, str] = {}
    tags: list[str] = []
    metadata: dict[str, str] = {}
    if request.attachments:
        attachments = check_attachments(request.attachments, settings, violations)
    if request.headers:
        headers = check_headers(request.headers, violations)
    if request.tags:
        tags = check_tags(request.tags, settings, violations)
    if request.metadata:
        metadata = check_metadata(request.metadata, settings, violations)
    _check_size(request, settings, violations)

    key = idempotency_key or request.idempotency_key
    if len(key) > MAX_IDEMPOTENCY_KEY_LENGTH or header_unsafe(key):
        violations.append(
            FieldViolation(
                "idempotency_key",
                f"at most {MAX_IDEMPOTENCY_KEY_LENGTH} characters, no control characters",
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
    if request.from_address:
        _check_sender(from_address, settings)
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
        attachments=attachments,
        headers=headers,
        tags=tags,
        metadata=metadata,
    )
