"""Managing outbound webhooks: subscriptions, their deliveries, replaying dead ones.

Both clients get these methods from here (:class:`MailroomClient` from :class:`WebhookMethods`,
:class:`AsyncMailroomClient` from :class:`AsyncWebhookMethods`): ``create_webhook`` (its answer
carries the secret, once), ``list_webhooks``, ``delete_webhook``, ``list_webhook_deliveries``
and ``replay_webhook_delivery``. Receivers check deliveries with :func:`mailroom.verify_webhook`.

Example:
    >>> with MailroomClient.from_env() as client:
    ...     created = client.create_webhook("https://example.com/hooks", ["email.sent"])
    ...     store_secret(created.secret)
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol, cast

import grpc

from mailroom.v1 import webhooks_pb2, webhooks_pb2_grpc

__all__ = [
    "AsyncWebhookMethods",
    "CreatedWebhook",
    "Webhook",
    "WebhookAttempt",
    "WebhookDelivery",
    "WebhookDeliveryPage",
    "WebhookDeliveryState",
    "WebhookMethods",
]


def _time(message: Any, name: str) -> datetime | None:
    return getattr(message, name).ToDatetime(tzinfo=UTC) if message.HasField(name) else None


class WebhookDeliveryState(enum.Enum):
    """Where a delivery is; the values are those of ``mailroom.v1.WebhookDeliveryState``."""

    UNSPECIFIED = 0
    PENDING = 1
    DELIVERED = 2
    DEAD = 3

    @classmethod
    def from_proto(cls, value: int) -> WebhookDeliveryState:
        """The state of an enum number; UNSPECIFIED for one this SDK does not know."""
        try:
            return cls(value)
        except ValueError:
            return cls.UNSPECIFIED


@dataclass(frozen=True)
class Webhook:
    """A subscription (never its secret)."""

    id: str
    url: str
    event_types: list[str]
    final_outcomes_only: bool
    description: str = ""
    created_at: datetime | None = None

    @classmethod
    def from_proto(cls, message: webhooks_pb2.Webhook) -> Webhook:
        """Convert the API's message."""
        return cls(
            id=message.id,
            url=message.url,
            event_types=list(message.event_types),
            final_outcomes_only=message.final_outcomes_only,
            description=message.description,
            created_at=_time(message, "create_time"),
        )


@dataclass(frozen=True)
class CreatedWebhook:
    """A new subscription and its ``whsec_`` secret (shown only in this answer)."""

    webhook: Webhook
    secret: str


@dataclass(frozen=True)
class WebhookAttempt:
    """One POST of a delivery: its HTTP status (0: no answer) and error."""

    at: datetime | None
    status_code: int
    error: str
    duration_ms: float


@dataclass(frozen=True)
class WebhookDelivery:
    """One event for one subscription, with its attempts."""

    id: str
    webhook_id: str
    event_id: str
    email_id: str
    event_type: str
    state: WebhookDeliveryState
    payload: str
    attempts: list[WebhookAttempt]
    created_at: datetime | None = None
    next_attempt_at: datetime | None = None
    last_error: str = ""

    @classmethod
    def from_proto(cls, message: webhooks_pb2.WebhookDelivery) -> WebhookDelivery:
        """Convert the API's message."""
        return cls(
            id=message.id,
            webhook_id=message.webhook_id,
            event_id=message.event_id,
            email_id=message.email_id,
            event_type=message.event_type,
            state=WebhookDeliveryState.from_proto(message.state),
            payload=message.payload,
            attempts=[
                WebhookAttempt(_time(a, "time"), a.status_code, a.error, a.duration_ms)
                for a in message.attempts
            ],
            created_at=_time(message, "create_time"),
            next_attempt_at=_time(message, "next_attempt_time"),
            last_error=message.last_error,
        )


@dataclass(frozen=True)
class WebhookDeliveryPage:
    """One page of deliveries, newest first; ``next_page_token`` is None on the last."""

    deliveries: list[WebhookDelivery] = field(default_factory=list)
    next_page_token: str | None = None


class _Stub(Protocol):
    CreateWebhook: Any
    ListWebhooks: Any
    DeleteWebhook: Any
    ListWebhookDeliveries: Any
    ReplayWebhookDelivery: Any


def webhook_stub(channel: grpc.Channel | grpc.aio.Channel) -> _Stub:
    """The WebhookService stub on a client's channel."""
    return cast(_Stub, webhooks_pb2_grpc.WebhookServiceStub(channel))  # type: ignore[no-untyped-call]


def _create_request(
    url: str, event_types: Iterable[str], final_outcomes_only: bool, description: str
) -> webhooks_pb2.CreateWebhookRequest:
    return webhooks_pb2.CreateWebhookRequest(
        url=url,
        event_types=list(event_types),
        final_outcomes_only=final_outcomes_only,
        description=description,
    )


def _deliveries_request(
    state: WebhookDeliveryState | None,
    webhook_id: str | None,
    email_id: str | None,
    page_size: int,
    page_token: str | None,
) -> webhooks_pb2.ListWebhookDeliveriesRequest:
    return webhooks_pb2.ListWebhookDeliveriesRequest(
        state=f"WEBHOOK_DELIVERY_STATE_{(state or WebhookDeliveryState.UNSPECIFIED).name}",
        webhook_id=webhook_id or "",
        email_id=email_id or "",
        page_size=page_size,
        page_token=page_token or "",
    )


