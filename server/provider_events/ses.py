"""Amazon SES events through SNS: signed SNS messages carrying SES notifications.

SNS signs each message with RSA (``SignatureVersion`` 1: SHA-1, 2: SHA-256) over the canonical
string of its fields, and names its signing certificate by ``SigningCertURL``, which must be an
https URL on ``sns.<region>.amazonaws.com`` (``MAILROOM_PROVIDER_EVENTS__SNS_TRUSTED_URL_PREFIXES``
adds prefixes, for tests). A ``SubscriptionConfirmation`` is confirmed by fetching its
``SubscribeURL`` (the same host rule). A ``Notification``'s ``Message`` is SES's JSON:
``notificationType`` (identity notifications) or ``eventType`` (configuration set events) with
``mail.messageId``, the id SES answered the send with. One SNS message becomes one event per
recipient, deduped by the SNS ``MessageId`` and the recipient.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import threading
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import httpx
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from core.errors import Unauthenticated
from core.settings import ProviderEventSettings
from core.store.events import EventType, ProviderEvent
from server.provider_events.base import bad_body, from_iso, load_json, text

log = logging.getLogger(__name__)

_SNS_HOST = re.compile(r"^sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?$")
_NOTIFICATION_FIELDS = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
_CONFIRMATION_FIELDS = (
    "Message",
    "MessageId",
    "SubscribeURL",
    "Timestamp",
    "Token",
    "TopicArn",
    "Type",
)
_SIMPLE = {
    "Delivery": EventType.DELIVERED,
    "Reject": EventType.REJECTED,
    "Rendering Failure": EventType.REJECTED,
    "Open": EventType.OPENED,
    "Click": EventType.CLICKED,
    "Subscription": EventType.UNSUBSCRIBED,
}
#: Known, and not an outcome: not stored.
IGNORED = frozenset({"Send", "AmazonSnsSubscriptionSucceeded"})


def string_to_sign(message: Mapping[str, Any]) -> bytes:
    """SNS's canonical string of a message: ``name`` newline ``value`` newline per signed field."""
    kind = message.get("Type")
    fields = _NOTIFICATION_FIELDS if kind == "Notification" else _CONFIRMATION_FIELDS
    parts = [f"{name}\n{message[name]}\n" for name in fields if message.get(name) is not None]
    return "".join(parts).encode()


class SnsVerifier:
    """Checks SNS signatures against certificates fetched from trusted URLs (cached)."""

    def __init__(self, trusted_prefixes: list[str], timeout_seconds: float) -> None:
        self._prefixes = tuple(trusted_prefixes)
        self._timeout = timeout_seconds
        self._certs: dict[str, rsa.RSAPublicKey] = {}
        self._lock = threading.Lock()

    def trusted(self, url: str, *, certificate: bool) -> bool:
        """Whether a URL is an SNS one (https on sns.<region>.amazonaws.com) or trusted."""
        if any(url.startswith(prefix) for prefix in self._prefixes):
            return True
        parts = urlsplit(url)
        if parts.scheme != "https" or parts.port not in (None, 443) or parts.username:
            return False
        if not _SNS_HOST.match(parts.hostname or ""):
            return False
        return parts.path.endswith(".pem") if certificate else True

    def _key(self, url: str) -> rsa.RSAPublicKey:
        with self._lock:
            cached = self._certs.get(url)
        if cached is not None:
            return cached
        try:
            response = httpx.get(url, timeout=self._timeout, follow_redirects=False)
            response.raise_for_status()
            key = x509.load_pem_x509_certificate(response.content).public_key()
        except (httpx.HTTPError, ValueError) as exc:
            log.warning("SNS signing certificate %s not usable: %s", url, exc)
            raise Unauthenticated("the SNS signing certificate could not be fetched") from exc
        if not isinstance(key, rsa.RSAPublicKey):
            raise Unauthenticated("the SNS signing certificate has no RSA key")
        with self._lock:
            self._certs[url] = key
        return key

    def verify(self, message: Mapping[str, Any]) -> None:
        """Check a message's signature.

        Raises:
            Unauthenticated: An untrusted certificate URL, an unknown version, a bad signature.
        """
        url = text(message.get("SigningCertURL") or message.get("SigningCertUrl"))
        if not self.trusted(url, certificate=True):
            raise Unauthenticated(
                "SigningCertURL is not an https URL on sns.<region>.amazonaws.com"
            )
        algorithm = {"1": hashes.SHA1(), "2": hashes.SHA256()}.get(
            text(message.get("SignatureVersion"))
        )
        if algorithm is None:
            raise Unauthenticated("unknown SNS SignatureVersion")
        try:
            signature = base64.b64decode(text(message.get("Signature")), validate=True)
            self._key(url).verify(signature, string_to_sign(message), padding.PKCS1v15(), algorithm)
        except (InvalidSignature, binascii.Error) as exc:
            raise Unauthenticated("the SNS signature does not match") from exc


def _recipients(detail: Mapping[str, Any], name: str) -> list[dict[str, Any]]:
    found = detail.get(name)
    return [r for r in found if isinstance(r, dict)] if isinstance(found, list) else []


