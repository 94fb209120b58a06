"""The HTTP providers and SES against a fake of their API on 127.0.0.1 (pytest-httpserver).

The fakes check what the real API requires (path, auth, body fields) and answer the way the real
API does: the real request, the real answers. (SMTP: test_smtp_provider.py.)
"""

from __future__ import annotations

import base64
import email
import json
import re
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from email.message import EmailMessage
from email.policy import default as default_policy
from typing import Any

import pytest
from provider_emails import EMAIL, LOGO_PNG, REPORT_NAME, REPORT_PDF, RICH, make_email
from pydantic import SecretStr
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response
from werkzeug.datastructures import Headers

from core.settings import HttpProviderSettings, SesSettings
from workers.mta.base import (
    DeliveryError,
    MisconfiguredError,
    PermanentError,
    SendResult,
    ThrottledError,
    TransientError,
)
from workers.mta.mailgun import MailgunProvider
from workers.mta.postmark import PostmarkProvider
from workers.mta.sendgrid import SendGridProvider
from workers.mta.ses import SesProvider

# --- The HTTP fake -------------------------------------------------------------------------


@dataclass
class Seen:
    """One request as the fake received it."""

    method: str
    path: str
    headers: Headers
    json: Any = None
    form: dict[str, list[str]] = field(default_factory=dict)
    # Uploaded files by field: (filename, content type, bytes).
    files: dict[str, list[tuple[str, str, bytes]]] = field(default_factory=dict)


@pytest.fixture(scope="module")
def http_server() -> Iterator[HTTPServer]:
    # Threaded, so a handler made slow on purpose never holds up the next test.
    server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    server.start()
    yield server
    server.clear()
    server.stop()


@pytest.fixture
def fake(http_server: HTTPServer) -> Iterator[HTTPServer]:
    http_server.clear()
    yield http_server
    http_server.check_assertions()
    http_server.clear()


def answer(server: HTTPServer, path: str, reply: Response | Callable[[], Response]) -> list[Seen]:
    """Answer POSTs to ``path`` with ``reply``; return the list the requests are recorded in.

    A request the real API would refuse for its shape (see :data:`SHAPE_CHECKS`) is answered
    with that API's refusal instead.
    """
    seen: list[Seen] = []

    def handler(request: Request) -> Response:
        content_type = request.headers.get("Content-Type", "")
        record = Seen(request.method, request.path, Headers(request.headers.items()))
        if content_type.startswith(("application/x-www-form-urlencoded", "multipart/")):
            record.form = request.form.to_dict(flat=False)
            for name, upload in request.files.items(multi=True):
                item = (upload.filename or "", upload.mimetype, upload.read())
                record.files.setdefault(name, []).append(item)
        else:
            record.json = json.loads(request.get_data() or b"null")
        seen.append(record)
        check = SHAPE_CHECKS.get(request.path)
        refusal = check(record) if check else None
        if refusal is not None:
            return refusal
        return reply if isinstance(reply, Response) else reply()

    server.expect_request(path, method="POST").respond_with_handler(handler)
    return seen


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(body), status=status, headers=headers, mimetype="application/json")


# --- What each real API requires of attachments, headers, tags and metadata -----------------


def _base64(value: Any) -> bytes | None:
    """The decoded bytes of a strict base64 string, or None."""
    if not isinstance(value, str):
        return None
    try:
        return base64.b64decode(value, validate=True)
    except ValueError:
        return None


def _strings(value: Any) -> bool:
    """Whether ``value`` is a JSON object of string values."""
    return isinstance(value, dict) and all(isinstance(v, str) for v in value.values())


def sendgrid_shape(seen: Seen) -> Response | None:
    """SendGrid v3 mail/send: attachments {content base64, filename, type, disposition,
    content_id when inline}; headers, custom_args string maps; at most 10 categories."""
    body = seen.json
    problems = []
    for i, item in enumerate(body.get("attachments", [])):
        if _base64(item.get("content")) is None or not item.get("filename"):
            problems.append(f"attachments.{i}: content must be base64, filename is required")
        if item.get("disposition", "attachment") not in ("inline", "attachment"):
            problems.append(f"attachments.{i}.disposition")
        if item.get("disposition") == "inline" and not item.get("content_id"):
            problems.append(f"attachments.{i}.content_id is required for inline")
    categories = body.get("categories", [])
    if len(categories) > 10 or not all(isinstance(c, str) and len(c) <= 255 for c in categories):
        problems.append("categories")
    if not _strings(body.get("headers", {})) or not _strings(body.get("custom_args", {})):
        problems.append("headers and custom_args values must be strings")
    if not problems:
        return None
    return json_response(400, {"errors": [{"message": p, "field": None} for p in problems]})


