"""SendGrid's Event Webhook: ECDSA P-256 signed batches of events.

SendGrid signs ``timestamp + body`` (the ``X-Twilio-Email-Event-Webhook-Timestamp`` header, then
the raw body) with ECDSA over SHA-256 and sends the base64 DER signature in
``X-Twilio-Email-Event-Webhook-Signature``; the "verification key" shown in its mail settings is
the base64 DER public key. The body is a JSON array of events, each with ``sg_event_id`` (the
dedupe key) and ``sg_message_id``: the ``X-Message-Id`` SendGrid answered the send with, followed
by ``.filter…``/``.recvd…``.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from core.errors import Unauthenticated
from core.settings import ProviderEventSettings
from core.store.events import EventType, ProviderEvent
from server.provider_events.base import bad_body, classify, load_json, text, unix_json_event

SIGNATURE_HEADER = "x-twilio-email-event-webhook-signature"
TIMESTAMP_HEADER = "x-twilio-email-event-webhook-timestamp"

_TYPES = {
    "delivered": EventType.DELIVERED,
    "deferred": EventType.DEFERRED,
    "bounce": EventType.BOUNCED,
    "dropped": EventType.REJECTED,
    "spamreport": EventType.COMPLAINED,
    "open": EventType.OPENED,
    "click": EventType.CLICKED,
    "unsubscribe": EventType.UNSUBSCRIBED,
    "group_unsubscribe": EventType.UNSUBSCRIBED,
}
#: Known, and not an outcome: not stored.
IGNORED = frozenset({"processed", "group_resubscribe"})


def load_public_key(value: str) -> ec.EllipticCurvePublicKey:
    """SendGrid's verification key (base64 DER, or PEM) as an EC public key.

    Raises:
        ValueError: It is neither, or not an EC key.
    """
    raw = value.strip()
    if raw.startswith("-----BEGIN"):
        key = serialization.load_pem_public_key(raw.encode())
    else:
        key = serialization.load_der_public_key(base64.b64decode(raw))
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ValueError("not an elliptic curve public key")
    return key


def message_ids(sg_message_id: str) -> tuple[str, ...]:
    """The send's ``X-Message-Id`` candidates in an ``sg_message_id``."""
    if not sg_message_id:
        return ()
    for marker in (".filter", ".recvd"):
        if marker in sg_message_id:
            return (sg_message_id.split(marker, 1)[0], sg_message_id)
    return (sg_message_id,)


def normalize(item: dict[str, Any]) -> ProviderEvent | None:
    """One SendGrid event, normalized (None when it is ignored)."""
    raw_type = text(item.get("event"))
    kind = classify(raw_type, _TYPES, IGNORED)
    if kind is None:
        return None
    bounce_type = ""
    if kind == EventType.BOUNCED:
        # "blocked" is SendGrid's temporary refusal; "bounce" a permanent one.
        bounce_type = "soft" if text(item.get("type")) == "blocked" else "hard"
    diagnostic = text(item.get("status"))
    description = text(item.get("reason") or item.get("response"))
    smtp_id = text(item.get("smtp-id"))
    return unix_json_event(
        "sendgrid",
        item,
        kind,
        raw_type,
        recipient_key="email",
        event_id_key="sg_event_id",
        provider_message_ids=message_ids(text(item.get("sg_message_id"))),
        message_id=smtp_id,
        bounce_type=bounce_type,
        diagnostic_code=diagnostic,
        description=description,
    )


class SendGridWebhook:
    """SendGrid's signed Event Webhook."""

    name = "sendgrid"

    def __init__(self, settings: ProviderEventSettings) -> None:
        secret = settings.sendgrid_public_key
        self._key: ec.EllipticCurvePublicKey | None = None
        self._key_error = "SendGrid events are not configured (no verification key)"
        if secret is not None:
            try:
                self._key = load_public_key(secret.get_secret_value())
            except (ValueError, binascii.Error):
                self._key_error = "the configured SendGrid verification key is not an EC key"

    def verify(self, body: bytes, headers: Mapping[str, str]) -> None:
        """Check the ECDSA signature of ``timestamp + body``.

        Raises:
            Unauthenticated: No key configured, a header missing, or a wrong signature.
        """
        if self._key is None:
            raise Unauthenticated(self._key_error)
        signature = headers.get(SIGNATURE_HEADER, "")
        timestamp = headers.get(TIMESTAMP_HEADER, "")
        if not signature or not timestamp:
            raise Unauthenticated(f"{SIGNATURE_HEADER} and {TIMESTAMP_HEADER} are required")
        try:
            self._key.verify(
                base64.b64decode(signature), timestamp.encode() + body, ec.ECDSA(hashes.SHA256())
            )
        except (InvalidSignature, binascii.Error, ValueError) as exc:
            raise Unauthenticated("the SendGrid signature does not match") from exc

    def receive(self, body: bytes, headers: Mapping[str, str]) -> list[ProviderEvent]:
        """Verify, then normalize every event of the batch (see the Protocol)."""
        self.verify(body, headers)
        items = load_json(body)
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise bad_body("SendGrid sends a JSON array of event objects")
        return [e for e in (normalize(i) for i in items) if e is not None]
