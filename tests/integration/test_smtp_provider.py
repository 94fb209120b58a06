"""The SMTP provider against an aiosmtpd server on 127.0.0.1, in the clear and over TLS.

The server checks what a real one requires and answers the way a real one does. (HTTP providers
and SES: test_http_providers.py.)
"""

from __future__ import annotations

import asyncio
import email
import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from email.message import EmailMessage
from email.policy import default as default_policy
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from provider_emails import EMAIL, LOGO_PNG, REPORT_NAME, REPORT_PDF, RICH, make_email
from pydantic import SecretStr

from core.settings import SmtpSettings
from devtools.smtp_sink import SinkHandler
from helpers import Tls, free_port
from workers.mta.base import (
    DeliveryError,
    MisconfiguredError,
    PermanentError,
    TransientError,
)
from workers.mta.smtp import SmtpProvider

# --- SMTP ----------------------------------------------------------------------------------


@pytest.fixture
def sink() -> SinkHandler:
    """The project's SMTP sink, answering DATA with Postfix-like queue ids."""
    return SinkHandler(queue_ids=True)


# The providers smtp() made, closed (QUIT) before their server stops: aiosmtpd's Controller
# would leave the connections they keep open unclosed.
_providers: list[SmtpProvider] = []


@contextmanager
def run_server(sink: SinkHandler, **kwargs: Any) -> Iterator[int]:
    port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port, **kwargs)
    controller.start()
    try:
        yield port
    finally:
        while _providers:
            _providers.pop().close()
        controller.stop()


@pytest.fixture
def smtp_port(sink: SinkHandler) -> Iterator[int]:
    with run_server(sink) as port:
        yield port


def smtp(port: int, **settings: Any) -> SmtpProvider:
    ssl_context = settings.pop("ssl_context", None)
    settings.setdefault("timeout_seconds", 2.0)
    provider = SmtpProvider(
        SmtpSettings(host="127.0.0.1", port=port, **settings),
        ssl_context=ssl_context,
        local_hostname="mailroom.test",
    )
    _providers.append(provider)
    return provider


def test_smtp_delivers_to_every_recipient_without_a_bcc_header(
    sink: SinkHandler, smtp_port: int
) -> None:
    result = smtp(smtp_port).send(EMAIL)

    [received] = sink.messages
    assert result.response == f"250 2.0.0 Ok: queued as {received.queue_id}"
    assert result.provider_message_id == received.queue_id
    assert received.mail_from == "noreply@example.com"
    assert received.rcpt_tos == [
        "ann@example.com",
        "bob@example.com",
        "carol@example.com",
        "dave@example.com",
    ]
    message = email.message_from_bytes(received.raw)
    assert message["Bcc"] is None
    assert b"dave@example.com" not in received.raw
    assert message["Message-ID"] == EMAIL.message_id
    assert message["Cc"] == "Carol <carol@example.com>"


def test_smtp_delivers_attachments_inline_parts_and_extra_headers(
    sink: SinkHandler, smtp_port: int
) -> None:
    smtp(smtp_port).send(RICH)

    [received] = sink.messages
    message = email.message_from_bytes(received.raw, policy=default_policy)
    assert isinstance(message, EmailMessage)
    assert not message.defects
    assert message["List-Unsubscribe"] == "<https://example.com/u/1>"
    html = message.get_body(("html",))
    assert html is not None and 'src="cid:logo@mailroom"' in html.get_content()
    parts = {part.get_content_type(): part for part in message.walk()}
    logo, report = parts["image/png"], parts["application/pdf"]
    assert logo["Content-ID"] == "<logo@mailroom>"
    assert logo.get_content_disposition() == "inline"
    assert logo.get_content() == LOGO_PNG
    # The inline image lives with the HTML it belongs to.
    assert parts["multipart/related"].get_payload()[1] is logo
    assert report.get_content_disposition() == "attachment"
    assert (report.get_filename(), report.get_content()) == (REPORT_NAME, REPORT_PDF)


def test_smtp_partly_refused_recipients_are_delivered_and_reported(
    sink: SinkHandler, smtp_port: int
) -> None:
    sink.refuse_recipient("bob@example.com", "550 5.1.1 <bob@example.com>: User unknown")

    result = smtp(smtp_port).send(EMAIL)

    [received] = sink.messages
    assert "bob@example.com" not in received.rcpt_tos
    assert "dave@example.com" in received.rcpt_tos
    assert "refused: bob@example.com: 550 5.1.1 <bob@example.com>: User unknown" in result.response


def test_smtp_every_recipient_refused_is_permanent(sink: SinkHandler, smtp_port: int) -> None:
    for address in ("ann@example.com", "bob@example.com", "carol@example.com", "dave@example.com"):
        sink.refuse_recipient(address, "550 5.1.1 User unknown")
    with pytest.raises(PermanentError) as caught:
        smtp(smtp_port).send(EMAIL)
    assert "550 5.1.1 User unknown" in caught.value.response
    assert sink.messages == []


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("451 4.3.0 Try again later", TransientError),
        ("421 4.3.2 Service shutting down", TransientError),
        ("550 5.7.1 Message rejected as spam", PermanentError),
    ],
)
def test_smtp_data_refusals(
    sink: SinkHandler, smtp_port: int, reply: str, expected: type[DeliveryError]
) -> None:
    code, text = reply.split(" ", 1)
    sink.respond_with(int(code), text, times=10)
    with pytest.raises(DeliveryError) as caught:
        smtp(smtp_port).send(EMAIL)
    assert type(caught.value) is expected
    assert caught.value.response == reply


