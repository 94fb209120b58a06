"""A local SMTP sink: accepts every message and keeps it for a human or a test to look at.

``mailroom-smtp-sink`` is the default relay of ``make dev``. Each accepted message becomes two
files under the output directory (``var/mail/`` by default), named after the time it arrived:

* ``<stamp>-<id>.eml``: the DATA exactly as received (after SMTP dot-unstuffing), with no
  header added, so it opens in any mail client and signatures over it still verify;
* ``<stamp>-<id>.json``: the envelope, which the message itself does not carry: ``mail_from``,
  ``rcpt_tos`` (Bcc recipients appear only here), ``peer`` and ``received_at``.

The sidecar is written first and the ``.eml`` is renamed into place last, so a reader that
sees an ``.eml`` file always finds it complete with its envelope.

:class:`SinkHandler` is the aiosmtpd handler behind it; tests run it in-process and use its
fault injection (:meth:`SinkHandler.respond_with`, :meth:`SinkHandler.delay`).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import logging
import os
import signal
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any, Literal

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

log = logging.getLogger("mailroom.smtp_sink")

Stage = Literal["MAIL", "RCPT", "DATA"]
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 1025
DEFAULT_DIRECTORY = Path("var/mail")
# Large enough for the API's biggest email (10 MiB) once base64-encoded.
DATA_SIZE_LIMIT = 64 * 1024 * 1024


@dataclass(frozen=True)
class ReceivedMessage:
    """One accepted message with its SMTP envelope.

    Attributes:
        mail_from: The envelope sender (``MAIL FROM``).
        rcpt_tos: The envelope recipients (``RCPT TO``), Bcc included.
        raw: The DATA as received.
        message: ``raw`` parsed with the modern email policy (CRLF read as newlines).
        peer: The client's address as ``host:port``.
        received_at: When the DATA was accepted (UTC).
        path: The ``.eml`` file it was written to, if the sink writes files.
        queue_id: The id the sink named in its reply (with ``queue_ids``), else "".
        tls: The session was encrypted (STARTTLS or implicit TLS).
        authenticated: The client had logged in (AUTH).
    """

    mail_from: str
    rcpt_tos: list[str]
    raw: bytes
    message: EmailMessage
    peer: str
    received_at: datetime
    path: Path | None = None
    queue_id: str = ""
    tls: bool = False
    authenticated: bool = False


@dataclass
class _Fault:
    code: int
    text: str
    remaining: int


@dataclass
class SinkHandler:
    """aiosmtpd handler that accepts mail, keeps it in memory and optionally writes it to disk.

    It is safe to call from other threads than the Controller's event loop thread.

    Args:
        directory: Where to write ``.eml`` files and envelope sidecars; ``None`` writes nothing.
        keep_messages: Keep accepted messages in :attr:`messages` (a long-running sink that
            only writes files turns it off to bound its memory).
        queue_ids: Answer DATA like Postfix, ``250 2.0.0 Ok: queued as Q0001``, and keep the id
            (the providers' tests read it back as the provider's message id).
    """

    directory: Path | None = None
    keep_messages: bool = True
    queue_ids: bool = False
    _rcpt_replies: dict[str, str] = field(default_factory=dict, init=False)
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1), init=False)
    _messages: list[ReceivedMessage] = field(default_factory=list, init=False)
    _faults: dict[Stage, _Fault] = field(default_factory=dict, init=False)
    _delay: float = field(default=0.0, init=False)
    _data_commands: int = field(default=0, init=False)
    _cond: threading.Condition = field(default_factory=threading.Condition, init=False)

    # -- state seen by tests -------------------------------------------------------------------

    @property
    def messages(self) -> list[ReceivedMessage]:
        """A snapshot of the accepted messages, oldest first."""
        with self._cond:
            return list(self._messages)

    @property
    def data_commands(self) -> int:
        """How many DATA transactions reached the sink, accepted or refused."""
        with self._cond:
            return self._data_commands

    def clear(self) -> None:
        """Forget accepted messages, pending faults, the delay and the DATA counter."""
        with self._cond:
            self._messages.clear()
            self._faults.clear()
            self._delay = 0.0
            self._data_commands = 0

    def wait_for_count(self, count: int, timeout: float = 10.0) -> list[ReceivedMessage]:
        """Block until at least ``count`` messages were accepted and return them.

        Raises:
            AssertionError: Fewer than ``count`` arrived within ``timeout`` seconds.
        """
        with self._cond:
            if not self._cond.wait_for(lambda: len(self._messages) >= count, timeout):
                raise AssertionError(
                    f"the SMTP sink received {len(self._messages)} message(s) within "
                    f"{timeout:g}s, expected {count}"
                )
            return list(self._messages)

    # -- fault injection -----------------------------------------------------------------------

    def respond_with(self, code: int, text: str, *, times: int = 1, stage: Stage = "DATA") -> None:
        """Answer the next ``times`` commands of ``stage`` with ``code`` instead of accepting.

        ``RCPT`` counts one per recipient. Refused mail is not kept. A later call for the same
        stage replaces the earlier one.

        Args:
            code: An SMTP error code, 4xx (transient) or 5xx (permanent).
            text: The text after the code.
            times: How many commands to refuse.
            stage: ``"MAIL"``, ``"RCPT"`` or ``"DATA"``.
        """
        if not 400 <= code <= 599:
            raise ValueError(f"respond_with needs a 4xx or 5xx code, not {code}")
        with self._cond:
            self._faults[stage] = _Fault(code, text, times)

    def refuse_recipient(self, address: str, reply: str) -> None:
        """Answer every RCPT TO ``address`` with ``reply`` (e.g. ``550 5.1.1 User unknown``)."""
        with self._cond:
            self._rcpt_replies[address] = reply

    def delay(self, seconds: float) -> None:
        """Wait ``seconds`` before answering each DATA from now on (0 turns it off).

        The wait does not block other connections, so concurrent deliveries overlap.
        """
        with self._cond:
            self._delay = max(0.0, seconds)

    def _take_fault(self, stage: Stage) -> str | None:
        with self._cond:
            fault = self._faults.get(stage)
            if fault is None or fault.remaining <= 0:
                return None
            fault.remaining -= 1
            return f"{fault.code} {fault.text}"

    # -- aiosmtpd hooks ------------------------------------------------------------------------

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        """Accept the sender unless a MAIL fault is pending."""
        refusal = self._take_fault("MAIL")
        if refusal:
            return refusal
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        """Accept the recipient unless it is refused or a RCPT fault is pending."""
        with self._cond:
            refusal = self._rcpt_replies.get(address)
        if refusal:
            return refusal
        refusal = self._take_fault("RCPT")
        if refusal:
            return refusal
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        """Keep (and write) the message, after the configured delay, unless a fault is pending."""
        with self._cond:
            self._data_commands += 1
            delay = self._delay
        if delay:
            await asyncio.sleep(delay)
        refusal = self._take_fault("DATA")
        if refusal:
            return refusal
        raw = _as_bytes(envelope.original_content or envelope.content)
        peer = session.peer
        queue_id = ""
        if self.queue_ids:
            with self._cond:
                queue_id = f"Q{next(self._ids):04d}"
        transport = getattr(server, "transport", None)
        received = ReceivedMessage(
            mail_from=str(envelope.mail_from or ""),
            rcpt_tos=list(envelope.rcpt_tos),
            raw=raw,
            # SMTP carries CRLF; parse with the newlines Python's email package uses itself.
            message=BytesParser(policy=policy.default).parsebytes(raw.replace(b"\r\n", b"\n")),
            peer=f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer),
            received_at=datetime.now(UTC),
            queue_id=queue_id,
            tls=transport is not None and transport.get_extra_info("ssl_object") is not None,
            authenticated=bool(getattr(session, "authenticated", False)),
        )
        if self.directory is not None:
            received = _write(self.directory, received)
        log.info(
            "accepted %s -> %s: %r (%d bytes)%s",
            received.mail_from,
            ", ".join(received.rcpt_tos),
            received.message.get("Subject", ""),
            len(raw),
            f" in {received.path}" if received.path else "",
        )
        with self._cond:
            if self.keep_messages:
                self._messages.append(received)
            self._cond.notify_all()
        if queue_id:
            return f"250 2.0.0 Ok: queued as {queue_id}"
        return "250 OK: message accepted"


def _as_bytes(content: Any) -> bytes:
    if isinstance(content, bytes):
        return content
    return str(content or "").encode("utf-8", "surrogateescape")


def _write(directory: Path, received: ReceivedMessage) -> ReceivedMessage:
    """Write the sidecar, then the message, each atomically; return it with its path."""
    directory.mkdir(parents=True, exist_ok=True)
    stem = f"{received.received_at:%Y%m%dT%H%M%S.%fZ}-{uuid.uuid4().hex[:12]}"
    envelope = {
        "mail_from": received.mail_from,
        "rcpt_tos": received.rcpt_tos,
        "peer": received.peer,
        "received_at": received.received_at.isoformat(),
    }
    _write_atomic(directory / f"{stem}.json", json.dumps(envelope, indent=2).encode() + b"\n")
    eml = directory / f"{stem}.eml"
    _write_atomic(eml, received.raw)
    return ReceivedMessage(
        mail_from=received.mail_from,
        rcpt_tos=received.rcpt_tos,
        raw=received.raw,
        message=received.message,
        peer=received.peer,
        received_at=received.received_at,
        path=eml,
    )


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def make_controller(
    handler: SinkHandler, host: str, port: int, *, smtputf8: bool = True
) -> Controller:
    """Return an unstarted aiosmtpd Controller serving ``handler`` on ``host:port``.

    ``smtputf8=False`` plays a relay that does not offer SMTPUTF8 (most of them).
    """
    return Controller(
        handler,
        hostname=host,
        port=port,
        enable_SMTPUTF8=smtputf8,
        data_size_limit=DATA_SIZE_LIMIT,
    )


def main(argv: list[str] | None = None) -> None:
    """Run the sink until SIGINT or SIGTERM (the ``mailroom-smtp-sink`` command)."""
    parser = argparse.ArgumentParser(
        prog="mailroom-smtp-sink",
        description="Accept all SMTP mail and write it as .eml files (envelope in .json).",
    )
    parser.add_argument("--host", default=DEFAULT_HOST, help="address to listen on")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="port to listen on")
    parser.add_argument(
        "--dir",
        type=Path,
        default=DEFAULT_DIRECTORY,
        help="directory for the received messages (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    # aiosmtpd logs every connection and command at INFO; one line per message is enough.
    logging.getLogger("mail.log").setLevel(logging.WARNING)

    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())

    handler = SinkHandler(directory=args.dir, keep_messages=False)
    controller = make_controller(handler, args.host, args.port)
    controller.start()
    log.info("listening on %s:%d, writing to %s", args.host, args.port, args.dir.resolve())
    try:
        while not stop.wait(timeout=1.0):
            pass
    finally:
        controller.stop()
        log.info("stopped")


if __name__ == "__main__":
    main()