def mailgun_shape(seen: Seen) -> Response | None:
    """Mailgun messages: at most 3 o:tag; every attachment and inline file has a name."""
    if len(seen.form.get("o:tag", [])) > 3:
        return json_response(400, {"message": "Too many tags"})
    for name, content_type, content in seen.files.get("attachment", []) + seen.files.get(
        "inline", []
    ):
        if not name or not content_type or not content:
            return json_response(400, {"message": "attachment without a file name"})
    if seen.files and not seen.headers["Content-Type"].startswith("multipart/form-data"):
        return json_response(400, {"message": "files need multipart/form-data"})
    return None


def postmark_shape(seen: Seen) -> Response | None:
    """Postmark /email: Attachments {Name, Content base64, ContentType, ContentID "cid:…"};
    one Tag (a string); Metadata a string map; Headers [{Name, Value}]."""
    body = seen.json
    ok = all(
        item.get("Name")
        and item.get("ContentType")
        and _base64(item.get("Content")) is not None
        and str(item.get("ContentID", "cid:x")).startswith("cid:")
        for item in body.get("Attachments", [])
    )
    ok = ok and isinstance(body.get("Tag", ""), str) and _strings(body.get("Metadata", {}))
    ok = ok and all(set(h) == {"Name", "Value"} for h in body.get("Headers", []))
    if ok:
        return None
    return json_response(422, {"ErrorCode": 300, "Message": "Invalid email request"})


_SES_TAG_TEXT = r"[A-Za-z0-9_-]{1,256}"


def ses_shape(seen: Seen) -> Response | None:
    """SES v2 SendEmail: each EmailTags Name and Value is [A-Za-z0-9_-]{1,256}, names unique."""
    tags = seen.json.get("EmailTags", [])
    names = [tag.get("Name", "") for tag in tags]
    valid = all(
        re.fullmatch(_SES_TAG_TEXT, tag.get("Name", ""))
        and re.fullmatch(_SES_TAG_TEXT, tag.get("Value", ""))
        for tag in tags
    )
    if valid and len(set(names)) == len(names):
        return None
    return ses_error(400, "BadRequestException", "Invalid message tag")


# --- SendGrid ------------------------------------------------------------------------------


def sendgrid(server: HTTPServer, timeout: float = 2.0) -> SendGridProvider:
    return SendGridProvider(
        HttpProviderSettings(
            api_key=SecretStr("SG.test-key"), base_url=server.url_for("/"), timeout_seconds=timeout
        )
    )


def test_sendgrid_sends_the_v3_mail_send_request(fake: HTTPServer) -> None:
    seen = answer(fake, "/v3/mail/send", Response(status=202, headers={"X-Message-Id": "sg-42"}))

    result = sendgrid(fake).send(EMAIL)

    assert result.provider_message_id == "sg-42"
    assert result.response.startswith("202")
    [request] = seen
    assert request.method == "POST"
    assert request.headers["Authorization"] == "Bearer SG.test-key"
    assert request.headers["Content-Type"] == "application/json"
    assert request.json == {
        "personalizations": [
            {
                "to": [
                    {"email": "ann@example.com", "name": "Ann Example"},
                    {"email": "bob@example.com"},
                ],
                "cc": [{"email": "carol@example.com", "name": "Carol"}],
                "bcc": [{"email": "dave@example.com"}],
            }
        ],
        "from": {"email": "noreply@example.com", "name": "Mailroom"},
        "reply_to": {"email": "support@example.com", "name": "Support"},
        "subject": "Your receipt",
        "content": [
            {"type": "text/plain", "value": "Thanks for your order."},
            {"type": "text/html", "value": "<p>Thanks for your <b>order</b>.</p>"},
        ],
        "headers": {"Message-ID": "<e1.x7@mailroom.local>"},
    }


def test_sendgrid_drops_repeated_addresses_it_would_reject(fake: HTTPServer) -> None:
    seen = answer(fake, "/v3/mail/send", Response(status=202, headers={"X-Message-Id": "sg-1"}))
    duplicated = make_email(cc=("ANN@example.com",), bcc=("bob@example.com", "erin@example.com"))

    sendgrid(fake).send(duplicated)

    [personalization] = seen[0].json["personalizations"]
    assert personalization == {
        "to": [{"email": "ann@example.com", "name": "Ann Example"}, {"email": "bob@example.com"}],
        "bcc": [{"email": "erin@example.com"}],
    }


