"""Helpers shared by unit and integration tests (import as ``from helpers import ...``)."""

from __future__ import annotations

import contextlib
import json
import shutil
import ssl
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
from aiosmtpd.controller import Controller
from bson import ObjectId
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from pymongo import monitoring

from core.errors import QueueUnavailable
from core.queue import CARRIED_OPTION
from core.store import repository
from core.store.documents import Email, utcnow
from devtools.services import free_port
from devtools.smtp_sink import ReceivedMessage, SinkHandler, Stage, make_controller

T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T],
    *,
    timeout: float,
    interval: float = 0.05,
    message: str,
    ignore: tuple[type[BaseException], ...] = (),
) -> T:
    """Call ``predicate`` until it returns something truthy, and return that value.

    Args:
        predicate: The condition; its first truthy result is returned.
        timeout: Seconds before giving up.
        interval: Seconds between calls.
        message: Says what was awaited; used in the AssertionError.
        ignore: Exceptions that count as "not yet" instead of propagating.

    Raises:
        AssertionError: ``predicate`` stayed falsy for ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            last = predicate()
        except ignore as exc:
            last = exc
        else:
            if last:
                return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"{message} (not within {timeout:g}s; last result: {last!r})")
        time.sleep(interval)


class SmtpSink:
    """An in-process SMTP server that records messages, with fault injection for tests.

    Attributes:
        host: Address it listens on.
        port: Port it listens on.
    """

    def __init__(
        self, host: str = "127.0.0.1", port: int | None = None, *, smtputf8: bool = True
    ) -> None:
        self.host = host
        self.port = port or free_port()
        self.handler = SinkHandler()
        self._controller: Controller = make_controller(
            self.handler, self.host, self.port, smtputf8=smtputf8
        )

    def start(self) -> SmtpSink:
        """Start listening."""
        self._controller.start()
        return self

    def stop(self) -> None:
        """Stop listening."""
        self._controller.stop()

    @property
    def messages(self) -> list[ReceivedMessage]:
        """Messages accepted since the last :meth:`clear`, oldest first."""
        return self.handler.messages

    @property
    def data_commands(self) -> int:
        """DATA transactions seen since the last :meth:`clear`, accepted or refused."""
        return self.handler.data_commands

    def wait_for_count(self, count: int, timeout: float = 10.0) -> list[ReceivedMessage]:
        """Wait until ``count`` messages were accepted; AssertionError on timeout."""
        return self.handler.wait_for_count(count, timeout)

    def clear(self) -> None:
        """Forget messages, faults and delay."""
        self.handler.clear()

    def respond_with(self, code: int, text: str, *, times: int = 1, stage: Stage = "DATA") -> None:
        """Refuse the next ``times`` DATA (or ``stage``) commands with ``code text``."""
        self.handler.respond_with(code, text, times=times, stage=stage)

    def delay(self, seconds: float) -> None:
        """Answer each DATA only after ``seconds`` (0 turns it off)."""
        self.handler.delay(seconds)


def create_email(
    new: repository.NewEmail, *, message_id_domain: str = "test", email_id: ObjectId | None = None
) -> Email:
    """Store a new email as the API does (QUEUED, or SCHEDULED for a future ``send_at``)."""
    document = repository.new_email_document(
        new, message_id_domain=message_id_domain, email_id=email_id or ObjectId(), now=utcnow()
    )
    repository.insert_email(document)
    return Email._from_son(document)


@dataclass(frozen=True)
class Tls:
    """A self-signed certificate for 127.0.0.1: the server's context and a client trusting it."""

    server: ssl.SSLContext
    client: ssl.SSLContext


def make_tls(folder: Path) -> Tls:
    """Make a certificate in ``folder`` with openssl (the ``tls`` fixture calls it once)."""
    if shutil.which("openssl") is None:
        pytest.fail("openssl is needed to make a test certificate", pytrace=False)
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2",
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert, key)
    return Tls(server=server, client=ssl.create_default_context(cafile=str(cert)))


@contextlib.contextmanager
def postgres_traversable_dir(prefix: str, name: str) -> Iterator[Path]:
    """Yield ``<new temp dir>/<name>`` that the ``postgres`` user can reach when we are root.

    Not under pytest's temp dirs: as root, PostgreSQL runs as ``postgres``, who cannot traverse
    pytest's 0700 base directory. The parent is made with ``tempfile.mkdtemp`` in the system temp
    dir and opened for traversal (0711) only; it is removed afterwards.
    """
    parent = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        parent.chmod(0o711)
        yield parent / name
    finally:
        shutil.rmtree(parent, ignore_errors=True)


def rest_violations(body: object) -> list[str]:
    """The fields a REST error body's BadRequest details name (proto or JSON names)."""
    assert isinstance(body, dict), body
    return [
        v["field"]
        for d in body.get("details", [])
        for v in d.get("field_violations", d.get("fieldViolations", []))
    ]


def grpc_violations(exc: grpc.RpcError) -> list[str]:
    """The fields a gRPC error's BadRequest details name."""
    status = rpc_status.from_call(exc)
    fields = []
    for detail in status.details if status else []:
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            fields += [v.field for v in bad.field_violations]
    return fields


class CommandCounter(monitoring.CommandListener):
    """Records the name of every command sent to the store (not handshakes or pings)."""

    def __init__(self):
        self.names = []
        self.targets = []  # (command name, collection) pairs

    def started(self, event):
        if event.command_name not in {"hello", "isMaster", "ismaster", "ping", "endSessions"}:
            self.names.append(event.command_name)
            self.targets.append((event.command_name, event.command.get(event.command_name)))

    def succeeded(self, event):
        pass

    def failed(self, event):
        pass


def queued_copy(redis_client: Any, email_id: str, queue: str = "mail") -> str | None:
    """The email carried by the waiting ``deliver`` message of ``email_id``, if there is one."""
    for raw in redis_client.hvals(f"dramatiq:{queue}.msgs"):
        message = json.loads(raw)
        if message["args"] == [email_id]:
            stored: str | None = message["options"].get(CARRIED_OPTION)
            return stored
    return None


class RecordingQueue:
    """Stands in for :class:`core.queue.DeliveryQueue`: records what is enqueued.

    ``ids`` has every enqueued id, ``singles`` those of ``enqueue_delivery``, ``batches`` each
    ``enqueue_deliveries`` call's items, ``stored`` the carried copies by id. While ``fail`` is
    set every call raises QueueUnavailable, as when Redis is down.
    """

    def __init__(self, fail: bool = False) -> None:
        self.ids: list[str] = []
        self.singles: list[str] = []
        self.batches: list[list[tuple[str, int | None]]] = []
        self.stored: dict[str, str] = {}
        self.fail = fail

    def enqueue_delivery(
        self, email_id: str, *, delay_ms: int | None = None, stored: str | None = None
    ) -> None:
        if self.fail:
            raise QueueUnavailable("queue unavailable (ConnectionError)")
        self.ids.append(email_id)
        self.singles.append(email_id)
        if stored is not None:
            self.stored[email_id] = stored

    def enqueue_deliveries(
        self, items: list[tuple[str, int | None]], *, stored: dict[str, str] | None = None
    ) -> None:
        if self.fail:
            raise QueueUnavailable("queue unavailable (ConnectionError)")
        self.batches.append(list(items))
        self.ids += [email_id for email_id, _ in items]
        self.stored.update(stored or {})
