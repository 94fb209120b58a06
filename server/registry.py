"""The API's gRPC services, one entry each: adding a service is one line in :data:`SERVICES`.

``server.main`` registers every entry's servicer, lists it in reflection and health (and in the
store monitor's statuses), and, unless the entry says otherwise, puts it behind the API key
check. Envoy's transcoder lists the same services (``envoy/envoy.yaml``); a unit test compares
both lists with the descriptor set, so a service missing from one of them fails the tests.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.descriptor import FileDescriptor

from core.queue import DeliveryQueue
from core.settings import Settings
from mailroom.v1 import (
    events_pb2,
    events_pb2_grpc,
    mail_pb2,
    mail_pb2_grpc,
    suppressions_pb2,
    suppressions_pb2_grpc,
    webhooks_pb2,
    webhooks_pb2_grpc,
)
from server.provider_events.servicer import ProviderEventServicer
from server.servicer import MailServicer
from server.suppressions import SuppressionServicer
from server.webhooks import WebhookServicer


@dataclass(frozen=True)
class Service:
    """One gRPC service of the API.

    Attributes:
        file: The generated module's ``DESCRIPTOR`` (the .proto file declaring the service).
        short_name: The service's name in that file (``MailService``).
        build: Makes the servicer from the process settings and the delivery queue.
        register: The generated ``add_<Service>Servicer_to_server`` function.
        protected: Whether calls need an API key when keys are configured. Off only for
            endpoints that authenticate otherwise (e.g. providers' signed webhooks).
    """

    file: FileDescriptor
    short_name: str
    build: Callable[[Settings, DeliveryQueue], Any]
    register: Callable[[Any, grpc.Server], None]
    protected: bool = True

    @property
    def full_name(self) -> str:
        """The full service name, ``mailroom.v1.MailService``."""
        name: str = self.file.services_by_name[self.short_name].full_name
        return name


SERVICES: tuple[Service, ...] = (
    Service(
        mail_pb2.DESCRIPTOR,
        "MailService",
        MailServicer,
        mail_pb2_grpc.add_MailServiceServicer_to_server,
    ),
    Service(
        suppressions_pb2.DESCRIPTOR,
        "SuppressionService",
        SuppressionServicer,
        suppressions_pb2_grpc.add_SuppressionServiceServicer_to_server,
    ),
    Service(
        webhooks_pb2.DESCRIPTOR,
        "WebhookService",
        WebhookServicer,
        webhooks_pb2_grpc.add_WebhookServiceServicer_to_server,
    ),
    # Providers prove themselves by signature or credentials, not by our API key.
    Service(
        events_pb2.DESCRIPTOR,
        "ProviderEventService",
        ProviderEventServicer,
        events_pb2_grpc.add_ProviderEventServiceServicer_to_server,
        protected=False,
    ),
)


def close_servicer(servicer: object) -> None:
    """Stop a servicer's background work, if it has any (a ``close()`` method)."""
    close = getattr(servicer, "close", None)
    if callable(close):
        close()
