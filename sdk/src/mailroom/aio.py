"""The asyncio Mailroom client, built on ``grpc.aio``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Mapping
from datetime import datetime
from types import TracebackType
from typing import Protocol, Self, TypeVar, Unpack, cast

import grpc
import grpc.aio

from mailroom._channel import ClientBase
from mailroom._convert import (
    DEFAULT_PAGE_SIZE,
    batch_response_from_proto,
    build_batch_request,
    build_list_request,
    build_send_request,
    cancel_email_request,
    email_from_proto,
    get_email_request,
    page_from_proto,
)
from mailroom._polling import DeliveryWait, poll_delays
from mailroom.errors import DeadlineExceeded, error_from_rpc
from mailroom.models import BatchResponse, Email, EmailFilters, EmailPage
from mailroom.outgoing import Attachment, OutgoingEmail
from mailroom.suppressions import AsyncSuppressionMethods
from mailroom.v1 import mail_pb2, mail_pb2_grpc
from mailroom.webhook_management import AsyncWebhookMethods, webhook_stub

__all__ = ["AsyncMailroomClient"]

_Request = TypeVar("_Request")
_Response = TypeVar("_Response")


class _AsyncStub(Protocol):
    """The typed view of the generated ``MailServiceStub`` over an aio channel."""

    SendEmail: grpc.aio.UnaryUnaryMultiCallable[
        mail_pb2.SendEmailRequest, mail_pb2.SendEmailResponse
    ]
    GetEmail: grpc.aio.UnaryUnaryMultiCallable[mail_pb2.GetEmailRequest, mail_pb2.GetEmailResponse]
    CancelEmail: grpc.aio.UnaryUnaryMultiCallable[
        mail_pb2.CancelEmailRequest, mail_pb2.CancelEmailResponse
    ]
    ListEmails: grpc.aio.UnaryUnaryMultiCallable[
        mail_pb2.ListEmailsRequest, mail_pb2.ListEmailsResponse
    ]
    SendEmailBatch: grpc.aio.UnaryUnaryMultiCallable[
        mail_pb2.SendEmailBatchRequest, mail_pb2.SendEmailBatchResponse
    ]


class AsyncMailroomClient(AsyncSuppressionMethods, AsyncWebhookMethods, ClientBase):
    """An asyncio client of the Mailroom API, the twin of :class:`mailroom.MailroomClient`.

    Create it inside the event loop that uses it (``grpc.aio`` channels belong to one loop),
    from a target or from the environment (:meth:`from_env`), and use it as an async context
    manager or await :meth:`close`.

    Every call raises a :class:`mailroom.MailroomError` subclass when it fails, after gRPC has
    retried ``UNAVAILABLE`` and ``DEADLINE_EXCEEDED`` (see :class:`mailroom.RetryPolicy`).

    Example:
        >>> async with AsyncMailroomClient("localhost:50051") as client:
        ...     email_id = await client.send_email(["alice@example.com"], "Hello", "Hi!")
        ...     email = await client.wait_for_delivery(email_id, timeout=60)
    """

    _channel: grpc.aio.Channel
    _stub: _AsyncStub

    def _open(self) -> None:
        """Create the channel and the stub (connected lazily, on the first call)."""
        if self._credentials is None:
            self._channel = grpc.aio.insecure_channel(self._target, options=self._options)
        else:
            self._channel = grpc.aio.secure_channel(
                self._target, self._credentials, options=self._options
            )
        self._stub = cast(_AsyncStub, mail_pb2_grpc.MailServiceStub(self._channel))  # type: ignore[no-untyped-call]
        self._webhooks = webhook_stub(self._channel)

    async def close(self) -> None:
        """Close the channel; calls in flight are cancelled."""
        await self._channel.close(None)

    async def __aenter__(self) -> Self:
        """Return the client itself."""
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the client."""
        await self.close()

    async def _call(
        self,
        rpc: grpc.aio.UnaryUnaryMultiCallable[_Request, _Response],
        request: _Request,
        timeout: float | None,
    ) -> _Response:
        """Make one RPC with the call's deadline and the client's metadata.

        Every RPC of the client goes through here, the one place where a ``grpc.RpcError``
        (``grpc.aio.AioRpcError`` is one) becomes the matching :class:`mailroom.MailroomError`
        (chained to it). gRPC's retries happen inside ``rpc``, so only the final failure is
        translated.

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
            return await rpc(request, timeout=self._deadline(timeout), metadata=self._metadata)
        except grpc.RpcError as err:
            raise error_from_rpc(err) from err

    async def send_email(
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
        attachments: Iterable[Attachment] = (),
        headers: Mapping[str, str] | None = None,
        tags: str | Iterable[str] = (),
        metadata: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> str:
        """Send an email; the server queues it and answers at once with its id.

        The call is safe to retry: it carries an idempotency key (a fresh UUID unless one is
        given), the same on every gRPC retry, and the server answers a repeated key with the
        first email's id.

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
            attachments: Files to attach, e.g. ``[Attachment.from_path("invoice.pdf")]``.
                Bodies and attachments together are at most 10 MiB (a server setting).
            headers: Extra headers, e.g. ``{"X-Campaign": "spring"}``; the headers the service
                writes itself (From, To, Subject, Message-ID, Content-*, ...) are refused.
            tags: Up to 10 tags, each ``[a-z0-9_-]{1,64}``, to filter ``list_emails`` by and
                passed to providers that support them; a single tag may be a string.
            metadata: Up to 20 key/value pairs, each at most 256 characters, to filter
                ``list_emails`` by and passed to providers that support them.
            timeout: The call's deadline in seconds, instead of the client's.

        Returns:
            The id of the accepted email.

        Raises:
            ValueError: ``send_at`` is naive or ``idempotency_key`` is empty.
            TypeError: An item of ``attachments`` is not an :class:`mailroom.Attachment`.
            mailroom.InvalidArgument: The server rejected the email; ``violations`` name the
                fields (e.g. ``to[0]``, ``attachments[0].filename``).
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
            attachments=attachments,
            headers=headers,
            tags=tags,
            metadata=metadata,
        )
        response = await self._call(self._stub.SendEmail, request, timeout)
        return response.id

    async def send_email_batch(
        self, emails: Iterable[OutgoingEmail], *, timeout: float | None = None
    ) -> BatchResponse:
        """Send up to 100 emails (a server setting) in one call; each is accepted or refused alone.

        Each email carries its own idempotency key (its ``idempotency_key``, else a fresh UUID
        made once per call), so gRPC's retries of the batch never send an email twice, and a
        key already used for the same email answers that email's id.

        Args:
            emails: The emails, in order; each is an :class:`mailroom.OutgoingEmail`.
            timeout: The call's deadline in seconds, instead of the client's.

        Returns:
            One :class:`mailroom.BatchResult` per email, in order, with the email's ``id`` or
            the ``error`` that refused it, and the ``accepted_count`` and ``refused_count``.

        Raises:
            TypeError: An item is not an :class:`mailroom.OutgoingEmail`.
            ValueError: An item's ``send_at`` is naive or its ``idempotency_key`` is empty.
            mailroom.InvalidArgument: No email was accepted (or the batch is empty or too
                large); ``violations`` name the fields as ``emails[<i>].<field>``.
            mailroom.MailroomError: Any other failure of the call.
        """
        request = build_batch_request(emails)
        response = await self._call(self._stub.SendEmailBatch, request, timeout)
        return batch_response_from_proto(response)

    async def get_email(self, email_id: str, *, timeout: float | None = None) -> Email:
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
        request = get_email_request(email_id)
        response = await self._call(self._stub.GetEmail, request, timeout)
        return email_from_proto(response.email)

    async def cancel_email(self, email_id: str, *, timeout: float | None = None) -> Email:
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
        request = cancel_email_request(email_id)
        response = await self._call(self._stub.CancelEmail, request, timeout)
        return email_from_proto(response.email)

    def list_emails(
        self,
        *,
        page_size: int = DEFAULT_PAGE_SIZE,
        full: bool = False,
        timeout: float | None = None,
        **filters: Unpack[EmailFilters],
    ) -> AsyncIterator[Email]:
        """Iterate over the emails that match the filters, newest first, page after page.

        The iterator is lazy: it asks for a page (``page_size`` emails) when it needs one, and
        follows the server's page tokens to the last page. Emails accepted while iterating do
        not shift the pages: they are newer than the ones still to come.

        Example:
            >>> async for email in client.list_emails(tag="welcome", status=EmailStatus.FAILED):
            ...     print(email.id, email.last_error)

        Args:
            page_size: How many emails each call asks for: 50 by default; more than 500 gets 500.
            full: Return whole emails (bodies, headers, attachments' contents) instead of
                leaving those out, as the listing does by default.
            timeout: The deadline of each page's call in seconds, instead of the client's.
            **filters: Any of :class:`mailroom.EmailFilters`: ``status`` (one or several),
                ``recipient``, ``tag``, ``metadata``, ``provider``, ``created_after``,
                ``created_before``, ``idempotency_key``.

        Returns:
            An async iterator of :class:`mailroom.Email`, for ``async for``.

        Raises:
            TypeError: A keyword is not a filter (raised at once, not when iterating).
            ValueError: ``created_after`` or ``created_before`` is naive (raised at once).
            mailroom.InvalidArgument: While iterating, the server refused a filter or the
                page size; ``violations`` name it.
            mailroom.MailroomError: While iterating, any other failure of a page's call.
        """
        request = build_list_request(filters, page_size=page_size, full=full)
        return self._pages(request, timeout)

    async def list_emails_page(
        self,
        *,
        page_token: str | None = None,
        page_size: int = DEFAULT_PAGE_SIZE,
        full: bool = False,
        timeout: float | None = None,
        **filters: Unpack[EmailFilters],
    ) -> EmailPage:
        """Fetch one page of the emails that match the filters, newest first.

        For paging of your own (e.g. a web UI): pass the page's ``next_page_token`` as
        ``page_token`` with the same filters to get the next page. :meth:`list_emails` does
        this for you.

        Args:
            page_token: The ``next_page_token`` of the previous page; ``None`` for the first.
            page_size: At most this many emails: 50 by default; more than 500 gets 500.
            full: Return whole emails instead of leaving bodies, headers and attachments'
                contents out.
            timeout: The call's deadline in seconds, instead of the client's.
            **filters: Any of :class:`mailroom.EmailFilters`, as for :meth:`list_emails`.

        Returns:
            The page: its ``emails`` and its ``next_page_token`` (``None`` on the last page).

        Raises:
            TypeError: A keyword is not a filter.
            ValueError: ``created_after`` or ``created_before`` is naive.
            mailroom.InvalidArgument: The server refused a filter, the page size or the token
                (e.g. one from a listing with other filters); ``violations`` name it.
            mailroom.MailroomError: Any other failure.
        """
        request = build_list_request(filters, page_size=page_size, page_token=page_token, full=full)
        return page_from_proto(await self._call(self._stub.ListEmails, request, timeout))

    async def _pages(
        self, request: mail_pb2.ListEmailsRequest, timeout: float | None
    ) -> AsyncIterator[Email]:
        """Yield the emails of every page, fetching the next page when the last one is used up."""
        while True:
            response = await self._call(self._stub.ListEmails, request, timeout)
            for message in response.emails:
                yield email_from_proto(message)
            if not response.next_page_token:
                return
            request.page_token = response.next_page_token

    async def wait_for_delivery(self, email_id: str, timeout: float = 60.0) -> Email:
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
        wait = DeliveryWait(email_id, timeout, self._timeout)
        for delay in poll_delays():
            poll_timeout = wait.poll_timeout()
            try:
                email = await self.get_email(email_id, timeout=poll_timeout)
            except DeadlineExceeded as err:
                if not wait.capped:
                    raise
                # The poll ran out of the time left to wait, not of its own deadline.
                raise wait.timed_out() from err
            if email.is_final:
                return email
            wait.email = email
            await asyncio.sleep(wait.pause(delay))
        raise AssertionError("unreachable: poll_delays() never ends")  # pragma: no cover