def test_sendgrid_sends_attachments_headers_categories_and_custom_args(fake: HTTPServer) -> None:
    seen = answer(fake, "/v3/mail/send", Response(status=202, headers={"X-Message-Id": "sg-7"}))

    assert sendgrid(fake).send(RICH).provider_message_id == "sg-7"

    body = seen[0].json
    report, logo = body["attachments"]
    assert base64.b64decode(report.pop("content")) == REPORT_PDF
    assert report == {
        "type": "application/pdf",
        "filename": REPORT_NAME,
        "disposition": "attachment",
    }
    assert base64.b64decode(logo.pop("content")) == LOGO_PNG
    assert logo == {
        "type": "image/png",
        "filename": "logo.png",
        "disposition": "inline",
        "content_id": "logo@mailroom",
    }
    assert body["headers"] == {
        "List-Unsubscribe": "<https://example.com/u/1>",
        "Message-ID": RICH.message_id,
    }
    assert body["categories"] == ["invoice", "shop", "eu", "vip"]
    assert body["custom_args"] == {"note": "paid by card", "order_id": "1234"}


def test_sendgrid_fake_refuses_what_sendgrid_refuses(fake: HTTPServer) -> None:
    answer(fake, "/v3/mail/send", Response(status=202))
    too_many = replace(RICH, tags=tuple(f"t{i}" for i in range(11)))

    with pytest.raises(PermanentError):
        sendgrid(fake).send(too_many)


# --- Mailgun -------------------------------------------------------------------------------


def mailgun(server: HTTPServer, timeout: float = 2.0) -> MailgunProvider:
    return MailgunProvider(
        HttpProviderSettings(
            api_key=SecretStr("key-test"),
            domain="mg.example.com",
            base_url=server.url_for("/"),
            timeout_seconds=timeout,
        )
    )


def test_mailgun_posts_the_messages_form(fake: HTTPServer) -> None:
    mailgun_id = "<20240101120000.1.ABCDEF@mg.example.com>"
    seen = answer(
        fake,
        "/v3/mg.example.com/messages",
        json_response(200, {"id": mailgun_id, "message": "Queued. Thank you."}),
    )

    result = mailgun(fake).send(EMAIL)

    assert result.provider_message_id == mailgun_id
    assert "Queued. Thank you." in result.response
    [request] = seen
    assert request.method == "POST"
    expected_auth = "Basic " + base64.b64encode(b"api:key-test").decode()
    assert request.headers["Authorization"] == expected_auth
    assert request.form == {
        "from": ["Mailroom <noreply@example.com>"],
        "to": ["Ann Example <ann@example.com>", "bob@example.com"],
        "cc": ["Carol <carol@example.com>"],
        "bcc": ["dave@example.com"],
        "subject": ["Your receipt"],
        "text": ["Thanks for your order."],
        "html": ["<p>Thanks for your <b>order</b>.</p>"],
        "h:Reply-To": ["Support <support@example.com>"],
        "h:Message-Id": ["<e1.x7@mailroom.local>"],
    }


def test_mailgun_leaves_out_empty_optional_fields(fake: HTTPServer) -> None:
    seen = answer(fake, "/v3/mg.example.com/messages", json_response(200, {"id": "<x@mg>"}))

    mailgun(fake).send(make_email(cc=(), bcc=(), html="", reply_to=""))

    assert set(seen[0].form) == {"from", "to", "subject", "text", "h:Message-Id"}


def test_mailgun_uploads_attachment_and_inline_files_with_tags_and_variables(
    fake: HTTPServer,
) -> None:
    seen = answer(fake, "/v3/mg.example.com/messages", json_response(200, {"id": "<7@mg>"}))

    assert mailgun(fake).send(RICH).provider_message_id == "<7@mg>"

    [request] = seen
    assert request.headers["Content-Type"].startswith("multipart/form-data")
    assert request.files == {
        "attachment": [(REPORT_NAME, "application/pdf", REPORT_PDF)],
        # Mailgun makes the file name the Content-ID: the HTML's cid:logo@mailroom finds it.
        "inline": [("logo@mailroom", "image/png", LOGO_PNG)],
    }
    assert request.form["h:List-Unsubscribe"] == ["<https://example.com/u/1>"]
    assert request.form["o:tag"] == ["invoice", "shop", "eu"]  # Mailgun keeps 3 a message
    assert request.form["v:order_id"] == ["1234"]
    assert request.form["v:note"] == ["paid by card"]
    assert request.form["h:Message-Id"] == [RICH.message_id]
    assert request.form["html"] == [RICH.html]


