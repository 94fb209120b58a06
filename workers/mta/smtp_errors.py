"""The SMTP client classes and the one mapping of smtplib's and the socket's errors.

:func:`map_smtp_errors` is where SMTP replies and connection errors become Mailroom's delivery
errors (permanent, transient, throttled, misconfigured); :mod:`workers.mta.smtp` sends.
"""

from __future__ import annotations

import logging
import re
import smtplib
import ssl
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from email.utils import parseaddr
from typing import TYPE_CHECKING

from workers.mta.base import (
    DeliveryError,
    MisconfiguredError,
    PermanentError,
    TransientError,
)

if TYPE_CHECKING:
    from typing_extensions import Buffer

logger = logging.getLogger("workers.mta.smtp")

# Postfix "queued as 4Xyz", Exim "id=1abc-000X-AB".
_QUEUE_ID = re.compile(r"queued as\s+<?([^\s<>]+)|\bid=([^\s;]+)", re.IGNORECASE)


class _SMTP(smtplib.SMTP):
    """smtplib's client, keeping the DATA reply that ``sendmail`` throws away.

    It also notes whether the transaction got as far as DATA (after which the message must not be
    sent again) and the reply to the RSET that ``sendmail`` says after a refusal.
    """

    data_reply: tuple[int, bytes] = (0, b"")
    data_started: bool = False
    rset_reply: tuple[int, bytes] | None = None

    def data(self, msg: Buffer | str) -> tuple[int, bytes]:
        self.data_started = True
        self.data_reply = super().data(msg)
        return self.data_reply

    def rset(self) -> tuple[int, bytes]:
        self.rset_reply = super().rset()
        return self.rset_reply


class _SMTPSSL(_SMTP, smtplib.SMTP_SSL):
    """The implicit-TLS client (``SMTP_SSL``'s socket), keeping the same notes as :class:`_SMTP`."""


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
