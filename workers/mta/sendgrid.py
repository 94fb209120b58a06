"""SendGrid v3 Mail Send (``POST /v3/mail/send``)."""

from __future__ import annotations

import base64
from email.utils import parseaddr
from typing import Any

import httpx

from core.settings import HttpProviderSettings
from workers.mta.base import OutgoingEmail, SendResult
from workers.mta.http import make_client, map_http_errors

DEFAULT_BASE_URL = "https://api.sendgrid.com"
SEND_PATH = "/v3/mail/send"


def _address(value: str) -> dict[str, str]:
    """Split ``Name <a@b>`` into SendGrid's ``{"email", "name"}`` object."""
    name, addr = parseaddr(value)
    result = {"email": addr or value.strip()}
    if name:
        result["name"] = name
    return result


def _personalization(email: OutgoingEmail) -> dict[str, list[dict[str, str]]]:
    """Build the one personalization: to, cc and bcc.

    SendGrid rejects the whole request (400) when an address appears twice across to, cc and
    bcc, so later duplicates are dropped: the person still gets one copy.
    """
    seen: set[str] = set()
    result: dict[str, list[dict[str, str]]] = {}
    for field, values in (("to", email.to), ("cc", email.cc), ("bcc", email.bcc)):
        addresses = []
        for value in values:
            address = _address(value)
            key = address["email"].lower()
            if key not in seen:
                seen.add(key)
                addresses.append(address)
        if addresses:
            result[field] = addresses
    return result


def _attachments(email: OutgoingEmail) -> list[dict[str, str]]:
    """SendGrid's attachment objects: base64 content; inline ones carry their ``content_id``."""
    result = []
    for attachment in email.attachments:
        item = {
            "content": base64.b64encode(attachment.content).decode("ascii"),
            "type": attachment.content_type,
            "filename": attachment.filename,
            "disposition": "inline" if attachment.inline else "attachment",
        }
        if attachment.inline:
            item["content_id"] = attachment.content_id
        result.append(item)
    return result


def build_payload(email: OutgoingEmail) -> dict[str, Any]:
    """Return the JSON body of a Mail Send request for ``email``.

    Extra headers go in ``headers`` (next to our Message-ID), tags as ``categories`` and
    metadata as ``custom_args`` (strings, as SendGrid requires; its webhooks return them).
    """
    content = []
    # SendGrid wants text/plain first and refuses an empty content list.
    if email.text or not email.html:
        content.append({"type": "text/plain", "value": email.text})
    if email.html:
        content.append({"type": "text/html", "value": email.html})
    payload: dict[str, Any] = {
        "personalizations": [_personalization(email)],
        "from": _address(email.from_address),
        "subject": email.subject,
        "content": content,
        "headers": {**dict(email.headers), "Message-ID": email.message_id},
    }
    if email.reply_to:
        payload["reply_to"] = _address(email.reply_to)
    if email.attachments:
        payload["attachments"] = _attachments(email)
    if email.tags:
        payload["categories"] = list(email.tags)
    if email.metadata:
        payload["custom_args"] = dict(email.metadata)
    return payload


class SendGridProvider:
    """Sends through SendGrid's v3 API with a Bearer API key.

    Args:
        settings: ``Settings.providers.sendgrid``; ``api_key`` is required.
        transport: A replacement httpx transport (tests).

    Raises:
        ValueError: ``api_key`` is not set.
    """

    name: str = "sendgrid"

    def __init__(
        self, settings: HttpProviderSettings, *, transport: httpx.BaseTransport | None = None
    ) -> None:
        api_key = settings.api_key.get_secret_value() if settings.api_key else ""
        if not api_key:
            raise ValueError("sendgrid: api_key is not set")
        self._client = make_client(
            base_url=settings.base_url or DEFAULT_BASE_URL,
            timeout_seconds=settings.timeout_seconds,
            headers={"Authorization": f"Bearer {api_key}"},
            transport=transport,
        )

    def send(self, email: OutgoingEmail) -> SendResult:
        """Send ``email``; SendGrid answers 202 with the id in ``X-Message-Id``.

        Args:
            email: The email to send.

        Returns:
            The acceptance, with SendGrid's message id (our Message-ID if it sent none).

        Raises:
            DeliveryError: One of its four subclasses, from :func:`map_http_errors`.
        """
        with map_http_errors(self.name):
            response = self._client.post(SEND_PATH, json=build_payload(email))
            response.raise_for_status()
        message_id = response.headers.get("X-Message-Id") or email.message_id
        return SendResult(
            provider_message_id=message_id,
            response=f"{response.status_code} {response.reason_phrase}",
        )

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()
