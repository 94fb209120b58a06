"""SMTP relay through smtplib: plain, STARTTLS or implicit TLS, with optional login.

Each thread keeps one connection open (greeted, through STARTTLS and logged in once) and sends
its messages one transaction after another on it, so concurrent sends share nothing but the
(thread-safe) TLS context. Opening a connection, EHLO and QUIT cost more than a transaction.

* Before reusing a connection idle for a second or more, one zero-timeout poll of its socket
  (no round trip) tells whether the server closed it (or wrote to it, e.g. a ``421`` idle
  timeout): then it is dropped.
* A kept connection that fails before the message was handed over (a disconnect, a socket error,
  a ``421`` to MAIL or RCPT) is replaced by a new one and the send is tried once more on it (so
  a send that timed out on the kept connection can take twice ``timeout_seconds``). Once the
  DATA command is sent the message is never sent again by this module: the server may have
  accepted it, and the failure is reported (transient) like any other.
* After a refused transaction smtplib has said RSET; the connection is kept only if the RSET was
  accepted, and it is closed after any other failure.
* A connection idle for ``SmtpSettings.idle_seconds`` is closed (QUIT) by a background thread of
  the provider (0 turns reuse off: a connection per send); the one of a thread that ends is closed
  with it, and :meth:`SmtpProvider.close` closes them all.
"""

from __future__ import annotations

import logging
import smtplib
import socket
import ssl
import threading
import time
import weakref
from typing import TYPE_CHECKING

from core.settings import SmtpSettings
from workers.mta.base import (
    DeliveryError,
    OutgoingEmail,
    PermanentError,
    SendResult,
)

# The client classes and the error mapping live in smtp_errors; re-exported for callers.
from workers.mta.smtp_errors import (
    _SMTP,
    _SMTPSSL,
    _addr_spec,
    _refused_text,
    _reply,
    _unique,
    map_smtp_errors,
    queue_id,
)
from workers.mta.smtp_sessions import (
    _POLL_AFTER_IDLE,
    _connection_lost,
    _ConnectionLost,
    _looks_open,
    _Session,
    _still_usable,
)

if TYPE_CHECKING:
    pass

logger = logging.getLogger(__name__)

__all__ = ["SmtpProvider", "map_smtp_errors", "queue_id"]


def _close_idle_sessions(provider_ref: weakref.ReferenceType[SmtpProvider]) -> None:
    """The idle reaper: close idle connections until the provider keeps none (or is dropped)."""
    while True:
        provider = provider_ref()
        if provider is None:
            return
        wait = provider._close_idle()
        del provider
        if wait is None:
            return
        time.sleep(wait)


