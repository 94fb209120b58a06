"""The suppression list: addresses Mailroom never sends to, whichever provider would send.

Both clients get their suppression methods from here (:class:`MailroomClient` from
:class:`SuppressionMethods`, :class:`AsyncMailroomClient` from :class:`AsyncSuppressionMethods`):
``list_suppressions`` (lazy, page after page), ``list_suppressions_page``, ``add_suppression``
and ``remove_suppression``.

Example:
    >>> with MailroomClient.from_env() as client:
    ...     client.add_suppression("bob@example.com")
    ...     for entry in client.list_suppressions(reason=SuppressionReason.HARD_BOUNCE):
    ...         print(entry.address, entry.created_at)
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any, Protocol, cast

import grpc

from mailroom.v1 import suppressions_pb2, suppressions_pb2_grpc

__all__ = [
    "AsyncSuppressionMethods",
    "DroppedRecipient",
    "Suppression",
    "SuppressionMethods",
    "SuppressionPage",
    "SuppressionReason",
]

DEFAULT_PAGE_SIZE = 50


class SuppressionReason(enum.Enum):
    """Why an address is suppressed; the values are those of ``mailroom.v1.SuppressionReason``.

    A reason this version of the SDK does not know is reported as :attr:`UNSPECIFIED`.
    """

    UNSPECIFIED = 0
    #: A provider reported a permanent delivery failure.
    HARD_BOUNCE = 1
    #: The recipient marked an email as spam.
    COMPLAINT = 2
    #: Added by an operator (the default of :meth:`SuppressionMethods.add_suppression`).
    MANUAL = 3
    #: The recipient unsubscribed.
    UNSUBSCRIBE = 4

    @classmethod
    def from_proto(cls, value: int) -> SuppressionReason:
        """The reason of an enum number; UNSPECIFIED for one this SDK does not know."""
        try:
            return cls(value)
        except ValueError:
            return cls.UNSPECIFIED


@dataclass(frozen=True)
class Suppression:
    """One suppressed address.

    Attributes:
        address: The address, lowercased.
        reason: Why it is suppressed.
        provider: The provider whose event suppressed it; ``None`` when added by hand.
        event_id: That provider event's id; ``None`` when added by hand.
        created_at: When it was added (UTC).
    """

    address: str
    reason: SuppressionReason
    provider: str | None = None
    event_id: str | None = None
    created_at: datetime | None = None

    @classmethod
    def from_proto(cls, message: suppressions_pb2.Suppression) -> Suppression:
        """Convert the API's message."""
        created = None
        if message.HasField("create_time"):
            created = message.create_time.ToDatetime(tzinfo=UTC)
        return cls(
            address=message.address,
            reason=SuppressionReason.from_proto(message.reason),
            provider=message.provider or None,
            event_id=message.event_id or None,
            created_at=created,
        )


@dataclass(frozen=True)
class SuppressionPage:
    """One page of ``list_suppressions_page``, newest first, and the next page's token.

    Attributes:
        suppressions: The entries of this page.
        next_page_token: Pass it as ``page_token`` to get the next page; ``None`` on the last.
    """

    suppressions: list[Suppression] = field(default_factory=list)
    next_page_token: str | None = None

    def __iter__(self) -> Iterator[Suppression]:
        """Iterate over the entries of this page."""
        return iter(self.suppressions)


@dataclass(frozen=True)
class DroppedRecipient:
    """A recipient the server left out of an email because its address is suppressed.

    Attributes:
        field: Where it was in the request: ``to[1]``, ``cc[0]``, ``bcc[2]``.
        address: The recipient as given, its domain lowercased.
        reason: Why the address is suppressed.
    """

    field: str
    address: str
    reason: SuppressionReason

    @classmethod
    def from_proto(cls, message: suppressions_pb2.DroppedRecipient) -> DroppedRecipient:
        """Convert the API's message."""
        return cls(message.field, message.address, SuppressionReason.from_proto(message.reason))


def _proto_reason(reason: SuppressionReason) -> str:
    return f"SUPPRESSION_REASON_{reason.name}"


def _list_request(
    reason: SuppressionReason | None, page_size: int, page_token: str | None
) -> suppressions_pb2.ListSuppressionsRequest:
    return suppressions_pb2.ListSuppressionsRequest(
        reason=_proto_reason(reason or SuppressionReason.UNSPECIFIED),
        page_size=page_size,
        page_token=page_token or "",
    )


def _page(message: suppressions_pb2.ListSuppressionsResponse) -> SuppressionPage:
    return SuppressionPage(
        [Suppression.from_proto(s) for s in message.suppressions], message.next_page_token or None
    )


class _Stub(Protocol):
    """The typed view of the generated ``SuppressionServiceStub`` (its module has no types)."""

    ListSuppressions: Any
    AddSuppression: Any
    RemoveSuppression: Any


def suppression_stub(channel: grpc.Channel | grpc.aio.Channel) -> _Stub:
    """The SuppressionService stub on a client's channel."""
    return cast(_Stub, suppressions_pb2_grpc.SuppressionServiceStub(channel))  # type: ignore[no-untyped-call]


