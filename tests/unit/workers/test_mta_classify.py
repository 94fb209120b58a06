"""Every way a provider send can fail lands in exactly one of the four DeliveryError classes.

No network: HTTP providers run against ``httpx.MockTransport``; SMTP and SES classifiers are fed
the exceptions their libraries raise.
"""

from __future__ import annotations

import builtins
import inspect
import logging
import smtplib
import socket
import ssl
import string
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime
from types import ModuleType
from typing import Any

import botocore.exceptions
import httpx
import pytest
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ParamValidationError,
    ReadTimeoutError,
)
from pydantic import SecretStr

from core.settings import (
    HttpProviderSettings,
    ProvidersSettings,
    SesSettings,
    Settings,
    SmtpSettings,
)
from core.store.documents import Outcome
from workers.mta.base import (
    DeliveryError,
    MisconfiguredError,
    OutgoingEmail,
    PermanentError,
    ThrottledError,
    TransientError,
)
from workers.mta.http import (
    classify_status,
    error_class_for_status,
    map_http_errors,
    parse_retry_after,
)
from workers.mta.mailgun import MailgunProvider
from workers.mta.postmark import PostmarkProvider, classify_error_code
from workers.mta.registry import build_providers, describe
from workers.mta.sendgrid import SendGridProvider
from workers.mta.ses import SesProvider, map_ses_errors
from workers.mta.smtp import SmtpProvider, map_smtp_errors, queue_id

FOUR = (PermanentError, TransientError, ThrottledError, MisconfiguredError)


def test_each_delivery_error_class_carries_its_outcome() -> None:
    assert {cls: cls.outcome for cls in FOUR} == {
        PermanentError: Outcome.PERMANENT,
        TransientError: Outcome.TRANSIENT,
        ThrottledError: Outcome.THROTTLED,
        MisconfiguredError: Outcome.MISCONFIGURED,
    }
    # The bare base class is retried, as a transient failure is.
    assert DeliveryError("?").outcome == Outcome.TRANSIENT

    class Refinement(ThrottledError):
        pass

    assert Refinement("slow down").outcome == Outcome.THROTTLED


def make_email() -> OutgoingEmail:
    msg = EmailMessage()
    msg["From"] = "Mailroom <sender@example.com>"
    msg["To"] = "ann@example.com"
    msg["Subject"] = "Hello"
    msg["Message-ID"] = "<m1@mailroom.local>"
    msg.set_content("Hello there")
    return OutgoingEmail(
        email_id="e1",
        message_id="<m1@mailroom.local>",
        from_address="Mailroom <sender@example.com>",
        to=("ann@example.com",),
        subject="Hello",
        text="Hello there",
        mime=msg.as_bytes(),
    )


# --- HTTP ------------------------------------------------------------------------------------

HTTP_PROVIDERS: dict[
    str, Callable[[httpx.BaseTransport], SendGridProvider | MailgunProvider | PostmarkProvider]
] = {
    "sendgrid": lambda t: SendGridProvider(
        HttpProviderSettings(api_key=SecretStr("k")), transport=t
    ),
    "mailgun": lambda t: MailgunProvider(
        HttpProviderSettings(api_key=SecretStr("k"), domain="mg.example.com"), transport=t
    ),
    "postmark": lambda t: PostmarkProvider(
        HttpProviderSettings(api_key=SecretStr("k")), transport=t
    ),
}

# The documented table; statuses not listed must still land in one of the four classes.
EXPECTED_HTTP = {
    400: PermanentError,
    413: PermanentError,
    422: PermanentError,
    401: MisconfiguredError,
    403: MisconfiguredError,
    404: MisconfiguredError,
    429: ThrottledError,
    408: TransientError,
    500: TransientError,
    502: TransientError,
    503: TransientError,
    504: TransientError,
}


def responding(status: int, **kwargs: object) -> httpx.MockTransport:
    return httpx.MockTransport(lambda request: httpx.Response(status, **kwargs))  # type: ignore[arg-type]


@pytest.mark.parametrize("provider", sorted(HTTP_PROVIDERS))
def test_every_http_error_status_maps_to_one_of_the_four_classes(provider: str) -> None:
    for status in range(400, 600):
        sender = HTTP_PROVIDERS[provider](responding(status, text="nope"))
        with pytest.raises(DeliveryError) as caught:
            sender.send(make_email())
        assert type(caught.value) in FOUR, status
        if status in EXPECTED_HTTP:
            assert type(caught.value) is EXPECTED_HTTP[status], status
        elif status >= 500:
            assert type(caught.value) is TransientError, status
        assert str(status) in caught.value.response