# --- Postmark ------------------------------------------------------------------------------


def postmark(server: HTTPServer, timeout: float = 2.0) -> PostmarkProvider:
    return PostmarkProvider(
        HttpProviderSettings(
            api_key=SecretStr("pm-server-token"),
            base_url=server.url_for("/"),
            timeout_seconds=timeout,
        )
    )


def test_postmark_posts_the_email_json(fake: HTTPServer) -> None:
    postmark_id = "b7bc2f4a-e38e-4336-af7d-e6c392c2f817"
    seen = answer(
        fake,
        "/email",
        json_response(
            200,
            {
                "To": "ann@example.com",
                "SubmittedAt": "2024-01-01T12:00:00.0000000-05:00",
                "MessageID": postmark_id,
                "ErrorCode": 0,
                "Message": "OK",
            },
        ),
    )

    result = postmark(fake).send(EMAIL)

    assert result.provider_message_id == postmark_id
    [request] = seen
    assert request.method == "POST"
    assert request.headers["X-Postmark-Server-Token"] == "pm-server-token"
    assert request.headers["Accept"] == "application/json"
    assert request.json == {
        "From": "Mailroom <noreply@example.com>",
        "To": "Ann Example <ann@example.com>, bob@example.com",
        "Cc": "Carol <carol@example.com>",
        "Bcc": "dave@example.com",
        "Subject": "Your receipt",
        "TextBody": "Thanks for your order.",
        "HtmlBody": "<p>Thanks for your <b>order</b>.</p>",
        "ReplyTo": "Support <support@example.com>",
        "Headers": [{"Name": "Message-ID", "Value": "<e1.x7@mailroom.local>"}],
        "MessageStream": "outbound",
    }


def test_postmark_sends_attachments_headers_tag_and_metadata(fake: HTTPServer) -> None:
    seen = answer(fake, "/email", json_response(200, {"ErrorCode": 0, "MessageID": "pm-7"}))

    assert postmark(fake).send(RICH).provider_message_id == "pm-7"

    body = seen[0].json
    report, logo = body["Attachments"]
    assert base64.b64decode(report.pop("Content")) == REPORT_PDF
    assert report == {"Name": REPORT_NAME, "ContentType": "application/pdf"}
    assert base64.b64decode(logo.pop("Content")) == LOGO_PNG
    assert logo == {
        "Name": "logo.png",
        "ContentType": "image/png",
        "ContentID": "cid:logo@mailroom",
    }
    assert body["Headers"] == [
        {"Name": "Message-ID", "Value": RICH.message_id},
        {"Name": "List-Unsubscribe", "Value": "<https://example.com/u/1>"},
    ]
    assert body["Tag"] == "invoice"  # Postmark takes one tag a message: the first
    assert body["Metadata"] == {"note": "paid by card", "order_id": "1234"}


# --- Error answers, the same for every HTTP provider ----------------------------------------


@dataclass(frozen=True)
class HttpApi:
    path: str
    build: Callable[[HTTPServer, float], SendGridProvider | MailgunProvider | PostmarkProvider]
    success: Response
    bad_email: Response  # how the real API refuses a bad address
    bad_key: Response
    message_id_of: Callable[[Seen], str]


HTTP_APIS = {
    "sendgrid": HttpApi(
        "/v3/mail/send",
        sendgrid,
        Response(status=202, headers={"X-Message-Id": "sg-1"}),
        json_response(
            400,
            {
                "errors": [
                    {
                        "message": "Does not contain a valid address.",
                        "field": "personalizations.0.to.0.email",
                    }
                ]
            },
        ),
        json_response(
            401, {"errors": [{"message": "The provided authorization grant is invalid"}]}
        ),
        lambda seen: seen.json["headers"]["Message-ID"],
    ),
    "mailgun": HttpApi(
        "/v3/mg.example.com/messages",
        mailgun,
        json_response(200, {"id": "<1@mg.example.com>", "message": "Queued. Thank you."}),
        json_response(400, {"message": "to parameter is not a valid address"}),
        Response("Forbidden", status=401),
        lambda seen: seen.form["h:Message-Id"][0],
    ),
    "postmark": HttpApi(
        "/email",
        postmark,
        json_response(200, {"ErrorCode": 0, "Message": "OK", "MessageID": "pm-1"}),
        json_response(422, {"ErrorCode": 300, "Message": "Invalid 'To' address: 'bob@'."}),
        json_response(
            401, {"ErrorCode": 10, "Message": "The Server Token you provided was invalid."}
        ),
        lambda seen: seen.json["Headers"][0]["Value"],
    ),
}


