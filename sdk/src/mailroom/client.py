"""The synchronous Mailroom client."""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import datetime
from types import TracebackType
from typing import Protocol, Self, TypeVar, cast

import grpc

from mailroom._channel import ClientBase
from mailroom._convert import build_send_request, email_from_proto
from mailroom._polling import poll_delays
from mailroom.errors import DeadlineExceeded, DeliveryTimeout, error_from_rpc
from mailroom.models import Email
from mailroom.v1 import mail_pb2, mail_pb2_grpc

__all__ = ["MailroomClient"]

_Request = TypeVar("_Request")
_Response = TypeVar("_Response")


class _Stub(Protocol):
    """The typed view of the generated ``MailServiceStub`` (its module carries no types)."""

    SendEmail: grpc.UnaryUnaryMultiCallable[mail_pb2.SendEmailRequest, mail_pb2.SendEmailResponse]
    GetEmail: grpc.UnaryUnaryMultiCallable[mail_pb2.GetEmailRequest, mail_pb2.GetEmailResponse]
    CancelEmail: grpc.UnaryUnaryMultiCallable[
        mail_pb2.CancelEmailRequest, mail_pb2.CancelEmailResponse
    ]


class MailroomClient(ClientBase):
    """A blocking client of the Mailroom API.

    Create it from a target (``MailroomClient("localhost:50051", api_key=...)``) or from the
    environment (:meth:`from_env`), and use it as a context manager or call :meth:`close`.
    One client holds one gRPC channel: share it between threads and reuse it.

    Every call raises a :class:`mailroom.MailroomError` subclass when it fails, after gRPC has
    retried ``UNAVAILABLE`` and ``DEADLINE_EXCEEDED`` (see :class:`mailroom.RetryPolicy`).

    Example:
        >>> with MailroomClient("localhost:50051") as client:
        ...     email_id = client.send_email(["alice@example.com"], "Hello", "Hi Alice!")
        ...     email = client.wait_for_delivery(email_id, timeout=60)
    """

    _channel: grpc.Channel
    _stub: _Stub

    def _open(self) -> None:
        """Create the channel and the stub (connected lazily, on the first call)."""
        if self._credentials is None:
            self._channel = grpc.insecure_channel(self._target, options=self._options)
        else:
            self._channel = grpc.secure_channel(
                self._target, self._credentials, options=self._options
            )
        self._stub = cast(_Stub, mail_pb2_grpc.MailServiceStub(self._channel))  # type: ignore[no-untyped-call]

    def close(self) -> None:
        """Close the channel; calls in flight are cancelled."""
        self._channel.close()

    def __enter__(self) -> Self:
        """Return the client itself."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the client."""
        self.close()

    def _call(
        self,
        rpc: grpc.UnaryUnaryMultiCallable[_Request, _Response],
        request: _Request,
        timeout: float | None,
    ) -> _Response:
        """Make one RPC with the call's deadline and the client's metadata.

        Every RPC of the client goes through here, the one place where a ``grpc.RpcError``
        becomes the matching :class:`mailroom.MailroomError` (chained to it). gRPC's retries
        happen inside ``rpc``, so only the final failure is translated.

        Args:
            rpc: The stub's method, e.g. ``self._stub.GetEmail``.
            request: The request message.
            timeout: The call's deadline in seconds, or ``None`` for the client's.

        Returns:
            The response message.

        Raises:
            mailroom.MailroomError: The call failed; the subclass matches its status code.
        """
        try:
            return rpc(request, timeout=self._deadline(timeout), metadata=self._metadata)
        except grpc.RpcError as err:
            raise error_from_rpc(err) from err

    def send_email(
        self,
        to: str | Iterable[str],
        title: str,
        content: str,
        *,
        cc: str | Iterable[str] = (),
        bcc: str | Iterable[str] = (),
        html: str | None = None,
        from_: str | None = None,
        reply_to: str | None = None,
        send_at: datetime | None = None,
        idempotency_key: str | None = None,
        timeout: float | None = None,
    ) -> str:
        """Send an email; the server queues it and answers at once with its id.

        The call is safe to retry: it carries an idempotency key (a fresh UUID unless one is
        given), the same on every gRPC retry, and the server answers a repeated key with the
        first email's id. Pass your own key to make retries of your own (e.g. after a crash)
        safe too: the same key with the same payload within 24 hours sends one email.

        Args:
            to: The recipients; a single address may be given as a string.
            title: The subject line.
            content: The plain-text body.
            cc: Carbon-copy recipients.
            bcc: Blind-copy recipients, never shown in the headers.
            html: An HTML alternative of the body.
            from_: The sender; the server's default when omitted.
            reply_to: The Reply-To address.
            send_at: When to send, at most 30 days ahead; it must be timezone-aware (a naive
                datetime is rejected rather than guessed). Omitted or past means now.
            idempotency_key: The key that makes the call idempotent; generated when omitted.
            timeout: The call's deadline in seconds, instead of the client's.

        Returns:
            The id of the accepted email.

        Raises:
            ValueError: ``send_at`` is naive or ``idempotency_key`` is empty.
            mailroom.InvalidArgument: The server rejected the email; ``violations`` name the
                fields (e.g. ``to[0]``).
            mailroom.AlreadyExists: ``idempotency_key`` was used for a different email.
            mailroom.MailroomError: Any other failure, e.g. ``Unavailable``.
        """
        request = build_send_request(
            to,
            title,
            content,
            cc=cc,
            bcc=bcc,
            html=html,
            from_=from_,
            reply_to=reply_to,
            send_at=send_at,
            idempotency_key=idempotency_key,
        )
        response = self._call(self._stub.SendEmail, request, timeout)
        return response.id

    def get_email(self, email_id: str, *, timeout: float | None = None) -> Email:
        """Fetch an email with its status and delivery attempts.

        Args:
            email_id: The id ``send_email`` returned.
            timeout: The call's deadline in seconds, instead of the client's.

        Returns:
            The email.

        Raises:
            mailroom.NotFound: No email has this id.
            mailroom.MailroomError: Any other failure.
        """
        request = mail_pb2.GetEmailRequest(id=email_id)
        response = self._call(self._stub.GetEmail, request, timeout)
        return email_from_proto(response.email)

    def cancel_email(self, email_id: str, *, timeout: float | None = None) -> Email:
        """Cancel a scheduled or queued email that no worker has claimed yet.

        Args:
            email_id: The id ``send_email`` returned.
            timeout: The call's deadline in seconds, instead of the client's.

        Returns:
            The cancelled email.

        Raises:
            mailroom.NotFound: No email has this id.
            mailroom.FailedPrecondition: The email is already being sent, sent, failed or
                cancelled.
            mailroom.MailroomError: Any other failure.
        """
        request = mail_pb2.CancelEmailRequest(id=email_id)
        response = self._call(self._stub.CancelEmail, request, timeout)
        return email_from_proto(response.email)

    def wait_for_delivery(self, email_id: str, timeout: float = 60.0) -> Email:
        """Poll an email until its status is final: SENT, FAILED or CANCELLED.

        Polls start 0.2 s apart and back off to one every 2 s. A failed poll (e.g.
        ``Unavailable`` after gRPC's retries) is raised, not swallowed.

        Args:
            email_id: The id ``send_email`` returned.
            timeout: How long to wait in all, in seconds.

        Returns:
            The email in its final status; check ``status``, since FAILED and CANCELLED are
            final too.

        Raises:
            mailroom.DeliveryTimeout: The email was not final within ``timeout``; its
                ``email`` attribute holds the email as last seen.
            mailroom.MailroomError: A poll failed.
        """
        deadline = time.monotonic() + timeout
        email: Email | None = None
        for delay in poll_delays():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DeliveryTimeout(email_id, timeout, email)
            capped = remaining < self._timeout
            try:
                email = self.get_email(email_id, timeout=min(self._timeout, remaining))
            except DeadlineExceeded as err:
                if not capped:
                    raise
                # The poll ran out of the time left to wait, not of its own deadline.
                raise DeliveryTimeout(email_id, timeout, email) from err
            if email.is_final:
                return email
            time.sleep(max(0.0, min(delay, deadline - time.monotonic())))
        raise AssertionError("unreachable: poll_delays() never ends")  # pragma: no cover