class SuppressionMethods:
    """The suppression list's methods of :class:`mailroom.MailroomClient`."""

    if TYPE_CHECKING:
        _channel: grpc.Channel

        def _call(self, rpc: Any, request: Any, timeout: float | None) -> Any: ...

    @cached_property
    def _suppressions(self) -> _Stub:
        """The SuppressionService stub on the client's channel, made at the first call."""
        return suppression_stub(self._channel)

    def list_suppressions(
        self,
        *,
        reason: SuppressionReason | None = None,
        page_size: int = DEFAULT_PAGE_SIZE,
        timeout: float | None = None,
    ) -> Iterator[Suppression]:
        """Iterate over the suppressed addresses, newest first, page after page (lazily).

        Args:
            reason: Only entries suppressed for this reason; all when ``None``.
            page_size: Entries per call: 50 by default; more than 500 gets 500.
            timeout: The deadline of each page's call in seconds, instead of the client's.

        Raises:
            mailroom.InvalidArgument: While iterating, the server refused an argument.
            mailroom.MailroomError: While iterating, any other failure of a page's call.
        """
        token: str | None = None
        while True:
            page = self.list_suppressions_page(
                reason=reason, page_token=token, page_size=page_size, timeout=timeout
            )
            yield from page.suppressions
            token = page.next_page_token
            if token is None:
                return

    def list_suppressions_page(
        self,
        *,
        reason: SuppressionReason | None = None,
        page_token: str | None = None,
        page_size: int = DEFAULT_PAGE_SIZE,
        timeout: float | None = None,
    ) -> SuppressionPage:
        """Fetch one page of the suppressed addresses, newest first.

        Args:
            reason: Only entries suppressed for this reason; all when ``None``.
            page_token: The ``next_page_token`` of the previous page; ``None`` for the first.
            page_size: At most this many entries: 50 by default; more than 500 gets 500.
            timeout: The call's deadline in seconds, instead of the client's.

        Raises:
            mailroom.InvalidArgument: A bad token (``violations`` name ``page_token``).
        """
        request = _list_request(reason, page_size, page_token)
        return _page(self._call(self._suppressions.ListSuppressions, request, timeout))

    def add_suppression(
        self,
        address: str,
        *,
        reason: SuppressionReason = SuppressionReason.MANUAL,
        timeout: float | None = None,
    ) -> bool:
        """Suppress an address: Mailroom will not send to it any more.

        Args:
            address: A bare address, ``someone@example.com``.
            reason: Why; MANUAL by default.
            timeout: The call's deadline in seconds, instead of the client's.

        Returns:
            True when this call added it, False when it was already suppressed.

        Raises:
            mailroom.InvalidArgument: Not a valid address (``violations`` name ``address``).
        """
        request = suppressions_pb2.AddSuppressionRequest(
            address=address, reason=_proto_reason(reason)
        )
        response = self._call(self._suppressions.AddSuppression, request, timeout)
        return bool(response.created)

    def remove_suppression(self, address: str, *, timeout: float | None = None) -> Suppression:
        """Let Mailroom send to an address again.

        Returns:
            The entry that was removed.

        Raises:
            mailroom.NotFound: The address was not suppressed.
            mailroom.InvalidArgument: Not a valid address.
        """
        request = suppressions_pb2.RemoveSuppressionRequest(address=address)
        response = self._call(self._suppressions.RemoveSuppression, request, timeout)
        return Suppression.from_proto(response.suppression)


class AsyncSuppressionMethods:
    """The suppression list's methods of :class:`mailroom.AsyncMailroomClient`."""

    if TYPE_CHECKING:
        _channel: grpc.aio.Channel

        async def _call(self, rpc: Any, request: Any, timeout: float | None) -> Any: ...

    @cached_property
    def _suppressions(self) -> _Stub:
        """The SuppressionService stub on the client's channel, made at the first call."""
        return suppression_stub(self._channel)

    async def list_suppressions(
        self,
        *,
        reason: SuppressionReason | None = None,
        page_size: int = DEFAULT_PAGE_SIZE,
        timeout: float | None = None,
    ) -> AsyncIterator[Suppression]:
        """Iterate over the suppressed addresses (``async for``); see the sync client."""
        token: str | None = None
        while True:
            page = await self.list_suppressions_page(
                reason=reason, page_token=token, page_size=page_size, timeout=timeout
            )
            for entry in page.suppressions:
                yield entry
            token = page.next_page_token
            if token is None:
                return

    async def list_suppressions_page(
        self,
        *,
        reason: SuppressionReason | None = None,
        page_token: str | None = None,
        page_size: int = DEFAULT_PAGE_SIZE,
        timeout: float | None = None,
    ) -> SuppressionPage:
        """Fetch one page of the suppressed addresses, newest first; see the sync client."""
        request = _list_request(reason, page_size, page_token)
        return _page(await self._call(self._suppressions.ListSuppressions, request, timeout))

    async def add_suppression(
        self,
        address: str,
        *,
        reason: SuppressionReason = SuppressionReason.MANUAL,
        timeout: float | None = None,
    ) -> bool:
        """Suppress an address; True when this call added it. See the sync client."""
        request = suppressions_pb2.AddSuppressionRequest(
            address=address, reason=_proto_reason(reason)
        )
        response = await self._call(self._suppressions.AddSuppression, request, timeout)
        return bool(response.created)

    async def remove_suppression(
        self, address: str, *, timeout: float | None = None
    ) -> Suppression:
        """Let Mailroom send to an address again; the removed entry. See the sync client."""
        request = suppressions_pb2.RemoveSuppressionRequest(address=address)
        response = await self._call(self._suppressions.RemoveSuppression, request, timeout)
        return Suppression.from_proto(response.suppression)