def _page(message: webhooks_pb2.ListWebhookDeliveriesResponse) -> WebhookDeliveryPage:
    return WebhookDeliveryPage(
        [WebhookDelivery.from_proto(d) for d in message.deliveries],
        message.next_page_token or None,
    )


class WebhookMethods:
    """The webhook methods of :class:`mailroom.MailroomClient`."""

    _webhooks: _Stub

    if TYPE_CHECKING:

        def _call(self, rpc: Any, request: Any, timeout: float | None) -> Any: ...

    def create_webhook(
        self,
        url: str,
        event_types: Iterable[str] = (),
        *,
        final_outcomes_only: bool = False,
        description: str = "",
        timeout: float | None = None,
    ) -> CreatedWebhook:
        """Subscribe ``url`` to events (all types when ``event_types`` is empty).

        Raises:
            mailroom.InvalidArgument: A bad URL or event type (``violations`` name ``url`` or
                ``event_types[i]``).
        """
        request = _create_request(url, event_types, final_outcomes_only, description)
        answer = self._call(self._webhooks.CreateWebhook, request, timeout)
        return CreatedWebhook(Webhook.from_proto(answer.webhook), answer.secret)

    def list_webhooks(self, *, timeout: float | None = None) -> list[Webhook]:
        """Every subscription, oldest first."""
        request = webhooks_pb2.ListWebhooksRequest()
        answer = self._call(self._webhooks.ListWebhooks, request, timeout)
        return [Webhook.from_proto(w) for w in answer.webhooks]

    def delete_webhook(self, webhook_id: str, *, timeout: float | None = None) -> Webhook:
        """Delete a subscription; raises mailroom.NotFound when there is none."""
        request = webhooks_pb2.DeleteWebhookRequest(id=webhook_id)
        answer = self._call(self._webhooks.DeleteWebhook, request, timeout)
        return Webhook.from_proto(answer.webhook)

    def list_webhook_deliveries(
        self,
        *,
        state: WebhookDeliveryState | None = None,
        webhook_id: str | None = None,
        email_id: str | None = None,
        page_size: int = 50,
        page_token: str | None = None,
        timeout: float | None = None,
    ) -> WebhookDeliveryPage:
        """One page of deliveries, newest first, filtered."""
        request = _deliveries_request(state, webhook_id, email_id, page_size, page_token)
        return _page(self._call(self._webhooks.ListWebhookDeliveries, request, timeout))

    def replay_webhook_delivery(
        self, delivery_id: str, *, timeout: float | None = None
    ) -> WebhookDelivery:
        """Send a dead delivery again; mailroom.FailedPrecondition when it is not dead."""
        request = webhooks_pb2.ReplayWebhookDeliveryRequest(id=delivery_id)
        answer = self._call(self._webhooks.ReplayWebhookDelivery, request, timeout)
        return WebhookDelivery.from_proto(answer.delivery)


class AsyncWebhookMethods:
    """The webhook methods of :class:`mailroom.AsyncMailroomClient` (see the sync client)."""

    _webhooks: _Stub

    if TYPE_CHECKING:

        async def _call(self, rpc: Any, request: Any, timeout: float | None) -> Any: ...

    async def create_webhook(
        self,
        url: str,
        event_types: Iterable[str] = (),
        *,
        final_outcomes_only: bool = False,
        description: str = "",
        timeout: float | None = None,
    ) -> CreatedWebhook:
        """Subscribe ``url`` to events; the answer carries the secret."""
        request = _create_request(url, event_types, final_outcomes_only, description)
        answer = await self._call(self._webhooks.CreateWebhook, request, timeout)
        return CreatedWebhook(Webhook.from_proto(answer.webhook), answer.secret)

    async def list_webhooks(self, *, timeout: float | None = None) -> list[Webhook]:
        """Every subscription, oldest first."""
        request = webhooks_pb2.ListWebhooksRequest()
        answer = await self._call(self._webhooks.ListWebhooks, request, timeout)
        return [Webhook.from_proto(w) for w in answer.webhooks]

    async def delete_webhook(self, webhook_id: str, *, timeout: float | None = None) -> Webhook:
        """Delete a subscription."""
        request = webhooks_pb2.DeleteWebhookRequest(id=webhook_id)
        answer = await self._call(self._webhooks.DeleteWebhook, request, timeout)
        return Webhook.from_proto(answer.webhook)

    async def list_webhook_deliveries(
        self,
        *,
        state: WebhookDeliveryState | None = None,
        webhook_id: str | None = None,
        email_id: str | None = None,
        page_size: int = 50,
        page_token: str | None = None,
        timeout: float | None = None,
    ) -> WebhookDeliveryPage:
        """One page of deliveries, newest first, filtered."""
        request = _deliveries_request(state, webhook_id, email_id, page_size, page_token)
        return _page(await self._call(self._webhooks.ListWebhookDeliveries, request, timeout))

    async def replay_webhook_delivery(
        self, delivery_id: str, *, timeout: float | None = None
    ) -> WebhookDelivery:
        """Send a dead delivery again."""
        request = webhooks_pb2.ReplayWebhookDeliveryRequest(id=delivery_id)
        answer = await self._call(self._webhooks.ReplayWebhookDelivery, request, timeout)
        return WebhookDelivery.from_proto(answer.delivery)
