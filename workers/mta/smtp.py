"""SMTP relay through smtplib: plain, STARTTLS or implicit TLS, with optional login.

Each send opens its own connection, so concurrent sends share nothing but the (thread-safe)
TLS context.
"""

from __future__ import annotations

import logging
import re
import smtplib
import socket
import ssl
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from email.utils import parseaddr
from typing import TYPE_CHECKING

from core.settings import SmtpSettings
from workers.mta.base import (
    DeliveryError,
    MisconfiguredError,
    OutgoingEmail,
    PermanentError,
    SendResult,
    TransientError,
)

if TYPE_CHECKING:
    from typing_extensions import Buffer

logger = logging.getLogger(__name__)

# Postfix "queued as 4Xyz", Exim "id=1abc-000X-AB".
_QUEUE_ID = re.compile(r"queued as\s+<?([^\s<>]+)|\bid=([^\s;]+)", re.IGNORECASE)


class _SMTP(smtplib.SMTP):
    """smtplib's client, keeping the DATA reply that ``sendmail`` throws away."""

    data_reply: tuple[int, bytes] = (0, b"")

    def data(self, msg: Buffer | str) -> tuple[int, bytes]:
        self.data_reply = super().data(msg)
        return self.data_reply


class _SMTPSSL(smtplib.SMTP_SSL):
    """The implicit-TLS client, keeping the DATA reply like :class:`_SMTP`."""

    data_reply: tuple[int, bytes] = (0, b"")

    def data(self, msg: Buffer | str) -> tuple[int, bytes]:
        self.data_reply = super().data(msg)
        return self.data_reply


def _text(reply: bytes | str) -> str:
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply
    return " ".join(text.split())


def _reply(code: int, reply: bytes | str) -> str:
    return f"{code} {_text(reply)}".strip()


def _refused_text(refused: dict[str, tuple[int, bytes]]) -> str:
    return "; ".join(f"{rcpt}: {_reply(code, reply)}" for rcpt, (code, reply) in refused.items())


def _addr_spec(value: str) -> str:
    """The bare address of ``Name <a@b>``: what MAIL FROM and RCPT TO take."""
    return parseaddr(value)[1] or value.strip()


def _unique(values: Iterable[str]) -> list[str]:
    seen: set[str] = set()
    result = []
    for value in values:
        if value.lower() not in seen:
            seen.add(value.lower())
            result.append(value)
    return result


def _is_permanent(code: int) -> bool:
    return 500 <= code < 600


@contextmanager
def map_smtp_errors() -> Iterator[None]:
    """Classify everything that can go wrong in an SMTP send into a DeliveryError.

    5xx refusals of the sender, the recipients or the data are permanent; 4xx (421 included),
    disconnects, timeouts and socket errors are transient; a refused login (535) or a missing
    server feature (STARTTLS, AUTH) or an untrusted certificate is a misconfiguration.

    Yields:
        Nothing; exceptions raised in the block are translated.

    Raises:
        DeliveryError: Always one of its four subclasses.
    """
    try:
        yield
    except DeliveryError:
        raise
    except smtplib.SMTPRecipientsRefused as exc:
        refused = exc.recipients
        detail = _refused_text(refused)
        if all(_is_permanent(code) for code, _ in refused.values()):
            raise PermanentError("smtp: every recipient was refused", response=detail) from exc
        raise TransientError("smtp: recipients refused for now", response=detail) from exc
    except smtplib.SMTPAuthenticationError as exc:
        reply = _reply(exc.smtp_code, exc.smtp_error)
        if _is_permanent(exc.smtp_code):
            raise MisconfiguredError("smtp: login refused", response=reply) from exc
        raise TransientError("smtp: login failed for now", response=reply) from exc
    except smtplib.SMTPConnectError as exc:
        reply = _reply(exc.smtp_code, exc.smtp_error)
        raise TransientError("smtp: server refused the connection", response=reply) from exc
    except (smtplib.SMTPSenderRefused, smtplib.SMTPDataError) as exc:
        reply = _reply(exc.smtp_code, exc.smtp_error)
        what = "sender" if isinstance(exc, smtplib.SMTPSenderRefused) else "message"
        if _is_permanent(exc.smtp_code):
            raise PermanentError(f"smtp: {what} refused", response=reply) from exc
        raise TransientError(f"smtp: {what} deferred", response=reply) from exc
    except smtplib.SMTPResponseException as exc:
        # What is left: HELO/EHLO and STARTTLS refusals. A 5xx there is about our setup.
        reply = _reply(exc.smtp_code, exc.smtp_error)
        if _is_permanent(exc.smtp_code):
            raise MisconfiguredError("smtp: server refused us", response=reply) from exc
        raise TransientError("smtp: server deferred us", response=reply) from exc
    except smtplib.SMTPNotSupportedError as exc:
        raise MisconfiguredError(f"smtp: {exc}") from exc
    except smtplib.SMTPServerDisconnected as exc:
        raise TransientError(f"smtp: disconnected: {exc}") from exc
    except smtplib.SMTPException as exc:
        raise TransientError(f"smtp: {exc}") from exc
    except ssl.SSLCertVerificationError as exc:
        # Retrying will not make the certificate trusted.
        raise MisconfiguredError(f"smtp: TLS certificate not trusted: {exc}") from exc
    except OSError as exc:
        # Connection refused, timeouts, DNS failures, TLS handshake errors.
        raise TransientError(f"smtp: {type(exc).__name__}: {exc}") from exc
    except Exception as exc:
        logger.exception("smtp: unexpected error while sending")
        raise TransientError(f"smtp: unexpected {type(exc).__name__}: {exc}") from exc


