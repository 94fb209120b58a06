"""Verifying Mailroom's webhook deliveries on the receiving side (Standard Webhooks).

Each POST carries ``webhook-id``, ``webhook-timestamp`` (Unix seconds) and
``webhook-signature``: space-separated ``v1,<base64>`` entries, each an HMAC-SHA256 of
``"{webhook-id}.{webhook-timestamp}.{body}"`` keyed by the base64 part of your ``whsec_``
secret (more than one entry while a secret is rotated).

Example:
    >>> from mailroom import verify_webhook, WebhookVerificationError
    >>> def handle(request):  # any framework: the raw body bytes and the headers
    ...     try:
    ...         event = verify_webhook(request.body, request.headers, secret)
    ...     except WebhookVerificationError:
    ...         return 400
    ...     print(event["type"], event["data"]["email_id"])
    ...     return 204
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any

SECRET_PREFIX = "whsec_"
#: How far a delivery's timestamp may be from now, either way (replayed requests are refused).
DEFAULT_TOLERANCE_SECONDS = 300


class WebhookVerificationError(Exception):
    """The delivery is not authentic: a header is missing, the signature or timestamp is wrong."""


def _key(secret: str) -> bytes:
    if secret.startswith(SECRET_PREFIX):
        try:
            return base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
        except binascii.Error as exc:
            raise WebhookVerificationError("the secret is not whsec_<base64>") from exc
    return secret.encode()


def _header(headers: Mapping[str, str], name: str) -> str:
    for key, value in headers.items():
        if key.lower() == name:
            return value
    raise WebhookVerificationError(f"missing header {name}")


def sign_webhook(secret: str, msg_id: str, timestamp: int, body: bytes | str) -> str:
    """The ``v1,<base64>`` signature of one delivery (what Mailroom sends)."""
    raw = body.encode() if isinstance(body, str) else body
    signed = f"{msg_id}.{timestamp}.".encode() + raw
    return (
        "v1," + base64.b64encode(hmac.new(_key(secret), signed, hashlib.sha256).digest()).decode()
    )


def verify_webhook(
    payload: bytes | str,
    headers: Mapping[str, str],
    secret: str,
    *,
    tolerance: float = DEFAULT_TOLERANCE_SECONDS,
    now: float | None = None,
) -> dict[str, Any]:
    """Check a webhook delivery's signature and timestamp; return its JSON body.

    Args:
        payload: The request body exactly as received (bytes preferred: re-encoding parsed JSON
            changes it).
        headers: The request headers (any case).
        secret: The webhook's ``whsec_…`` secret, from CreateWebhook.
        tolerance: Seconds the timestamp may differ from now.
        now: The current Unix time (for tests).

    Returns:
        The parsed event: ``{"id", "type", "timestamp", "data": {"email_id", …}}``.

    Raises:
        WebhookVerificationError: A header is missing, the timestamp is too old or too new, no
            signature matches, or the body is not JSON.
    """
    msg_id = _header(headers, "webhook-id")
    stamp = _header(headers, "webhook-timestamp")
    signatures = _header(headers, "webhook-signature")
    try:
        timestamp = int(stamp)
    except ValueError as exc:
        raise WebhookVerificationError("webhook-timestamp is not a Unix time") from exc
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        raise WebhookVerificationError("webhook-timestamp is too far from now")
    expected = sign_webhook(secret, msg_id, timestamp, payload).encode()
    if not any(
        hmac.compare_digest(expected, candidate.encode())
        for candidate in signatures.split()
        if candidate.startswith("v1,")
    ):
        raise WebhookVerificationError("no webhook-signature matches")
    try:
        event: dict[str, Any] = json.loads(payload)
    except ValueError as exc:
        raise WebhookVerificationError("the body is not JSON") from exc
    return event
