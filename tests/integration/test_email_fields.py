"""Issue 9 items 3-5 end to end: attachments, extra headers, tags and metadata.

REST goes through Envoy's transcoder (attachment contents base64 in JSON), gRPC straight to the
API. An accepted email gives all of it back from GetEmail, byte for byte; a refused one answers
400 / INVALID_ARGUMENT naming the field, and is not stored (the documents with the request's
unique title are counted).
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable
from typing import Any

import grpc
import pytest

from core.store.documents import Email
from helpers import grpc_violations, rest_violations
from mailroom.v1 import mail_pb2, mail_pb2_grpc

PDF = b"%PDF-1.7\n" + bytes(range(256)) * 40
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\xff" * 300
HEADERS = {"X-Campaign": "spring-2026", "List-Unsubscribe": "<https://shop.example/u/42>"}
TAGS = ["invoice", "b2b"]
METADATA = {"order_id": "A-7", "user_id": "42"}


def unique_title() -> str:
    return f"fields-{uuid.uuid4().hex}"


def stored(title: str) -> int:
    return Email.objects(subject=title).count()


def rest_body(title: str, **overrides: object) -> dict[str, object]:
    body: dict[str, object] = {
        "to": ["alice@example.com"],
        "title": title,
        "content": "Your invoice is attached.",
        "html": '<p>Your invoice. <img src="cid:logo@shop"></p>',
        "attachments": [
            {"filename": "invoice.pdf", "content": base64.b64encode(PDF).decode()},
            {
                "filename": "logo.png",
                "content": base64.b64encode(PNG).decode(),
                "content_type": "image/png",
                "content_id": "logo@shop",
            },
        ],
        "headers": HEADERS,
        "tags": TAGS,
        "metadata": METADATA,
    }
    body.update(overrides)
    return body


def grpc_request(title: str, **overrides: object) -> mail_pb2.SendEmailRequest:
    fields: dict[str, object] = {
        "to": ["alice@example.com"],
        "title": title,
        "content": "Your invoice is attached.",
        "html": '<p>Your invoice. <img src="cid:logo@shop"></p>',
        "attachments": [
            mail_pb2.Attachment(filename="invoice.pdf", content=PDF),
            mail_pb2.Attachment(
                filename="logo.png", content=PNG, content_type="image/png", content_id="logo@shop"
            ),
        ],
        "headers": HEADERS,
        "tags": TAGS,
        "metadata": METADATA,
    }
    fields.update(overrides)
    return mail_pb2.SendEmailRequest(**fields)  # type: ignore[arg-type]


def assert_all_fields(email: mail_pb2.Email) -> None:
    """The email as GetEmail returns it: every attachment, header, tag and metadata pair."""
    assert [
        (a.filename, a.content_type, a.content_id, a.size, a.content) for a in email.attachments
    ] == [
        ("invoice.pdf", "application/pdf", "", len(PDF), PDF),
        ("logo.png", "image/png", "logo@shop", len(PNG), PNG),
    ]
    assert dict(email.headers) == HEADERS
    assert list(email.tags) == TAGS
    assert dict(email.metadata) == METADATA
    assert email.content == "Your invoice is attached."
    assert not email.HasField("purge_time")


def pick(item: dict[str, object], snake: str, camel: str) -> object:
    """A field of a REST answer, under its proto name or its lowerCamelCase JSON name."""
    return item.get(camel, item.get(snake))


def test_rest_email_with_attachments_headers_tags_and_metadata(envoy, mail_client, real_store):
    title = unique_title()
    status, _, body = envoy.request("POST", "/api/email", rest_body(title))
    assert status == 201, body
    email_id = body["id"]

    status, _, reply = envoy.request("GET", f"/api/email/{email_id}")
    assert status == 200, reply
    email = reply["email"]
    attachments = email["attachments"]
    assert [a["filename"] for a in attachments] == ["invoice.pdf", "logo.png"]
    assert [base64.b64decode(a["content"]) for a in attachments] == [PDF, PNG]
    # int64 is a JSON string in proto3's JSON mapping.
    assert [int(a["size"]) for a in attachments] == [len(PDF), len(PNG)]
    assert [pick(a, "content_type", "contentType") for a in attachments] == [
        "application/pdf",
        "image/png",
    ]
    assert pick(attachments[1], "content_id", "contentId") == "logo@shop"
    assert email["headers"] == HEADERS
    assert email["tags"] == TAGS
    assert email["metadata"] == METADATA

    grpc_email = mail_client.GetEmail(mail_pb2.GetEmailRequest(id=email_id), timeout=10).email
    assert_all_fields(grpc_email)
    assert stored(title) == 1


def test_grpc_email_with_attachments_headers_tags_and_metadata(mail_client, real_store):
    title = unique_title()
    request = grpc_request(title, tags=["invoice", "b2b", "invoice"])
    email_id = mail_client.SendEmail(request, timeout=10).id
    email = mail_client.GetEmail(mail_pb2.GetEmailRequest(id=email_id), timeout=10).email
    assert_all_fields(email)  # the duplicate tag is dropped
    assert stored(title) == 1


def test_an_idempotent_retry_must_carry_the_same_attachments_and_metadata(mail_client, real_store):
    title = unique_title()
    key = f"fields-{uuid.uuid4().hex}"
    first = mail_client.SendEmail(grpc_request(title, idempotency_key=key), timeout=10).id
    assert mail_client.SendEmail(grpc_request(title, idempotency_key=key), timeout=10).id == first
    changed = [
        {"metadata": {**METADATA, "user_id": "43"}},
        {"attachments": [mail_pb2.Attachment(filename="invoice.pdf", content=PDF + b"!")]},
        {"headers": {**HEADERS, "X-Campaign": "autumn"}},
    ]
    for overrides in changed:
        with pytest.raises(grpc.RpcError) as info:
            mail_client.SendEmail(grpc_request(title, idempotency_key=key, **overrides), timeout=10)
        assert info.value.code() == grpc.StatusCode.ALREADY_EXISTS, overrides
    assert stored(title) == 1


# What must be refused, as (REST overrides, gRPC overrides, the field named).
REFUSED = [
    pytest.param(
        {"attachments": [{"filename": "setup.EXE", "content": "TVo="}]},
        {"attachments": [mail_pb2.Attachment(filename="setup.EXE", content=b"MZ")]},
        "attachments[0].filename",
        id="blocked-extension",
    ),
    pytest.param(
        {"headers": {"X-Campaign": "spring", "Subject": "spoofed"}},
        {"headers": {"X-Campaign": "spring", "Subject": "spoofed"}},
        'headers["Subject"]',
        id="owned-header",
    ),
    pytest.param(
        {"headers": {"X-Evil": "a\r\nBcc: victim@example.com"}},
        {"headers": {"X-Evil": "a\r\nBcc: victim@example.com"}},
        'headers["X-Evil"]',
        id="header-injection",
    ),
    pytest.param(
        {"tags": ["ok", "Bad Tag"]},
        {"tags": ["ok", "Bad Tag"]},
        "tags[1]",
        id="bad-tag",
    ),
    pytest.param(
        {"metadata": {f"k{i}": "v" for i in range(21)}},
        {"metadata": {f"k{i}": "v" for i in range(21)}},
        "metadata",
        id="21-metadata-pairs",
    ),
    pytest.param(
        {"metadata": {"a.b": "v"}},
        {"metadata": {"a.b": "v"}},
        'metadata["a.b"]',
        id="dotted-metadata-key",
    ),
]


@pytest.mark.parametrize(("rest", "grpc_fields", "field"), REFUSED)
def test_rest_refusals_name_the_field_and_store_nothing(
    envoy, real_store, rest, grpc_fields, field
):
    title = unique_title()
    status, _, body = envoy.request("POST", "/api/email", rest_body(title, **rest))
    assert status == 400, body
    assert rest_violations(body) == [field]
    assert stored(title) == 0


@pytest.mark.parametrize(("rest", "grpc_fields", "field"), REFUSED)
def test_grpc_refusals_name_the_field_and_store_nothing(
    mail_client, real_store, rest, grpc_fields, field
):
    title = unique_title()
    with pytest.raises(grpc.RpcError) as info:
        mail_client.SendEmail(grpc_request(title, **grpc_fields), timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert grpc_violations(info.value) == [field]
    assert stored(title) == 0


@pytest.fixture
def front(private_front) -> Callable[..., tuple[Any, Callable[..., Any]]]:
    """Start a private API and Envoy with extra MAILROOM_* settings; return it and a REST client."""

    def start(**extra: str) -> tuple[Any, Callable[..., Any]]:
        handle = private_front(**extra)
        return handle, handle.envoy.request

    return start


def test_attachments_count_towards_max_email_bytes(front, real_store):
    api, rest = front(MAILROOM_MAX_EMAIL_BYTES="4000")
    title = unique_title()  # 39 bytes
    bodies = len(title) + len("hi")
    fits = b"x" * (4000 - bodies)
    over = b"x" * (4000 - bodies + 1)

    def attach(content: bytes) -> dict[str, object]:
        return {
            "to": ["a@example.com"],
            "title": title,
            "content": "hi",
            "attachments": [{"filename": "a.bin", "content": base64.b64encode(content).decode()}],
        }

    status, _, body = rest("POST", "/api/email", attach(over))
    assert status == 400, body
    assert rest_violations(body) == ["attachments"]
    with grpc.insecure_channel(api.api.target) as channel:
        client = mail_pb2_grpc.MailServiceStub(channel)
        request = mail_pb2.SendEmailRequest(
            to=["a@example.com"],
            title=title,
            content="hi",
            attachments=[mail_pb2.Attachment(filename="a.bin", content=over)],
        )
        with pytest.raises(grpc.RpcError) as info:
            client.SendEmail(request, timeout=10)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert grpc_violations(info.value) == ["attachments"]
        assert stored(title) == 0

        # Exactly at the limit: accepted, both ways.
        status, _, body = rest("POST", "/api/email", attach(fits))
        assert status == 201, body
        request.attachments[0].content = fits
        email_id = client.SendEmail(request, timeout=10).id
        email = client.GetEmail(mail_pb2.GetEmailRequest(id=email_id), timeout=10).email
        assert email.attachments[0].size == len(fits)
        assert email.attachments[0].content_type == "application/octet-stream"
    assert stored(title) == 2


def test_content_that_is_not_base64_is_a_400_over_rest(envoy, real_store):
    title = unique_title()
    body = rest_body(title, attachments=[{"filename": "a.bin", "content": "not base64!!"}])
    status, _, reply = envoy.request("POST", "/api/email", body)
    assert status == 400, reply
    assert "attachments[0].content" in reply["message"]
    assert stored(title) == 0


def test_a_10_mib_email_goes_through_rest_and_comes_back_whole(front, real_store):
    """The default limit, 10 MiB of bodies and attachments, is reachable through Envoy.

    With generous store timeouts: on this shared 2-core host FerretDB sometimes takes longer
    than the default 1.5 s to write or read a 10 MiB document (the API then answers 500).
    """
    _, rest = front(MAILROOM_ACCEPT_TIMEOUT_MS="30000", MAILROOM_MONGODB_TIMEOUT_MS="20000")
    title = unique_title()
    bodies = len(title) + len("hi")
    big = bytes(range(256)) * (10 * 1024 * 1024 // 256)
    body = {
        "to": ["a@example.com"],
        "title": title,
        "content": "hi",
        "attachments": [
            {"filename": "big.bin", "content": base64.b64encode(big[:-bodies]).decode()}
        ],
    }
    status, _, reply = rest("POST", "/api/email", body, timeout=60)
    assert status == 201, reply
    status, _, got = rest("GET", f"/api/email/{reply['id']}", timeout=60)
    assert status == 200, str(got)[:2000]
    [attachment] = got["email"]["attachments"]
    assert base64.b64decode(attachment["content"]) == big[:-bodies]
    body["attachments"][0]["content"] = base64.b64encode(big[: -bodies + 1]).decode()
    status, _, reply = rest("POST", "/api/email", body, timeout=60)
    assert status == 400, reply
    assert rest_violations(reply) == ["attachments"]
    assert stored(title) == 1