@pytest.mark.parametrize("api_name", sorted(HTTP_APIS))
def test_http_bad_address_is_permanent_with_the_providers_reason(
    fake: HTTPServer, api_name: str
) -> None:
    api = HTTP_APIS[api_name]
    answer(fake, api.path, api.bad_email)
    with pytest.raises(PermanentError) as caught:
        api.build(fake, 2.0).send(EMAIL)
    assert "address" in caught.value.response


@pytest.mark.parametrize("api_name", sorted(HTTP_APIS))
def test_http_rejected_key_is_misconfigured(fake: HTTPServer, api_name: str) -> None:
    api = HTTP_APIS[api_name]
    answer(fake, api.path, api.bad_key)
    with pytest.raises(MisconfiguredError):
        api.build(fake, 2.0).send(EMAIL)


@pytest.mark.parametrize("api_name", sorted(HTTP_APIS))
def test_http_server_error_is_transient(fake: HTTPServer, api_name: str) -> None:
    api = HTTP_APIS[api_name]
    answer(fake, api.path, Response("upstream broke", status=500))
    with pytest.raises(TransientError) as caught:
        api.build(fake, 2.0).send(EMAIL)
    assert caught.value.response.startswith("500")


@pytest.mark.parametrize("api_name", sorted(HTTP_APIS))
@pytest.mark.parametrize(
    ("headers", "retry_after"), [({"Retry-After": "7"}, 7.0), ({}, None)], ids=["header", "none"]
)
def test_http_rate_limit_is_throttled_with_retry_after(
    fake: HTTPServer, api_name: str, headers: dict[str, str], retry_after: float | None
) -> None:
    api = HTTP_APIS[api_name]
    answer(fake, api.path, json_response(429, {"message": "Too many requests"}, headers))
    with pytest.raises(ThrottledError) as caught:
        api.build(fake, 2.0).send(EMAIL)
    assert caught.value.retry_after == retry_after


@pytest.mark.parametrize("api_name", sorted(HTTP_APIS))
def test_http_slow_answer_times_out_as_transient(fake: HTTPServer, api_name: str) -> None:
    api = HTTP_APIS[api_name]
    release = threading.Event()
    answered = threading.Event()

    def slow() -> Response:
        # Held until released, or for 10 s: far beyond the 0.3 s timeout, well below the
        # 30 s default a provider ignoring its setting would use.
        release.wait(10)
        answered.set()
        return api.success

    answer(fake, api.path, slow)
    provider = api.build(fake, 0.3)
    try:
        with pytest.raises(TransientError, match="timed out"):
            provider.send(EMAIL)
        assert not answered.is_set(), "the provider waited for the answer instead of timing out"
    finally:
        release.set()


@pytest.mark.parametrize("api_name", sorted(HTTP_APIS))
def test_http_concurrent_sends_on_one_instance(fake: HTTPServer, api_name: str) -> None:
    api = HTTP_APIS[api_name]
    seen = answer(fake, api.path, api.success)
    provider = api.build(fake, 2.0)
    emails = [make_email(f"<m{i}@mailroom.local>") for i in range(8)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(provider.send, emails))
    assert all(isinstance(r, SendResult) for r in results)
    assert sorted(api.message_id_of(r) for r in seen) == sorted(e.message_id for e in emails)


# --- SES -----------------------------------------------------------------------------------

SES_PATH = "/v2/email/outbound-emails"

# The fake's shape check, by request path.
SHAPE_CHECKS: dict[str, Callable[[Seen], Response | None]] = {
    "/v3/mail/send": sendgrid_shape,
    "/v3/mg.example.com/messages": mailgun_shape,
    "/email": postmark_shape,
    SES_PATH: ses_shape,
}


def ses(server: HTTPServer, timeout: float = 2.0) -> SesProvider:
    return SesProvider(
        SesSettings(
            region="us-east-1",
            access_key_id="AKIDEXAMPLE",
            secret_access_key=SecretStr("wJalrXUtnFEMI/K7MDENG"),
            endpoint_url=server.url_for("/").rstrip("/"),
            timeout_seconds=timeout,
        )
    )


