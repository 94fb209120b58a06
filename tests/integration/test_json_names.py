"""REST speaks one JSON vocabulary: what GetEmail answers, SendEmail takes back (issue 9, item 7).

Envoy prints responses with the proto's JSON names (lowerCamelCase, ``from``) and enum names,
the names requests use and envoy/openapi.yaml documents. Requests still accept the proto names.
"""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from mailroom.v1 import mail_pb2

# SendEmailRequest's fields by JSON name; all but idempotencyKey are Email fields too.
SEND_EMAIL_FIELDS = [
    "to", "cc", "bcc", "title", "content", "html", "from", "replyTo", "idempotencyKey", "sendAt",
    "attachments", "headers", "tags", "metadata",
]  # fmt: skip
PDF = b"%PDF-1.4\n% json names\n%%EOF\n"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(64))
# Map fields whose keys are the caller's data, not field names.
USER_KEYED = {"headers", "metadata"}


def every_field(title: str, send_at: str) -> dict[str, Any]:
    """A SendEmail body with every field set, in JSON names."""
    return {
        "to": ["Ann <ann@example.com>", "bob@example.com"],
        "cc": ["carol@example.com"],
        "bcc": ["dave@example.com"],
        "title": title,
        "content": "Your invoice is attached.",
        "html": '<p>Your invoice is attached. <img src="cid:logo@shop"></p>',
        "from": "Shop <shop@example.com>",
        "replyTo": "help@example.com",
        "idempotencyKey": f"json-names-{uuid.uuid4().hex}",
        "sendAt": send_at,
        "attachments": [
            {
                "filename": "invoice.pdf",
                "contentType": "application/pdf",
                "content": base64.b64encode(PDF).decode(),
            },
            {
                "filename": "logo.png",
                "contentType": "image/png",
                "content": base64.b64encode(PNG).decode(),
                "contentId": "logo@shop",
            },
        ],
        "headers": {"X-Campaign": "spring"},
        "tags": ["invoice", "b2b"],
        "metadata": {"customer": "42", "plan": "pro"},
    }


def tomorrow() -> str:
    """A sendAt one day ahead, whole seconds: the emails stay SCHEDULED, nothing is delivered."""
    moment = datetime.now(UTC).replace(microsecond=0) + timedelta(days=1)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def field_names(value: object, path: str = "") -> list[str]:
    """Every object key in a JSON value, as dotted paths, skipping the user-keyed maps."""
    names: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            names.append(f"{path}{key}")
            if key not in USER_KEYED:
                names += field_names(item, f"{path}{key}.")
    elif isinstance(value, list):
        for item in value:
            names += field_names(item, path)
    return names


def get_email(envoy: Any, email_id: str) -> dict[str, Any]:
    status, _, reply = envoy.request("GET", f"/api/email/{email_id}", timeout=30)
    assert status == 200, reply
    assert isinstance(reply, dict)
    email: dict[str, Any] = reply["email"]
    return email


def test_what_get_email_answers_send_email_takes_back(envoy, real_store):
    body = every_field(f"json-names-{uuid.uuid4().hex}", tomorrow())
    status, _, reply = envoy.request("POST", "/api/email", body, timeout=30)
    assert status == 201, reply
    email = get_email(envoy, reply["id"])

    # The answer names the fields as the request did, plus output-only ones, all camelCase.
    assert set(SEND_EMAIL_FIELDS) - {"idempotencyKey"} <= set(email), sorted(email)
    assert {"createTime", "updateTime", "messageId", "lastError", "providerMessageId"} <= set(email)
    assert [name for name in field_names(email) if "_" in name] == []
    assert email["status"] == "EMAIL_STATUS_SCHEDULED"
    assert email["sendAt"] == body["sendAt"]
    assert email["replyTo"] == "help@example.com"
    assert email["from"] == "Shop <shop@example.com>"
    assert [a["contentType"] for a in email["attachments"]] == ["application/pdf", "image/png"]
    assert email["attachments"][1]["contentId"] == "logo@shop"

    # Send back what was read: every output field that is an input field, as it came.
    copy = {name: value for name, value in email.items() if name in SEND_EMAIL_FIELDS}
    status, _, reply = envoy.request("POST", "/api/email", copy, timeout=30)
    assert status == 201, reply
    assert reply["id"] != email["id"]

    again = get_email(envoy, reply["id"])
    assert {name: again[name] for name in copy} == copy
    assert again["status"] == "EMAIL_STATUS_SCHEDULED"


def test_requests_still_take_the_proto_names(envoy, mail_client, real_store):
    send_at = tomorrow()
    body = every_field(f"proto-names-{uuid.uuid4().hex}", send_at)
    for json_name, proto_name in [
        ("replyTo", "reply_to"),
        ("sendAt", "send_at"),
        ("idempotencyKey", "idempotency_key"),
    ]:
        body[proto_name] = body.pop(json_name)
    for attachment in body["attachments"]:
        attachment["content_type"] = attachment.pop("contentType")
    body["attachments"][1]["content_id"] = body["attachments"][1].pop("contentId")

    status, _, reply = envoy.request("POST", "/api/email", body, timeout=30)
    assert status == 201, reply

    email = get_email(envoy, reply["id"])
    assert email["replyTo"] == "help@example.com"
    assert email["sendAt"] == send_at
    assert [a["contentType"] for a in email["attachments"]] == ["application/pdf", "image/png"]
    assert email["attachments"][1]["contentId"] == "logo@shop"
    stored = mail_client.GetEmail(mail_pb2.GetEmailRequest(id=reply["id"]), timeout=10).email
    assert stored.reply_to == "help@example.com"


def test_lists_and_errors_answer_in_json_names_too(envoy, real_store):
    body = every_field(f"json-names-list-{uuid.uuid4().hex}", tomorrow())
    status, _, reply = envoy.request("POST", "/api/email", body, timeout=30)
    assert status == 201, reply

    # Query parameters take the JSON names envoy/openapi.yaml documents.
    query = f"idempotencyKey={body['idempotencyKey']}&view=EMAIL_VIEW_FULL&pageSize=5"
    status, _, page = envoy.request("GET", f"/api/emails?{query}", timeout=30)
    assert status == 200, page
    assert [email["id"] for email in page["emails"]] == [reply["id"]]
    assert "nextPageToken" in page
    assert [name for name in field_names(page) if "_" in name] == []
    assert page["emails"][0]["replyTo"] == "help@example.com"

    status, _, error = envoy.request("POST", "/api/email", {**body, "to": []}, timeout=30)
    assert status == 400, error
    (detail,) = error["details"]
    assert [v["field"] for v in detail["fieldViolations"]] == ["to"]