def queue_id(reply: str) -> str | None:
    """Return the queue id in a DATA reply such as ``250 2.0.0 Ok: queued as 4XyZ``."""
    match = _QUEUE_ID.search(reply)
    if match is None:
        return None
    return match.group(1) or match.group(2)


class SmtpProvider:
    """Sends the MIME bytes to an SMTP relay, envelope recipients to + cc + bcc.

    Args:
        settings: ``Settings.smtp``; ``host`` is required.
        ssl_context: The TLS context for STARTTLS and implicit TLS; defaults to the system
            trust store with hostname checking (pass another to trust a private CA).
        local_hostname: The name to give in EHLO; defaults to this host's FQDN, looked up once.

    Raises:
        ValueError: ``host`` is not set.
    """

    name: str = "smtp"

    def __init__(
        self,
        settings: SmtpSettings,
        *,
        ssl_context: ssl.SSLContext | None = None,
        local_hostname: str | None = None,
    ) -> None:
        if not settings.host:
            raise ValueError("smtp: host is not set")
        self._host = settings.host
        self._port = settings.port
        self._security = settings.security
        self._username = settings.username or ""
        self._password = settings.password.get_secret_value() if settings.password else ""
        self._timeout = settings.timeout_seconds
        self._ssl_context = ssl_context or ssl.create_default_context()
        # smtplib would look the FQDN up on every connection.
        self._local_hostname = local_hostname or socket.getfqdn()

    def _connect(self) -> _SMTP | _SMTPSSL:
        if self._security == "ssl":
            return _SMTPSSL(
                self._host,
                self._port,
                local_hostname=self._local_hostname,
                timeout=self._timeout,
                context=self._ssl_context,
            )
        return _SMTP(
            self._host, self._port, local_hostname=self._local_hostname, timeout=self._timeout
        )

    def _mail_options(self, smtp: smtplib.SMTP, addresses: list[str]) -> list[str]:
        if all(address.isascii() for address in addresses):
            return []
        if not smtp.has_extn("smtputf8"):
            raise PermanentError("smtp: non-ASCII address and the server lacks SMTPUTF8")
        return ["SMTPUTF8", "BODY=8BITMIME"]

    def send(self, email: OutgoingEmail) -> SendResult:
        """Send ``email.mime`` with envelope recipients to + cc + bcc.

        Args:
            email: The email to send.

        Returns:
            The acceptance: the server's final reply, and its queue id (or our Message-ID).
            Recipients the server refused while accepting others are listed in ``response``.

        Raises:
            DeliveryError: One of its four subclasses, from :func:`map_smtp_errors`.
        """
        sender = _addr_spec(email.from_address)
        recipients = _unique(_addr_spec(r) for r in email.recipients)
        smtp: _SMTP | _SMTPSSL | None = None
        try:
            with map_smtp_errors():
                smtp = self._connect()
                if self._security == "starttls":
                    smtp.starttls(context=self._ssl_context)
                smtp.ehlo_or_helo_if_needed()
                if self._username:
                    smtp.login(self._username, self._password)
                options = self._mail_options(smtp, [sender, *recipients])
                refused = smtp.sendmail(sender, recipients, email.mime, mail_options=options)
                reply = _reply(*smtp.data_reply)
                _quit_quietly(smtp)
        except DeliveryError:
            # No QUIT on a failed connection: a server that stopped answering would make us
            # wait a second timeout for nothing.
            if smtp is not None:
                smtp.close()
            raise
        if refused:
            reply = f"{reply}; refused: {_refused_text(refused)}"
        return SendResult(provider_message_id=queue_id(reply) or email.message_id, response=reply)


def _quit_quietly(smtp: smtplib.SMTP) -> None:
    """Say QUIT and close; the message is already accepted, so nothing here may fail the send."""
    try:
        smtp.quit()
    except Exception:
        logger.debug("smtp: QUIT failed", exc_info=True)
    finally:
        smtp.close()
