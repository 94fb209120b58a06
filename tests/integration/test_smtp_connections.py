"""The SMTP provider keeps one connection per thread, and never sends a message twice doing so.

In-process aiosmtpd servers that count the connections they accept (and the QUITs and RSETs they
are told), some of which drop connections at chosen moments.
"""

from __future__ import annotations

import logging
import smtplib
import ssl
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from pydantic import SecretStr

from core.settings import SmtpSettings
from devtools.smtp_sink import SinkHandler
from helpers import SmtpSink, Tls, free_port, wait_until
from workers.mta.base import OutgoingEmail, PermanentError, TransientError
from workers.mta.smtp import SmtpProvider, _connection_lost


def make_email(n: int) -> OutgoingEmail:
    message_id = f"<reuse-{n}@mailroom.local>"
    msg = EmailMessage()
    msg["From"] = "Mailroom <noreply@example.com>"
    msg["To"] = "ann@example.com"
    msg["Subject"] = f"message {n}"
    msg["Message-ID"] = message_id
    msg.set_content(f"body {n}")
    return OutgoingEmail(
        email_id=f"e{n}",
        message_id=message_id,
        from_address="Mailroom <noreply@example.com>",
        to=("ann@example.com",),
        subject=f"message {n}",
        text=f"body {n}",
        mime=msg.as_bytes(),
    )


# The providers made by provider(), closed before their server stops (Server.stop).
_providers: list[SmtpProvider] = []


def provider(port: int, **settings: Any) -> SmtpProvider:
    ssl_context = settings.pop("ssl_context", None)
    settings.setdefault("timeout_seconds", 2.0)
    made = SmtpProvider(
        SmtpSettings(host="127.0.0.1", port=port, **settings),
        ssl_context=ssl_context,
        local_hostname="mailroom.test",
    )
    _providers.append(made)
    return made


