"""What every provider's webhook module provides, and helpers they share.

A module verifies that a request comes from its provider (signature, or credentials) before it
parses anything into events: a request that fails answers UNAUTHENTICATED (HTTP 401) and nothing
is stored. A body that is not what the provider sends answers INVALID_ARGUMENT naming ``body``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

from core.errors import FieldViolation, InvalidArgument
from core.store.events import EventType, ProviderEvent


class ProviderWebhook(Protocol):
    """One provider's inbound events endpoint."""

    name: str

    def receive(self, body: bytes, headers: Mapping[str, str]) -> list[ProviderEvent]:
        """Authenticate a request and return its normalized events.

        Args:
            body: The request body, byte for byte as the provider sent it.
            headers: The request headers, names lowercased.

        Raises:
            Unauthenticated: The signature or credentials are missing or wrong.
            InvalidArgument: The body is not what the provider sends.
        """
        ...


class SignatureInvalid(Exception):
    """Raised inside a module when a check fails; the module turns it into Unauthenticated."""


def bad_body(description: str) -> InvalidArgument:
    """The error for a body that is not what the provider sends."""
    return InvalidArgument([FieldViolation("body", description)])


def load_json(body: bytes) -> Any:
    """Parse a JSON body.

    Raises:
        InvalidArgument: It is not JSON (naming ``body``).
    """
    try:
        return json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise bad_body("not a JSON document") from exc


def from_unix(value: Any) -> datetime:
    """A Unix time (seconds, possibly fractional or a string) as naive UTC; now if unusable."""
    try:
        moment = datetime.fromtimestamp(float(value), UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        moment = datetime.now(UTC)
    return naive_ms(moment)


def from_iso(value: Any) -> datetime:
    """An ISO 8601 time (``2019-11-05T16:33:54.9070259Z``) as naive UTC; now if unusable."""
    moment = datetime.now(UTC)
    if isinstance(value, str) and value:
        text = value.strip().replace("Z", "+00:00")
        # Python before 3.11's fromisoformat took at most 6 fraction digits; .NET sends 7.
        head, dot, rest = text.partition(".")
        if dot:
            digits = "".join(c for c in rest if c.isdigit())
            zone = rest[len(digits) :]
            text = f"{head}.{digits[:6].ljust(6, '0')}{zone}"
        try:
            parsed = datetime.fromisoformat(text)
            moment = parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
        except ValueError:
            pass
    return naive_ms(moment)


def naive_ms(moment: datetime) -> datetime:
    """A time as naive UTC truncated to milliseconds, as BSON stores it."""
    utc = moment.astimezone(UTC)
    return utc.replace(microsecond=utc.microsecond // 1000 * 1000, tzinfo=None)


def text(value: Any) -> str:
    """A JSON value as text ("" for null)."""
    return "" if value is None else str(value)


def classify(
    raw_type: str, types: Mapping[str, EventType], ignored: frozenset[str]
) -> EventType | None:
    """A provider's event type as ours: None when it is known and not an outcome (not stored)."""
    if raw_type in ignored:
        return None
    return types.get(raw_type, EventType.UNKNOWN)


def unix_json_event(
    provider: str,
    record: dict[str, Any],
    kind: EventType,
    raw_type: str,
    *,
    recipient_key: str,
    event_id_key: str,
    provider_message_ids: tuple[str, ...],
    message_id: str,
    bounce_type: str,
    diagnostic_code: str,
    description: str,
) -> ProviderEvent:
    """An event from a JSON record with a Unix ``timestamp`` and, for clicks, a ``url``.

    Mailgun's ``event-data`` and SendGrid's events share that shape.

    Args:
        provider: The provider's name.
        record: The provider's event, stored as the event's ``raw``.
        kind: Our event type.
        raw_type: The provider's event type.
        recipient_key: The record's key of the recipient's address.
        event_id_key: The record's key of the provider's event id.
        provider_message_ids: The ids the provider may have answered the send with.
        message_id: The Message-ID header the provider reports ("" if none).
        bounce_type: "hard", "soft" or "".
        diagnostic_code: The SMTP status or code the provider reports.
        description: The provider's words for what happened.
    """
    return ProviderEvent(
        provider=provider,
        type=kind,
        raw_type=raw_type,
        recipient=text(record.get(recipient_key)),
        occurred_at=from_unix(record.get("timestamp")),
        event_id=text(record.get(event_id_key)),
        provider_message_ids=provider_message_ids,
        message_id=message_id,
        bounce_type=bounce_type,
        diagnostic_code=diagnostic_code,
        description=description,
        url=text(record.get("url")) if kind == EventType.CLICKED else "",
        raw=record,
    )
