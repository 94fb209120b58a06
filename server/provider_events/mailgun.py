"""Mailgun webhooks: one JSON event, signed with HMAC-SHA256 of the signing key.

The body is ``{"signature": {"timestamp", "token", "signature"}, "event-data": {...}}``;
``signature`` is the hex HMAC-SHA256 of ``timestamp + token`` keyed with the account's HTTP
webhook signing key. ``event-data.id`` is the event's id; ``event-data.message.headers.message-id``
is the Message-ID Mailgun sent with (ours: the send sets ``h:Message-Id``), which is also the
id it answered the send with, in angle brackets.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Any

from core.errors import Unauthenticated
from core.settings import ProviderEventSettings
from core.store.events import EventType, ProviderEvent
from server.provider_events.base import bad_body, classify, load_json, text, unix_json_event

_TYPES = {
    "delivered": EventType.DELIVERED,
    "failed": EventType.BOUNCED,
    "opened": EventType.OPENED,
    "clicked": EventType.CLICKED,
    "unsubscribed": EventType.UNSUBSCRIBED,
    "complained": EventType.COMPLAINED,
    "rejected": EventType.REJECTED,
}
#: Known, and not an outcome: not stored.
IGNORED = frozenset({"accepted", "stored", "list_member_uploaded", "list_uploaded"})


def expected_signature(key: str, timestamp: str, token: str) -> str:
    """The hex HMAC-SHA256 Mailgun sends for ``timestamp`` and ``token``."""
    return hmac.new(key.encode(), f"{timestamp}{token}".encode(), hashlib.sha256).hexdigest()


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def normalize(data: dict[str, Any]) -> ProviderEvent | None:
    """Mailgun's ``event-data``, normalized (None when it is ignored)."""
    raw_type = text(data.get("event"))
    kind = classify(raw_type, _TYPES, IGNORED)
    if kind is None:
        return None
    bounce_type = ""
    reason = text(data.get("reason"))
    if kind == EventType.BOUNCED:
        if reason.startswith("suppress-"):
            # Mailgun dropped it for its own suppression list: never sent.
            kind = EventType.REJECTED
        else:
            bounce_type = "hard" if text(data.get("severity")) == "permanent" else "soft"
    status = _dict(data.get("delivery-status"))
    code = text(status.get("enhanced-code") or status.get("code"))
    description = text(status.get("description") or status.get("message") or reason)
    message_id = text(_dict(_dict(data.get("message")).get("headers")).get("message-id"))
    return unix_json_event(
        "mailgun",
        data,
        kind,
        raw_type,
        recipient_key="recipient",
        event_id_key="id",
        provider_message_ids=(message_id,) if message_id else (),
        message_id=message_id,
        bounce_type=bounce_type,
        diagnostic_code=code,
        description=description,
    )


class MailgunWebhook:
    """Mailgun's signed webhooks."""

    name = "mailgun"

    def __init__(self, settings: ProviderEventSettings) -> None:
        secret = settings.mailgun_signing_key
        self._key = secret.get_secret_value() if secret is not None else ""

    def receive(self, body: bytes, headers: Mapping[str, str]) -> list[ProviderEvent]:
        """Verify the body's signature object, then normalize its event (see the Protocol)."""
        if not self._key:
            raise Unauthenticated("Mailgun events are not configured (no signing key)")
        document = load_json(body)
        signature = _dict(document.get("signature") if isinstance(document, dict) else None)
        timestamp, token = text(signature.get("timestamp")), text(signature.get("token"))
        given = text(signature.get("signature"))
        if not (timestamp and token and given):
            raise Unauthenticated("the Mailgun signature object is missing or incomplete")
        if not hmac.compare_digest(expected_signature(self._key, timestamp, token), given):
            raise Unauthenticated("the Mailgun signature does not match")
        data = document.get("event-data")
        if not isinstance(data, dict):
            raise bad_body("Mailgun sends an event-data object")
        event = normalize(data)
        return [event] if event is not None else []
