"""Mailgun Messages API (``POST /v3/{domain}/messages``)."""

from __future__ import annotations

from urllib.parse import quote

import httpx

from core.settings import HttpProviderSettings
from workers.mta.base import OutgoingEmail, SendResult
from workers.mta.http import json_object, make_client, map_http_errors, response_excerpt

DEFAULT_BASE_URL = "https://api.mailgun.net"


#: Mailgun keeps at most 3 tags per message (its tagging guide); the rest are not sent.
MAX_TAGS = 3

# One (field, (filename, content, content type)) per file, as httpx takes multipart files.
Files = list[tuple[str, tuple[str, bytes, str]]]


def build_form(email: OutgoingEmail) -> dict[str, str | list[str]]:
    """Return the form fields of a Mailgun send for ``email``.

    Recipients go as repeated fields rather than one comma-joined string, so a quoted display
    name containing a comma stays one address. Extra headers are ``h:<Name>`` fields, the first
    :data:`MAX_TAGS` tags repeated ``o:tag`` fields, and each metadata pair a ``v:<key>`` field
    (Mailgun returns these user variables in its events and webhooks).
    """
    form: dict[str, str | list[str]] = {
        "from": email.from_address,
        "to": list(email.to),
        "subject": email.subject,
        "text": email.text,
        "h:Message-Id": email.message_id,
    }
    if email.cc:
        form["cc"] = list(email.cc)
    if email.bcc:
        form["bcc"] = list(email.bcc)
    if email.html:
        form["html"] = email.html
    if email.reply_to:
        form["h:Reply-To"] = email.reply_to
    for name, value in email.headers:
        form[f"h:{name}"] = value
    if email.tags:
        form["o:tag"] = list(email.tags[:MAX_TAGS])
    for key, value in email.metadata:
        form[f"v:{key}"] = value
    return form


def build_files(email: OutgoingEmail) -> Files:
    """Return the files of a Mailgun send: ``attachment`` and ``inline`` parts.

    Mailgun names an inline part's Content-ID after its file name (the HTML refers to
    ``cid:<filename>``), so an inline file is uploaded under its content id.
    """
    files: Files = []
    for attachment in email.attachments:
        if attachment.inline:
            part = (attachment.content_id, attachment.content, attachment.content_type)
            files.append(("inline", part))
        else:
            part = (attachment.filename, attachment.content, attachment.content_type)
            files.append(("attachment", part))
    return files


class MailgunProvider:
    """Sends through Mailgun with basic auth ``api:{key}`` from its sending domain.

    Args:
        settings: ``Settings.providers.mailgun``; ``api_key`` and ``domain`` are required;
            ``base_url`` selects the region (``https://api.eu.mailgun.net`` for the EU).
        transport: A replacement httpx transport (tests).

    Raises:
        ValueError: ``api_key`` or ``domain`` is not set.
    """

    name: str = "mailgun"

    def __init__(
        self, settings: HttpProviderSettings, *, transport: httpx.BaseTransport | None = None
    ) -> None:
        api_key = settings.api_key.get_secret_value() if settings.api_key else ""
        domain = (settings.domain or "").strip()
        if not api_key or not domain:
            raise ValueError("mailgun: api_key and domain must both be set")
        self._path = f"/v3/{quote(domain, safe='')}/messages"
        self._client = make_client(
            base_url=settings.base_url or DEFAULT_BASE_URL,
            timeout_seconds=settings.timeout_seconds,
            auth=("api", api_key),
            transport=transport,
        )

    def send(self, email: OutgoingEmail) -> SendResult:
        """Send ``email``; Mailgun answers 200 ``{"id": "<…>", "message": "Queued. …"}``.

        Args:
            email: The email to send.

        Returns:
            The acceptance, with Mailgun's message id (our Message-ID if it sent none).

        Raises:
            DeliveryError: One of its four subclasses, from :func:`map_http_errors`.
        """
        with map_http_errors(self.name):
            # With files httpx sends multipart/form-data; without, a urlencoded form.
            files = build_files(email)
            response = self._client.post(self._path, data=build_form(email), files=files or None)
            response.raise_for_status()
        body = json_object(response)
        message_id = body.get("id")
        return SendResult(
            provider_message_id=message_id if isinstance(message_id, str) else email.message_id,
            response=response_excerpt(response),
        )

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()
