"""Postmark single-email API (``POST /email``)."""

from __future__ import annotations

import base64
from typing import Any

import httpx

from core.settings import HttpProviderSettings
from workers.mta.base import (
    DeliveryError,
    MisconfiguredError,
    OutgoingEmail,
    PermanentError,
    SendResult,
    ThrottledError,
    TransientError,
)
from workers.mta.http import (
    json_object,
    make_client,
    map_http_errors,
    parse_retry_after,
    response_excerpt,
)

DEFAULT_BASE_URL = "https://api.postmarkapp.com"
SEND_PATH = "/email"

# Postmark's own ErrorCode says more than the HTTP status (it answers 422 for most of them).
# 300 invalid email request, 402/403 invalid JSON, 406 inactive recipient, 410 too many
# messages, 411 forbidden attachment type: this email cannot go out as it is.
PERMANENT_CODES = frozenset({300, 402, 403, 406, 410, 411})
# 10 bad or missing token, 400/401 sender signature not found/confirmed, 405 not allowed to
# send (e.g. out of credits), 409 JSON required, 412 account pending, 413 account may not send.
MISCONFIGURED_CODES = frozenset({10, 400, 401, 405, 409, 412, 413})
THROTTLED_CODES = frozenset({429})
TRANSIENT_CODES = frozenset({100})  # maintenance


def _join(addresses: tuple[str, ...]) -> str:
    return ", ".join(addresses)


def _attachments(email: OutgoingEmail) -> list[dict[str, str]]:
    """Postmark's attachment objects; an inline one has ``ContentID: "cid:<id>"``."""
    result = []
    for attachment in email.attachments:
        item = {
            "Name": attachment.filename,
            "Content": base64.b64encode(attachment.content).decode("ascii"),
            "ContentType": attachment.content_type,
        }
        if attachment.inline:
            item["ContentID"] = f"cid:{attachment.content_id}"
        result.append(item)
    return result


def build_payload(email: OutgoingEmail) -> dict[str, Any]:
    """Return the JSON body of a Postmark send for ``email``.

    Postmark takes one ``Tag`` per message: it gets the first of the email's tags (the others
    stay on the email in Mailroom, where ListEmails filters by any of them); metadata pairs go
    in ``Metadata`` as they are, extra headers in ``Headers`` after our Message-ID.
    """
    headers = [{"Name": "Message-ID", "Value": email.message_id}]
    headers.extend({"Name": name, "Value": value} for name, value in email.headers)
    payload: dict[str, Any] = {
        "From": email.from_address,
        "To": _join(email.to),
        "Subject": email.subject,
        "TextBody": email.text,
        "Headers": headers,
        "MessageStream": "outbound",
    }
    if email.cc:
        payload["Cc"] = _join(email.cc)
    if email.bcc:
        payload["Bcc"] = _join(email.bcc)
    if email.html:
        payload["HtmlBody"] = email.html
    if email.reply_to:
        payload["ReplyTo"] = email.reply_to
    if email.attachments:
        payload["Attachments"] = _attachments(email)
    if email.tags:
        payload["Tag"] = email.tags[0]
    if email.metadata:
        payload["Metadata"] = dict(email.metadata)
    return payload


def classify_error_code(response: httpx.Response) -> DeliveryError | None:
    """Classify a Postmark error by its ``ErrorCode``; None lets the HTTP status decide.

    Args:
        response: Postmark's answer, usually ``{"ErrorCode": n, "Message": "…"}``.

    Returns:
        The error, or None when the body has no ErrorCode we know.
    """
    code = json_object(response).get("ErrorCode")
    if not isinstance(code, int) or isinstance(code, bool):
        return None
    message = f"postmark: ErrorCode {code} (HTTP {response.status_code})"
    excerpt = response_excerpt(response)
    if code in PERMANENT_CODES:
        return PermanentError(message, response=excerpt)
    if code in MISCONFIGURED_CODES:
        return MisconfiguredError(message, response=excerpt)
    if code in THROTTLED_CODES:
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        return ThrottledError(message, retry_after=retry_after, response=excerpt)
    if code in TRANSIENT_CODES:
        return TransientError(message, response=excerpt)
    return None


class PostmarkProvider:
    """Sends through Postmark with a server token on the ``outbound`` message stream.

    Args:
        settings: ``Settings.providers.postmark``; ``api_key`` (the server token) is required.
        transport: A replacement httpx transport (tests).

    Raises:
        ValueError: ``api_key`` is not set.
    """

    name: str = "postmark"

    def __init__(
        self, settings: HttpProviderSettings, *, transport: httpx.BaseTransport | None = None
    ) -> None:
        token = settings.api_key.get_secret_value() if settings.api_key else ""
        if not token:
            raise ValueError("postmark: api_key is not set")
        self._client = make_client(
            base_url=settings.base_url or DEFAULT_BASE_URL,
            timeout_seconds=settings.timeout_seconds,
            headers={"X-Postmark-Server-Token": token},
            transport=transport,
        )

    def send(self, email: OutgoingEmail) -> SendResult:
        """Send ``email``; Postmark answers 200 ``{"ErrorCode": 0, "MessageID": "…"}``.

        Args:
            email: The email to send.

        Returns:
            The acceptance, with Postmark's MessageID (our Message-ID if it sent none).

        Raises:
            DeliveryError: One of its four subclasses, from :func:`map_http_errors`.
        """
        with map_http_errors(self.name, classify=classify_error_code):
            response = self._client.post(SEND_PATH, json=build_payload(email))
            response.raise_for_status()
            # A 200 carrying a non-zero ErrorCode is still a refusal.
            error = classify_error_code(response)
            if error is not None:
                raise error
        message_id = json_object(response).get("MessageID")
        return SendResult(
            provider_message_id=message_id if isinstance(message_id, str) else email.message_id,
            response=response_excerpt(response),
        )

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()