def ses_error(status: int, code: str, message: str) -> Response:
    # SES v2 (rest-json) names the error in x-amzn-ErrorType, sometimes with a ":<uri>" suffix.
    return json_response(
        status,
        {"message": message},
        {"x-amzn-ErrorType": f"{code}:http://internal.amazon.com/coral/com.amazonaws.sesv2/"},
    )


def test_ses_sends_the_raw_mime_signed_with_sigv4(fake: HTTPServer) -> None:
    seen = answer(fake, SES_PATH, json_response(200, {"MessageId": "0100018c-ses-id"}))

    result = ses(fake).send(EMAIL)

    assert result.provider_message_id == "0100018c-ses-id"
    [request] = seen
    assert request.method == "POST"
    authorization = request.headers["Authorization"]
    assert authorization.startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
    assert "/us-east-1/ses/aws4_request" in authorization
    assert "Signature=" in authorization
    assert request.json["Destination"] == {
        "ToAddresses": ["Ann Example <ann@example.com>", "bob@example.com"],
        "CcAddresses": ["Carol <carol@example.com>"],
        "BccAddresses": ["dave@example.com"],
    }
    raw = base64.b64decode(request.json["Content"]["Raw"]["Data"])
    assert raw == EMAIL.mime
    parsed = email.message_from_bytes(raw)
    assert parsed["Message-ID"] == EMAIL.message_id
    assert parsed["Subject"] == "Your receipt"
    assert parsed["Bcc"] is None


def test_ses_sends_attachments_in_the_raw_mime_and_tags_as_email_tags(fake: HTTPServer) -> None:
    seen = answer(fake, SES_PATH, json_response(200, {"MessageId": "ses-7"}))

    assert ses(fake).send(RICH).provider_message_id == "ses-7"

    body = seen[0].json
    # Tags as name=true; metadata whose value SES allows (the one with blanks is left out).
    assert body["EmailTags"] == [
        {"Name": "invoice", "Value": "true"},
        {"Name": "shop", "Value": "true"},
        {"Name": "eu", "Value": "true"},
        {"Name": "vip", "Value": "true"},
        {"Name": "order_id", "Value": "1234"},
    ]
    raw = base64.b64decode(body["Content"]["Raw"]["Data"])
    assert raw == RICH.mime
    message = email.message_from_bytes(raw, policy=default_policy)
    assert isinstance(message, EmailMessage)
    [report] = message.iter_attachments()
    assert (report.get_filename(), report.get_content()) == (REPORT_NAME, REPORT_PDF)
    assert message["List-Unsubscribe"] == "<https://example.com/u/1>"


def test_ses_sends_no_email_tags_without_tags_or_metadata(fake: HTTPServer) -> None:
    seen = answer(fake, SES_PATH, json_response(200, {"MessageId": "ses-8"}))

    ses(fake).send(EMAIL)

    assert "EmailTags" not in seen[0].json


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        (400, "MessageRejected", PermanentError),
        (400, "MailFromDomainNotVerifiedException", MisconfiguredError),
        (400, "BadRequestException", PermanentError),
        (429, "TooManyRequestsException", ThrottledError),
        (403, "UnrecognizedClientException", MisconfiguredError),
        (403, "SignatureDoesNotMatch", MisconfiguredError),
        (400, "AccountSuspendedException", MisconfiguredError),
        (500, "InternalFailure", TransientError),
        (503, "ServiceUnavailable", TransientError),
    ],
)
def test_ses_errors(
    fake: HTTPServer, status: int, code: str, expected: type[DeliveryError]
) -> None:
    seen = answer(fake, SES_PATH, ses_error(status, code, f"{code} says no"))
    with pytest.raises(DeliveryError) as caught:
        ses(fake).send(EMAIL)
    assert type(caught.value) is expected
    assert code in caught.value.response
    # Mailroom retries with its own backoff: botocore must not have retried behind our back.
    assert len(seen) == 1


def test_ses_slow_answer_times_out_as_transient(fake: HTTPServer) -> None:
    release = threading.Event()
    answered = threading.Event()

    def slow() -> Response:
        release.wait(10)  # held far beyond the 0.3 s timeout, below the 30 s default
        answered.set()
        return json_response(200, {"MessageId": "late"})

    seen = answer(fake, SES_PATH, slow)
    try:
        with pytest.raises(TransientError):
            ses(fake, timeout=0.3).send(EMAIL)
        assert not answered.is_set(), "the provider waited for the answer instead of timing out"
    finally:
        release.set()
    assert len(seen) == 1