@pytest.mark.parametrize("provider", sorted(HTTP_PROVIDERS))
@pytest.mark.parametrize("status", [200, 201, 202, 204])
def test_any_2xx_is_a_success_even_without_an_id(provider: str, status: int) -> None:
    result = HTTP_PROVIDERS[provider](responding(status)).send(make_email())
    # With no id in the answer the send still counts: resending would duplicate the email.
    assert result.provider_message_id == "<m1@mailroom.local>"


@pytest.mark.parametrize("provider", sorted(HTTP_PROVIDERS))
def test_redirect_means_a_wrong_base_url(provider: str) -> None:
    transport = responding(301, headers={"Location": "https://elsewhere.example/"})
    with pytest.raises(MisconfiguredError):
        HTTP_PROVIDERS[provider](transport).send(make_email())


@pytest.mark.parametrize("provider", sorted(HTTP_PROVIDERS))
@pytest.mark.parametrize(
    "exc",
    [
        httpx.ConnectError("connection refused"),
        httpx.ConnectTimeout("connect timed out"),
        httpx.ReadTimeout("read timed out"),
        httpx.WriteTimeout("write timed out"),
        httpx.PoolTimeout("pool timed out"),
        httpx.ReadError("reset by peer"),
        httpx.RemoteProtocolError("server hung up"),
        httpx.ProxyError("proxy said no"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_http_transport_failures_are_transient(provider: str, exc: Exception) -> None:
    def fail(request: httpx.Request) -> httpx.Response:
        raise exc

    with pytest.raises(TransientError):
        HTTP_PROVIDERS[provider](httpx.MockTransport(fail)).send(make_email())


@pytest.mark.parametrize("provider", sorted(HTTP_PROVIDERS))
def test_unexpected_exception_is_logged_and_transient(
    provider: str, caplog: pytest.LogCaptureFixture
) -> None:
    def fail(request: httpx.Request) -> httpx.Response:
        raise RuntimeError("a bug somewhere")

    with caplog.at_level(logging.ERROR), pytest.raises(TransientError, match="a bug somewhere"):
        HTTP_PROVIDERS[provider](httpx.MockTransport(fail)).send(make_email())
    assert any(r.exc_info and "a bug somewhere" in str(r.exc_info[1]) for r in caplog.records)


@pytest.mark.parametrize("provider", sorted(HTTP_PROVIDERS))
def test_429_carries_retry_after(provider: str) -> None:
    sender = HTTP_PROVIDERS[provider](responding(429, headers={"Retry-After": "17"}))
    with pytest.raises(ThrottledError) as caught:
        sender.send(make_email())
    assert caught.value.retry_after == 17.0


NOW = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("", None),
        ("120", 120.0),
        ("0", 0.0),
        ("1.5", 1.5),
        (format_datetime(NOW + timedelta(seconds=90), usegmt=True), 90.0),
        (format_datetime(NOW - timedelta(seconds=90), usegmt=True), 0.0),
        ("Wed, 01 Jan 2030 12:00:30 GMT", 30.0),
        ("soon", None),
        ("nan", None),
        ("-5", 0.0),
    ],
)
def test_parse_retry_after(header: str | None, expected: float | None) -> None:
    assert parse_retry_after(header, now=NOW) == expected


def test_classify_status_keeps_the_body_for_the_history() -> None:
    error = classify_status("x", httpx.Response(400, json={"message": "bad to address"}))
    assert isinstance(error, PermanentError)
    assert "bad to address" in error.response


def test_map_http_errors_lets_delivery_errors_through_untouched() -> None:
    original = PermanentError("already classified")
    with pytest.raises(PermanentError) as caught, map_http_errors("x"):
        raise original
    assert caught.value is original


@pytest.mark.parametrize(
    ("status", "error_code", "expected"),
    [
        (422, 300, PermanentError),  # invalid email request
        (422, 406, PermanentError),  # inactive recipient
        (401, 10, MisconfiguredError),  # bad or missing token
        (422, 10, MisconfiguredError),
        (422, 400, MisconfiguredError),  # sender signature not found
        (422, 412, MisconfiguredError),  # account pending
        (422, 429, ThrottledError),
        (500, 100, TransientError),  # maintenance
        (422, 99999, PermanentError),  # unknown code: the HTTP status decides
        (503, 99999, TransientError),
    ],
)
def test_postmark_error_codes(status: int, error_code: int, expected: type) -> None:
    body = {"ErrorCode": error_code, "Message": "something"}
    sender = HTTP_PROVIDERS["postmark"](responding(status, json=body))
    with pytest.raises(DeliveryError) as caught:
        sender.send(make_email())
    assert type(caught.value) is expected


def test_postmark_200_with_an_error_code_is_not_a_success() -> None:
    body = {"ErrorCode": 406, "Message": "You tried to send to an inactive recipient."}
    with pytest.raises(PermanentError):
        HTTP_PROVIDERS["postmark"](responding(200, json=body)).send(make_email())


# --- SMTP ------------------------------------------------------------------------------------

SMTP_CASES: list[tuple[BaseException, type[DeliveryError]]] = [
    (smtplib.SMTPRecipientsRefused({"a@x.org": (550, b"5.1.1 no such user")}), PermanentError),
    (
        smtplib.SMTPRecipientsRefused(
            {"a@x.org": (550, b"5.1.1 no such user"), "b@x.org": (450, b"4.2.1 mailbox busy")}
        ),
        TransientError,
    ),
    (smtplib.SMTPRecipientsRefused({"a@x.org": (421, b"4.3.2 shutting down")}), TransientError),
    (smtplib.SMTPSenderRefused(553, b"5.7.1 sender not allowed", "s@x.org"), PermanentError),
    (smtplib.SMTPSenderRefused(451, b"4.3.0 try later", "s@x.org"), TransientError),
    (smtplib.SMTPDataError(554, b"5.7.1 spam"), PermanentError),
    (smtplib.SMTPDataError(451, b"4.3.0 try later"), TransientError),
    (smtplib.SMTPDataError(421, b"4.4.2 timeout"), TransientError),
    (smtplib.SMTPAuthenticationError(535, b"5.7.8 bad credentials"), MisconfiguredError),
    (smtplib.SMTPAuthenticationError(454, b"4.7.0 temporary auth failure"), TransientError),
    (smtplib.SMTPConnectError(421, b"too busy"), TransientError),
    (smtplib.SMTPConnectError(554, b"no SMTP service here"), TransientError),
    (smtplib.SMTPHeloError(501, b"bad hostname"), MisconfiguredError),
    (smtplib.SMTPHeloError(421, b"busy"), TransientError),
    (smtplib.SMTPResponseException(454, b"TLS not available"), TransientError),
    (smtplib.SMTPNotSupportedError("STARTTLS extension not supported"), MisconfiguredError),
    (smtplib.SMTPServerDisconnected("Connection unexpectedly closed"), TransientError),
    (smtplib.SMTPException("something odd"), TransientError),
    (ConnectionRefusedError(111, "Connection refused"), TransientError),
    (TimeoutError("timed out"), TransientError),
    (socket.gaierror(-2, "Name or service not known"), TransientError),
    (ssl.SSLError("wrong version number"), TransientError),
    (ssl.SSLCertVerificationError("self-signed certificate"), MisconfiguredError),
    (OSError("network is unreachable"), TransientError),
    (ValueError("a bug somewhere"), TransientError),
]


@pytest.mark.parametrize(
    ("exc", "expected"),
    SMTP_CASES,
    ids=[f"{type(e).__name__}-{getattr(e, 'smtp_code', '')}" for e, _ in SMTP_CASES],
)
def test_smtp_classification(exc: BaseException, expected: type[DeliveryError]) -> None:
    with pytest.raises(DeliveryError) as caught, map_smtp_errors():
        raise exc
    assert type(caught.value) is expected
    code = getattr(exc, "smtp_code", None)
    if code is not None:
        assert str(code) in caught.value.response


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("250 2.0.0 Ok: queued as 4XyZ12", "4XyZ12"),
        ("250 OK id=1tGkKc-000AbC-Xy", "1tGkKc-000AbC-Xy"),
        ("250 OK", None),
    ],
)
def test_queue_id(reply: str, expected: str | None) -> None:
    assert queue_id(reply) == expected


