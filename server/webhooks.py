"""The WebhookService servicer: subscriptions, their deliveries, and replaying dead ones.

Subscriptions and deliveries live in the outbox (:mod:`core.store.webhooks`,
:mod:`core.store.webhook_outbox`); the ``deliver_webhook`` actor sends them. A secret is shown
once, in CreateWebhook's answer.
"""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import urlsplit

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from core.errors import FailedPrecondition, FieldViolation, InvalidArgument, NotFound
from core.events_out import enqueue_all
from core.queue import DeliveryQueue
from core.settings import Settings
from core.store import webhook_outbox as outbox
from core.store import webhooks as store
from mailroom.v1 import webhooks_pb2, webhooks_pb2_grpc
from server.servicer import HTTP_STATUS_METADATA

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
MAX_URL_CHARS = 2048
MAX_DESCRIPTION_CHARS = 200
State = webhooks_pb2.WebhookDeliveryState
STATES = {
    State.WEBHOOK_DELIVERY_STATE_PENDING: store.DeliveryState.PENDING,
    State.WEBHOOK_DELIVERY_STATE_DELIVERED: store.DeliveryState.DELIVERED,
    State.WEBHOOK_DELIVERY_STATE_DEAD: store.DeliveryState.DEAD,
}
STATE_VALUES = {name: value for value, name in STATES.items()}


def url_problem(url: str) -> str | None:
    """What is wrong with a receiver URL, or None: http(s), a host, no spaces, not too long."""
    if not url:
        return "required: an http or https URL"
    if len(url) > MAX_URL_CHARS:
        return f"longer than {MAX_URL_CHARS} characters"
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        return "must not contain spaces or control characters"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        return f"not a valid URL: {exc}"
    if parts.scheme not in ("http", "https"):
        return "must start with http:// or https://"
    if not parts.hostname:
        return "has no host"
    if parts.username or parts.password:
        return "must not carry credentials; verify the signature instead"
    if parts.fragment:
        return "must not have a fragment (#...)"
    return None


def check_webhook(url: str, event_types: list[str], description: str = "") -> list[str]:
    """Validate a new subscription.

    Returns:
        The event types, deduplicated in order.

    Raises:
        InvalidArgument: Naming ``url``, ``event_types[i]`` or ``description``.
    """
    violations: list[FieldViolation] = []
    problem = url_problem(url)
    if problem:
        violations.append(FieldViolation("url", problem))
    wanted: list[str] = []
    for index, event_type in enumerate(event_types):
        if event_type not in store.EVENT_TYPES:
            violations.append(
                FieldViolation(
                    f"event_types[{index}]",
                    f"unknown event type {event_type!r}; one of {', '.join(store.EVENT_TYPES)}",
                )
            )
        elif event_type not in wanted:
            wanted.append(event_type)
    if len(description) > MAX_DESCRIPTION_CHARS:
        violations.append(
            FieldViolation("description", f"longer than {MAX_DESCRIPTION_CHARS} characters")
        )
    if violations:
        raise InvalidArgument(violations)
    return wanted