class SmtpProvider:
    """Sends the MIME bytes to an SMTP relay, envelope recipients to + cc + bcc.

    Args:
        settings: ``Settings.smtp``; ``host`` is required.
        ssl_context: The TLS context for STARTTLS and implicit TLS; defaults to the system
            trust store with hostname checking (pass another to trust a private CA).
        local_hostname: The name to give in EHLO; defaults to this host's FQDN, looked up once.

    Each thread sending through it keeps one connection open between its sends, closed after
    ``settings.idle_seconds`` without a send (see the module docstring).

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
        self._idle_seconds = settings.idle_seconds
        # Each thread's kept session; dropped (and so closed) when the thread ends.
        self._local = threading.local()
        self._lock = threading.Lock()
        # Every open session, for the idle reaper and close(); weak, so that a thread's end
        # still drops its session.
        self._sessions: weakref.WeakSet[_Session] = weakref.WeakSet()
        self._reaper: threading.Thread | None = None

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

        On this thread's kept connection if it is still open, else on a new one; a kept
        connection lost before the message was handed over is replaced once (see the module
        docstring).

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
        session = self._take_kept_session()
        if session is not None:
            try:
                return self._send_on(session, sender, recipients, email, may_reconnect=True)
            except _ConnectionLost as lost:
                logger.info(
                    "smtp: the kept connection was lost before the message was sent (%s); "
                    "sending it on a new connection",
                    lost.__cause__,
                )
        return self._send_on(self._open_session(), sender, recipients, email, may_reconnect=False)

    def close(self) -> None:
        """Close every kept connection (QUIT): idle ones now, busy ones when their send ends.

        For worker shutdown (``workers.mta.registry.close_providers``); the provider stays
        usable, later sends open new connections.
        """
        with self._lock:
            idle = []
            for session in list(self._sessions):
                if not session.closed:
                    session.closed = True
                    if not session.in_use:
                        idle.append(session)
                        self._sessions.discard(session)
        for session in idle:
            session.close(quit=True)

    def _take_kept_session(self) -> _Session | None:
        """This thread's kept session, now in use, if it is still open and not idle too long."""
        session: _Session | None = getattr(self._local, "session", None)
        if session is None:
            return None
        self._local.session = None
        with self._lock:
            if session.closed:
                return None
            session.in_use = True
        idle = time.monotonic() - session.last_used
        if idle >= self._idle_seconds:
            self._drop(session, quit=True)
            return None
        # Not between sends in a row: the poll releases the GIL, and getting it back behind the
        # other sending threads costs more than the check is worth (a lost connection is caught
        # by the send anyway).
        if idle >= _POLL_AFTER_IDLE and not _looks_open(session.smtp):
            logger.debug("smtp: the server closed the kept connection; opening a new one")
            self._drop(session, quit=False)
            return None
        return session

    def _open_session(self) -> _Session:
        """Connect, STARTTLS if so configured, EHLO, and log in: a session in use."""
        smtp: _SMTP | _SMTPSSL | None = None
        try:
            with map_smtp_errors():
                smtp = self._connect()
                if self._security == "starttls":
                    smtp.starttls(context=self._ssl_context)
                smtp.ehlo_or_helo_if_needed()
                if self._username:
                    smtp.login(self._username, self._password)
        except BaseException:
            # No QUIT on a failed connection: a server that stopped answering would make us
            # wait a second timeout for nothing.
            if smtp is not None:
                smtp.close()
            raise
        session = _Session(smtp)
        with self._lock:
            self._sessions.add(session)
        return session

    def _send_on(
        self,
        session: _Session,
        sender: str,
        recipients: list[str],
        email: OutgoingEmail,
        *,
        may_reconnect: bool,
    ) -> SendResult:
        """One transaction on ``session``; keep the session for the next send or close it.

        Raises:
            _ConnectionLost: ``may_reconnect`` and the connection was lost before DATA.
            DeliveryError: Any other failure.
        """
        smtp = session.smtp
        smtp.data_reply = (0, b"")
        smtp.data_started = False
        smtp.rset_reply = None
        try:
            with map_smtp_errors():
                options = self._mail_options(smtp, [sender, *recipients])
                refused = smtp.sendmail(sender, recipients, email.mime, mail_options=options)
                reply = _reply(*smtp.data_reply)
        except DeliveryError as error:
            cause = error.__cause__
            if may_reconnect and not smtp.data_started and _connection_lost(cause):
                self._drop(session, quit=False)
                raise _ConnectionLost from cause
            if _still_usable(smtp, cause):
                self._keep(session)
            else:
                self._drop(session, quit=False)
            raise
        except BaseException:
            # E.g. Dramatiq's time limit, raised in the middle of anything.
            self._drop(session, quit=False)
            raise
        self._keep(session)
        if refused:
            reply = f"{reply}; refused: {_refused_text(refused)}"
        return SendResult(provider_message_id=queue_id(reply) or email.message_id, response=reply)

    def _keep(self, session: _Session) -> None:
        """The send is over: keep the session for this thread's next one, or close it."""
        if self._idle_seconds <= 0:
            self._drop(session, quit=True)
            return
        with self._lock:
            session.in_use = False
            session.last_used = time.monotonic()
            closing = session.closed  # close() was called during the send
            if closing:
                self._sessions.discard(session)
            elif self._reaper is None:
                self._reaper = threading.Thread(
                    target=_close_idle_sessions,
                    args=(weakref.ref(self),),
                    name="smtp-idle-reaper",
                    daemon=True,
                )
                self._reaper.start()
        if closing:
            session.close(quit=True)
        else:
            self._local.session = session

    def _drop(self, session: _Session, *, quit: bool) -> None:
        with self._lock:
            session.closed = True
            self._sessions.discard(session)
        session.close(quit=quit)

    def _close_idle(self) -> float | None:
        """Close the sessions idle for ``idle_seconds``; seconds until the next may be, or None.

        None (no session left) also ends the reaper thread, which the next kept session starts
        again.
        """
        now = time.monotonic()
        expired = []
        next_due: float | None = None
        with self._lock:
            for session in list(self._sessions):
                if session.closed:
                    continue
                if session.in_use:
                    due = now + self._idle_seconds
                else:
                    due = session.last_used + self._idle_seconds
                    if due <= now:
                        session.closed = True
                        self._sessions.discard(session)
                        expired.append(session)
                        continue
                next_due = due if next_due is None else min(next_due, due)
            if next_due is None:
                self._reaper = None
        for session in expired:
            logger.debug("smtp: closing a connection idle for %gs", self._idle_seconds)
            session.close(quit=True)
        return None if next_due is None else max(next_due - now, 0.01)