def test_smtp_nothing_listening_is_transient() -> None:
    with pytest.raises(TransientError):
        smtp(free_port()).send(EMAIL)


def test_smtp_silent_server_times_out_as_transient() -> None:
    # Listening but never accepting: the TCP connect succeeds, the greeting never comes.
    pool = ThreadPoolExecutor(max_workers=1)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        sending = pool.submit(smtp(listener.getsockname()[1], timeout_seconds=0.3).send, EMAIL)
        try:
            # Without its timeout the send would wait for the greeting for ever: the test waits
            # at most 10 s (over 30 times the timeout), then fails with TimeoutError.
            with pytest.raises(TransientError):
                sending.result(timeout=10)
        finally:
            pool.shutdown(wait=False)


class OverlapSink(SinkHandler):
    """The sink, holding each DATA until ``expected`` are in DATA at once.

    It waits ``hold`` seconds at most, then answers anyway; ``most_open`` is the largest number
    of DATA commands it held at the same moment.
    """

    def __init__(self, expected: int, hold: float) -> None:
        super().__init__(queue_ids=True)
        self.expected = expected
        self.hold = hold
        self.open = 0
        self.most_open = 0
        self._all_in = asyncio.Event()  # bound to the server's loop on first use

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.open += 1
        self.most_open = max(self.most_open, self.open)
        if self.open >= self.expected:
            self._all_in.set()
        try:
            with suppress(TimeoutError):
                await asyncio.wait_for(self._all_in.wait(), self.hold)
            return await super().handle_DATA(server, session, envelope)
        finally:
            self.open -= 1


def test_smtp_concurrent_sends_do_not_mix_up_replies() -> None:
    # Sends made one after another would each be alone in DATA and wait out the hold.
    sink = OverlapSink(expected=4, hold=5.0)
    emails = [make_email(f"<m{i}@mailroom.local>") for i in range(4)]
    with run_server(sink) as port, ThreadPoolExecutor(max_workers=4) as pool:
        provider = smtp(port, timeout_seconds=10.0)
        results = list(pool.map(provider.send, emails))

    assert sink.most_open == len(emails)
    by_queue_id = {r.queue_id: email.message_from_bytes(r.raw) for r in sink.messages}
    for sent, result in zip(emails, results, strict=True):
        assert by_queue_id[result.provider_message_id]["Message-ID"] == sent.message_id


# --- SMTP over TLS -------------------------------------------------------------------------


def authenticator(
    server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
) -> AuthResult:
    ok = (
        isinstance(auth_data, LoginPassword)
        and auth_data.login == b"mailer"
        and auth_data.password == b"s3cret"
    )
    return AuthResult(success=ok, handled=False)


@pytest.fixture
def starttls_port(sink: SinkHandler, tls: Tls) -> Iterator[int]:
    with run_server(
        sink,
        tls_context=tls.server,
        require_starttls=True,
        authenticator=authenticator,
        auth_require_tls=True,
    ) as port:
        yield port


def test_smtp_starttls_and_login(sink: SinkHandler, starttls_port: int, tls: Tls) -> None:
    provider = smtp(
        starttls_port,
        security="starttls",
        username="mailer",
        password=SecretStr("s3cret"),
        ssl_context=tls.client,
    )
    result = provider.send(EMAIL)

    [received] = sink.messages
    assert received.tls and received.authenticated
    assert result.provider_message_id == received.queue_id


def test_smtp_wrong_password_is_misconfigured(
    sink: SinkHandler, starttls_port: int, tls: Tls
) -> None:
    provider = smtp(
        starttls_port,
        security="starttls",
        username="mailer",
        password=SecretStr("wrong"),
        ssl_context=tls.client,
    )
    with pytest.raises(MisconfiguredError) as caught:
        provider.send(EMAIL)
    assert caught.value.response.startswith("535")
    assert sink.messages == []


def test_smtp_untrusted_certificate_is_misconfigured(sink: SinkHandler, starttls_port: int) -> None:
    # The default context trusts the system CAs only, not our self-signed test certificate.
    with pytest.raises(MisconfiguredError, match="certificate"):
        smtp(starttls_port, security="starttls").send(EMAIL)
    assert sink.messages == []


def test_smtp_starttls_not_offered_is_misconfigured(smtp_port: int, tls: Tls) -> None:
    with pytest.raises(MisconfiguredError, match="STARTTLS"):
        smtp(smtp_port, security="starttls", ssl_context=tls.client).send(EMAIL)


def test_smtp_implicit_tls(sink: SinkHandler, tls: Tls) -> None:
    with run_server(sink, ssl_context=tls.server) as port:
        result = smtp(port, security="ssl", ssl_context=tls.client).send(EMAIL)
    [received] = sink.messages
    assert received.tls
    assert result.provider_message_id == received.queue_id