# --- SES -------------------------------------------------------------------------------------


def client_error(code: str, status: int) -> ClientError:
    response: Any = {
        "Error": {"Code": code, "Message": f"{code} happened"},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return ClientError(response, "SendEmail")


SES_CASES: list[tuple[BaseException, type[DeliveryError]]] = [
    (client_error("MessageRejected", 400), PermanentError),
    (client_error("MailFromDomainNotVerifiedException", 400), MisconfiguredError),
    (client_error("BadRequestException", 400), PermanentError),
    (client_error("TooManyRequestsException", 429), ThrottledError),
    (client_error("LimitExceededException", 400), ThrottledError),
    (client_error("Throttling", 400), ThrottledError),
    (client_error("AccessDenied", 403), MisconfiguredError),
    (client_error("AccessDeniedException", 403), MisconfiguredError),
    (client_error("UnrecognizedClientException", 403), MisconfiguredError),
    (client_error("InvalidClientTokenId", 403), MisconfiguredError),
    (client_error("SignatureDoesNotMatch", 403), MisconfiguredError),
    (client_error("AccountSuspendedException", 400), MisconfiguredError),
    (client_error("SendingPausedException", 400), MisconfiguredError),
    (client_error("InternalFailure", 500), TransientError),
    (client_error("ServiceUnavailable", 503), TransientError),
    (client_error("SomethingNew", 400), PermanentError),
    (client_error("SomethingNew", 403), MisconfiguredError),
    (client_error("SomethingNew", 429), ThrottledError),
    (client_error("SomethingNew", 502), TransientError),
    (EndpointConnectionError(endpoint_url="https://email.example"), TransientError),
    (ConnectTimeoutError(endpoint_url="https://email.example"), TransientError),
    (ReadTimeoutError(endpoint_url="https://email.example"), TransientError),
    (ConnectionClosedError(endpoint_url="https://email.example"), TransientError),
    (NoCredentialsError(), MisconfiguredError),
    (ParamValidationError(report="Destination is wrong"), PermanentError),
    (KeyError("a bug somewhere"), TransientError),
]


@pytest.mark.parametrize(
    ("exc", "expected"),
    SES_CASES,
    ids=[
        e.response["Error"]["Code"] + str(e.response["ResponseMetadata"]["HTTPStatusCode"])
        if isinstance(e, ClientError)
        else type(e).__name__
        for e, _ in SES_CASES
    ],
)
def test_ses_classification(exc: BaseException, expected: type[DeliveryError]) -> None:
    with pytest.raises(DeliveryError) as caught, map_ses_errors():
        raise exc
    assert type(caught.value) is expected
    if isinstance(exc, ClientError):
        assert exc.response["Error"]["Code"] in caught.value.response


def test_ses_reads_the_http_status_table_for_codes_it_does_not_know() -> None:
    for status in range(300, 600):
        with pytest.raises(DeliveryError) as caught, map_ses_errors():
            raise client_error("SomethingNew", status)
        assert type(caught.value) is error_class_for_status(status), status
        assert f"HTTP {status}" in caught.value.message


# --- No foreign exception escapes a provider's mapping -----------------------------------------


def exception_classes(*modules: ModuleType) -> list[type[Exception]]:
    """Every Exception class the modules define or export, each once."""
    found = {
        value
        for module in modules
        for value in vars(module).values()
        if inspect.isclass(value) and issubclass(value, Exception)
    }
    return sorted(found, key=lambda cls: f"{cls.__module__}.{cls.__qualname__}")


# What the providers' libraries raise (and Python itself): every one must come out of every
# mapping as one of the four classes.
FOREIGN = exception_classes(httpx, smtplib, ssl, socket, botocore.exceptions, builtins)

REQUEST = httpx.Request("POST", "https://api.example.com/send")
# Required constructor arguments, by name, as the libraries raise these exceptions.
ARGUMENT_BY_NAME: dict[str, object] = {
    "message": "boom",
    "request": REQUEST,
    "response": httpx.Response(503, text="down", request=REQUEST),
    "code": 451,
    "msg": b"4.3.0 try later",
    "sender": "s@example.com",
    "recipients": {"a@example.com": (550, b"5.1.1 no such user")},
    "error_response": {
        "Error": {"Code": "SomethingNew", "Message": "?"},
        "ResponseMetadata": {"HTTPStatusCode": 500},
    },
    "operation_name": "SendEmail",
    "name": "waiter",
    "reason": "boom",
    "last_response": {},
}
# Python's own exceptions have no signature to read: a message, nothing, or their own tuple.
POSITIONAL: tuple[tuple[object, ...], ...] = (
    ("boom",),
    (),
    ("utf-8", b"\xff", 0, 1, "invalid start byte"),
    ("ascii", "é", 0, 1, "ordinal not in range"),
    ("é", 0, 1, "no mapping"),
    ("boom", [ValueError("inner")]),
)


def instance_of(cls: type[Exception]) -> Exception:
    """An instance of ``cls`` built with the arguments its library raises it with."""
    try:
        parameters = list(inspect.signature(cls).parameters.values())
    except ValueError:
        parameters = []
    kwargs = {
        p.name: ARGUMENT_BY_NAME[p.name]
        for p in parameters
        if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    }
    # botocore formats its message from keyword arguments named in ``fmt``.
    for _, field_name, _, _ in string.Formatter().parse(getattr(cls, "fmt", "") or ""):
        if field_name:
            kwargs[field_name] = "x"
    if kwargs:
        return cls(**kwargs)
    for args in POSITIONAL:
        try:
            return cls(*args)
        except TypeError:
            continue
    raise AssertionError(f"cannot build {cls.__qualname__}: add its arguments above")


MAPPINGS: dict[str, Callable[[], AbstractContextManager[None]]] = {
    "http": lambda: map_http_errors("sendgrid"),
    "http+postmark": lambda: map_http_errors("postmark", classify=classify_error_code),
    "smtp": map_smtp_errors,
    "ses": map_ses_errors,
}


def test_the_libraries_still_define_what_this_test_enumerates() -> None:
    names = {cls.__name__ for cls in FOREIGN}
    assert {"HTTPStatusError", "SMTPRecipientsRefused", "ClientError", "SSLError"} <= names
    assert len(FOREIGN) > 150


@pytest.mark.parametrize("mapping", sorted(MAPPINGS))
def test_no_foreign_exception_escapes_a_provider_mapping(
    mapping: str, caplog: pytest.LogCaptureFixture
) -> None:
    escaped = []
    for cls in FOREIGN:
        exc = instance_of(cls)
        try:
            with MAPPINGS[mapping]():
                raise exc
        except DeliveryError as error:
            if type(error) not in FOUR or error.__cause__ is not exc:
                escaped.append(f"{cls.__qualname__} -> {type(error).__name__}")
        except Exception as error:
            escaped.append(f"{cls.__qualname__} -> {type(error).__name__}: {error}")
    assert escaped == []


# --- Registry --------------------------------------------------------------------------------


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("MAILROOM_"):
            monkeypatch.delenv(key)


@pytest.mark.usefixtures("clean_env")
def test_registry_defaults_enable_only_smtp_and_say_why_not_the_others() -> None:
    providers, infos = build_providers(Settings())
    assert list(providers) == ["smtp"]
    assert [i.name for i in infos] == ["smtp", "sendgrid", "mailgun", "ses", "postmark"]
    line = describe(infos)
    assert "smtp: enabled (server=127.0.0.1:1025, security=none)" in line
    assert "sendgrid: disabled (MAILROOM_PROVIDERS__SENDGRID__API_KEY not set)" in line
    assert (
        "mailgun: disabled (MAILROOM_PROVIDERS__MAILGUN__API_KEY, "
        "MAILROOM_PROVIDERS__MAILGUN__DOMAIN not set)"
    ) in line
    assert "MAILROOM_PROVIDERS__SES__REGION" in line
    assert "postmark: disabled (MAILROOM_PROVIDERS__POSTMARK__API_KEY not set)" in line


@pytest.mark.usefixtures("clean_env")
def test_registry_builds_every_provider_with_credentials() -> None:
    settings = Settings(
        providers=ProvidersSettings(
            sendgrid=HttpProviderSettings(api_key=SecretStr("sg")),
            mailgun=HttpProviderSettings(api_key=SecretStr("mg"), domain="mg.example.com"),
            postmark=HttpProviderSettings(api_key=SecretStr("pm")),
            ses=SesSettings(
                region="eu-west-1", access_key_id="AKID", secret_access_key=SecretStr("s")
            ),
        )
    )
    providers, infos = build_providers(settings)
    assert {name: type(p) for name, p in providers.items()} == {
        "smtp": SmtpProvider,
        "sendgrid": SendGridProvider,
        "mailgun": MailgunProvider,
        "ses": SesProvider,
        "postmark": PostmarkProvider,
    }
    assert all(p.name == name for name, p in providers.items())
    assert all(i.enabled for i in infos)


@pytest.mark.usefixtures("clean_env")
def test_registry_reports_half_configured_and_broken_providers() -> None:
    settings = Settings(
        smtp=SmtpSettings(enabled=False),
        providers=ProvidersSettings(
            mailgun=HttpProviderSettings(api_key=SecretStr("mg")),
            sendgrid=HttpProviderSettings(api_key=SecretStr("sg"), base_url="api.sendgrid.com"),
            ses=SesSettings(
                region="not a region!", access_key_id="AKID", secret_access_key=SecretStr("s")
            ),
        ),
    )
    providers, infos = build_providers(settings)
    assert providers == {}
    by_name = {i.name: i for i in infos}
    assert by_name["smtp"].reason == "MAILROOM_SMTP__ENABLED=false"
    assert by_name["mailgun"].reason == "MAILROOM_PROVIDERS__MAILGUN__DOMAIN not set"
    assert by_name["sendgrid"].reason.startswith("error: base_url must be an absolute")
    assert by_name["ses"].reason.startswith("error:")