def _timestamp(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    ts = Timestamp()
    ts.FromDatetime(value.replace(tzinfo=UTC) if value.tzinfo is None else value)
    return ts


def webhook_to_proto(sub: store.WebhookSubscription) -> webhooks_pb2.Webhook:
    """The API's message for a subscription (never its secret)."""
    return webhooks_pb2.Webhook(
        id=str(sub.id),
        url=sub.url,
        event_types=list(sub.event_types or []),
        final_outcomes_only=bool(sub.final_outcomes_only),
        description=sub.description or "",
        create_time=_timestamp(sub.created_at),
    )


def delivery_to_proto(delivery: store.WebhookDelivery) -> webhooks_pb2.WebhookDelivery:
    """The API's message for a delivery, with its attempts."""
    return webhooks_pb2.WebhookDelivery(
        id=delivery.key,
        webhook_id=delivery.subscription_id,
        event_id=delivery.event_id,
        email_id=delivery.email_id or "",
        event_type=delivery.event_type,
        state=STATE_VALUES.get(delivery.state, State.WEBHOOK_DELIVERY_STATE_UNSPECIFIED),
        payload=delivery.payload,
        attempts=[
            webhooks_pb2.WebhookAttempt(
                time=_timestamp(a.at),
                status_code=int(a.status_code or 0),
                error=a.error or "",
                duration_ms=float(a.duration_ms or 0.0),
            )
            for a in delivery.attempts
        ],
        create_time=_timestamp(delivery.created_at),
        next_attempt_time=_timestamp(delivery.next_attempt_at),
        last_error=delivery.last_error or "",
    )


def replay_delivery(delivery_id: str) -> store.WebhookDelivery:
    """Make a dead delivery pending again and enqueue it.

    Raises:
        NotFound: No such delivery.
        FailedPrecondition: It is not dead, or its webhook was deleted.
    """
    found = outbox.get_delivery(delivery_id)
    if found is None:
        raise NotFound(f"no such webhook delivery: {delivery_id}")
    if found.state != store.DeliveryState.DEAD:
        raise FailedPrecondition(f"webhook delivery {delivery_id} is {found.state}, not dead")
    if store.find_subscription(found.subscription_id) is None:
        raise FailedPrecondition(f"the webhook of delivery {delivery_id} was deleted")
    replayed = outbox.replay(delivery_id)
    if replayed is None:
        raise FailedPrecondition(f"webhook delivery {delivery_id} is no longer dead")
    enqueue_all([outbox.Queued(replayed.key, replayed.email_id, replayed.subscription_id)])
    return replayed


class WebhookServicer(webhooks_pb2_grpc.WebhookServiceServicer):
    """Implements ``mailroom.v1.WebhookService``.

    Args:
        settings: The process settings.
        queue: Unused (deliveries go on the webhooks queue, see :mod:`core.events_out`).
    """

    def __init__(self, settings: Settings, queue: DeliveryQueue) -> None:
        self._settings = settings

    def CreateWebhook(
        self, request: webhooks_pb2.CreateWebhookRequest, context: grpc.ServicerContext
    ) -> webhooks_pb2.CreateWebhookResponse:
        """Store a subscription; answer it with its secret (201 Created through Envoy)."""
        wanted = check_webhook(request.url, list(request.event_types), request.description)
        sub = store.create_subscription(
            request.url,
            wanted,
            final_outcomes_only=request.final_outcomes_only,
            description=request.description,
        )
        context.send_initial_metadata(((HTTP_STATUS_METADATA, "201"),))
        return webhooks_pb2.CreateWebhookResponse(webhook=webhook_to_proto(sub), secret=sub.secret)

    def ListWebhooks(
        self, request: webhooks_pb2.ListWebhooksRequest, context: grpc.ServicerContext
    ) -> webhooks_pb2.ListWebhooksResponse:
        """Every subscription, oldest first."""
        return webhooks_pb2.ListWebhooksResponse(
            webhooks=[webhook_to_proto(s) for s in store.list_subscriptions()]
        )

    def DeleteWebhook(
        self, request: webhooks_pb2.DeleteWebhookRequest, context: grpc.ServicerContext
    ) -> webhooks_pb2.DeleteWebhookResponse:
        """Delete a subscription; NOT_FOUND when there is none."""
        sub = store.get_subscription(request.id)
        if not store.delete_subscription(request.id):
            raise NotFound(f"no such webhook: {request.id}")
        return webhooks_pb2.DeleteWebhookResponse(webhook=webhook_to_proto(sub))

    def ListWebhookDeliveries(
        self, request: webhooks_pb2.ListWebhookDeliveriesRequest, context: grpc.ServicerContext
    ) -> webhooks_pb2.ListWebhookDeliveriesResponse:
        """One page of deliveries, newest first."""
        violations: list[FieldViolation] = []
        state = None
        if request.state != State.WEBHOOK_DELIVERY_STATE_UNSPECIFIED:
            state = STATES.get(request.state)
            if state is None:
                violations.append(FieldViolation("state", "not a webhook delivery state"))
        if request.page_size < 0:
            violations.append(FieldViolation("page_size", "must not be negative"))
        before = None
        if request.page_token:
            if not request.page_token.isdigit():
                violations.append(FieldViolation("page_token", "not a token this API gave"))
            else:
                before = int(request.page_token)
        if violations:
            raise InvalidArgument(violations)
        size = min(request.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        found = outbox.list_deliveries(
            state=state,
            subscription_id=request.webhook_id or None,
            email_id=request.email_id or None,
            limit=size + 1,
            before_seq=before,
        )
        page = found[:size]
        token = str(page[-1].seq) if len(found) > size else ""
        return webhooks_pb2.ListWebhookDeliveriesResponse(
            deliveries=[delivery_to_proto(d) for d in page], next_page_token=token
        )

    def ReplayWebhookDelivery(
        self, request: webhooks_pb2.ReplayWebhookDeliveryRequest, context: grpc.ServicerContext
    ) -> webhooks_pb2.ReplayWebhookDeliveryResponse:
        """Send a dead delivery again with a fresh attempt budget."""
        return webhooks_pb2.ReplayWebhookDeliveryResponse(
            delivery=delivery_to_proto(replay_delivery(request.id))
        )
