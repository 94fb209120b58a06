"""ProviderEventService: each provider's events, authenticated, stored once, then answered 200."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import grpc

from core.errors import NotFound, Unauthenticated
from core.inbound_events import ingest
from core.provider_event_counts import SharedCounts
from core.queue import DeliveryQueue
from core.settings import ProviderEventSettings, Settings
from mailroom.v1 import events_pb2, events_pb2_grpc
from server.provider_events import metrics
from server.provider_events.base import ProviderWebhook
from server.provider_events.mailgun import MailgunWebhook
from server.provider_events.postmark import PostmarkWebhook
from server.provider_events.sendgrid import SendGridWebhook
from server.provider_events.ses import SesWebhook

log = logging.getLogger(__name__)


def build_webhooks(settings: ProviderEventSettings) -> dict[str, ProviderWebhook]:
    """One webhook per provider, by the name in the path."""
    webhooks: list[ProviderWebhook] = [
        SendGridWebhook(settings),
        MailgunWebhook(settings),
        PostmarkWebhook(settings),
        SesWebhook(settings),
    ]
    return {w.name: w for w in webhooks}


def metadata_headers(context: grpc.ServicerContext) -> dict[str, str]:
    """The call's text metadata (through Envoy: the HTTP request headers), names lowercased."""
    headers: dict[str, str] = {}
    for key, value in context.invocation_metadata() or ():
        if isinstance(value, str):
            headers[key.lower()] = value
    return headers


class ProviderEventServicer(events_pb2_grpc.ProviderEventServiceServicer):
    """Takes in the providers' event webhooks.

    Args:
        settings: The process settings (``provider_events``).
        queue: Unused; every servicer is built with it.
    """

    def __init__(self, settings: Settings, queue: DeliveryQueue | None = None) -> None:
        self._webhooks = build_webhooks(settings.provider_events)
        self._cluster = metrics.ClusterCounts(
            SharedCounts.from_url(
                settings.redis_url, timeout_seconds=settings.redis_timeout_seconds
            )
        )

    def close(self) -> None:
        """Release the Redis connections of the cluster-wide counts."""
        self._cluster.close()

    def receive(self, provider: str, body: bytes, headers: Mapping[str, str]) -> int:
        """Authenticate, normalize and store one provider request.

        Returns:
            How many events were newly stored.

        Raises:
            NotFound: An unknown provider.
            Unauthenticated: The proof of origin failed (counted; nothing stored).
            InvalidArgument: The body is not what the provider sends.
        """
        webhook = self._webhooks.get(provider)
        if webhook is None:
            raise NotFound(f"provider: no events endpoint for {provider!r}")
        try:
            events = webhook.receive(body, headers)
        except Unauthenticated as exc:
            metrics.count_signature_failure(provider, self._cluster)
            log.warning("%s events refused: %s", provider, exc.message)
            raise
        recorded = ingest(events)
        metrics.count(recorded, self._cluster)
        return sum(1 for r in recorded if not r.duplicate)

    def ReceiveProviderEvents(
        self, request: events_pb2.ReceiveProviderEventsRequest, context: grpc.ServicerContext
    ) -> events_pb2.ReceiveProviderEventsResponse:
        """Answer 200 once every event of the request is stored (see the proto)."""
        stored = self.receive(request.provider, request.body.data, metadata_headers(context))
        return events_pb2.ReceiveProviderEventsResponse(stored=stored)
