"""Postmark webhooks: one JSON record per request, authenticated by basic auth.

Postmark documents putting credentials in the webhook URL
(``https://user:pass@host/api/providers/postmark/events``); they arrive as an
``Authorization: Basic`` header. ``RecordType`` tells the record apart (``Delivery``, ``Bounce``,
``SpamComplaint``, ``Open``, ``Click``, ``SubscriptionChange``); ``MessageID`` is the id Postmark
answered the send with. Only bounces and complaints carry an ``ID``; other records are deduped
by a hash of the record.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Mapping
from typing import Any

from core.errors import Unauthenticated
from core.settings import ProviderEventSettings
from core.store.events import EventType, ProviderEvent
from server.provider_events.base import bad_body, from_iso, load_json, text

#: Bounce types that say the address will never take mail.
HARD_BOUNCES = frozenset({"HardBounce", "BadEmailAddress", "ManuallyDeactivated", "DMARCPolicy"})


def _bounce(record: dict[str, Any]) -> tuple[EventType, str]:
    kind = text(record.get("Type"))
    if kind == "SpamComplaint":
        return EventType.COMPLAINED, ""
    if kind == "Unsubscribe":
        return EventType.UNSUBSCRIBED, ""
    return EventType.BOUNCED, "hard" if kind in HARD_BOUNCES else "soft"


def normalize(record: dict[str, Any]) -> ProviderEvent | None:
    """One Postmark record, normalized (None when it is ignored)."""
    raw_type = text(record.get("RecordType"))
    bounce_type, url, event_id = "", "", ""
    recipient = text(record.get("Recipient") or record.get("Email"))
    when = record.get("DeliveredAt") or record.get("ReceivedAt") or record.get("ChangedAt")
    if raw_type == "Delivery":
        kind = EventType.DELIVERED
    elif raw_type in ("Bounce", "SpamComplaint"):
        kind, bounce_type = _bounce(record)
        event_id = text(record.get("ID"))
        when = record.get("BouncedAt")
    elif raw_type == "Open":
        kind = EventType.OPENED
    elif raw_type == "Click":
        kind, url = EventType.CLICKED, text(record.get("OriginalLink"))
    elif raw_type == "SubscriptionChange":
        # Bounces and complaints arrive as their own records; a manual one is an unsubscribe.
        manual = text(record.get("SuppressionReason")) == "ManualSuppression"
        if not (record.get("SuppressSending") and manual):
            return None
        kind = EventType.UNSUBSCRIBED
    else:
        kind = EventType.UNKNOWN
    if event_id:
        event_id = f"{raw_type}:{event_id}"
    message_id = text(record.get("MessageID"))
    return ProviderEvent(
        provider="postmark",
        type=kind,
        raw_type=raw_type,
        recipient=recipient,
        occurred_at=from_iso(when),
        event_id=event_id,
        provider_message_ids=(message_id,) if message_id else (),
        bounce_type=bounce_type,
        diagnostic_code=text(record.get("Details")) if kind == EventType.BOUNCED else "",
        description=text(record.get("Description")),
        url=url,
        raw=record,
    )


class PostmarkWebhook:
    """Postmark's webhooks behind basic auth."""

    name = "postmark"

    def __init__(self, settings: ProviderEventSettings) -> None:
        password = settings.postmark_password
        self._username = settings.postmark_username or ""
        self._password = password.get_secret_value() if password is not None else ""

    def verify(self, headers: Mapping[str, str]) -> None:
        """Check the basic auth credentials.

        Raises:
            Unauthenticated: None configured, none given, or wrong ones.
        """
        if not (self._username and self._password):
            raise Unauthenticated("Postmark events are not configured (no credentials)")
        scheme, _, value = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "basic":
            raise Unauthenticated("Postmark events need basic auth credentials")
        try:
            user, _, password = base64.b64decode(value, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise Unauthenticated("malformed basic auth credentials") from exc
        # Both compared, always, so timing tells nothing about which one was wrong.
        user_ok = hmac.compare_digest(user.encode(), self._username.encode())
        password_ok = hmac.compare_digest(password.encode(), self._password.encode())
        if not (user_ok and password_ok):
            raise Unauthenticated("wrong Postmark credentials")

    def receive(self, body: bytes, headers: Mapping[str, str]) -> list[ProviderEvent]:
        """Check the credentials, then normalize the record (see the Protocol)."""
        self.verify(headers)
        record = load_json(body)
        if not isinstance(record, dict):
            raise bad_body("Postmark sends one JSON object per request")
        event = normalize(record)
        return [event] if event is not None else []