class Handler(SinkHandler):
    """The project's sink handler, also counting QUIT and RSET, with connection drops on demand.

    Attributes:
        drop_at_mail_after: Abort the connection at MAIL once it carried this many transactions
            (the server went away while the client held the connection idle, undetected).
        refuse_mail_after: Answer MAIL with 421 and close once the connection carried this many
            (a server's per-connection message limit).
        drop_after_data: Accept the next DATA, then abort the connection before replying.
    """

    def __init__(self) -> None:
        super().__init__()
        self.quits = 0
        self.rsets = 0
        self.drop_at_mail_after: int | None = None
        self.refuse_mail_after: int | None = None
        self.drop_after_data = False
        self._per_connection: Counter[int] = Counter()

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        done = self._per_connection[id(session)]
        self._per_connection[id(session)] += 1
        if self.drop_at_mail_after is not None and done >= self.drop_at_mail_after:
            assert server.transport is not None
            server.transport.abort()
            return "421 4.3.2 gone"  # never arrives
        if self.refuse_mail_after is not None and done >= self.refuse_mail_after:
            server.loop.call_soon(server.transport.close)  # type: ignore[union-attr]
            return "421 4.7.0 Too many messages on this connection, closing"
        return await super().handle_MAIL(server, session, envelope, address, mail_options)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        reply = await super().handle_DATA(server, session, envelope)
        if self.drop_after_data:
            self.drop_after_data = False
            assert server.transport is not None
            server.transport.abort()  # accepted, but the client never hears it
        return reply

    async def handle_RSET(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.rsets += 1
        return "250 OK"

    async def handle_QUIT(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.quits += 1
        return "221 Bye"


class CountingController(Controller):
    """A Controller that counts the connections it accepts."""

    connections = 0

    def factory(self) -> SMTP:
        self.connections += 1
        return super().factory()


@dataclass
class Server:
    handler: Handler
    controller: CountingController
    port: int

    @property
    def connections(self) -> int:
        return self.controller.connections

    @property
    def subjects(self) -> list[str]:
        return [str(m.message["Subject"]) for m in self.handler.messages]

    def stop(self) -> None:
        """Close the providers' kept connections (aiosmtpd would leave them unclosed), and stop."""
        while _providers:
            _providers.pop().close()
        self.controller.stop()


def start_server(**kwargs: Any) -> Server:
    handler = Handler()
    port = free_port()
    controller = CountingController(handler, hostname="127.0.0.1", port=port, **kwargs)
    controller.start()
    controller.connections = 0  # start() made one to see that it listens
    return Server(handler, controller, port)


@pytest.fixture
def server() -> Iterator[Server]:
    started = start_server()
    try:
        yield started
    finally:
        started.stop()


# -- reuse ---------------------------------------------------------------------------------------


def test_sends_from_one_thread_use_one_connection() -> None:
    sink = SmtpSink().start()
    try:
        smtp = provider(sink.port)
        results = [smtp.send(make_email(n)) for n in range(5)]
        received = sink.wait_for_count(5)
    finally:
        while _providers:
            _providers.pop().close()
        sink.stop()
    assert [r.response for r in results] == ["250 OK: message accepted"] * 5
    assert [m.message["Message-ID"] for m in received] == [
        f"<reuse-{n}@mailroom.local>" for n in range(5)
    ]
    # One client port: one connection.
    assert len({m.peer for m in received}) == 1


def test_each_thread_keeps_one_connection(server: Server) -> None:
    smtp = provider(server.port)
    start = threading.Barrier(4)

    def sends(thread: int) -> None:
        start.wait()
        for n in range(5):
            smtp.send(make_email(thread * 10 + n))

    threads = [threading.Thread(target=sends, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(server.subjects) == sorted(
        f"message {t * 10 + n}" for t in range(4) for n in range(5)
    )
    assert server.connections == 4
    assert len({m.peer for m in server.handler.messages}) == 4


def test_refused_transactions_are_reset_and_the_connection_kept(server: Server) -> None:
    smtp = provider(server.port)
    smtp.send(make_email(0))
    server.handler.respond_with(550, "5.1.1 no such user", stage="RCPT")
    with pytest.raises(PermanentError):
        smtp.send(make_email(1))
    server.handler.respond_with(451, "4.3.0 try later", stage="DATA")
    with pytest.raises(TransientError):
        smtp.send(make_email(2))
    server.handler.respond_with(553, "5.7.1 sender not allowed", stage="MAIL")
    with pytest.raises(PermanentError):
        smtp.send(make_email(3))
    smtp.send(make_email(4))

    assert server.subjects == ["message 0", "message 4"]
    assert server.handler.rsets == 3
    assert server.connections == 1


# -- connections lost --------------------------------------------------------------------------


def test_a_connection_the_server_closed_while_idle_is_replaced(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # aiosmtpd closes a connection silent for `timeout` seconds, without a word.
    server = start_server(timeout=0.3)
    try:
        smtp = provider(server.port)
        smtp.send(make_email(0))
        time.sleep(1.2)  # the server has closed it meanwhile (and it is polled: idle > 1 s)
        with caplog.at_level(logging.DEBUG, logger="workers.mta.smtp"):
            smtp.send(make_email(1))
    finally:
        server.stop()
    # Seen before use (the socket polled readable), not by a failed command.
    assert "the server closed the kept connection" in caplog.text
    assert "sending it on a new connection" not in caplog.text
    assert server.subjects == ["message 0", "message 1"]
    assert server.handler.data_commands == 2
    assert server.connections == 2


@pytest.mark.parametrize("how", ["dropped at MAIL", "421 at MAIL"])
def test_a_connection_lost_before_data_is_replaced_and_the_send_retried_once(
    server: Server, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    smtp = provider(server.port)
    smtp.send(make_email(0))
    if how == "dropped at MAIL":
        server.handler.drop_at_mail_after = 1
    else:
        server.handler.refuse_mail_after = 1

    with caplog.at_level(logging.INFO, logger="workers.mta.smtp"):
        result = smtp.send(make_email(1))  # fails on the kept connection, goes on a new one

    assert "sending it on a new connection" in caplog.text
    assert result.response == "250 OK: message accepted"
    assert server.subjects == ["message 0", "message 1"]
    assert server.handler.data_commands == 2
    assert server.connections == 2


def test_a_send_whose_new_connection_also_fails_is_transient_and_not_retried_again(
    server: Server,
) -> None:
    smtp = provider(server.port)
    smtp.send(make_email(0))
    server.handler.refuse_mail_after = 0  # every MAIL, on every connection

    with pytest.raises(TransientError) as caught:
        smtp.send(make_email(1))

    assert caught.value.response.startswith("421 4.7.0")
    assert server.subjects == ["message 0"]
    assert server.connections == 2  # the kept one, and one more: not a loop


def test_a_421_on_a_new_connection_is_not_retried(server: Server) -> None:
    server.handler.refuse_mail_after = 0
    with pytest.raises(TransientError):
        provider(server.port).send(make_email(0))
    assert server.connections == 1


def test_a_connection_lost_after_data_is_never_sent_again(server: Server) -> None:
    smtp = provider(server.port)
    smtp.send(make_email(0))
    server.handler.drop_after_data = True

    # The server took the message but the reply never came: it may have been accepted.
    with pytest.raises(TransientError, match="disconnected"):
        smtp.send(make_email(1))

    assert server.handler.data_commands == 2
    assert server.subjects == ["message 0", "message 1"]
    assert server.connections == 1
    smtp.send(make_email(2))  # the next send opens a new connection
    assert server.subjects == ["message 0", "message 1", "message 2"]
    assert server.connections == 2


@pytest.mark.parametrize(
    ("exc", "lost"),
    [
        (smtplib.SMTPServerDisconnected("Connection unexpectedly closed"), True),
        (ConnectionResetError(104, "Connection reset by peer"), True),
        (BrokenPipeError(32, "Broken pipe"), True),
        (TimeoutError("timed out"), True),
        (smtplib.SMTPSenderRefused(421, b"4.4.2 idle too long", "s@x.org"), True),
        (smtplib.SMTPRecipientsRefused({"a@x.org": (421, b"4.3.2 shutting down")}), True),
        (smtplib.SMTPSenderRefused(451, b"4.3.0 try later", "s@x.org"), False),
        (smtplib.SMTPRecipientsRefused({"a@x.org": (550, b"5.1.1 no such user")}), False),
        (smtplib.SMTPDataError(554, b"5.7.1 spam"), False),
        (smtplib.SMTPAuthenticationError(535, b"5.7.8 bad credentials"), False),
        (ssl.SSLCertVerificationError("self-signed certificate"), False),
        (ValueError("a bug"), False),
        (None, False),
    ],
    ids=lambda value: type(value).__name__ if not isinstance(value, bool) else str(value),
)
def test_which_failures_say_the_connection_is_lost(exc: BaseException | None, lost: bool) -> None:
    assert _connection_lost(exc) is lost


# -- closing ---------------------------------------------------------------------------------------


def test_an_idle_connection_is_closed_after_idle_seconds(server: Server) -> None:
    smtp = provider(server.port, idle_seconds=0.2)
    smtp.send(make_email(0))
    smtp.send(make_email(1))
    assert server.handler.quits == 0
    wait_until(lambda: server.handler.quits == 1, timeout=3, message="QUIT of the idle connection")
    smtp.send(make_email(2))
    assert server.subjects == ["message 0", "message 1", "message 2"]
    assert server.connections == 2


def test_idle_seconds_zero_opens_a_connection_per_send(server: Server) -> None:
    smtp = provider(server.port, idle_seconds=0)
    for n in range(3):
        smtp.send(make_email(n))
    assert server.connections == 3
    wait_until(lambda: server.handler.quits == 3, timeout=3, message="a QUIT per send")


def test_a_thread_that_ends_closes_its_connection(server: Server) -> None:
    smtp = provider(server.port, idle_seconds=60)
    thread = threading.Thread(target=lambda: [smtp.send(make_email(n)) for n in range(2)])
    thread.start()
    thread.join()
    wait_until(lambda: server.handler.quits == 1, timeout=3, message="QUIT at the thread's end")
    assert server.connections == 1


def test_close_quits_the_kept_connections_and_the_provider_stays_usable(server: Server) -> None:
    smtp = provider(server.port, idle_seconds=60)
    smtp.send(make_email(0))
    smtp.close()
    wait_until(lambda: server.handler.quits == 1, timeout=3, message="QUIT at close()")
    smtp.send(make_email(1))
    assert server.subjects == ["message 0", "message 1"]
    assert server.connections == 2


# -- TLS and login: once per connection ------------------------------------------------------------


def test_starttls_and_login_once_per_connection(
    tls: Tls,
) -> None:
    logins = []

    def authenticator(
        server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        logins.append(mechanism)
        ok = isinstance(auth_data, LoginPassword) and auth_data.password == b"s3cret"
        return AuthResult(success=ok, handled=False)

    server = start_server(
        tls_context=tls.server,
        require_starttls=True,
        authenticator=authenticator,
        auth_require_tls=True,
    )
    try:
        smtp = provider(
            server.port,
            security="starttls",
            username="mailer",
            password=SecretStr("s3cret"),
            ssl_context=tls.client,
        )
        for n in range(3):
            smtp.send(make_email(n))
        smtp.close()
        wait_until(lambda: server.handler.quits == 1, timeout=3, message="QUIT at close()")
    finally:
        server.stop()
    assert server.subjects == ["message 0", "message 1", "message 2"]
    assert server.connections == 1
    assert len(logins) == 1


def test_implicit_tls_connection_is_reused(tls: Tls) -> None:
    server = start_server(ssl_context=tls.server)
    try:
        smtp = provider(server.port, security="ssl", ssl_context=tls.client)
        for n in range(3):
            smtp.send(make_email(n))
        smtp.close()
    finally:
        server.stop()
    assert server.subjects == ["message 0", "message 1", "message 2"]
    assert server.connections == 1
