"""Kept SMTP connections: when one is still usable, and how one is closed.

Used by :mod:`workers.mta.smtp`, whose provider keeps one :class:`_Session` per sending thread.
"""

from __future__ import annotations

import logging
import select
import smtplib
import ssl
import time
import weakref

from workers.mta.smtp_errors import _SMTP, _SMTPSSL

logger = logging.getLogger("workers.mta.smtp")


# QUIT of a connection nobody waits for (idle, thread ended, shutdown) waits at most this long.
_QUIT_TIMEOUT = 2.0
# A kept connection idle at least this long is polled before reuse (see _take_kept_session).
_POLL_AFTER_IDLE = 1.0


def _connection_lost(exc: BaseException | None) -> bool:
    """Whether ``exc`` says the connection itself is gone, rather than the message refused.

    A disconnect, a socket error (reset, broken pipe, timeout) or a ``421`` ("closing the
    transmission channel", which smtplib answers by closing). A TLS certificate that is not
    trusted, or any other SMTP reply, is about the server or the message: a new connection would
    meet it again.
    """
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return True
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return any(code == 421 for code, _ in exc.recipients.values())
    if isinstance(exc, smtplib.SMTPResponseException):
        return exc.smtp_code == 421
    if isinstance(exc, smtplib.SMTPException | ssl.SSLCertVerificationError):
        return False
    return isinstance(exc, OSError)


def _still_usable(smtp: _SMTP | _SMTPSSL, cause: BaseException | None) -> bool:
    """Whether a connection whose send just failed can carry the next one.

    Yes after a refusal of the sender, of every recipient or of the data that smtplib followed
    with an accepted RSET (the transaction is then over on both sides), and after our own refusal
    before MAIL (``cause`` None: nothing was said). No after anything else.
    """
    if smtp.sock is None:
        return False
    if cause is None:
        return not smtp.data_started and smtp.rset_reply is None
    refusal = (smtplib.SMTPSenderRefused, smtplib.SMTPRecipientsRefused, smtplib.SMTPDataError)
    return (
        isinstance(cause, refusal)
        and smtp.rset_reply is not None
        and 200 <= smtp.rset_reply[0] < 300
    )


def _looks_open(smtp: _SMTP | _SMTPSSL) -> bool:
    """Whether an idle connection is still open: one zero-timeout poll, no round trip.

    Between transactions the server has nothing to say; if its side is readable it has closed
    the connection (EOF, reset) or announced that it will (``421``), so it cannot be reused.
    """
    sock = smtp.sock
    if sock is None:
        return False
    try:
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            return False
        if hasattr(select, "poll"):
            poller = select.poll()
            poller.register(sock, select.POLLIN | select.POLLPRI)
            return not poller.poll(0)
        readable, _, _ = select.select([sock], [], [], 0)
        return not readable
    except (OSError, ValueError):
        return False


class _Session:
    """One open SMTP connection, greeted and logged in, kept by one thread between its sends.

    ``in_use`` and ``closed`` change under the provider's lock: the owning thread takes the
    session (``in_use``) only if it is not ``closed``, and the idle reaper or ``close()`` close
    only sessions that are not ``in_use`` (a busy one is closed by its owner after the send).
    When the session is dropped without being closed (its thread ended, the provider was
    dropped) or at interpreter exit, its finalizer says QUIT.
    """

    __slots__ = ("__weakref__", "_finalizer", "closed", "in_use", "last_used", "smtp")

    def __init__(self, smtp: _SMTP | _SMTPSSL) -> None:
        self.smtp = smtp
        self.last_used = time.monotonic()
        self.in_use = True
        self.closed = False
        self._finalizer = weakref.finalize(self, _quit_quietly, smtp, _QUIT_TIMEOUT)

    def close(self, *, quit: bool) -> None:
        """Close the connection, after a QUIT if ``quit`` (not on a failed one: no second wait)."""
        self.closed = True
        if quit:
            self._finalizer()
        elif self._finalizer.detach() is not None:
            self.smtp.close()


class _ConnectionLost(Exception):
    """A kept connection was lost before DATA: the send may be tried on a new connection."""


def _quit_quietly(smtp: smtplib.SMTP, timeout: float | None = None) -> None:
    """Say QUIT and close; nobody waits for the answer, so nothing here may fail.

    Args:
        smtp: The connection.
        timeout: At most this many seconds for the QUIT (the connection's own timeout if None).
    """
    try:
        if timeout is not None and smtp.sock is not None:
            smtp.sock.settimeout(min(timeout, smtp.sock.gettimeout() or timeout))
        smtp.quit()
    except Exception:
        logger.debug("smtp: QUIT failed", exc_info=True)
    finally:
        smtp.close()