def _our_message_id(mail: Mapping[str, Any]) -> str:
    common = mail.get("commonHeaders")
    if isinstance(common, dict) and common.get("messageId"):
        return text(common["messageId"])
    for header in mail.get("headers") or []:
        if isinstance(header, dict) and text(header.get("name")).lower() == "message-id":
            return text(header.get("value"))
    return ""


def normalize(sns_id: str, ses: Mapping[str, Any]) -> list[ProviderEvent]:
    """The events of one SES notification (one per recipient)."""
    raw_type = text(ses.get("eventType") or ses.get("notificationType"))
    if raw_type in IGNORED:
        return []
    mail = ses.get("mail") if isinstance(ses.get("mail"), dict) else {}
    assert isinstance(mail, dict)
    key = raw_type[:1].lower() + raw_type[1:].replace(" ", "")
    detail = ses.get(key) if isinstance(ses.get(key), dict) else {}
    assert isinstance(detail, dict)
    destination = [text(d) for d in mail.get("destination") or []]
    entries: list[tuple[str, EventType, str, str, str]] = []  # recipient, type, bounce, code, text
    if raw_type == "Bounce":
        hard = text(detail.get("bounceType")) == "Permanent"
        for r in _recipients(detail, "bouncedRecipients"):
            code = text(r.get("status"))
            entries.append(
                (text(r.get("emailAddress")), EventType.BOUNCED, "hard" if hard else "soft",
                 code, text(r.get("diagnosticCode")))
            )  # fmt: skip
    elif raw_type == "Complaint":
        reason = text(detail.get("complaintFeedbackType"))
        for r in _recipients(detail, "complainedRecipients"):
            entries.append((text(r.get("emailAddress")), EventType.COMPLAINED, "", "", reason))
    elif raw_type == "DeliveryDelay":
        for r in _recipients(detail, "delayedRecipients"):
            entries.append(
                (text(r.get("emailAddress")), EventType.DEFERRED, "", text(r.get("status")),
                 text(r.get("diagnosticCode")) or text(detail.get("delayType")))
            )  # fmt: skip
    elif raw_type in _SIMPLE:
        recipients = [text(r) for r in detail.get("recipients") or []] or destination
        description = text(detail.get("smtpResponse") or detail.get("reason"))
        entries = [(r, _SIMPLE[raw_type], "", "", description) for r in recipients]
    else:
        entries = [(r, EventType.UNKNOWN, "", "", "") for r in destination or [""]]
    when = detail.get("timestamp") or mail.get("timestamp")
    provider_id = text(mail.get("messageId"))
    return [
        ProviderEvent(
            provider="ses",
            type=kind,
            raw_type=raw_type,
            recipient=recipient,
            occurred_at=from_iso(when),
            event_id=f"{sns_id}:{recipient}" if sns_id else "",
            provider_message_ids=(provider_id,) if provider_id else (),
            message_id=_our_message_id(mail),
            bounce_type=bounce,
            diagnostic_code=code,
            description=description,
            url=text(detail.get("link")) if kind == EventType.CLICKED else "",
            raw=dict(ses),
        )
        for recipient, kind, bounce, code, description in entries
    ]


class SesWebhook:
    """Amazon SES notifications delivered by an SNS HTTP(S) subscription."""

    name = "ses"

    def __init__(self, settings: ProviderEventSettings) -> None:
        self._topics = frozenset(settings.ses_topic_arns)
        self._timeout = settings.sns_timeout_seconds
        self.verifier = SnsVerifier(settings.sns_trusted_url_prefixes, settings.sns_timeout_seconds)

    def confirm(self, message: Mapping[str, Any]) -> None:
        """Confirm a subscription by fetching its SubscribeURL (an SNS URL only)."""
        url = text(message.get("SubscribeURL"))
        if not self.verifier.trusted(url, certificate=False):
            raise Unauthenticated("SubscribeURL is not an https URL on sns.<region>.amazonaws.com")
        try:
            httpx.get(url, timeout=self._timeout, follow_redirects=False).raise_for_status()
        except httpx.HTTPError as exc:
            log.warning("SNS subscription to %s not confirmed: %s", message.get("TopicArn"), exc)
            raise Unauthenticated("the SNS subscription could not be confirmed") from exc
        log.info("SNS subscription to %s confirmed", message.get("TopicArn"))

    def receive(self, body: bytes, headers: Mapping[str, str]) -> list[ProviderEvent]:
        """Verify the SNS message; confirm a subscription or normalize its SES notification."""
        message = load_json(body)
        if not isinstance(message, dict) or not message.get("Type"):
            raise bad_body("SNS sends a JSON object with a Type")
        self.verifier.verify(message)
        if self._topics and text(message.get("TopicArn")) not in self._topics:
            raise Unauthenticated("messages from this SNS topic are not accepted")
        kind = message["Type"]
        if kind == "SubscriptionConfirmation":
            self.confirm(message)
            return []
        if kind != "Notification":
            return []
        try:
            ses = json.loads(text(message.get("Message")))
        except ValueError as exc:
            raise bad_body("the SNS Message is not an SES JSON notification") from exc
        if not isinstance(ses, dict):
            raise bad_body("the SNS Message is not an SES JSON notification")
        return normalize(text(message.get("MessageId")), ses)
